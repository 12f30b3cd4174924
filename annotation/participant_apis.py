"""Participant API: custom front ends and simulations answer through the same serving as the browser.

A researcher's platform registers a participant (researcher token, edit rights on the study) and
gets a participant token once; the participant then sends `Authorization: Bearer <token>` to fetch
their next pair and submit judgments. Submissions are idempotent on `served_id`.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Participant
from annotation.participant_tokens import participant_api_register, participant_for_token
from annotation.services import ServedPairNotFound, StudyNotOpen, judgment_submit, pair_serve_next
from annotation.throttling import ParticipantRateThrottle
from elicitation.selectors import study_get_for_user


class ParticipantTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <participant token>`; `request.auth` is the Participant."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, Participant] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Send the header as 'Authorization: Bearer <token>'.")
        participant = participant_for_token(token=parts[1].decode("latin-1"))
        if participant is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked participant token.")
        return AnonymousUser(), participant

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="participant"'  # makes DRF answer 401, not 403


class ParticipantTokenScheme(OpenApiAuthenticationExtension):
    """Names the participant token in the OpenAPI schema (HTTP bearer)."""

    target_class = ParticipantTokenAuthentication
    name = "participantToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A participant token from POST .../participants."}


class IsParticipant(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, Participant)


def _study_closed(exc: StudyNotOpen) -> Response:
    return Response({"detail": f"Study {exc} is not open: it accepts no participants or judgments now."},
                    status=status.HTTP_409_CONFLICT)


class _ParticipantApi(APIView):
    authentication_classes = [ParticipantTokenAuthentication]
    permission_classes = [IsParticipant]
    throttle_classes = [ParticipantRateThrottle]  # 429 past POLYPHONY_PARTICIPANT_RATE per token


class ParticipantCreateApi(APIView):
    """Register a participant whose consent your platform collected; returns their token (shown once)."""

    class InputSerializer(serializers.Serializer):
        external_id = serializers.CharField(max_length=200)
        attributes = serializers.DictField(required=False, default=dict, help_text="Demographics: string or number values.")

        class Meta:
            ref_name = "ParticipantCreateInput"

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField(help_text="Send as 'Authorization: Bearer <token>'. Not shown again.")
        external_id = serializers.CharField()

        class Meta:
            ref_name = "ParticipantCreateOutput"

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer, 400: OpenApiResponse(description="Bad input."),
                   404: OpenApiResponse(description="No such study you may edit."),
                   409: OpenApiResponse(description="The study is not open.")},
    )
    def post(self, request: Request, slug: str) -> Response:
        # Authorize before validating: a 400 would tell a stranger that the study exists.
        study = study_get_for_user(slug=slug, user=request.user, edit=True)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            participant, token = participant_api_register(
                study=study, external_id=data.validated_data["external_id"],
                attributes=data.validated_data["attributes"],
            )
        except StudyNotOpen as exc:
            return _study_closed(exc)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages) from exc
        return Response({"token": token, "external_id": participant.external_id}, status=status.HTTP_201_CREATED)


class ParticipantNextApi(_ParticipantApi):
    """The pair to judge now (the same one until it is answered), or 204 when the participant is done."""

    class OutputSerializer(serializers.Serializer):
        served_id = serializers.UUIDField(source="id", help_text="Send back with the judgment.")
        prompt = serializers.CharField(source="pair.prompt.text")
        response_a = serializers.CharField(source="left_response.text", help_text="Shown first (left).")
        response_b = serializers.CharField(source="right_response.text")

        class Meta:
            ref_name = "ParticipantNextPair"

    @extend_schema(responses={200: OutputSerializer, 204: OpenApiResponse(description="Done: nothing left."),
                              401: OpenApiResponse(description="Missing or bad token."),
                              409: OpenApiResponse(description="The study is not open.")})
    def get(self, request: Request) -> Response:
        participant: Participant = request.auth
        try:
            served = pair_serve_next(participant=participant)
        except StudyNotOpen as exc:
            return _study_closed(exc)
        if served is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(self.OutputSerializer(served).data)


class ParticipantJudgmentApi(_ParticipantApi):
    """Answer a served pair; sending the same served_id again changes nothing (200, duplicate true)."""

    class InputSerializer(serializers.Serializer):
        served_id = serializers.UUIDField()
        choice = serializers.ChoiceField(choices=["a", "b", "tie"], help_text="Relative to the order shown.")
        strength = serializers.IntegerField(required=False, allow_null=True, default=None)
        rationale = serializers.CharField(required=False, allow_null=True, allow_blank=True, default="")

        class Meta:
            ref_name = "ParticipantJudgmentInput"

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer("ParticipantJudgmentStored", {
                "judgment_id": serializers.IntegerField(), "duplicate": serializers.BooleanField(),
                "completed": serializers.BooleanField()}),
            200: OpenApiResponse(description="Already stored: nothing changed."),
            400: OpenApiResponse(description="Bad input."), 401: OpenApiResponse(description="Missing or bad token."),
            404: OpenApiResponse(description="A served id you were not shown."),
            409: OpenApiResponse(description="The study is not open."),
        },
    )
    def post(self, request: Request) -> Response:
        participant: Participant = request.auth
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            result = judgment_submit(
                participant=participant, served_id=values["served_id"], choice=values["choice"],
                strength=values["strength"], rationale=values["rationale"] or "",
            )
        except StudyNotOpen as exc:
            return _study_closed(exc)
        except ServedPairNotFound as exc:
            raise exceptions.NotFound("You were not served this pair.") from exc
        except DjangoValidationError as exc:
            raise exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages) from exc
        body = {"judgment_id": result.judgment.pk, "duplicate": result.duplicate, "completed": result.completed}
        return Response(body, status=status.HTTP_200_OK if result.duplicate else status.HTTP_201_CREATED)

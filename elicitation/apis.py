"""Researcher API for studies: configuration, survey, status, prompts, collaborators.

Token or session authentication; a study the user may not see is a 404, never a 403, so slugs
of other researchers' studies do not leak. Service refusals become JSON 400s with field errors.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from elicitation.models import Study, StudyCollaborator, SurveyQuestion
from elicitation.selectors import (
    prompt_list_with_responses,
    study_get_for_user,
    study_overview_list_for_user,
    study_user_can_edit,
    study_user_can_manage,
)
from elicitation.services import (
    SurveyQuestionSpec,
    collaborator_add,
    collaborator_remove,
    study_create,
    study_update,
)

_ERROR_RESPONSE = OpenApiResponse(description="`{\"detail\": ..., \"errors\": {field: [messages]}}`")


def _service_call_errors(exc: DjangoValidationError) -> ApiValidationError:
    """A service's ValidationError as the API's 400 (field-keyed when the service named fields)."""
    if hasattr(exc, "error_dict"):
        return ApiValidationError(exc.message_dict)
    return ApiValidationError({"non_field_errors": exc.messages})


class _SurveyQuestionInputSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=50)
    text = serializers.CharField(max_length=500)
    kind = serializers.ChoiceField(choices=SurveyQuestion.Kind.choices)
    choices = serializers.ListField(child=serializers.CharField(max_length=200), required=False, default=list)
    required = serializers.BooleanField(required=False, default=True)
    min_value = serializers.FloatField(required=False, allow_null=True, default=None)
    max_value = serializers.FloatField(required=False, allow_null=True, default=None)
    # The column is a PositiveIntegerField: a bigger number would be a database error, not a 400.
    position = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0,
                                        max_value=2_147_483_647)

    class Meta:
        ref_name = "SurveyQuestionInput"


def _question_specs(data: list[dict[str, Any]]) -> list[SurveyQuestionSpec]:
    # In a PATCH (partial) DRF neither requires nested fields nor fills their defaults; a missing
    # key or text then reaches the service as blank and gets its "is required" error.
    return [
        SurveyQuestionSpec(
            key=question.get("key", ""), text=question.get("text", ""), kind=question.get("kind", ""),
            choices=question.get("choices", []), required=question.get("required", True),
            min_value=question.get("min_value"), max_value=question.get("max_value"),
            position=question.get("position"),
        )
        for question in data
    ]


class _StudyConfigInputSerializer(serializers.Serializer):
    """The configurable fields, shared by create (title and slug required) and update (all optional)."""

    title = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=80)
    description = serializers.CharField(required=False, allow_blank=True)
    consent_text = serializers.CharField(required=False, allow_blank=True)
    instructions = serializers.CharField(required=False, allow_blank=True)
    judgments_per_participant = serializers.IntegerField(required=False, min_value=1, max_value=10_000)
    overlap_target = serializers.IntegerField(
        required=False, min_value=1, max_value=1_000, help_text="Target number of judgments per pair."
    )
    allow_ties = serializers.BooleanField(required=False)
    strength_labels = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False,
        help_text="Labels of the strength scale, weakest first; empty for no strength question.",
    )
    rationale_mode = serializers.ChoiceField(choices=Study.RationaleMode.choices, required=False)
    completion_code = serializers.CharField(max_length=64, required=False, allow_blank=True)
    redirect_url = serializers.URLField(required=False, allow_blank=True)
    selection_policy = serializers.ChoiceField(choices=Study.SelectionPolicy.choices, required=False)
    mixed_epsilon = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0,
        help_text="With the mixed policy: the share of pairs served for coverage.",
    )
    consistency_repeats = serializers.IntegerField(
        required=False, min_value=0, max_value=100,
        help_text="Answered pairs each participant is asked again, to measure self-consistency.",
    )
    survey_questions = _SurveyQuestionInputSerializer(
        many=True, required=False,
        help_text="The whole survey, in order. On update it replaces the current one: questions are "
        "matched by key, missing ones deleted (refused if already answered).",
    )


class StudyDetailApi(APIView):
    """Read (viewers, editors, owner) or change (editors, owner) one study."""

    class OutputSerializer(serializers.ModelSerializer):
        class SurveyQuestionOutputSerializer(serializers.ModelSerializer):
            class Meta:
                model = SurveyQuestion
                ref_name = "SurveyQuestion"
                fields = ["id", "key", "text", "kind", "choices", "required", "min_value", "max_value", "position"]

        class CollaboratorOutputSerializer(serializers.ModelSerializer):
            username = serializers.CharField(source="user.get_username")

            class Meta:
                model = StudyCollaborator
                ref_name = "Collaborator"
                fields = ["username", "role"]

        owner = serializers.CharField(source="owner.get_username")
        strength_labels = serializers.ListField(child=serializers.CharField())
        survey_questions = SurveyQuestionOutputSerializer(many=True, read_only=True)
        collaborators = CollaboratorOutputSerializer(many=True, read_only=True)
        participant_path = serializers.SerializerMethodField()

        class Meta:
            model = Study
            ref_name = "Study"
            fields = [
                "slug", "title", "description", "status", "owner", "consent_text", "instructions",
                "judgments_per_participant", "overlap_target", "allow_ties", "strength_labels",
                "rationale_mode", "completion_code", "redirect_url", "selection_policy",
                "mixed_epsilon", "consistency_repeats", "survey_questions", "collaborators", "participant_path",
                "created_at", "updated_at",
            ]

        def get_participant_path(self, study: Study) -> str:
            """The link to share with participants, relative to the site."""
            return f"/s/{study.slug}/"

    class UpdateInputSerializer(_StudyConfigInputSerializer):
        status = serializers.ChoiceField(
            choices=Study.Status.choices, required=False,
            help_text="draft → open/closed, open → closed, closed → open. Opening needs pairs in the pool.",
        )

        class Meta:
            ref_name = "StudyUpdateInput"

    @extend_schema(operation_id="study_retrieve", responses={200: OutputSerializer, 404: _ERROR_RESPONSE})
    def get(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)
        return Response(self.OutputSerializer(study_with_relations(study)).data)

    @extend_schema(
        operation_id="study_update",
        request=UpdateInputSerializer,
        responses={200: OutputSerializer, 400: _ERROR_RESPONSE, 403: _ERROR_RESPONSE, 404: _ERROR_RESPONSE},
    )
    def patch(self, request: Request, slug: str) -> Response:
        # Authorize before validating: a 400 would tell a stranger that the study exists.
        study = study_get_for_user(slug=slug, user=request.user)
        if not study_user_can_edit(study=study, user=request.user):
            raise PermissionDenied("You may view this study but not change it.")
        serializer = self.UpdateInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        questions = values.pop("survey_questions", None)
        new_status = values.pop("status", None)
        try:
            study = study_update(
                study=study, values=values, status=new_status,
                survey_questions=None if questions is None else _question_specs(questions),
            )
        except DjangoValidationError as exc:
            raise _service_call_errors(exc) from None
        return Response(self.OutputSerializer(study_with_relations(study)).data)


class StudyListCreateApi(APIView):
    """The studies you own or that are shared with you (site admins: all); create a draft study."""

    class ListOutputSerializer(StudyDetailApi.OutputSerializer):
        judgment_total = serializers.IntegerField()
        participant_total = serializers.IntegerField()
        pair_total = serializers.IntegerField()

        class Meta(StudyDetailApi.OutputSerializer.Meta):
            ref_name = "StudyListItem"
            fields = [*StudyDetailApi.OutputSerializer.Meta.fields, "judgment_total", "participant_total", "pair_total"]

    class CreateInputSerializer(_StudyConfigInputSerializer):
        class Meta:
            ref_name = "StudyCreateInput"

    @extend_schema(operation_id="study_list", responses={200: ListOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        studies = study_overview_list_for_user(user=request.user).prefetch_related(
            "survey_questions", Prefetch("collaborators", StudyCollaborator.objects.select_related("user"))
        )
        return Response(self.ListOutputSerializer(studies, many=True).data)

    @extend_schema(
        operation_id="study_create",
        request=CreateInputSerializer,
        responses={201: StudyDetailApi.OutputSerializer, 400: _ERROR_RESPONSE},
    )
    def post(self, request: Request) -> Response:
        serializer = self.CreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        values = dict(serializer.validated_data)
        questions = _question_specs(values.pop("survey_questions", []))
        try:
            study = study_create(owner=request.user, values=values, survey_questions=questions)
        except DjangoValidationError as exc:
            raise _service_call_errors(exc) from None
        return Response(
            StudyDetailApi.OutputSerializer(study_with_relations(study)).data, status=status.HTTP_201_CREATED
        )


def study_with_relations(study: Study) -> Study:
    """Re-read a study with what the output serializer nests (three queries, whatever the sizes)."""
    return (
        Study.objects.select_related("owner")
        .prefetch_related(
            "survey_questions", Prefetch("collaborators", StudyCollaborator.objects.select_related("user"))
        )
        .get(pk=study.pk)
    )


class PromptPagination(CursorPagination):
    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class PromptListApi(APIView):
    """A study's prompts with their candidate responses, oldest first (cursor-paginated)."""

    pagination_class = PromptPagination

    class OutputSerializer(serializers.Serializer):
        class ResponseOutputSerializer(serializers.Serializer):
            id = serializers.IntegerField()
            text = serializers.CharField()
            source = serializers.CharField()
            content_hash = serializers.CharField()

            class Meta:
                ref_name = "CandidateResponse"

        id = serializers.IntegerField()
        text = serializers.CharField()
        external_id = serializers.CharField()
        content_hash = serializers.CharField()
        created_at = serializers.DateTimeField()
        responses = ResponseOutputSerializer(many=True)

        class Meta:
            ref_name = "Prompt"

    @extend_schema(operation_id="study_prompt_list", responses={200: OutputSerializer(many=True), 404: _ERROR_RESPONSE})
    def get(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(prompt_list_with_responses(study=study), request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class CollaboratorAddApi(APIView):
    """Share a study with another researcher (owner or site admin only)."""

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        role = serializers.ChoiceField(choices=StudyCollaborator.Role.choices, default=StudyCollaborator.Role.VIEWER)

        class Meta:
            ref_name = "CollaboratorInput"

    @extend_schema(
        operation_id="study_collaborator_add",
        request=InputSerializer,
        responses={
            201: StudyDetailApi.OutputSerializer.CollaboratorOutputSerializer,
            400: _ERROR_RESPONSE, 403: _ERROR_RESPONSE, 404: _ERROR_RESPONSE,
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        study = _study_get_for_manager(request=request, slug=slug)  # before validating: see StudyDetailApi.patch
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = get_user_model().objects.filter(username=serializer.validated_data["username"]).first()
        if user is None:
            raise ApiValidationError({"username": ["No researcher with this username."]})
        try:
            collaborator = collaborator_add(study=study, user=user, role=serializer.validated_data["role"])
        except DjangoValidationError as exc:
            raise _service_call_errors(exc) from None
        output = StudyDetailApi.OutputSerializer.CollaboratorOutputSerializer(collaborator)
        return Response(output.data, status=status.HTTP_201_CREATED)


class CollaboratorRemoveApi(APIView):
    """Stop sharing a study with a researcher (owner or site admin only)."""

    @extend_schema(
        operation_id="study_collaborator_remove",
        request=None,
        responses={204: None, 403: _ERROR_RESPONSE, 404: _ERROR_RESPONSE},
    )
    def delete(self, request: Request, slug: str, username: str) -> Response:
        study = _study_get_for_manager(request=request, slug=slug)
        # A NUL is no username (and PostgreSQL refuses it in a query parameter).
        user = None if "\x00" in username else get_user_model().objects.filter(username=username).first()
        if user is None or not collaborator_remove(study=study, user=user):
            raise NotFound("This researcher is not a collaborator on the study.")
        return Response(status=status.HTTP_204_NO_CONTENT)


def _study_get_for_manager(*, request: Request, slug: str) -> Study:
    study = study_get_for_user(slug=slug, user=request.user)
    if not study_user_can_manage(study=study, user=request.user):
        raise PermissionDenied("Only the study's owner manages its collaborators.")
    return study

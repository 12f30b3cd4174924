"""Researcher API for judgments, in the comparison format (the one imports read and exports write)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Judgment
from annotation.selectors_research import judgment_list_for_user
from elicitation.selectors import study_get_for_user


class JudgmentPagination(CursorPagination):
    # Cursor (not page-number) pagination: a client paging through a running study neither skips
    # nor repeats judgments while new ones arrive, and no COUNT(*) runs on every page.
    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class _BlankAsNullCharField(serializers.CharField):
    """The comparison format writes a missing rationale as null; the database stores ""."""

    def to_representation(self, value: str) -> str | None:
        return value or None


class JudgmentListApi(APIView):
    """Judgments of the studies you may see, oldest first, optionally filtered."""

    pagination_class = JudgmentPagination

    class FilterSerializer(serializers.Serializer):
        study = serializers.SlugField(required=False, help_text="A study's slug (404 if you may not see it).")
        participant = serializers.CharField(required=False, max_length=200, help_text="A participant's external id.")
        since = serializers.DateTimeField(required=False, help_text="answered_at ≥ since (ISO 8601).")
        until = serializers.DateTimeField(required=False, help_text="answered_at < until (ISO 8601).")

        class Meta:
            ref_name = "JudgmentFilter"

        def validate(self, attrs: dict[str, object]) -> dict[str, object]:
            since, until = attrs.get("since"), attrs.get("until")
            if since is not None and until is not None and since >= until:  # type: ignore[operator]
                raise serializers.ValidationError({"until": "until must be later than since."})
            return attrs

    class OutputSerializer(serializers.Serializer):
        prompt = serializers.CharField(source="pair.prompt.text")
        response_a = serializers.CharField(source="response_a.text", help_text="The response shown first (left).")
        response_b = serializers.CharField(source="response_b.text")
        choice = serializers.ChoiceField(choices=Judgment.Choice.choices, help_text="Relative to response_a/b.")
        annotator = serializers.CharField(source="participant.external_id")
        strength = serializers.IntegerField(allow_null=True, help_text="1..len(strength_labels), or null.")
        rationale = _BlankAsNullCharField(allow_null=True)
        annotator_attributes = serializers.DictField(source="participant.attributes", child=serializers.JSONField())
        id = serializers.SerializerMethodField()
        created_at = serializers.DateTimeField(source="answered_at")
        study = serializers.CharField(source="study.slug")
        attention_check = serializers.BooleanField(source="is_attention_check")
        attention_passed = serializers.BooleanField(allow_null=True)
        served_at = serializers.DateTimeField(allow_null=True)
        answered_at = serializers.DateTimeField()
        policy = serializers.CharField()
        origin = serializers.ChoiceField(choices=Judgment.Origin.choices)

        class Meta:
            ref_name = "Judgment"

        def get_id(self, judgment: Judgment) -> str:
            """Stable id of the comparison, as exports write it: the imported id, else the one-time
            served id, else study-slug and row id."""
            if judgment.external_id:
                return judgment.external_id
            if judgment.served_pair_id:
                return str(judgment.served_pair_id)
            return f"{judgment.study.slug}-{judgment.pk}"

    @extend_schema(
        operation_id="judgment_list",
        parameters=[FilterSerializer],
        responses={
            200: OutputSerializer(many=True),
            400: OpenApiResponse(description="A malformed filter."),
            404: OpenApiResponse(description="No such study, or one you may not see."),
        },
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        slug = filters.validated_data.get("study")
        study = study_get_for_user(slug=slug, user=request.user) if slug else None
        judgments = judgment_list_for_user(
            user=request.user,
            study=study,
            participant_external_id=filters.validated_data.get("participant"),
            since=filters.validated_data.get("since"),
            until=filters.validated_data.get("until"),
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(judgments, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)

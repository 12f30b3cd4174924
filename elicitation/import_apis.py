"""API: import prompts and responses, or existing comparisons, into a study."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_parsers import JSONParser
from elicitation.imports import ImportRejected, import_bytes_read, import_file_run, import_records_run
from elicitation.selectors import study_get_for_user

REJECTED = "Import rejected; nothing was written."


class ImportRejectedSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.ListField(child=serializers.CharField(), help_text="`line N: what is wrong`, at most ~20.")


class _StudyImportApi(APIView):
    """Shared body of the two import endpoints: a multipart `file`, or JSON `{"lines": [...]}`."""

    kind = ""
    parser_classes = [JSONParser, MultiPartParser]
    OutputSerializer: type[serializers.Serializer]  # the counts of the kind's result

    class FileInputSerializer(serializers.Serializer):
        file = serializers.FileField(help_text="A UTF-8 JSONL (or, for responses, CSV) file.")

        class Meta:
            ref_name = "ImportFileInput"

    class LinesInputSerializer(serializers.Serializer):
        lines = serializers.ListField(
            child=serializers.JSONField(), allow_empty=False,
            help_text="The objects a JSONL file would hold, one per list item; errors are numbered from 1.",
        )

        class Meta:
            ref_name = "ImportLinesInput"

    def post(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user, edit=True)
        upload = request.FILES.get("file")
        try:
            if upload is not None:
                data = import_bytes_read(stream=upload)
                result: Any = import_file_run(study=study, kind=self.kind, data=data, filename=upload.name)
            else:
                lines = self.LinesInputSerializer(data=request.data)
                if not lines.is_valid():
                    return Response(
                        {"detail": 'Send a multipart "file", or a JSON body {"lines": [...]}.', "errors": lines.errors},
                        status=status.HTTP_400_BAD_REQUEST,
                    )
                result = import_records_run(study=study, kind=self.kind, records=lines.validated_data["lines"])
        except ImportRejected as rejected:
            return Response({"detail": REJECTED, "errors": rejected.errors}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            self.OutputSerializer({**vars(result), "summary": result.summary()}).data,
            status=status.HTTP_201_CREATED,
        )


class ResponsesImportApi(_StudyImportApi):
    kind = "responses"

    class OutputSerializer(serializers.Serializer):
        summary = serializers.CharField()
        prompts_created = serializers.IntegerField()
        prompts_existing = serializers.IntegerField()
        responses_created = serializers.IntegerField()
        responses_existing = serializers.IntegerField()
        attention_checks_created = serializers.IntegerField()
        attention_checks_existing = serializers.IntegerField()
        pairs_created = serializers.IntegerField()

        class Meta:
            ref_name = "ResponsesImportOutput"

    @extend_schema(
        operation_id="study_import_responses",
        summary="Import prompts and candidate responses",
        description=(
            "JSONL objects `{\"prompt\", \"responses\": [...], \"prompt_id\"?, \"sources\"?, \"attention_check\"?}` "
            "or a CSV with `prompt,response[,prompt_id,source]`. All or nothing; re-imported content is reused."
        ),
        request={
            "multipart/form-data": _StudyImportApi.FileInputSerializer,
            "application/json": _StudyImportApi.LinesInputSerializer,
        },
        responses={201: OutputSerializer, 400: ImportRejectedSerializer},
        examples=[OpenApiExample(
            "Two prompts", request_only=True, media_type="application/json",
            value={"lines": [
                {"prompt": "How do I boil an egg?", "responses": ["Boil it 8 minutes.", "Simmer 7 minutes, then cool."]},
                {"prompt": "What is 2 + 2?", "responses": ["4.", "Purple."], "attention_check": True},
            ]},
        )],
    )
    def post(self, request: Request, slug: str) -> Response:
        return super().post(request, slug)


class ComparisonsImportApi(_StudyImportApi):
    kind = "comparisons"

    class OutputSerializer(serializers.Serializer):
        summary = serializers.CharField()
        judgments_created = serializers.IntegerField()
        judgments_existing = serializers.IntegerField()
        prompts_created = serializers.IntegerField()
        responses_created = serializers.IntegerField()
        pairs_created = serializers.IntegerField()
        participants_created = serializers.IntegerField()

        class Meta:
            ref_name = "ComparisonsImportOutput"

    @extend_schema(
        operation_id="study_import_comparisons",
        summary="Import existing comparisons (comparison format)",
        description=(
            "JSONL objects `{\"prompt\", \"response_a\", \"response_b\", \"choice\": \"a\"|\"b\"|\"tie\", \"annotator\", "
            "\"strength\", \"rationale\", \"annotator_attributes\", \"id\"?, \"created_at\"?}`. All or nothing; "
            "a comparison whose id is already in the study is skipped."
        ),
        request={
            "multipart/form-data": _StudyImportApi.FileInputSerializer,
            "application/json": _StudyImportApi.LinesInputSerializer,
        },
        responses={201: OutputSerializer, 400: ImportRejectedSerializer},
    )
    def post(self, request: Request, slug: str) -> Response:
        return super().post(request, slug)

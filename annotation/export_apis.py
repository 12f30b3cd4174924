"""API: prepare an export file in the background, watch it, download it."""

from __future__ import annotations

from django.http import FileResponse, Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.exports import (
    CONTENT_TYPES,
    export_filename,
    export_job_create,
    export_job_file,
    export_job_get_for_user,
    export_jobs_resend_due,
)
from annotation.models import ExportJob
from config.api_errors import FileOrJsonErrorRenderer
from elicitation.selectors import study_get_for_user


class ExportJobOutputSerializer(serializers.ModelSerializer):
    study = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    progress = serializers.FloatField(help_text="0 to 1.")
    download_url = serializers.SerializerMethodField(help_text="Set once the job is done.")
    waiting_for_broker = serializers.BooleanField(
        read_only=True, help_text="Queued, but the task queue could not be reached yet; polling this job "
        "sends it again once the queue is back.",
    )

    class Meta:
        model = ExportJob
        ref_name = "ExportJob"
        fields = [
            "id", "study", "format", "include_attention_checks", "pseudonymize", "status",
            "total_rows", "rows_written", "progress", "error", "created_at", "finished_at", "download_url",
            "waiting_for_broker",
        ]

    def get_download_url(self, job: ExportJob) -> str | None:
        if job.status != ExportJob.Status.DONE:
            return None
        url = reverse("api-export-download", kwargs={"job_id": job.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class ExportCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        format = serializers.ChoiceField(choices=ExportJob.Format.choices)
        include_attention_checks = serializers.BooleanField(default=False)
        pseudonymize = serializers.BooleanField(
            default=True, help_text="Salted hashes instead of the participants' recruitment ids (default); "
            "false exports the ids themselves.",
        )

        class Meta:
            ref_name = "ExportCreateInput"

    @extend_schema(
        operation_id="study_export_create",
        summary="Prepare an export file in the background",
        request=InputSerializer,
        responses={202: ExportJobOutputSerializer},
    )
    def post(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)  # first: a 400 would leak the slug
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = export_job_create(
            study=study, user=request.user, export_format=serializer.validated_data["format"],
            include_attention_checks=serializer.validated_data["include_attention_checks"],
            pseudonymize=serializer.validated_data["pseudonymize"],
        )
        return Response(ExportJobOutputSerializer(job, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class ExportDetailApi(APIView):
    @extend_schema(operation_id="export_detail", summary="An export job's status and progress",
                   responses={200: ExportJobOutputSerializer})
    def get(self, request: Request, job_id: int) -> Response:
        job = export_job_get_for_user(job_id=job_id, user=request.user)
        # A job created while the broker was down is sent by the client's polling, once it is back.
        if export_jobs_resend_due(study=job.study, job_id=job.pk):
            job.refresh_from_db()
        return Response(ExportJobOutputSerializer(job, context={"request": request}).data)


class _FileRenderer(FileOrJsonErrorRenderer):
    """Lets a client that asks for `application/octet-stream` (or Parquet) get the file, not a 406."""

    media_type = "application/octet-stream"
    format = "file"


class ExportDownloadApi(APIView):
    renderer_classes = [JSONRenderer, _FileRenderer]

    @extend_schema(
        operation_id="export_download",
        summary="Download a finished export file",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The file."),
            409: OpenApiResponse(description="The job is not done yet."),
        },
    )
    def get(self, request: Request, job_id: int) -> FileResponse | Response:
        job = export_job_get_for_user(job_id=job_id, user=request.user)
        if job.status != ExportJob.Status.DONE:
            return Response({"detail": f"The export is {job.status}, not done yet."}, status=status.HTTP_409_CONFLICT)
        path = export_job_file(job=job)
        if path is None:
            raise Http404("The export file is gone.")
        return FileResponse(
            path.open("rb"), as_attachment=True, filename=export_filename(study=job.study, export_format=job.format),
            content_type=CONTENT_TYPES[job.format],
        )

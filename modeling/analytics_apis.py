"""API of the insight dashboard, under /api/v1/: the latest analysis as JSON, its figures, recompute."""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_errors import FileOrJsonErrorRenderer
from elicitation.selectors import study_get_for_user
from modeling.analytics_selectors import (
    analytics_latest_done,
    analytics_latest_state,
)
from modeling.models import AnalyticsSnapshot


def _state(snapshot: AnalyticsSnapshot) -> dict[str, Any]:
    return {
        "id": snapshot.pk, "status": snapshot.status, "progress": snapshot.progress,
        "progress_message": snapshot.progress_message, "error": snapshot.error,
        "created_at": snapshot.created_at, "finished_at": snapshot.finished_at,
    }


class StudyAnalyticsApi(APIView):
    @extend_schema(
        operation_id="study_analytics",
        summary="The latest insight analysis of a study",
        description=(
            "Quality per participant (attention pass rate, self-consistency, time outliers, reliability within "
            "their latent group by a one-coin Dawid-Skene EM, flags), Krippendorff's alpha overall / per group / "
            "per demographic value with bootstrap CIs, the group map (the model's simplex weights when a model "
            "is current), groups with their most and least preferred responses, Cramér's V of group vs each "
            "attribute, divisive pairs, bridging responses and per-prompt Bradley-Terry rankings. Figures: "
            "`plots` lists download URLs of this API (SVG and PNG). 404 until a first analysis has finished."
        ),
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 404: OpenApiResponse(description="No such study "
                                                                                   "or no analysis yet.")},
    )
    def get(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)
        snapshot = analytics_latest_done(study=study, with_plots=False)
        if snapshot is None:
            raise Http404("No analysis of this study yet.")
        from modeling.analytics_plots import plot_names, ranking_plot_names

        names = [*plot_names(data=snapshot.data), *ranking_plot_names(data=snapshot.data)]
        base = reverse("api-study-analytics", kwargs={"slug": study.slug})
        return Response({
            "id": snapshot.pk, "created_at": snapshot.created_at, "finished_at": snapshot.finished_at,
            "duration_s": snapshot.duration_s, "run": snapshot.run_id, **snapshot.data,
            "plots": {name: {fmt: f"{base}/plots/{name}.{fmt}" for fmt in ("svg", "png")} for name in names},
        })

    @extend_schema(
        operation_id="study_analytics_recompute",
        summary="Queue a recomputation of a study's insight analysis",
        description="Editors only. Runs as a Celery task; poll `analytics/status` for its progress. A request "
                    "while one is queued or running joins it (200 instead of 202).",
        request=None,
        responses={202: OpenApiResponse(OpenApiTypes.OBJECT, description="Queued."),
                   200: OpenApiResponse(OpenApiTypes.OBJECT, description="One was already under way."),
                   404: OpenApiResponse(description="No such study, or not an editor of it.")},
    )
    def post(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user, edit=True)
        from modeling.analytics_services import study_analytics_request

        snapshot, created = study_analytics_request(study_id=study.pk, requested_by=request.user)
        return Response(_state(snapshot), status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK)


class StudyAnalyticsStatusApi(APIView):
    @extend_schema(
        operation_id="study_analytics_status",
        summary="Progress of a study's latest insight computation",
        description="Status (queued, running, done, failed), progress from 0 to 1 with a message, and the "
                    "error of a failed one. 404 before any computation was requested.",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT),
                   404: OpenApiResponse(description="No such study, or nothing requested yet.")},
    )
    def get(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)
        snapshot = analytics_latest_state(study=study)
        if snapshot is None:
            raise Http404("No analysis of this study was requested yet.")
        return Response(_state(snapshot))


class _SvgRenderer(FileOrJsonErrorRenderer):
    media_type = "image/svg+xml"
    format = "svg"


class _PngRenderer(FileOrJsonErrorRenderer):
    media_type = "image/png"
    format = "png"


class StudyAnalyticsPlotApi(APIView):
    renderer_classes = [JSONRenderer, _SvgRenderer, _PngRenderer]

    @extend_schema(
        operation_id="study_analytics_plot",
        summary="One figure of the latest insight analysis, as SVG or PNG",
        description="The names are the keys of `plots` in the analysis: map, map--<attribute>, agreement, "
                    "reliability, times, divisive, bridging, group_sizes and ranking--<prompt id>.",
        parameters=[OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=["svg", "png"])],
        responses={(200, "image/svg+xml"): OpenApiResponse(OpenApiTypes.BINARY),
                   (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY),
                   404: OpenApiResponse(description="No such study, analysis or figure.")},
    )
    def get(self, request: Request, slug: str, name: str, fmt: str) -> HttpResponse:
        from modeling.analytics_views import plot_download

        return plot_download(study=study_get_for_user(slug=slug, user=request.user), name=name, fmt=fmt)

"""API of the insight dashboard, under /api/v1/: the latest analysis as JSON."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from elicitation.selectors import study_get_for_user
from modeling.analytics_selectors import analytics_latest_done


class StudyAnalyticsApi(APIView):
    @extend_schema(
        operation_id="study_analytics",
        summary="The latest insight analysis of a study",
        description=(
            "Quality per participant (attention pass rate, self-consistency, time outliers, reliability within "
            "their latent group, flags), Krippendorff's alpha overall / per group / per demographic value with "
            "bootstrap CIs, groups with their most and least preferred responses, Cramér's V of group vs each "
            "attribute, divisive pairs, bridging responses and per-prompt Bradley-Terry rankings. Figures: "
            "`plots` lists download URLs. 404 until a first analysis has finished."
        ),
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 404: OpenApiResponse(description="No such study "
                                                                                   "or no analysis yet.")},
    )
    def get(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)
        snapshot = analytics_latest_done(study=study, with_plots=False)
        if snapshot is None:
            raise Http404("No analysis of this study yet.")
        from modeling.analytics_plots import plot_names

        base = f"/studies/{study.slug}/insight/plots/"
        return Response({
            "id": snapshot.pk, "created_at": snapshot.created_at, "finished_at": snapshot.finished_at,
            "duration_s": snapshot.duration_s, "run": snapshot.run_id, **snapshot.data,
            "plots": {name: {"svg": f"{base}{name}.svg", "png": f"{base}{name}.png"}
                      for name in plot_names(data=snapshot.data)},
        })

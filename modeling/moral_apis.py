"""Moral-graph API: the same JSON and GraphML exports as the researcher pages.

Token or session authentication; a study the user may not see is a 404, never a 403.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api_errors import FileOrJsonErrorRenderer
from elicitation.selectors import study_get_for_user
from modeling.moral_services import moral_graph_export, moral_graph_graphml


class _GraphmlRenderer(FileOrJsonErrorRenderer):
    """Lets clients ask for GraphML with `Accept: application/graphml+xml` (errors stay JSON)."""

    media_type = "application/graphml+xml"
    format = "graphml"


class StudyMoralGraphApi(APIView):
    @extend_schema(
        operation_id="study_moral_graph",
        summary="A study's moral graphs as JSON",
        description=(
            "Questions, contexts, values cards (with `canonical_id` for merged cards), canonical cards with "
            "their members, every voted directed edge with answer counts, wiser likelihood "
            "((wiser − not wiser) / total), vote entropy (bits) and whether it is kept, PageRank scores per "
            "context, votes, pseudonymised participants with their attributes (the pseudonyms of the "
            "comparison export), and legitimacy answer counts. Computed from the current votes."
        ),
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT), 404: OpenApiResponse(description="No such study.")},
    )
    def get(self, request: Request, slug: str) -> Response:
        study = study_get_for_user(slug=slug, user=request.user)
        return Response(moral_graph_export(study=study))


class StudyMoralGraphGraphmlApi(APIView):
    renderer_classes = [JSONRenderer, _GraphmlRenderer]

    @extend_schema(
        operation_id="study_moral_graph_graphml",
        summary="A study's moral graphs as GraphML",
        description="A node per canonical values card (context, texts, score, members), an edge per voted "
                    "directed pair (answer counts, likelihood, entropy, kept). Reads with networkx.read_graphml.",
        responses={(200, "application/graphml+xml"): OpenApiResponse(OpenApiTypes.BINARY),
                   404: OpenApiResponse(description="No such study.")},
    )
    def get(self, request: Request, slug: str) -> HttpResponse:
        study = study_get_for_user(slug=slug, user=request.user)
        response = HttpResponse(moral_graph_graphml(study=study), content_type="application/graphml+xml")
        response["Content-Disposition"] = f'attachment; filename="{study.slug}-moral-graph.graphml"'
        return response

"""Every API route, under /api/v1/. Each app contributes its own module."""

from django.urls import include, path

urlpatterns = [
    path("", include("elicitation.api_urls")),
    path("", include("elicitation.import_api_urls")),
    path("", include("annotation.api_urls")),
    path("", include("annotation.participant_api_urls")),
    path("", include("annotation.export_api_urls")),
    path("", include("modeling.api_urls")),
    path("", include("modeling.moral_api_urls")),
    path("", include("modeling.analytics_api_urls")),
]

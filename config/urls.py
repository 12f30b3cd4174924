from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="elicitation:study_list", permanent=False)),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Researcher pages.
    path("studies/", include("elicitation.urls")),
    path("studies/", include("elicitation.import_urls")),
    path("studies/", include("annotation.researcher_urls")),
    path("studies/", include("annotation.export_urls")),
    path("studies/", include("modeling.urls")),
    path("studies/", include("modeling.moral_urls")),
    path("studies/", include("modeling.analytics_urls")),
    # Annotator pages: one link per study.
    path("s/", include("annotation.moral_urls")),
    path("s/", include("annotation.urls")),
    # API.
    path("api/v1/", include("config.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]

from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView


def _site_admin_only(request: HttpRequest) -> bool:
    """The admin lists every study's data unscoped: only site admins (superusers) may use it,
    whatever `is_staff` and model permissions say (those would open it study-blind)."""
    return request.user.is_active and request.user.is_superuser


admin.site.has_permission = _site_admin_only  # type: ignore[method-assign]

# The API docs are third-party bundles (served from our static files): Swagger UI and Redoc set
# inline styles, and Redoc runs its search in a worker made from a blob: URL. Scripts stay 'self'
# (the split view serves Swagger's start-up script as a file, templates/drf_spectacular/redoc.html
# has no inline script).
_docs_csp = csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["'self'", "blob:"]})

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
    path("api/docs/", _docs_csp(SpectacularSwaggerSplitView.as_view(url_name="schema")), name="swagger-ui"),
    path("api/redoc/", _docs_csp(SpectacularRedocView.as_view(url_name="schema")), name="redoc"),
]

"""Export endpoints, under /api/v1/."""

from django.urls import path

from annotation.export_apis import ExportCreateApi, ExportDetailApi, ExportDownloadApi

urlpatterns = [
    path("studies/<slug:slug>/exports", ExportCreateApi.as_view(), name="api-export-create"),
    path("exports/<int:job_id>", ExportDetailApi.as_view(), name="api-export-detail"),
    path("exports/<int:job_id>/download", ExportDownloadApi.as_view(), name="api-export-download"),
]

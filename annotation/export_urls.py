"""Researcher export page and its job fragments, under /studies/."""

from django.urls import path

from annotation.export_views import export_download_view, export_job_status_view, export_view

app_name = "exports"
urlpatterns = [
    path("<slug:slug>/export/", export_view, name="export"),
    path("<slug:slug>/export/jobs/<int:job_id>/", export_job_status_view, name="job_status"),
    path("<slug:slug>/export/jobs/<int:job_id>/download/", export_download_view, name="download"),
]

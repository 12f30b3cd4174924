"""A study's reward model pages, under /studies/."""

from django.urls import path

from modeling import views

app_name = "modeling"
urlpatterns = [
    path("<slug:slug>/model/", views.study_model_view, name="study_model"),
    path("<slug:slug>/model/train/", views.training_run_request_view, name="train"),
    path("<slug:slug>/model/progress/", views.training_progress_view, name="progress"),
    path("<slug:slug>/model/runs/<int:run_id>/download/", views.training_run_download_view, name="download"),
]

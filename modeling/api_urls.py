"""Reward-model API, under /api/v1/ (no trailing slashes)."""

from django.urls import path

from modeling.apis import StudyPredictApi, StudyTrainingRunsApi, TrainingRunDetailApi, TrainingRunDownloadApi

urlpatterns = [
    path("studies/<slug:slug>/predict", StudyPredictApi.as_view(), name="api-study-predict"),
    path("studies/<slug:slug>/training-runs", StudyTrainingRunsApi.as_view(), name="api-study-training-runs"),
    path("training-runs/<int:run_id>", TrainingRunDetailApi.as_view(), name="api-training-run-detail"),
    path("training-runs/<int:run_id>/model.zip", TrainingRunDownloadApi.as_view(), name="api-training-run-download"),
]

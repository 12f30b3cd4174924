"""Judgments API, under /api/v1/."""

from django.urls import path

from annotation.apis import JudgmentListApi

urlpatterns = [
    path("judgments", JudgmentListApi.as_view(), name="api-judgment-list"),
]

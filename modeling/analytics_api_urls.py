"""Insight API, under /api/v1/ (no trailing slashes)."""

from django.urls import path

from modeling.analytics_apis import StudyAnalyticsApi

urlpatterns = [
    path("studies/<slug:slug>/analytics", StudyAnalyticsApi.as_view(), name="api-study-analytics"),
]

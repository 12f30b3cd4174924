"""Insight API, under /api/v1/ (no trailing slashes)."""

from django.urls import path, re_path

from modeling.analytics_apis import StudyAnalyticsApi, StudyAnalyticsPlotApi, StudyAnalyticsStatusApi

urlpatterns = [
    path("studies/<slug:slug>/analytics", StudyAnalyticsApi.as_view(), name="api-study-analytics"),
    path("studies/<slug:slug>/analytics/status", StudyAnalyticsStatusApi.as_view(), name="api-study-analytics-status"),
    re_path(r"^studies/(?P<slug>[-a-zA-Z0-9_]+)/analytics/plots/(?P<name>[-a-zA-Z0-9_ .]+?)\.(?P<fmt>svg|png)$",
            StudyAnalyticsPlotApi.as_view(), name="api-study-analytics-plot"),
]

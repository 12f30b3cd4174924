"""Moral-graph API, under /api/v1/ (no trailing slashes)."""

from django.urls import path

from modeling.moral_apis import StudyMoralGraphApi, StudyMoralGraphGraphmlApi

urlpatterns = [
    path("studies/<slug:slug>/moral-graph", StudyMoralGraphApi.as_view(), name="api-study-moral-graph"),
    path(
        "studies/<slug:slug>/moral-graph.graphml", StudyMoralGraphGraphmlApi.as_view(),
        name="api-study-moral-graph-graphml",
    ),
]

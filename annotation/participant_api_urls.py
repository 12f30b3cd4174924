"""Participant API, under /api/v1/."""

from django.urls import path

from annotation.participant_apis import ParticipantCreateApi, ParticipantJudgmentApi, ParticipantNextApi

urlpatterns = [
    path("studies/<slug:slug>/participants", ParticipantCreateApi.as_view(), name="api-participant-create"),
    path("participant/next", ParticipantNextApi.as_view(), name="api-participant-next"),
    path("participant/judgments", ParticipantJudgmentApi.as_view(), name="api-participant-judgment"),
]

"""Participant pages of moral-graph mode: /s/<slug>/values/… (the study link itself is annotation's)."""

from django.urls import path

from annotation import moral_views

app_name = "values"
urlpatterns = [
    path("<slug:slug>/values/", moral_views.start, name="start"),
    path("<slug:slug>/values/interview/<int:card_id>/", moral_views.interview, name="interview"),
    path("<slug:slug>/values/card/<int:card_id>/", moral_views.card_edit, name="card"),
    path("<slug:slug>/values/card/<int:card_id>/similar/", moral_views.similar, name="similar"),
    path("<slug:slug>/values/vote/", moral_views.vote, name="vote"),
    path("<slug:slug>/values/legitimacy/", moral_views.legitimacy, name="legitimacy"),
    path("<slug:slug>/values/done/", moral_views.done, name="done"),
]

"""Participant pages: /s/<slug>/ is the one link a study hands to recruitment platforms."""

from django.urls import path

from annotation import views

app_name = "annotation"
urlpatterns = [
    path("<slug:slug>/", views.entry, name="entry"),
    path("<slug:slug>/consent/", views.consent, name="consent"),
    path("<slug:slug>/declined/", views.declined, name="declined"),
    path("<slug:slug>/survey/", views.survey, name="survey"),
    path("<slug:slug>/instructions/", views.instructions, name="instructions"),
    path("<slug:slug>/judge/", views.judge, name="judge"),
    path("<slug:slug>/done/", views.done, name="done"),
    path("<slug:slug>/withdraw/", views.withdraw, name="withdraw"),
    path("<slug:slug>/withdrawn/", views.withdrawn, name="withdrawn"),
]

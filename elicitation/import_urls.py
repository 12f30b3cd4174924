"""Researcher import page, under /studies/."""

from django.urls import path

from elicitation.import_views import import_view

app_name = "imports"
urlpatterns = [
    path("<slug:slug>/import/", import_view, name="import"),
]

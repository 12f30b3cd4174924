"""The researcher's study page (it reads judgments, so it lives with them in `annotation`)."""

from django.urls import path

from annotation import researcher_views

app_name = "monitor"
urlpatterns = [
    path("<slug:slug>/", researcher_views.study_detail_view, name="study_detail"),
]

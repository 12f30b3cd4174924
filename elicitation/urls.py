"""Researcher pages that configure a study (the study page itself is `monitor:study_detail`)."""

from django.urls import path

from elicitation import views

app_name = "elicitation"
urlpatterns = [
    path("", views.study_list_view, name="study_list"),
    # Must stay before the `<slug>/` study page (annotation.researcher_urls); "new" is a reserved slug.
    path("new/", views.study_create_view, name="study_create"),
    path("<slug:slug>/edit/", views.study_edit_view, name="study_edit"),
    path("<slug:slug>/survey/", views.study_survey_view, name="study_survey"),
    path("<slug:slug>/status/", views.study_status_view, name="study_status"),
    path("<slug:slug>/attention-checks/", views.attention_check_list_view, name="attention_checks"),
    path(
        "<slug:slug>/attention-checks/<int:pair_id>/remove/",
        views.attention_check_remove_view,
        name="attention_check_remove",
    ),
]

"""Researcher pages of moral-graph mode, under /studies/<slug>/values/."""

from django.urls import path

from modeling import moral_views

app_name = "moral"
urlpatterns = [
    path("<slug:slug>/values/", moral_views.moral_overview_view, name="overview"),
    path("<slug:slug>/values/legitimacy/", moral_views.moral_legitimacy_view, name="legitimacy"),
    path("<slug:slug>/values/mode/", moral_views.moral_mode_view, name="mode"),
    path("<slug:slug>/values/questions/", moral_views.moral_question_create_view, name="question_create"),
    path("<slug:slug>/values/questions/<int:question_id>/", moral_views.moral_question_edit_view, name="question_edit"),
    path("<slug:slug>/values/aggregate/", moral_views.moral_aggregate_view, name="aggregate"),
    path("<slug:slug>/values/export.json", moral_views.moral_export_json_view, name="export_json"),
    path("<slug:slug>/values/export.graphml", moral_views.moral_export_graphml_view, name="export_graphml"),
    path("<slug:slug>/values/contexts/<int:context_id>/", moral_views.moral_context_view, name="context"),
    path("<slug:slug>/values/contexts/<int:context_id>/edit/", moral_views.moral_context_edit_view, name="context_edit"),
    path("<slug:slug>/values/contexts/<int:context_id>/cards/", moral_views.moral_card_seed_view, name="card_seed"),
    path(
        "<slug:slug>/values/contexts/<int:context_id>/cards/<int:card_id>/",
        moral_views.moral_card_view, name="card",
    ),
    path("<slug:slug>/values/contexts/<int:context_id>/merge/", moral_views.moral_card_merge_view, name="merge"),
    path("<slug:slug>/values/contexts/<int:context_id>/stories/", moral_views.moral_story_create_view, name="story"),
]

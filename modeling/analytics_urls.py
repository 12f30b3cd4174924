"""Researcher insight pages of a study, under /studies/."""

from django.urls import path, re_path

from modeling import analytics_views as views

app_name = "insight"
urlpatterns = [
    path("<slug:slug>/insight/", views.insight_dashboard_view, name="dashboard"),
    path("<slug:slug>/insight/quality/", views.insight_quality_view, name="quality"),
    path("<slug:slug>/insight/rankings/", views.insight_rankings_view, name="rankings"),
    path("<slug:slug>/insight/recompute/", views.insight_recompute_view, name="recompute"),
    path("<slug:slug>/insight/progress/", views.insight_progress_view, name="progress"),
    path("<slug:slug>/insight/quality/exclude/", views.participant_exclude_view, name="exclude"),
    path("<slug:slug>/insight/quality/revoke/", views.participant_revoke_view, name="revoke"),
    path("<slug:slug>/insight/quality/exclude-by-rule/", views.participants_exclude_rule_view, name="exclude_rule"),
    re_path(r"^(?P<slug>[-a-zA-Z0-9_]+)/insight/plots/(?P<name>[-a-zA-Z0-9_ .]+?)\.(?P<fmt>svg|png)$",
            views.insight_plot_view, name="plot"),
]

"""Reads of the insight dashboard's cached snapshots (one query each)."""

from __future__ import annotations

from elicitation.models import Study
from modeling.models import AnalyticsSnapshot


def analytics_latest_done(*, study: Study, with_plots: bool = True) -> AnalyticsSnapshot | None:
    """The newest finished snapshot of a study, with its data (and figures unless told not to)."""
    snapshots = AnalyticsSnapshot.objects.filter(study=study, status=AnalyticsSnapshot.Status.DONE)
    if not with_plots:
        snapshots = snapshots.defer("plots")
    return snapshots.order_by("-created_at", "-id").first()


def analytics_latest_state(*, study: Study) -> AnalyticsSnapshot | None:
    """The newest snapshot of any status without its payload: is one running, did the last fail?"""
    return (
        AnalyticsSnapshot.objects.filter(study=study).defer("data", "plots")
        .order_by("-created_at", "-id").first()
    )

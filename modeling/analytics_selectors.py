"""Reads of the insight dashboard's cached snapshots (one query each) and of their figures."""

from __future__ import annotations

from elicitation.models import Study
from modeling.models import AnalyticsSnapshot


class NoAnalysis(Exception):
    """The study has no finished analysis yet."""


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


def analytics_plot_get(*, study: Study, name: str, fmt: str) -> bytes:
    """A figure of the latest analysis as a downloadable file: the cached SVG, else drawn now.

    Raises NoAnalysis before a first analysis and UnknownPlot for a name it has no figure for.
    """
    from modeling.analytics_plots import plot_render

    snapshot = analytics_latest_done(study=study, with_plots=(fmt == "svg"))
    if snapshot is None:
        raise NoAnalysis
    if fmt == "svg" and name in snapshot.plots:
        payload = snapshot.plots[name].encode()
    else:
        payload = plot_render(data=snapshot.data, name=name, fmt=fmt)
    if fmt == "svg" and not payload.startswith(b"<?xml"):
        payload = b'<?xml version="1.0" encoding="utf-8"?>\n' + payload
    return payload

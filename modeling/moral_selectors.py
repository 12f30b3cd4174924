"""Reads of moral-graph snapshots."""

from __future__ import annotations

from elicitation.models import MoralContext, Study
from modeling.models import MoralGraphSnapshot


def moral_snapshot_latest(*, context: MoralContext) -> MoralGraphSnapshot | None:
    return MoralGraphSnapshot.objects.filter(context=context).order_by("-created_at", "-id").first()


def moral_snapshot_latest_for_study(*, study: Study) -> MoralGraphSnapshot | None:
    return MoralGraphSnapshot.objects.filter(study=study).order_by("-created_at", "-id").first()


def moral_snapshot_vote_count(*, study_id: int) -> int:
    """How many votes of the study the latest aggregation saw (0 before the first)."""
    latest = MoralGraphSnapshot.objects.filter(study_id=study_id).order_by("-created_at", "-id").first()
    return int(latest.params.get("study_vote_count", 0)) if latest else 0

"""Celery tasks of moral-graph mode: aggregation after new votes and on demand, LLM story drafting.

The tasks take ids and call services (STYLE.md §5). Celery finds this module through
settings.CELERY_IMPORTS (autodiscovery looks at `tasks.py` only).
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError

from annotation.interviewers import llm_is_configured
from annotation.moral_selectors import moral_vote_count
from annotation.moral_services import upgrade_stories_draft as upgrade_stories_draft_service
from elicitation.models import Study
from modeling.moral_selectors import moral_snapshot_vote_count
from modeling.moral_services import moral_graph_snapshots_create

logger = logging.getLogger(__name__)

AGGREGATE_REQUEST_PAUSE_S = 30


@shared_task(
    name="modeling.moral_tasks.moral_graph_aggregate",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=10 * 60,
    time_limit=11 * 60,
)
def moral_graph_aggregate(study_id: int) -> int:
    """Aggregate every context of a study into a new snapshot; returns how many snapshots were stored."""
    try:
        return len(moral_graph_snapshots_create(study_id=study_id))
    except Study.DoesNotExist:
        logger.info("Study %s no longer exists; nothing to aggregate.", study_id)
        return 0


@shared_task(
    name="modeling.moral_tasks.upgrade_stories_draft",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=10 * 60,
    time_limit=11 * 60,
)
def upgrade_stories_draft(context_id: int) -> int:
    """Let the LLM draft stories for a context's new candidate edges; returns how many were written."""
    return upgrade_stories_draft_service(context_id=context_id)


def moral_graph_aggregate_maybe_request(*, study_id: int) -> None:
    """Vote hook (settings.POLYPHONY_MORAL_VOTE_HOOKS): queue an aggregation once
    POLYPHONY_MORAL_AGGREGATE_EVERY votes arrived since the last snapshot. Never raises: the vote is
    already stored, and the next vote checks again."""
    every = settings.POLYPHONY_MORAL_AGGREGATE_EVERY
    if every <= 0:
        return
    try:
        if moral_vote_count(study_id=study_id) - moral_snapshot_vote_count(study_id=study_id) < every:
            return
        # Until the queued aggregation has stored its snapshot, every vote would queue another one;
        # this (per-process) marker holds further requests back for a while. Two processes queueing
        # one each is harmless: each stores a snapshot.
        if cache.add(f"moral-graph-aggregate-queued:{study_id}", True, timeout=AGGREGATE_REQUEST_PAUSE_S):
            moral_graph_aggregate.delay(study_id)
    except Exception:
        logger.exception("Could not queue the moral-graph aggregation of study %s.", study_id)


def upgrade_stories_draft_request(*, context_id: int) -> None:
    """Card hook (settings.POLYPHONY_MORAL_STORY_HOOKS): with the LLM configured, queue story drafting
    for the context that just got a new value. Never raises."""
    if not llm_is_configured():
        return
    try:
        upgrade_stories_draft.delay(context_id)
    except Exception:
        logger.exception("Could not queue story drafting for context %s.", context_id)

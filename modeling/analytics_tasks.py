"""Celery task of the insight dashboard: compute one AnalyticsSnapshot (ids in, a service call)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import OperationalError

from modeling.analytics_services import study_analytics_compute
from modeling.models import AnalyticsSnapshot

logger = logging.getLogger(__name__)


@shared_task(
    name="modeling.analytics_tasks.compute_study_analytics",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    # 20,000 judgments take well under a minute (docs/benchmarks.md); this is a runaway guard.
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
)
def compute_study_analytics(snapshot_id: int) -> str:
    """Compute a queued snapshot; returns its final status. A repeat delivery does nothing."""
    study_id = AnalyticsSnapshot.objects.filter(pk=snapshot_id).values_list("study_id", flat=True).first()
    if study_id is None:
        logger.info("Analytics snapshot %s no longer exists; nothing to do.", snapshot_id)
        return "missing"
    return study_analytics_compute(study_id=study_id, snapshot_id=snapshot_id).status

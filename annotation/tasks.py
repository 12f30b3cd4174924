"""Celery tasks of the annotation app. Each takes ids and calls a service."""

from __future__ import annotations

from celery import Task, shared_task
from django.db import OperationalError

from annotation.exports import export_job_run


@shared_task(
    bind=True,
    # Acknowledged once the job is finished: a worker killed mid-export leaves the message on the
    # broker, which redelivers it, and the next worker takes the job over (export_job_run).
    acks_late=True,
    reject_on_worker_lost=True,
    # A lost database connection before the job is claimed is worth retrying; anything that
    # fails while writing is recorded on the job as failed instead (see export_job_run).
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    # A million judgments write in minutes; an hour means something is stuck.
    soft_time_limit=60 * 60,
    time_limit=60 * 60 + 60,
)
def export_run(self: Task, export_job_id: int) -> str:
    """Write the export file of one ExportJob; returns its final status."""
    delivery = self.request.delivery_info or {}
    # A redelivered (or retried) message may find its job "running" under a dead worker: take it over.
    takeover = bool(delivery.get("redelivered")) or self.request.retries > 0
    return export_job_run(export_job_id=export_job_id, redelivered=takeover).status

"""Celery tasks of the modeling app. `train_reward_model` runs on the `training` queue (GPU workers)."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.db import OperationalError

from modeling.models import TrainingRun
from modeling.services import training_run_execute

logger = logging.getLogger(__name__)

# Generous: 100k judgments train in minutes on a CPU. Past this the run is failed (see
# services.RUNNING_STALE_AFTER, which must stay above the hard limit). The solo pool ignores limits.
TRAINING_SOFT_TIME_LIMIT_S = 4 * 60 * 60
TRAINING_TIME_LIMIT_S = TRAINING_SOFT_TIME_LIMIT_S + 5 * 60


@shared_task(
    bind=True,
    name="modeling.tasks.train_reward_model",
    # Acknowledged only once the run is finished: a worker killed mid-run (or a lost machine)
    # leaves the message on the broker, which redelivers it and the run is redone.
    acks_late=True,
    reject_on_worker_lost=True,
    # A database that is briefly unreachable before the run is claimed is worth another try.
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=TRAINING_SOFT_TIME_LIMIT_S,
    time_limit=TRAINING_TIME_LIMIT_S,
)
def train_reward_model(self: Task, run_id: int) -> str:
    """Train one TrainingRun; returns its final status. A repeat delivery of a finished run does nothing."""
    delivery = self.request.delivery_info or {}
    # A redelivered (or retried) message may find its run "running" under a dead worker: take it over.
    takeover = bool(delivery.get("redelivered")) or self.request.retries > 0
    try:
        return training_run_execute(run_id=run_id, redelivered=takeover).status
    except TrainingRun.DoesNotExist:
        logger.info("Training run %s no longer exists (its study was deleted); nothing to do.", run_id)
        return "missing"


@shared_task(
    name="modeling.tasks.refresh_pair_scores",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
    # Embedding a new pool of 10k pairs takes about a minute on a CPU; scoring, seconds.
    soft_time_limit=30 * 60,
    time_limit=35 * 60,
)
def refresh_pair_scores(run_id: int) -> int:
    """Cache the per-prototype probabilities of every pool pair under a run; returns the pair count."""
    from modeling.pair_scores import PairScoresUnavailable, pair_scores_refresh

    try:
        return pair_scores_refresh(run_id=run_id).n_pairs
    except (TrainingRun.DoesNotExist, PairScoresUnavailable) as exc:
        logger.warning("Pair scores of run %s not refreshed: %s", run_id, exc)
        return 0

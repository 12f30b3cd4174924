"""Automatic retraining: called after each committed judgment (settings.POLYPHONY_JUDGMENT_HOOKS)."""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict

from django.conf import settings

from annotation.selectors_training import judgment_count_for_training
from modeling.models import StudyModel, TrainingRun
from modeling.selectors import study_get_by_id
from modeling.services import training_run_request, training_run_resend_due

logger = logging.getLogger(__name__)

# Counting a study's judgments costs several ms of CPU per judgment on the annotators' hot path, so
# each process checks on every `stride`-th judgment only (stride = every // 20: a retrain starts at
# most 5 % of `retrain_every` judgments per process late). A throttle, not shared state: a lost
# count only delays a check, and the compare-and-swap below still keeps one request per threshold.
_calls: defaultdict[int, itertools.count[int]] = defaultdict(itertools.count)


def retrain_maybe_request(*, study_id: int) -> None:
    """Request a retrain once `retrain_every` judgments arrived since the last request. Never raises.

    It runs inside an annotator's request: whatever goes wrong here is logged, and the annotator's
    judgment (already committed) is unaffected. A request made while the broker is down is kept:
    the run stays queued and unsent, and a later check sends it once the broker is back.
    """
    try:
        _retrain_maybe_request(study_id=study_id)
    except Exception:
        logger.exception("Retrain check for study %s failed; the next judgment will check again.", study_id)


def _retrain_maybe_request(*, study_id: int) -> None:
    state = StudyModel.objects.filter(study_id=study_id).first()
    if state is None:
        # Fetched first so a deleted study fails here, not at commit (PostgreSQL defers the FK check).
        state, _ = StudyModel.objects.get_or_create(study=study_get_by_id(study_id=study_id))
    every = state.retrain_every or settings.POLYPHONY_RETRAIN_EVERY
    if every <= 0:  # POLYPHONY_RETRAIN_EVERY=0 turns automatic retraining off
        return
    if next(_calls[study_id]) % max(1, every // 20):
        return
    # A run requested while the broker was down (or lost by it) goes out now if it is due.
    training_run_resend_due(study_id=study_id)
    count = judgment_count_for_training(study_id=study_id)
    seen = state.judgments_at_last_request
    if count - seen < every:
        return
    # Compare-and-swap: of several judgments crossing the threshold at once, one requests the run.
    if not StudyModel.objects.filter(pk=state.pk, judgments_at_last_request=seen).update(
        judgments_at_last_request=count
    ):
        return
    # Kept even if the broker is down: the request is a queued row, sent by a later check.
    run, created = training_run_request(
        study=study_get_by_id(study_id=study_id), kind=TrainingRun.Kind.PAL_A, groups=None, trigger="auto",
        keep_if_broker_down=True,
    )
    logger.info(
        "Study %s reached %s judgments: %s training run %s.", study_id, count,
        "requested" if created else "an active run already covers it:", run.pk,
    )

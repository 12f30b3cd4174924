"""Automatic retraining after N new judgments, through the judgment hook."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django.utils.module_loading import import_string

from annotation.models import Judgment, Participant
from modeling.models import StudyModel, TrainingRun
from modeling.services import (
    RESEND_QUEUED_AFTER,
    RESEND_UNSENT_AFTER,
    TrainingQueueError,
    training_run_request,
    training_run_resend_due,
)
from modeling.triggers import retrain_maybe_request
from tests.modeling.conftest import PlantedStudy, celery_broker, judgments_add, planted_study_create

pytestmark = pytest.mark.django_db

# The worker tests' Redis database (tests/modeling/test_training_worker.py).
REDIS_URL = os.environ.get("POLYPHONY_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")


def test_the_hook_named_in_settings_is_the_trigger(settings: Any) -> None:
    assert import_string(settings.POLYPHONY_JUDGMENT_HOOKS[0]) is retrain_maybe_request


def test_a_run_is_requested_once_n_new_judgments_arrived(
    planted: PlantedStudy, django_capture_on_commit_callbacks: Any
) -> None:
    StudyModel.objects.create(study=planted.study, retrain_every=100, judgments_at_last_request=0)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        retrain_maybe_request(study_id=planted.study.pk)
    run = TrainingRun.objects.get(study=planted.study)
    assert (run.status, run.trigger, run.kind, run.groups_requested) == ("queued", "auto", "pal-a", None)
    assert len(callbacks) == 1  # the task is enqueued once the run row is committed
    assert StudyModel.objects.get(study=planted.study).judgments_at_last_request == 144


def test_no_run_below_the_threshold(planted: PlantedStudy, settings: Any) -> None:
    settings.POLYPHONY_RETRAIN_EVERY = 200  # the site default applies when the study sets none
    retrain_maybe_request(study_id=planted.study.pk)
    assert not TrainingRun.objects.exists()
    assert StudyModel.objects.get(study=planted.study).judgments_at_last_request == 0


def test_the_count_restarts_from_the_last_request(planted: PlantedStudy) -> None:
    StudyModel.objects.create(study=planted.study, retrain_every=10, judgments_at_last_request=140)
    retrain_maybe_request(study_id=planted.study.pk)
    assert not TrainingRun.objects.exists()
    judgments_add(study=planted.study, count=6)
    retrain_maybe_request(study_id=planted.study.pk)
    assert TrainingRun.objects.filter(study=planted.study, trigger="auto").count() == 1
    assert StudyModel.objects.get(study=planted.study).judgments_at_last_request == 150


def test_attention_checks_do_not_count_towards_a_retrain(planted: PlantedStudy) -> None:
    StudyModel.objects.create(study=planted.study, retrain_every=10, judgments_at_last_request=140)
    judgments_add(study=planted.study, count=6)
    Judgment.objects.filter(participant__external_id="late-annotator").update(is_attention_check=True)
    retrain_maybe_request(study_id=planted.study.pk)
    assert not TrainingRun.objects.exists()


def test_an_active_run_is_not_doubled(planted: PlantedStudy) -> None:
    active = TrainingRun.objects.create(study=planted.study, status="running")
    StudyModel.objects.create(study=planted.study, retrain_every=10)
    retrain_maybe_request(study_id=planted.study.pk)
    assert list(TrainingRun.objects.filter(study=planted.study)) == [active]


def test_zero_turns_automatic_retraining_off(planted: PlantedStudy, settings: Any) -> None:
    settings.POLYPHONY_RETRAIN_EVERY = 0
    retrain_maybe_request(study_id=planted.study.pk)
    assert not TrainingRun.objects.exists()


# Autocommit, as in production: the hook runs after the judgment's commit, so the run row is
# committed at once and the task published right away (no test transaction deferring it).
@pytest.mark.django_db(transaction=True)
def test_a_retrain_requested_while_the_broker_is_down_is_sent_once_it_is_back(
    researcher: Any, caplog: pytest.LogCaptureFixture
) -> None:
    redis_client = _redis_or_skip()
    planted = planted_study_create(owner=researcher)
    StudyModel.objects.create(study=planted.study, retrain_every=10)  # every 10: each call checks
    # Nothing listens on port 1: publishing fails for real (no mock), as with Redis down.
    with celery_broker("redis://127.0.0.1:1/0"):
        retrain_maybe_request(study_id=planted.study.pk)  # must not raise into the annotator's request
        waiting = TrainingRun.objects.get(study=planted.study)
        assert (waiting.status, waiting.trigger, waiting.enqueued_at) == ("queued", "auto", None)
        assert waiting.progress_message.startswith("waiting for the task queue")
        assert "not yet queued (broker unreachable, will retry)" in caplog.text
        # The request is kept, not repeated: the counter moved on, and the next check within the
        # back-off does not even try the broker again.
        assert StudyModel.objects.get(study=planted.study).judgments_at_last_request == 144
        judgments_add(study=planted.study, count=10)
        retrain_maybe_request(study_id=planted.study.pk)
        again = TrainingRun.objects.get(study=planted.study)
        assert again.enqueue_tried_at == waiting.enqueue_tried_at and again.enqueued_at is None
    # The broker is back (a real Redis); once the back-off has passed the next judgment sends it.
    _backdate_send_attempt(run=waiting)
    with celery_broker(REDIS_URL):
        retrain_maybe_request(study_id=planted.study.pk)
    sent = TrainingRun.objects.get(study=planted.study)
    assert sent.status == "queued" and sent.enqueued_at is not None and sent.progress_message == ""
    messages = [json.loads(m) for m in redis_client.lrange("training", 0, -1)]
    assert [m["headers"]["argsrepr"] for m in messages] == [f"({sent.pk},)"]  # one message, this run
    assert TrainingRun.objects.filter(study=planted.study).count() == 1


def test_a_queued_run_whose_process_died_before_sending_is_sent_by_the_next_check(planted: PlantedStudy) -> None:
    # What a web process killed between the commit and the publish leaves behind.
    orphan = TrainingRun.objects.create(study=planted.study, trigger="auto", enqueue_tried_at=None)
    StudyModel.objects.create(study=planted.study, retrain_every=10, judgments_at_last_request=144)
    retrain_maybe_request(study_id=planted.study.pk)
    orphan.refresh_from_db()
    assert orphan.enqueued_at is not None and orphan.enqueue_tried_at is not None
    assert TrainingRun.objects.filter(study=planted.study).count() == 1


def test_a_run_the_broker_lost_is_sent_again_but_a_recent_one_is_not(planted: PlantedStudy) -> None:
    StudyModel.objects.create(study=planted.study, retrain_every=10, judgments_at_last_request=144)
    now = timezone.now()
    recent = TrainingRun.objects.create(study=planted.study, enqueued_at=now, enqueue_tried_at=now)
    assert not training_run_resend_due(study_id=planted.study.pk)
    long_ago = now - RESEND_QUEUED_AFTER - timedelta(seconds=1)
    TrainingRun.objects.filter(pk=recent.pk).update(enqueued_at=long_ago, enqueue_tried_at=long_ago)
    assert training_run_resend_due(study_id=planted.study.pk)
    # Claimed by a compare-and-swap on the attempt time: a second check right after sends nothing.
    assert not training_run_resend_due(study_id=planted.study.pk)
    assert TrainingRun.objects.get(pk=recent.pk).enqueued_at > long_ago


def test_a_researcher_request_while_the_broker_is_down_fails_and_says_so(
    planted: PlantedStudy, django_capture_on_commit_callbacks: Any
) -> None:
    with celery_broker("redis://127.0.0.1:1/0"), pytest.raises(TrainingQueueError):
        with django_capture_on_commit_callbacks(execute=True):
            training_run_request(study=planted.study, trigger="manual")
    failed = TrainingRun.objects.get(study=planted.study)
    assert failed.status == "failed" and "Could not queue the training task" in failed.error


def _backdate_send_attempt(*, run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(
        enqueue_tried_at=timezone.now() - RESEND_UNSENT_AFTER - timedelta(seconds=1)
    )


def _redis_or_skip() -> Any:
    """The real Redis of the worker tests (its own database), emptied of earlier runs' messages."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc}).")
    client.delete("training", "default")
    return client


def test_an_unknown_study_is_logged_not_raised(db: None, caplog: pytest.LogCaptureFixture) -> None:
    retrain_maybe_request(study_id=987654)
    assert "Retrain check for study 987654 failed" in caplog.text


def test_judgments_submitted_by_annotators_trigger_the_retrain(
    researcher: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from annotation.services import judgment_submit, pair_serve_next
    from tests.factories import ParticipantFactory, study_with_pool

    study = study_with_pool(owner=researcher, strength_labels=[])
    StudyModel.objects.create(study=study, retrain_every=3)
    participant = Participant.objects.select_related("study").get(pk=ParticipantFactory(study=study).pk)
    for expected_runs in (0, 0, 1):
        served = pair_serve_next(participant=participant)
        with django_capture_on_commit_callbacks(execute=True):
            judgment_submit(participant=participant, served_id=served.id, choice="a", strength=None, rationale="")
        assert TrainingRun.objects.filter(study=study, trigger="auto").count() == expected_runs
    assert StudyModel.objects.get(study=study).judgments_at_last_request == 3

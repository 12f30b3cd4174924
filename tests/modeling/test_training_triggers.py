"""Automatic retraining after N new judgments, through the judgment hook."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils.module_loading import import_string

from annotation.models import Judgment, Participant
from modeling.models import StudyModel, TrainingRun
from modeling.triggers import retrain_maybe_request
from tests.modeling.conftest import PlantedStudy, celery_broker, judgments_add, planted_study_create

pytestmark = pytest.mark.django_db


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
def test_a_broker_that_is_down_leaves_the_counter_for_the_next_judgment(
    researcher: Any, caplog: pytest.LogCaptureFixture
) -> None:
    planted = planted_study_create(owner=researcher)
    StudyModel.objects.create(study=planted.study, retrain_every=100)
    # Nothing listens on port 1: publishing fails for real (no mock), as with Redis down.
    with celery_broker("redis://127.0.0.1:1/0"):
        retrain_maybe_request(study_id=planted.study.pk)  # must not raise into the annotator's request
    assert StudyModel.objects.get(study=planted.study).judgments_at_last_request == 0
    failed = TrainingRun.objects.get(study=planted.study)
    assert failed.status == "failed" and "Could not queue the training task" in failed.error
    assert "not queued" in caplog.text
    # Once the broker is back, the next judgment requests the run.
    retrain_maybe_request(study_id=planted.study.pk)
    assert TrainingRun.objects.filter(study=planted.study, status="queued").count() == 1
    assert StudyModel.objects.get(study=planted.study).judgments_at_last_request == 144


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

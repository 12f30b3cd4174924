"""`manage.py train_reward_model`: trains in-process or through the queue and prints metrics as JSON."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from config.celery import app as celery_app
from modeling.models import TrainingRun
from tests.factories import StudyFactory
from tests.modeling.conftest import PlantedStudy, planted_study_create

FAST_JSON = json.dumps({"hidden_dim": 32, "latent_dim": 8})


def _train(*args: str) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    call_command("train_reward_model", *args, stdout=out, stderr=err)
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_sync_training_prints_the_metrics_as_json(planted: PlantedStudy) -> None:
    result = _train(planted.study.slug, "--kind", "pal-a", "--groups", "2", "--sync", "--epochs", "60",
                    "--hyperparameters", FAST_JSON)
    run = TrainingRun.objects.get(study=planted.study)
    assert result["run"] == run.pk and result["kind"] == "pal-a" and result["groups"] == 2
    assert result["device"] == "cpu" and result["data_count"] == 144
    held_out = result["metrics"]["held_out"]
    assert held_out["model"]["accuracy"] > held_out["btl"]["accuracy"]
    assert run.trigger == "command" and run.hyperparameters == {"hidden_dim": 32, "latent_dim": 8, "epochs": 60}
    assert result["model_folder"].endswith(f"models/{planted.study.slug}/run-{run.pk}")


@pytest.mark.django_db
def test_too_few_judgments_exit_with_the_reason(researcher: Any) -> None:
    study = StudyFactory(owner=researcher)
    with pytest.raises(CommandError, match="Not enough judgments to train a reward model"):
        _train(study.slug, "--sync")
    assert TrainingRun.objects.get(study=study).status == "failed"


@pytest.mark.django_db
def test_sync_refuses_while_another_run_is_active(planted: PlantedStudy) -> None:
    TrainingRun.objects.create(study=planted.study, status="running")
    with pytest.raises(CommandError, match="already running"):
        _train(planted.study.slug, "--sync")


@pytest.mark.django_db
def test_waiting_for_a_worker_gives_up_after_the_timeout(planted: PlantedStudy) -> None:
    # The run is queued but no worker takes it (and this test's transaction never commits it).
    with pytest.raises(CommandError, match="Timed out after 0.3 s"):
        _train(planted.study.slug, "--timeout", "0.3", "--poll-interval", "0.1")
    assert TrainingRun.objects.get(study=planted.study).status == "queued"


@pytest.mark.django_db
@pytest.mark.parametrize("groups", ["0", "9", "many"])
def test_bad_groups_are_refused(planted: PlantedStudy, groups: str) -> None:
    with pytest.raises(CommandError, match="--groups"):
        _train(planted.study.slug, "--groups", groups, "--sync")
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_an_unknown_study_is_named(db: None) -> None:
    with pytest.raises(CommandError, match="No study with slug 'nope'"):
        _train("nope", "--sync")


@pytest.mark.django_db
def test_unknown_hyperparameters_are_refused(planted: PlantedStudy) -> None:
    with pytest.raises(CommandError, match="Unknown hyper-parameter"):
        _train(planted.study.slug, "--sync", "--hyperparameters", '{"learning_rate": 1}')
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_queued_training_is_awaited_and_its_metrics_printed(researcher: Any) -> None:
    # Autocommit so the run row commits and its task is sent at once. With Celery's eager mode
    # the task runs inside the send; the real-worker path is in test_training_worker.py.
    planted = planted_study_create(owner=researcher)
    celery_app.conf.task_always_eager = True  # restored by the conftest's broker fixture
    result = _train(planted.study.slug, "--groups", "2", "--epochs", "60", "--hyperparameters", FAST_JSON)
    assert result["kind"] == "pal-a" and result["groups"] == 2
    assert TrainingRun.objects.get(pk=result["run"]).status == "done"

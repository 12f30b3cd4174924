"""A real Celery worker on Redis trains a study's model; a killed worker's run is redone.

These start `celery -A config worker -Q training,default --pool=solo` as a subprocess pointed at
this test database, so they need PostgreSQL (or any database a second process can open) and
Redis (POLYPHONY_TEST_REDIS_URL, default db 5 on the local server).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client

from config.celery import app as celery_app
from modeling.models import StudyModel, TrainingRun
from modeling.selectors import training_run_current
from modeling.services import PredictionItem, preferences_predict, training_run_request
from modeling.tasks import train_reward_model
from tests.modeling.conftest import FAST, TOPICS, celery_broker, planted_study_create, run_sync

REDIS_URL = os.environ.get("POLYPHONY_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _worker_database_url() -> str:
    """The URL of the database this test runs on, for the worker process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        if connection.is_in_memory_db():
            pytest.skip("A worker process cannot open this run's in-memory SQLite test database.")
        return f"sqlite:///{db['NAME']}"
    auth = quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{'@' if auth else ''}{host}{port}/{db['NAME']}"


@contextmanager
def _worker(*, log: Path, extra_env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker subprocess consuming both queues; stopped (by its pid) on exit."""
    env = {
        **os.environ,
        "DATABASE_URL": _worker_database_url(),
        "CELERY_BROKER_URL": REDIS_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        **(extra_env or {}),
    }
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    command = [
        str(Path(sys.executable).parent / "celery"), "-A", "config", "worker", "-Q", "training,default",
        "--pool=solo", "-c", "1", "--loglevel=INFO", "--without-gossip", "--without-mingle",
        "-n", f"h5-test-{uuid.uuid4().hex[:8]}@%h",
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _queues_purge() -> None:
    """Leftovers of an earlier, interrupted run must not reach this test's worker."""
    with celery_app.connection_for_write() as conn:
        for queue in ("training", "default"):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # noqa: BLE001 - a queue that was never declared has nothing to purge
                pass


def _wait_for(predicate: Any, *, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"Timed out after {timeout} s waiting for {what}. Worker log:\n{log.read_text()[-6000:]}")


def test_a_worker_trains_the_model_and_the_study_page_shows_it(researcher: Any, tmp_path: Path) -> None:
    planted = planted_study_create(owner=researcher)
    log = tmp_path / "worker.log"
    with celery_broker(REDIS_URL):
        _queues_purge()
        with _worker(log=log):
            out, err = io.StringIO(), io.StringIO()
            # No --sync: the command queues the run and polls its row until the worker is done.
            call_command(
                "train_reward_model", planted.study.slug, "--groups", "2", "--timeout", "300",
                "--hyperparameters", json.dumps(FAST), stdout=out, stderr=err,
            )
    result = json.loads(out.getvalue())
    run = TrainingRun.objects.get(pk=result["run"])
    assert run.status == "done", log.read_text()[-4000:]
    assert run.device == "cpu" and run.attempts == 1 and run.groups_chosen == 2
    assert result["metrics"]["held_out"]["model"]["accuracy"] > result["metrics"]["held_out"]["btl"]["accuracy"]
    assert "train_reward_model" in log.read_text()  # it really was the worker that ran it

    client = Client()
    client.force_login(researcher)
    html = client.get(f"/studies/{planted.study.slug}/model/").content.decode()
    assert f"Current model: run {run.pk}" in html
    assert f"{round(run.metrics['held_out']['model']['accuracy'] * 100)}%" in html
    assert "BTL baseline" in html and "Group 2" in html


def test_the_run_of_a_killed_worker_is_redone_while_the_previous_model_serves(
    researcher: Any, tmp_path: Path
) -> None:
    """SIGKILL mid-run: the study keeps its previous model, the run is redone (not doubled), and of
    two workers receiving the same run only one trains it."""
    planted = planted_study_create(owner=researcher)
    previous = run_sync(study=planted.study)  # the model the study serves before the retrain
    assert previous.status == "done", previous.error
    item = PredictionItem(annotator="formal-0", prompt=TOPICS[0][0], response_a=planted.formal[0].text,
                          response_b=planted.casual[0].text)
    log = tmp_path / "worker.log"
    # A short visibility timeout so the broker hands the unacknowledged task on within seconds.
    quick = {"CELERY_VISIBILITY_TIMEOUT": "3"}
    current: list[int | None] = []  # the study's current run, sampled throughout

    def state() -> TrainingRun:
        current.append(StudyModel.objects.get(study=planted.study).current_run_id)
        assert TrainingRun.objects.filter(study=planted.study, status__in=["queued", "running"]).count() <= 1
        return TrainingRun.objects.get(pk=run.pk)

    with celery_broker(REDIS_URL):
        _queues_purge()
        run, _ = training_run_request(study=planted.study, groups=2, hyperparameters=FAST)
        with _worker(log=log, extra_env=quick) as first:
            _wait_for(lambda: state().status == "running", timeout=120,
                      what="the first worker to claim the run", log=log)
            first.kill()  # SIGKILL: no chance to acknowledge, reject or clean up
            first.wait(timeout=10)
        claimed = TrainingRun.objects.get(pk=run.pk)
        assert claimed.status == "running" and claimed.attempts == 1
        # Meanwhile the study serves its previous model: predictions come from it.
        assert training_run_current(study=planted.study).pk == previous.pk
        assert preferences_predict(study=planted.study, items=[item])[0] > 0.5  # formal-0 prefers formal
        # A duplicate of the task (a client retry) and a second request while the run is active.
        train_reward_model.delay(run.pk)
        again, created = training_run_request(study=planted.study, groups=2, hyperparameters=FAST)
        assert (again.pk, created) == (run.pk, False)
        time.sleep(3.5)  # past the visibility timeout
        with _worker(log=log, extra_env=quick), _worker(log=log, extra_env=quick):
            _wait_for(lambda: state().status in ("done", "failed"), timeout=240,
                      what="a second worker to redo the run", log=log)
    redone = TrainingRun.objects.get(pk=run.pk)
    assert redone.status == "done", redone.error
    assert redone.attempts == 2  # taken over once, not a second run, and never trained twice at once
    assert TrainingRun.objects.filter(study=planted.study).count() == 2  # the previous run and this one
    assert re.search(rf"Training run {run.pk} is (running|done); not running it again", log.read_text())  # the dup
    # The previous model was current at every sample until the redone run replaced it.
    assert set(current[:-1]) <= {previous.pk} and current[-1] in (previous.pk, run.pk)
    assert StudyModel.objects.get(study=planted.study).current_run_id == run.pk

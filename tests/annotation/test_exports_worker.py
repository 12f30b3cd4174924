"""A real Celery worker, on Redis, runs an export job to completion against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection

from annotation.models import ExportJob, Judgment
from elicitation.models import Pair
from tests.factories import ParticipantFactory, study_with_pool

REDIS_URL = "redis://127.0.0.1:6379/2"  # this suite's own Redis database
ROOT = Path(__file__).resolve().parents[2]


def _redis_or_skip() -> None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc}); the worker test needs a real broker.")
    client.flushdb()  # a task left over from an earlier, interrupted run must not be picked up


def _worker_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("The worker process must open the test database; run with DATABASE_URL=postgres://... .")
    user = f"{db['USER']}@" if db.get("USER") else ""
    return f"postgres://{user}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_celery_worker_runs_an_export_job_to_completion(researcher, tmp_path) -> None:
    _redis_or_skip()
    database_url = _worker_database_url()
    study = study_with_pool(prompts=2, responses_per_prompt=3, owner=researcher)
    participant = ParticipantFactory(study=study, external_id="worker-test")
    for pair in Pair.objects.filter(study=study):
        Judgment.objects.create(
            study=study, participant=participant, pair=pair, response_a=pair.response_a,
            response_b=pair.response_b, choice="a", answered_at=participant.consented_at,
        )
    job = ExportJob.objects.create(study=study, created_by=researcher, format="parquet")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "MEDIA_ROOT": str(tmp_path / "media"),
        "POLYPHONY_VAR_DIR": str(tmp_path / "var"),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--pool=solo", "-c", "1",
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # Sent by name through a separate client, as a web process on another machine would.
        Celery("polyphony-test-client", broker=REDIS_URL, set_as_current=False).send_task(
            "annotation.tasks.export_run", args=[job.pk], queue="default"
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.status in (ExportJob.Status.DONE, ExportJob.Status.FAILED) or worker.poll() is not None:
                break
            time.sleep(0.5)
    finally:
        worker.terminate()
        try:
            log, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            log, _ = worker.communicate()

    assert job.status == ExportJob.Status.DONE, f"job {job.status}: {job.error}\nworker log:\n{log[-4000:]}"
    assert job.rows_written == job.total_rows == 6
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "media" / job.file_path).num_rows == 6

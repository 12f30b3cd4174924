"""A real Celery worker, on Redis (this suite's database 6), finds the moral-graph task through
CELERY_IMPORTS and stores a snapshot in the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery
from django.db import connection

from modeling.models import MoralGraphSnapshot
from tests.moral.conftest import ValuesCardFactory, moral_study, vote_add, voters

REDIS_URL = "redis://127.0.0.1:6379/6"
ROOT = Path(__file__).resolve().parents[2]


def _redis_or_skip() -> None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc}); the worker test needs a real broker.")
    client.flushdb()  # a task left over from an interrupted run must not be picked up


def _worker_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("The worker process must open the test database; run with DATABASE_URL=postgres://... .")
    user = f"{db['USER']}@" if db.get("USER") else ""
    return f"postgres://{user}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_aggregates_a_study(tmp_path) -> None:
    _redis_or_skip()
    database_url = _worker_database_url()
    study, [context] = moral_study()
    a, b = ValuesCardFactory(context=context, title="A"), ValuesCardFactory(context=context, title="B")
    for person in voters(study, 2):
        vote_add(participant=person, from_card=a, to_card=b, answer="wiser")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "POLYPHONY_VAR_DIR": str(tmp_path / "var"),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--pool=solo", "-c", "1",
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # Sent by name, as the web process's vote hook does through its own app.
        Celery("polyphony-test-client", broker=REDIS_URL, set_as_current=False).send_task(
            "modeling.moral_tasks.moral_graph_aggregate", args=[study.pk], queue="default"
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            if MoralGraphSnapshot.objects.filter(study=study).exists():
                break
            time.sleep(0.5)
    finally:
        worker.terminate()
        try:
            log, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            log, _ = worker.communicate()
    snapshot = MoralGraphSnapshot.objects.filter(study=study).first()
    assert snapshot is not None, f"no snapshot; worker log:\n{log[-4000:]}"
    assert [node["title"] for node in snapshot.nodes] == ["B", "A"]

"""A real Celery worker on Redis computes the insight analysis the Recompute button queues."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from modeling.models import AnalyticsSnapshot
from tests.modeling.conftest import celery_broker
from tests.modeling.insight_planted import insight_study_create
from tests.modeling.test_training_worker import _queues_purge, _wait_for, _worker

# Redis db 9 is this suite's own (the training-worker tests use 5).
REDIS_URL = os.environ.get("POLYPHONY_TEST_ANALYTICS_REDIS_URL", "redis://127.0.0.1:6379/9")

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_recompute_button_is_computed_by_a_worker_and_the_page_shows_it(researcher: Any, tmp_path: Path) -> None:
    planted = insight_study_create(owner=researcher)
    client = Client()
    client.force_login(researcher)
    log = tmp_path / "worker.log"
    with celery_broker(REDIS_URL):
        _queues_purge()
        with _worker(log=log, extra_env={"CELERY_BROKER_URL": REDIS_URL}):
            assert client.post(f"/studies/{planted.study.slug}/insight/recompute/").status_code == 302
            snapshot = AnalyticsSnapshot.objects.get(study=planted.study)
            _wait_for(
                lambda: AnalyticsSnapshot.objects.filter(pk=snapshot.pk, status__in=["done", "failed"]).exists(),
                timeout=120, what="the analysis", log=log,
            )
    snapshot.refresh_from_db()
    assert snapshot.status == "done", snapshot.error
    assert "compute_study_analytics" in log.read_text()  # the worker ran it, not this process
    html = client.get(f"/studies/{planted.study.slug}/insight/").content.decode()
    assert "Divisive pairs" in html and "Recompute analysis" in html

"""Export jobs outlive a broker that is down when they are created: the job waits, says so, and
the researcher's polling (page or API) sends its task once the broker is back.

No mocks: nothing listens on 127.0.0.1:1, so publishing fails for real (as with Redis stopped),
and "back" is a real Redis (its own database), whose queue the test reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation.exports import export_job_run, export_jobs_resend_due
from annotation.models import ExportJob
from config.task_resend import RESEND_QUEUED_AFTER, RESEND_UNSENT_AFTER
from elicitation.models import Study
from tests.factories import study_with_pool
from tests.modeling.conftest import celery_broker

pytestmark = pytest.mark.django_db

REDIS_URL = os.environ.get("POLYPHONY_TEST_EXPORT_REDIS_URL", "redis://127.0.0.1:6379/15")
BROKER_DOWN = "redis://127.0.0.1:1/0"


@pytest.fixture
def study(researcher: Any, settings: Any, tmp_path: Path) -> Study:
    settings.MEDIA_ROOT = tmp_path / "media"
    return study_with_pool(owner=researcher)


@pytest.fixture(autouse=True)
def _in_memory_broker() -> Iterator[None]:
    with celery_broker("memory://"):  # unless a test names another: never the checkout's own broker
        yield


def _redis_or_skip() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL} ({exc}).")
    client.delete("default")  # messages of an earlier, interrupted run
    return client


def _queued_job_ids(redis_client: Any) -> list[str]:
    return [json.loads(m)["headers"]["argsrepr"] for m in redis_client.lrange("default", 0, -1)]


def _backdate_send_attempt(job: ExportJob) -> None:
    ExportJob.objects.filter(pk=job.pk).update(
        enqueue_tried_at=timezone.now() - RESEND_UNSENT_AFTER - timedelta(seconds=1)
    )


def test_an_export_created_while_the_broker_is_down_waits_and_is_sent_once_it_is_back(
    api_client: Any, client: Any, researcher: Any, study: Study, caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    redis_client = _redis_or_skip()
    client.force_login(researcher)
    with celery_broker(BROKER_DOWN):
        with django_capture_on_commit_callbacks(execute=True):
            created = api_client.post(f"/api/v1/studies/{study.slug}/exports", {"format": "csv"}, format="json")
        assert created.status_code == 202  # the researcher's request is kept, not lost in a 500
        assert created.json()["waiting_for_broker"] is True
        job = ExportJob.objects.get()
        assert (job.status, job.enqueued_at) == ("queued", None) and job.enqueue_tried_at is not None
        assert "not yet queued (broker unreachable, will retry)" in caplog.text
        detail, status_url = f"/api/v1/exports/{job.pk}", reverse(
            "exports:job_status", kwargs={"slug": study.slug, "job_id": job.pk}
        )
        # Polled within the back-off: the broker is not tried again; both views say what the job waits for.
        assert api_client.get(detail).json()["waiting_for_broker"] is True
        row = client.get(status_url, headers={"HX-Request": "true"})
        assert row.status_code == 200 and 'hx-trigger="every 1s"' in row.text  # still polling
        assert "Waiting for the task queue" in row.text
        assert ExportJob.objects.get().enqueue_tried_at == job.enqueue_tried_at
        # Past the back-off a poll tries again, fails again, and the job still waits.
        _backdate_send_attempt(job)
        assert api_client.get(detail).json()["waiting_for_broker"] is True
        assert ExportJob.objects.get().enqueue_tried_at > job.enqueue_tried_at

    _backdate_send_attempt(job)
    with celery_broker(REDIS_URL):
        sent = api_client.get(detail).json()
        again = client.get(status_url, headers={"HX-Request": "true"})  # sent already: nothing more
    assert (sent["status"], sent["waiting_for_broker"]) == ("queued", False)
    assert ExportJob.objects.get().enqueued_at is not None
    assert _queued_job_ids(redis_client) == [f"({job.pk},)"]  # one message, this job
    assert "Waiting for the task queue" not in again.text
    # What the worker taking that message does: the job finishes as any other.
    assert export_job_run(export_job_id=job.pk).status == ExportJob.Status.DONE
    # With the broker up, a new job is sent at its commit, and nothing waits.
    with celery_broker(REDIS_URL), django_capture_on_commit_callbacks(execute=True):
        created = api_client.post(f"/api/v1/studies/{study.slug}/exports", {"format": "csv"}, format="json")
    assert sorted(_queued_job_ids(redis_client)) == sorted([f"({job.pk},)", f"({created.json()['id']},)"])
    assert ExportJob.objects.get(pk=created.json()["id"]).waiting_for_broker is False
    redis_client.delete("default")


def test_a_job_whose_process_died_before_sending_is_sent_when_the_export_page_opens(
    client: Any, researcher: Any, study: Study
) -> None:
    redis_client = _redis_or_skip()
    # What a web process killed between the commit and the publish leaves behind.
    orphan = ExportJob.objects.create(study=study, created_by=researcher, format="jsonl")
    client.force_login(researcher)
    page = reverse("exports:export", kwargs={"slug": study.slug})
    with celery_broker(REDIS_URL):
        assert client.get(page).status_code == 200
        assert client.get(page).status_code == 200  # opened again: not sent twice
    orphan.refresh_from_db()
    assert orphan.status == "queued" and orphan.enqueued_at is not None
    assert _queued_job_ids(redis_client) == [f"({orphan.pk},)"]
    redis_client.delete("default")


def test_a_job_the_broker_lost_is_sent_again_but_a_recent_or_started_one_is_not(study: Study) -> None:
    now = timezone.now()
    recent = ExportJob.objects.create(study=study, format="csv", enqueued_at=now, enqueue_tried_at=now)
    long_ago = now - RESEND_QUEUED_AFTER - timedelta(seconds=1)
    for status in (ExportJob.Status.RUNNING, ExportJob.Status.DONE, ExportJob.Status.FAILED):
        ExportJob.objects.create(study=study, format="csv", status=status, enqueue_tried_at=None)
    assert not export_jobs_resend_due(study=study)
    ExportJob.objects.filter(pk=recent.pk).update(enqueued_at=long_ago, enqueue_tried_at=long_ago)
    assert not export_jobs_resend_due(study=study, job_id=recent.pk + 100)  # another job's poll
    assert export_jobs_resend_due(study=study, job_id=recent.pk)
    # Claimed by a compare-and-swap on the attempt time: a second check right after sends nothing.
    assert not export_jobs_resend_due(study=study)
    assert ExportJob.objects.get(pk=recent.pk).enqueued_at > long_ago

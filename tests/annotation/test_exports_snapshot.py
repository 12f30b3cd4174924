"""Exports are consistent snapshots, and an export job left running by a dead worker is redone.

The snapshot tests write from a second thread, i.e. a second database connection, while the
export streams: that needs a server database (on SQLite the export is one SELECT, which WAL mode
already reads as one snapshot, and a second connection to the in-memory test database would
share its cache and lock), so they run on PostgreSQL only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections
from django.utils import timezone

import annotation.exports as exports
from annotation.exports import export_job_run, export_text_chunks
from annotation.models import ExportJob, Judgment, Participant, ParticipantExclusion
from elicitation.models import Pair, Study
from tests.factories import ParticipantFactory, study_with_pool

N_JUDGMENTS = 24

postgres_only = pytest.mark.skipif(
    django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="Writes from a second connection during the export: needs PostgreSQL (see module docstring).",
)


def _study_with_judgments(*, owner: Any) -> tuple[Study, list[Participant]]:
    study = study_with_pool(prompts=2, responses_per_prompt=4, owner=owner)
    people = [ParticipantFactory(study=study, external_id=f"p{i}") for i in range(3)]
    pairs = list(Pair.objects.filter(study=study).order_by("id"))
    Judgment.objects.bulk_create([
        Judgment(study=study, participant=people[i % 3], pair=pair, response_a=pair.response_a,
                 response_b=pair.response_b, choice="a", answered_at=timezone.now())
        for i, pair in enumerate(pairs[:N_JUDGMENTS // 2] * 2)
    ])
    return study, people


def _in_another_connection(work: Callable[[], Any]) -> Any:
    """Run `work` in a thread (its own connection, committed at once, as an annotator's request)."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    if errors:
        raise errors[0]
    return result[0] if result else None


def _late_arrivals(*, study: Study, people: list[Participant]) -> Callable[[], int]:
    """What happens while the export streams: new judgments, and a participant excluded."""
    def work() -> int:
        pair = Pair.objects.filter(study=study).first()
        Judgment.objects.bulk_create([
            Judgment(study=study, participant=people[0], pair=pair, response_a=pair.response_a,
                     response_b=pair.response_b, choice="b", rationale="arrived mid-export",
                     answered_at=timezone.now())
            for _ in range(5)
        ])
        ParticipantExclusion.objects.create(participant=people[2], reason="excluded mid-export")
        return Judgment.objects.filter(study=study).count()
    return work


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_judgments_arriving_mid_export_do_not_tear_the_stream(researcher: Any, monkeypatch: Any) -> None:
    study, people = _study_with_judgments(owner=researcher)
    # Small chunks and cursor batches: the export is mid-flight after its first chunk.
    monkeypatch.setattr(exports, "STREAM_BATCH", 4)
    monkeypatch.setattr(exports, "CURSOR_CHUNK", 4)
    chunks = export_text_chunks(study=study, export_format="jsonl")
    first = next(chunks)
    assert connection.in_atomic_block  # the snapshot transaction is open while it streams

    total_now = _in_another_connection(_late_arrivals(study=study, people=people))
    rows = [json.loads(line) for line in (first + "".join(chunks)).splitlines()]

    assert total_now == N_JUDGMENTS + 5
    assert len(rows) == N_JUDGMENTS  # as of the moment the export started: no new rows…
    assert all(row["rationale"] != "arrived mid-export" for row in rows)
    assert sum(row["annotator"] == "p2" for row in rows) == N_JUDGMENTS // 3  # …and no late exclusion
    assert not connection.in_atomic_block  # and the snapshot is closed once the stream ends
    # The next export sees the new state.
    after = "".join(export_text_chunks(study=study, export_format="jsonl")).splitlines()
    assert len(after) == N_JUDGMENTS + 5 - N_JUDGMENTS // 3


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_export_job_counts_and_writes_one_snapshot_and_shows_progress_meanwhile(
    researcher: Any, monkeypatch: Any, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    study, people = _study_with_judgments(owner=researcher)
    job = ExportJob.objects.create(study=study, format="csv")
    monkeypatch.setattr(exports, "PROGRESS_EVERY", 10)
    monkeypatch.setattr(exports, "CURSOR_CHUNK", 4)
    seen_by_others: list[tuple[str, int, int]] = []
    write = exports.export_file_write

    def write_with_interference(**kwargs: Any) -> int:
        report = kwargs["on_progress"]

        def on_progress(rows: int) -> None:
            report(rows)
            if rows == 10:  # mid-export: what the job page sees, then annotators keep judging
                seen_by_others.append(_in_another_connection(
                    lambda: ExportJob.objects.values_list("status", "rows_written", "total_rows").get(pk=job.pk)
                ))
                _in_another_connection(_late_arrivals(study=study, people=people))

        return write(**{**kwargs, "on_progress": on_progress})

    monkeypatch.setattr(exports, "export_file_write", write_with_interference)
    done = export_job_run(export_job_id=job.pk)

    assert seen_by_others == [("running", 10, N_JUDGMENTS)]  # progress is visible outside the snapshot
    assert done.status == "done" and done.attempts == 1
    lines = (Path(settings.MEDIA_ROOT) / done.file_path).read_text().splitlines()
    assert len(lines) - 1 == done.rows_written == done.total_rows == N_JUDGMENTS


@pytest.mark.django_db
def test_a_job_left_running_by_a_dead_worker_is_taken_over_by_the_redelivered_task(
    researcher: Any, settings: Any, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    study, _ = _study_with_judgments(owner=researcher)
    # What a worker killed mid-export leaves: the job claimed (attempt 1), a partial file.
    job = ExportJob.objects.create(study=study, format="jsonl", status="running", attempts=1, rows_written=10)
    (tmp_path / "media" / "exports").mkdir(parents=True)
    (tmp_path / "media" / "exports" / f"{job.pk}.jsonl.attempt-1.part").write_text("half a file")

    # A duplicate delivery while the first attempt may still be alive leaves it alone…
    assert export_job_run(export_job_id=job.pk).status == "running"
    # …the broker's redelivery (the message was never acknowledged) takes it over.
    redone = export_job_run(export_job_id=job.pk, redelivered=True)

    assert (redone.status, redone.attempts, redone.rows_written) == ("done", 2, N_JUDGMENTS)
    assert len((tmp_path / "media" / redone.file_path).read_text().splitlines()) == N_JUDGMENTS
    assert not list((tmp_path / "media" / "exports").glob("*.part"))  # the dead attempt's file too
    # A finished job is never redone, redelivered or not.
    assert export_job_run(export_job_id=job.pk, redelivered=True).attempts == 2


@pytest.mark.django_db
def test_an_attempt_that_was_taken_over_stops_and_writes_nothing(
    researcher: Any, settings: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    study, _ = _study_with_judgments(owner=researcher)
    job = ExportJob.objects.create(study=study, format="jsonl")
    monkeypatch.setattr(exports, "PROGRESS_EVERY", 10)
    write = exports.export_file_write

    def presumed_dead(**kwargs: Any) -> int:
        # Mid-write, this worker is presumed dead and the redelivered task claims the job.
        ExportJob.objects.filter(pk=job.pk).update(attempts=2)
        return write(**kwargs)

    monkeypatch.setattr(exports, "export_file_write", presumed_dead)
    stale = export_job_run(export_job_id=job.pk)

    assert (stale.status, stale.attempts, stale.file_path) == ("running", 2, "")  # left to attempt 2
    assert not list((tmp_path / "media" / "exports").iterdir())  # its partial file removed


def test_the_export_task_takes_over_only_on_a_redelivery_or_retry(monkeypatch: Any) -> None:
    from annotation import tasks

    calls: list[tuple[int, bool]] = []
    monkeypatch.setattr(tasks, "export_job_run", lambda **kw: calls.append(tuple(kw.values())) or
                        ExportJob(status="done"))
    # Only the job service is replaced; Celery builds the task request as a worker would.
    tasks.export_run.apply(args=[7])
    tasks.export_run.apply(args=[8], retries=1)
    assert calls == [(7, False), (8, True)]

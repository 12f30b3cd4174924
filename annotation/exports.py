"""Exporting a study's judgments: JSONL (the comparison format), CSV, Parquet, preference training.

Every format is written from one row generator that walks the judgments with a database
cursor (`.iterator()`), joining the texts and the annotator in the same query, so memory stays
flat however many judgments there are. Small text exports stream straight to the browser; big
ones, and every Parquet file, are written by a Celery task (`annotation.tasks.export_run`) to
MEDIA_ROOT/exports/ and downloaded through a permission-checked view.

An export is a consistent snapshot: judgments that arrive (or participants excluded) while it is
written are either wholly in it or not at all (`export_snapshot`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone

from annotation.exclusions import excluded_participant_ids
from annotation.models import ExportJob, Judgment
from config.task_resend import task_publish, task_resend_claim
from elicitation.models import Study
from elicitation.selectors import study_list_for_user

logger = logging.getLogger(__name__)

Format = ExportJob.Format
FILE_EXTENSIONS = {Format.JSONL: "jsonl", Format.CSV: "csv", Format.PARQUET: "parquet", Format.PREFERENCE: "jsonl"}
CONTENT_TYPES = {
    Format.JSONL: "application/x-ndjson; charset=utf-8",
    Format.CSV: "text/csv; charset=utf-8",
    Format.PARQUET: "application/vnd.apache.parquet",
    Format.PREFERENCE: "application/x-ndjson; charset=utf-8",
}
# The comparison format's keys, in the order they are written (import reads the same names).
COMPARISON_COLUMNS = (
    "prompt", "response_a", "response_b", "choice", "annotator", "strength", "rationale",
    "annotator_attributes", "id", "created_at",
)
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "annotator", "annotator_attributes", "strength", "id")
ATTENTION_COLUMNS = ("attention_check", "attention_passed")

CURSOR_CHUNK = 2000  # rows fetched per round trip by the database cursor
PROGRESS_EVERY = 5000  # rows between progress updates of a background job (one UPDATE each)
PARQUET_BATCH = 10_000  # rows per Parquet record batch: bounded memory, reasonable row groups
STREAM_BATCH = 500  # rows joined into one chunk of a streamed response


@contextmanager
def export_snapshot() -> Iterator[bool]:
    """Read everything inside as of one instant; yields whether it opened a snapshot transaction.

    PostgreSQL: one REPEATABLE READ, READ ONLY transaction, so the row count and the rows of a job,
    and the subqueries of the row query, all see the same committed data, however long the export
    streams. It takes no locks; annotators keep writing. Inside a caller's transaction (a test's)
    that transaction rules. SQLite: no transaction, since ours are IMMEDIATE (they would take the
    write lock and stop annotators for the whole export); the rows are one SELECT, and a SELECT in
    WAL mode reads one snapshot from its first row to its last, which is the same guarantee.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield False
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield True


# --- Rows ------------------------------------------------------------------------------------


def _judgments(*, study: Study, include_attention_checks: bool) -> QuerySet[Judgment]:
    # Excluded participants (annotation/exclusions.py) are left out of every export.
    judgments = Judgment.objects.filter(study=study).exclude(
        participant_id__in=excluded_participant_ids(study_id=study.pk)
    )
    if not include_attention_checks:
        # Both flags: a judgment on an attention-check pair is one, whoever wrote it.
        judgments = judgments.exclude(Q(is_attention_check=True) | Q(pair__is_attention_check=True))
    return judgments


def export_row_count(*, study: Study, export_format: str, include_attention_checks: bool) -> int:
    """How many rows an export of this study will have (ties are not in the preference layout)."""
    judgments = _judgments(study=study, include_attention_checks=include_attention_checks)
    if export_format == Format.PREFERENCE:
        judgments = judgments.exclude(choice=Judgment.Choice.TIE)
    return judgments.count()


def annotator_pseudonym(*, study: Study, external_id: str) -> str:
    """A stable stand-in for an annotator id: salted SHA-256, 16 hex characters.

    The study slug is in the hash so one person in two studies cannot be linked across
    exports; the salt (POLYPHONY_PSEUDONYM_SALT) keeps ids from being recovered by hashing
    candidate ids. Separators keep ("ab", "c") and ("a", "bc") apart.
    """
    material = f"{settings.POLYPHONY_PSEUDONYM_SALT}\x1f{study.slug}\x1f{external_id}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def export_rows(
    *, study: Study, include_attention_checks: bool = False, pseudonymize: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield one comparison-format dict per judgment, oldest first, in a single streamed query.

    `created_at` is a datetime here; writers format it. With `include_attention_checks` every
    row also carries `attention_check` and `attention_passed`.
    """
    rows = (
        _judgments(study=study, include_attention_checks=include_attention_checks)
        .order_by("id")
        .values_list(
            "id", "external_id", "served_pair_id", "choice", "strength", "rationale", "answered_at",
            "is_attention_check", "attention_passed", "pair__is_attention_check",
            "participant__external_id", "participant__attributes",
            "pair__prompt__text", "response_a__text", "response_b__text",
        )
    )
    with export_snapshot():
        yield from _export_row_dicts(
            rows=rows.iterator(chunk_size=CURSOR_CHUNK), study=study,
            include_attention_checks=include_attention_checks, pseudonymize=pseudonymize,
        )


def _export_row_dicts(
    *, rows: Iterator[tuple[Any, ...]], study: Study, include_attention_checks: bool, pseudonymize: bool
) -> Iterator[dict[str, Any]]:
    for (pk, external_id, served_pair_id, choice, strength, rationale, answered_at, is_check, passed,
         pair_is_check, annotator, attributes, prompt, text_a, text_b) in rows:
        row: dict[str, Any] = {
            "prompt": prompt,
            "response_a": text_a,
            "response_b": text_b,
            "choice": choice,
            "annotator": annotator_pseudonym(study=study, external_id=annotator) if pseudonymize else annotator,
            "strength": strength,
            "rationale": rationale or None,
            "annotator_attributes": attributes or {},
            # An imported comparison keeps its own id; one annotated here is named by its
            # one-time serving id, which is unique across studies.
            "id": external_id or (str(served_pair_id) if served_pair_id else f"{study.slug}-{pk}"),
            "created_at": answered_at,
        }
        if include_attention_checks:
            row["attention_check"] = bool(is_check or pair_is_check)
            row["attention_passed"] = passed
        yield row


def preference_rows(*, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Comparison rows in the prompt/chosen/rejected layout of TRL's RewardTrainer; ties dropped."""
    for row in rows:
        if row["choice"] == Judgment.Choice.TIE:
            continue
        chosen, rejected = (
            (row["response_a"], row["response_b"]) if row["choice"] == Judgment.Choice.A
            else (row["response_b"], row["response_a"])
        )
        out = {
            "prompt": row["prompt"], "chosen": chosen, "rejected": rejected, "annotator": row["annotator"],
            "annotator_attributes": row["annotator_attributes"], "strength": row["strength"], "id": row["id"],
        }
        if "attention_check" in row:
            out["attention_check"] = row["attention_check"]
            out["attention_passed"] = row["attention_passed"]
        yield out


def _rows_for_format(
    *, study: Study, export_format: str, include_attention_checks: bool, pseudonymize: bool
) -> Iterator[dict[str, Any]]:
    rows = export_rows(study=study, include_attention_checks=include_attention_checks, pseudonymize=pseudonymize)
    return preference_rows(rows=rows) if export_format == Format.PREFERENCE else rows


# --- Writers ---------------------------------------------------------------------------------


def _json_line(row: dict[str, Any]) -> str:
    if isinstance(row.get("created_at"), datetime):
        row = {**row, "created_at": row["created_at"].isoformat()}
    return json.dumps(row, ensure_ascii=False) + "\n"


def _csv_columns(*, include_attention_checks: bool) -> list[str]:
    return list(COMPARISON_COLUMNS) + (list(ATTENTION_COLUMNS) if include_attention_checks else [])


def _csv_cells(row: dict[str, Any], columns: list[str]) -> list[Any]:
    cells = []
    for column in columns:
        value = row[column]
        if column == "annotator_attributes":
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)  # one JSON cell: round-trippable
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        cells.append("" if value is None else value)
    return cells


def export_text_chunks(
    *, study: Study, export_format: str, include_attention_checks: bool = False, pseudonymize: bool = False,
) -> Iterator[str]:
    """The export as text chunks (JSONL, CSV or preference JSONL), for streaming or a file."""
    if export_format not in (Format.JSONL, Format.CSV, Format.PREFERENCE):
        raise ValueError(f"{export_format!r} is not a text export format.")
    rows = _rows_for_format(
        study=study, export_format=export_format,
        include_attention_checks=include_attention_checks, pseudonymize=pseudonymize,
    )
    if export_format == Format.CSV:
        columns = _csv_columns(include_attention_checks=include_attention_checks)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for count, row in enumerate(rows, start=1):
            writer.writerow(_csv_cells(row, columns))
            if count % STREAM_BATCH == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
        return
    batch: list[str] = []
    for row in rows:
        batch.append(_json_line(row))
        if len(batch) >= STREAM_BATCH:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def export_byte_chunks(
    *, study: Study, export_format: str, include_attention_checks: bool = False, pseudonymize: bool = False,
) -> Iterator[bytes]:
    """UTF-8 chunks of a text export, for a StreamingHttpResponse."""
    for chunk in export_text_chunks(
        study=study, export_format=export_format,
        include_attention_checks=include_attention_checks, pseudonymize=pseudonymize,
    ):
        yield chunk.encode("utf-8")


def export_file_write(
    *, study: Study, export_format: str, path: Path, include_attention_checks: bool = False,
    pseudonymize: bool = False, on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write the export to `path` (any format); returns the number of rows written.

    `on_progress(rows_so_far)` is called every PROGRESS_EVERY rows.
    """
    if export_format == Format.PARQUET:
        return _parquet_write(
            study=study, path=path, include_attention_checks=include_attention_checks,
            pseudonymize=pseudonymize, on_progress=on_progress,
        )
    rows = _rows_for_format(
        study=study, export_format=export_format,
        include_attention_checks=include_attention_checks, pseudonymize=pseudonymize,
    )
    written = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        if export_format == Format.CSV:
            columns = _csv_columns(include_attention_checks=include_attention_checks)
            writer = csv.writer(out)
            writer.writerow(columns)
        for row in rows:
            if export_format == Format.CSV:
                writer.writerow(_csv_cells(row, columns))
            else:
                out.write(_json_line(row))
            written += 1
            if on_progress and written % PROGRESS_EVERY == 0:
                on_progress(written)
    return written


def _parquet_write(
    *, study: Study, path: Path, include_attention_checks: bool, pseudonymize: bool,
    on_progress: Callable[[int], None] | None,
) -> int:
    import pyarrow as pa  # heavy: imported only when a Parquet file is written
    import pyarrow.parquet as pq

    fields = [
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("response_a", pa.string(), nullable=False),
        pa.field("response_b", pa.string(), nullable=False),
        pa.field("choice", pa.string(), nullable=False),
        pa.field("annotator", pa.string(), nullable=False),
        pa.field("strength", pa.int16()),
        pa.field("rationale", pa.string()),
        # Attribute sets differ between studies and values mix strings and numbers, so they
        # stay one JSON string column, as in the CSV.
        pa.field("annotator_attributes", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
    if include_attention_checks:
        fields += [pa.field("attention_check", pa.bool_()), pa.field("attention_passed", pa.bool_())]
    schema = pa.schema(fields)
    written = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(path, schema) as writer:
        for row in export_rows(
            study=study, include_attention_checks=include_attention_checks, pseudonymize=pseudonymize
        ):
            row["annotator_attributes"] = json.dumps(row["annotator_attributes"], ensure_ascii=False, sort_keys=True)
            batch.append(row)
            written += 1
            if len(batch) >= PARQUET_BATCH:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                batch = []
            if on_progress and written % PROGRESS_EVERY == 0:
                on_progress(written)
        if batch or written == 0:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    return written


def export_filename(*, study: Study, export_format: str) -> str:
    """The download name, e.g. `my-study-comparisons.jsonl`."""
    stem = {Format.PREFERENCE: "preference", Format.CSV: "comparisons"}.get(export_format, "comparisons")
    return f"{study.slug}-{stem}.{FILE_EXTENSIONS[export_format]}"


# --- Background jobs -------------------------------------------------------------------------


def export_runs_in_background(*, study: Study, export_format: str, include_attention_checks: bool) -> bool:
    """Parquet always, and anything over POLYPHONY_EXPORT_SYNC_LIMIT rows, goes to a Celery job."""
    if export_format == Format.PARQUET:
        return True
    count = export_row_count(
        study=study, export_format=export_format, include_attention_checks=include_attention_checks
    )
    return count > settings.POLYPHONY_EXPORT_SYNC_LIMIT


def export_job_create(
    *, study: Study, user: AbstractBaseUser | None, export_format: str,
    include_attention_checks: bool = False, pseudonymize: bool = True,
) -> ExportJob:
    """Record an export job and queue its task once the row is committed.

    A job makes a file to share, so annotator ids are pseudonymised unless the caller says not to
    (the row functions above leave that to their callers, who may need the ids themselves).
    When the broker refuses the task the job stays queued, marked as waiting for it, and the
    researcher's next look at the job sends it again (export_jobs_resend_due)."""
    if export_format not in Format.values:
        raise ValueError(f"Unknown export format {export_format!r}.")
    job = ExportJob.objects.create(
        study=study, created_by=user if user and user.is_authenticated else None, format=export_format,
        include_attention_checks=include_attention_checks, pseudonymize=pseudonymize,
        total_rows=export_row_count(
            study=study, export_format=export_format, include_attention_checks=include_attention_checks
        ),
        # Counts as the first attempt: no poll resends it while this request sends.
        enqueue_tried_at=timezone.now(),
    )

    def send() -> None:
        job.enqueued_at = _export_enqueue(job_id=job.pk)  # the caller's copy tells the truth too

    transaction.on_commit(send)
    return job


def export_jobs_resend_due(*, study: Study, job_id: int | None = None) -> bool:
    """Send again the task of a queued job of the study (or of job `job_id`) that the broker never
    took, or lost; True if it was sent.

    Called where a researcher waits for a job (the export page, its poll, the API's job status),
    so a job created while the broker was down is sent once it is back, without a periodic
    scheduler. At most one publish per call; the due rules and the compare-and-swap that keeps
    two processes from both sending are config.task_resend's. A job sent twice still runs once
    (its claim is a compare-and-swap from `queued`).
    """
    waiting = ExportJob.objects.filter(study=study, status=ExportJob.Status.QUEUED)
    if job_id is not None:
        waiting = waiting.filter(pk=job_id)
    due = task_resend_claim(waiting=waiting)
    if due is None:
        return False
    logger.info("Export job %s of study %s was not on the broker; sending it again.", due, study.slug)
    return _export_enqueue(job_id=due) is not None


def _export_enqueue(*, job_id: int) -> datetime | None:
    """Publish the job's task; when the broker took it, or None: a refusal leaves the job waiting."""
    # Imported here, not at the top: the task module imports this one.
    from annotation.tasks import export_run

    failure = task_publish(send=lambda: export_run.delay(job_id))
    if failure is not None:
        logger.warning("Export job %s not yet queued (broker unreachable, will retry): %s", job_id, failure)
        return None
    # Unconditional on status: a worker may already have claimed it (it never touches this field).
    sent_at = timezone.now()
    ExportJob.objects.filter(pk=job_id).update(enqueued_at=sent_at)
    return sent_at


def export_job_path(*, job: ExportJob) -> Path:
    """Where a job's file lives: MEDIA_ROOT/exports/<id>.<ext> (never served by a public URL)."""
    return Path(settings.MEDIA_ROOT) / "exports" / f"{job.pk}.{FILE_EXTENSIONS[job.format]}"


def export_job_run(*, export_job_id: int, redelivered: bool = False) -> ExportJob:
    """Run a queued export job to completion. Safe to call twice: only one attempt works.

    The claim is a compare-and-swap from `queued`, so a repeated task finds the job taken and
    returns. A `running` job is taken over only when the broker redelivered the task (the
    worker died, as with training runs): `attempts` is the fencing token, and every later write
    of the older attempt filters on its own number and is refused. Each attempt writes its own
    temporary file, renamed into place, so a download never sees half a file.
    """
    attempt = _export_job_claim(export_job_id=export_job_id, redelivered=redelivered)
    job = ExportJob.objects.select_related("study").get(pk=export_job_id)
    if attempt is None:
        logger.info("Export job %s is %s already; not running it again.", job.pk, job.status)
        return job
    mine = ExportJob.objects.filter(pk=job.pk, status=ExportJob.Status.RUNNING, attempts=attempt)
    final = export_job_path(job=job)
    partial = final.with_name(f"{final.name}.attempt-{attempt}.part")
    for leftover in final.parent.glob(f"{final.name}.attempt-*.part"):  # of attempts taken over
        with contextlib.suppress(OSError):
            leftover.unlink()

    # Everything after the claim is inside the try: a job left "running" would never finish.
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with export_snapshot() as in_snapshot, _progress_writer(job_id=job.pk, attempt=attempt,
                                                                 separate=in_snapshot) as progress:
            total = export_row_count(
                study=job.study, export_format=job.format, include_attention_checks=job.include_attention_checks
            )
            progress(0, total)
            written = export_file_write(
                study=job.study, export_format=job.format, path=partial,
                include_attention_checks=job.include_attention_checks, pseudonymize=job.pseudonymize,
                on_progress=lambda rows: progress(rows, None),
            )
        if not mine.exists():
            raise _ExportTakenOver(f"export job {job.pk} attempt {attempt}")
        os.replace(partial, final)
    except _ExportTakenOver:
        logger.warning("Export job %s attempt %s was taken over by a newer attempt; stopping.", job.pk, attempt)
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    except Exception as exc:  # any failure is reported on the job page rather than lost in a log
        logger.exception("Export job %s failed.", job.pk)
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        mine.update(
            status=ExportJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
        )
    else:
        mine.update(
            status=ExportJob.Status.DONE, rows_written=written, total_rows=written,
            file_path=str(final.relative_to(Path(settings.MEDIA_ROOT))), finished_at=timezone.now(),
        )
    job.refresh_from_db()
    return job


class _ExportTakenOver(Exception):
    """A redelivered task claimed the job (this attempt's worker was presumed dead); stop."""


def _export_job_claim(*, export_job_id: int, redelivered: bool) -> int | None:
    """Claim the job for one attempt; returns the attempt number, or None if it is not ours to run."""
    row = ExportJob.objects.filter(pk=export_job_id).values_list("status", "attempts").first()
    if row is None:
        raise ExportJob.DoesNotExist(f"No export job {export_job_id}.")
    status, attempts = row
    if status != ExportJob.Status.QUEUED and not (status == ExportJob.Status.RUNNING and redelivered):
        return None
    claimed = ExportJob.objects.filter(pk=export_job_id, status=status, attempts=attempts).update(
        status=ExportJob.Status.RUNNING, attempts=attempts + 1, rows_written=0, error="", finished_at=None,
    )
    return attempts + 1 if claimed else None


@contextmanager
def _progress_writer(*, job_id: int, attempt: int, separate: bool) -> Iterator[Callable[[int, int | None], None]]:
    """`progress(rows, total)` for the job page; raises _ExportTakenOver once a newer attempt claimed it.

    With `separate`, the export reads inside a read-only snapshot transaction whose writes nobody
    would see before it ends (and READ ONLY refuses them), so progress goes through a second,
    autocommitting connection of its own.
    """
    table = ExportJob._meta.db_table
    side = connections.create_connection(DEFAULT_DB_ALIAS) if separate else None

    def progress(rows: int, total: int | None) -> None:
        if side is None:
            fields = {"rows_written": rows} if total is None else {"rows_written": rows, "total_rows": total}
            updated = ExportJob.objects.filter(pk=job_id, status=ExportJob.Status.RUNNING, attempts=attempt).update(
                **fields
            )
        else:
            with side.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET rows_written = %s, total_rows = COALESCE(%s, total_rows) "
                    "WHERE id = %s AND status = %s AND attempts = %s",
                    [rows, total, job_id, ExportJob.Status.RUNNING.value, attempt],
                )
                updated = cursor.rowcount
        if not updated:
            raise _ExportTakenOver(f"export job {job_id} attempt {attempt}")

    try:
        yield progress
    finally:
        if side is not None:
            side.close()


def export_job_get_for_user(*, job_id: int, user: AbstractBaseUser | AnonymousUser) -> ExportJob:
    """Fetch a job and check the user may see its study; 404 otherwise (ids do not leak)."""
    job = ExportJob.objects.select_related("study").filter(pk=job_id).first()
    if job is None or not study_list_for_user(user=user).filter(pk=job.study_id).exists():
        raise Http404("No such export.")
    return job


def export_jobs_for_study(*, study: Study, limit: int = 20) -> list[ExportJob]:
    """The study's most recent export jobs, newest first."""
    return list(ExportJob.objects.filter(study=study).order_by("-created_at", "-id")[:limit])


def export_job_file(*, job: ExportJob) -> Path | None:
    """The finished file of a job, or None if it is not done or the file is gone."""
    if job.status != ExportJob.Status.DONE or not job.file_path:
        return None
    path = Path(settings.MEDIA_ROOT) / job.file_path
    return path if path.is_file() else None

"""Exports: the four formats, attention checks, pseudonyms, the round trip, streaming, background jobs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from annotation.comparisons import comparisons_import
from annotation.exports import (
    annotator_pseudonym,
    export_file_write,
    export_job_run,
    export_rows,
    export_text_chunks,
)
from annotation.models import ExportJob, Judgment, Participant, ServedPair
from annotation.tasks import export_run
from elicitation.models import Pair, Study, StudyCollaborator
from tests.factories import ParticipantFactory, StudyFactory, study_with_pool
from tests.modeling.conftest import celery_broker

T0 = timezone.now().replace(microsecond=0) - timedelta(days=1)


@pytest.fixture(autouse=True)
def _in_memory_broker() -> Iterator[None]:
    """Tasks go to kombu's in-memory broker: opening or polling a queued job sends its task
    (export_jobs_resend_due), and the checkout's filesystem broker must not collect them."""
    with celery_broker("memory://"):
        yield


def _judge(
    *, participant: Participant, pair: Pair, choice: str, flip: bool = False, strength: int | None = None,
    rationale: str = "", served: bool = True, minutes: int = 0,
) -> Judgment:
    """A judgment as the annotation pages store it: response_a is the one shown on the left."""
    left, right = (pair.response_b, pair.response_a) if flip else (pair.response_a, pair.response_b)
    served_pair = ServedPair.objects.create(
        participant=participant, pair=pair, left_response=left, right_response=right,
        served_at=T0 + timedelta(minutes=minutes), answered_at=T0 + timedelta(minutes=minutes, seconds=30),
    ) if served else None
    correct = pair.correct_response_id
    chosen = {"a": left.pk, "b": right.pk}.get(choice)
    return Judgment.objects.create(
        study=pair.study, participant=participant, pair=pair, served_pair=served_pair, response_a=left,
        response_b=right, choice=choice, strength=strength, rationale=rationale,
        is_attention_check=pair.is_attention_check,
        attention_passed=(chosen == correct) if pair.is_attention_check else None,
        answered_at=T0 + timedelta(minutes=minutes, seconds=30),
    )


@pytest.fixture
def study(researcher) -> Study:
    """Five judgments (one tie, one flipped, one imported-style without a serving) and one attention check."""
    study = study_with_pool(prompts=2, responses_per_prompt=3, owner=researcher, slug="helpful")
    pairs = list(Pair.objects.filter(study=study).order_by("id"))
    first_prompt = pairs[0].prompt
    good, bad = first_prompt.responses.all()[:2]
    check = Pair.objects.filter(response_a=good, response_b=bad).get()
    Pair.objects.filter(pk=check.pk).update(is_attention_check=True, correct_response=good)
    check.refresh_from_db()
    ada = ParticipantFactory(study=study, external_id="ada", attributes={"age_group": "25-34", "years": 16})
    bo = ParticipantFactory(study=study, external_id="bo", attributes={})
    _judge(participant=ada, pair=pairs[1], choice="a", strength=3, rationale="Clearer.", minutes=1)
    _judge(participant=ada, pair=pairs[2], choice="b", flip=True, strength=1, minutes=2)
    _judge(participant=bo, pair=pairs[3], choice="tie", minutes=3)
    _judge(participant=bo, pair=pairs[4], choice="b", served=False, minutes=4)
    _judge(participant=ada, pair=pairs[5], choice="a", minutes=5)
    _judge(participant=bo, pair=check, choice="b", minutes=6)  # fails the attention check
    return study


def _jsonl_rows(study: Study, **options: bool) -> list[dict]:
    text = "".join(export_text_chunks(study=study, export_format="jsonl", **options))
    return [json.loads(line) for line in text.splitlines()]


def test_jsonl_export_is_the_comparison_format_without_attention_checks(study) -> None:
    rows = _jsonl_rows(study)

    assert len(rows) == 5
    assert list(rows[0]) == [
        "prompt", "response_a", "response_b", "choice", "annotator", "strength", "rationale",
        "annotator_attributes", "id", "created_at",
    ]
    first = Judgment.objects.filter(study=study).order_by("id").first()
    assert rows[0] == {
        "prompt": first.pair.prompt.text, "response_a": first.response_a.text, "response_b": first.response_b.text,
        "choice": "a", "annotator": "ada", "strength": 3, "rationale": "Clearer.",
        "annotator_attributes": {"age_group": "25-34", "years": 16}, "id": str(first.served_pair_id),
        "created_at": first.answered_at.isoformat(),
    }
    flipped = rows[1]
    assert flipped["response_a"] == Judgment.objects.filter(study=study).order_by("id")[1].pair.response_b.text
    assert rows[2]["choice"] == "tie" and rows[2]["strength"] is None and rows[2]["rationale"] is None
    assert rows[3]["id"] == f"helpful-{Judgment.objects.filter(study=study, served_pair=None).get().pk}"
    assert "attention_check" not in rows[0]


def test_attention_checks_are_included_and_flagged_when_asked(study) -> None:
    rows = _jsonl_rows(study, include_attention_checks=True)

    assert len(rows) == 6
    flagged = [row for row in rows if row["attention_check"]]
    assert len(flagged) == 1 and flagged[0]["attention_passed"] is False
    assert all(row["attention_passed"] is None for row in rows if not row["attention_check"])


def test_pseudonymized_export_hides_annotator_ids_consistently(study, settings) -> None:
    settings.POLYPHONY_PSEUDONYM_SALT = "pepper"
    rows = _jsonl_rows(study, pseudonymize=True)

    names = {row["annotator"] for row in rows}
    assert names == {annotator_pseudonym(study=study, external_id="ada"),
                     annotator_pseudonym(study=study, external_id="bo")}
    assert all(len(name) == 16 and int(name, 16) >= 0 for name in names)
    # Field by field: "ada" can occur inside a random hex id, so a substring test of the whole text is flaky.
    csv_rows = list(csv.DictReader(io.StringIO(
        "".join(export_text_chunks(study=study, export_format="csv", pseudonymize=True)))))
    assert {row["annotator"] for row in csv_rows} == names
    assert not any("ada" in value for row in csv_rows for key, value in row.items() if key not in ("id", "created_at", "annotator"))
    other = StudyFactory(slug="another")
    assert annotator_pseudonym(study=other, external_id="ada") not in names  # not linkable across studies
    settings.POLYPHONY_PSEUDONYM_SALT = "salt"
    assert annotator_pseudonym(study=study, external_id="ada") not in names


def test_csv_export_has_one_row_per_judgment_and_attributes_as_json(study) -> None:
    text = "".join(export_text_chunks(study=study, export_format="csv", include_attention_checks=True))
    rows = list(csv.DictReader(io.StringIO(text)))

    assert len(rows) == 6
    assert list(rows[0]) == [
        "prompt", "response_a", "response_b", "choice", "annotator", "strength", "rationale",
        "annotator_attributes", "id", "created_at", "attention_check", "attention_passed",
    ]
    assert json.loads(rows[0]["annotator_attributes"]) == {"age_group": "25-34", "years": 16}
    assert rows[0]["strength"] == "3" and rows[2]["strength"] == ""
    assert [row["attention_check"] for row in rows].count("true") == 1


def test_preference_layout_has_chosen_and_rejected_and_no_ties(study) -> None:
    text = "".join(export_text_chunks(study=study, export_format="preference"))
    rows = [json.loads(line) for line in text.splitlines()]
    comparisons = [row for row in _jsonl_rows(study) if row["choice"] != "tie"]

    assert len(rows) == 4
    assert list(rows[0]) == ["prompt", "chosen", "rejected", "annotator", "annotator_attributes", "strength", "id"]
    for row, comparison in zip(rows, comparisons, strict=True):
        winner, loser = ("response_a", "response_b") if comparison["choice"] == "a" else ("response_b", "response_a")
        assert (row["chosen"], row["rejected"]) == (comparison[winner], comparison[loser])
        assert row["id"] == comparison["id"]


def test_parquet_export_reads_back_with_the_same_rows(study, tmp_path) -> None:
    path = tmp_path / "out.parquet"

    written = export_file_write(study=study, export_format="parquet", path=path, include_attention_checks=True)

    table = pq.read_table(path)
    assert written == table.num_rows == 6
    assert table.column_names[:10] == [
        "prompt", "response_a", "response_b", "choice", "annotator", "strength", "rationale",
        "annotator_attributes", "id", "created_at",
    ]
    rows = table.to_pylist()
    expected = _jsonl_rows(study, include_attention_checks=True)
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    assert [r["strength"] for r in rows] == [r["strength"] for r in expected]
    assert json.loads(rows[0]["annotator_attributes"]) == expected[0]["annotator_attributes"]
    assert rows[0]["created_at"].isoformat() == expected[0]["created_at"]


def test_empty_study_exports_a_valid_empty_parquet_file(researcher, tmp_path) -> None:
    path = tmp_path / "empty.parquet"

    assert export_file_write(study=StudyFactory(owner=researcher), export_format="parquet", path=path) == 0
    assert pq.read_table(path).num_rows == 0


def test_jsonl_export_round_trips_through_the_comparisons_import(study, researcher) -> None:
    exported = "".join(export_text_chunks(study=study, export_format="jsonl"))
    copy = StudyFactory(owner=researcher, slug="helpful-copy")

    result = comparisons_import(study=copy, data=exported.encode("utf-8"))

    assert result.judgments_created == 5
    assert "".join(export_text_chunks(study=copy, export_format="jsonl")) == exported
    again = comparisons_import(study=copy, data=exported.encode("utf-8"))
    assert again.judgments_created == 0


def test_texts_with_unusual_line_separators_round_trip(researcher) -> None:
    source = StudyFactory(owner=researcher)
    line = {"prompt": "Two\u2028lines?", "response_a": "Yes\u0085no", "response_b": "A\u2029B\r\nC",
            "choice": "b", "annotator": "w\u00e9", "strength": None, "rationale": None, "annotator_attributes": {}}
    comparisons_import(study=source, data=(json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
    exported = "".join(export_text_chunks(study=source, export_format="jsonl"))

    copy = StudyFactory(owner=researcher)
    comparisons_import(study=copy, data=exported.encode("utf-8"))

    assert "".join(export_text_chunks(study=copy, export_format="jsonl")) == exported
    assert Judgment.objects.filter(study=copy).get().response_b.text == "A\u2029B\r\nC"


def test_export_reads_all_rows_in_one_query(study, django_assert_num_queries) -> None:
    participant = Participant.objects.get(study=study, external_id="ada")
    for pair in Pair.objects.filter(study=study, is_attention_check=False):
        for minute in range(3):
            _judge(participant=participant, pair=pair, choice="a", minutes=10 + minute)

    with django_assert_num_queries(1):
        rows = list(export_rows(study=study, include_attention_checks=True))

    assert len(rows) == Judgment.objects.filter(study=study).count()


# --- Background jobs ---------------------------------------------------------------------------


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def test_export_job_writes_the_file_and_records_progress(study, researcher, media, settings) -> None:
    job = ExportJob.objects.create(study=study, created_by=researcher, format="parquet")

    finished = export_job_run(export_job_id=job.pk)

    assert finished.status == ExportJob.Status.DONE
    assert (finished.rows_written, finished.total_rows, finished.progress) == (5, 5, 1.0)
    assert finished.file_path == f"exports/{job.pk}.parquet"
    assert pq.read_table(media / finished.file_path).num_rows == 5
    assert finished.finished_at is not None
    assert not list((media / "exports").glob("*.part"))


def test_export_job_runs_only_once(study, media) -> None:
    job = ExportJob.objects.create(study=study, format="jsonl")
    export_job_run(export_job_id=job.pk)
    (media / "exports" / f"{job.pk}.jsonl").write_text("sentinel")

    again = export_run(job.pk)  # a redelivered task: the compare-and-swap finds the job taken

    assert again == ExportJob.Status.DONE
    assert (media / "exports" / f"{job.pk}.jsonl").read_text() == "sentinel"


def test_export_job_failure_is_recorded(study, media) -> None:
    media.mkdir(parents=True)
    (media / "exports").write_text("a file where the export folder should be")
    job = ExportJob.objects.create(study=study, format="csv")

    failed = export_job_run(export_job_id=job.pk)

    assert failed.status == ExportJob.Status.FAILED
    assert failed.error and failed.finished_at is not None


# --- Page ----------------------------------------------------------------------------------------


def test_export_page_lists_jobs_with_progress(client, researcher, study, media, django_assert_max_num_queries) -> None:
    for status in ("queued", "running", "done", "failed"):
        ExportJob.objects.create(study=study, format="csv", status=status, total_rows=10, rows_written=4)
    client.force_login(researcher)

    with django_assert_max_num_queries(8):
        page = client.get(reverse("exports:export", kwargs={"slug": study.slug}))

    body = page.content.decode()
    assert page.status_code == 200
    assert body.count("<progress") == 4 and 'value="40"' in body
    assert body.count('hx-trigger="every 1s"') == 2  # only unfinished jobs poll
    assert body.count(">Download CSV<") == 1


def test_download_now_streams_the_file(client, researcher, study, monkeypatch) -> None:
    monkeypatch.setattr("annotation.exports.STREAM_BATCH", 2)  # several chunks from five rows
    client.force_login(researcher)

    response = client.post(
        reverse("exports:export", kwargs={"slug": study.slug}),
        {"format": "jsonl", "action": "download", "include_attention_checks": "on"},
    )

    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Disposition"] == 'attachment; filename="helpful-comparisons.jsonl"'
    chunks = list(response.streaming_content)
    assert len(chunks) == 3
    assert len(b"".join(chunks).decode().splitlines()) == 6
    assert not ExportJob.objects.exists()


def test_download_now_of_a_big_export_prepares_a_job_instead(
    client, researcher, study, settings, django_capture_on_commit_callbacks
) -> None:
    settings.POLYPHONY_EXPORT_SYNC_LIMIT = 3
    client.force_login(researcher)

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            reverse("exports:export", kwargs={"slug": study.slug}), {"format": "csv", "action": "download"}
        )

    assert response.status_code == 302
    job = ExportJob.objects.get()
    assert (job.format, job.status, job.total_rows, job.created_by) == ("csv", "queued", 5, researcher)
    assert len(callbacks) == 1  # the Celery task is queued after commit


@pytest.mark.parametrize(("export_format", "action"), [("parquet", "download"), ("preference", "prepare")])
def test_parquet_and_prepare_always_run_in_the_background(
    client, researcher, study, export_format, action, django_capture_on_commit_callbacks
) -> None:
    client.force_login(researcher)

    with django_capture_on_commit_callbacks():
        client.post(reverse("exports:export", kwargs={"slug": study.slug}),
                    {"format": export_format, "action": action, "pseudonymize": "on"})

    job = ExportJob.objects.get()
    assert job.format == export_format and job.pseudonymize


def test_job_status_fragment_polls_until_done(client, researcher, study, media) -> None:
    client.force_login(researcher)
    job = ExportJob.objects.create(study=study, format="jsonl", total_rows=5)
    url = reverse("exports:job_status", kwargs={"slug": study.slug, "job_id": job.pk})

    running = client.get(url, headers={"HX-Request": "true"})
    export_job_run(export_job_id=job.pk)
    done = client.get(url, headers={"HX-Request": "true"})
    plain = client.get(url)

    assert running.status_code == 200 and 'hx-trigger="every 1s"' in running.content.decode()
    assert "<html" not in running.content.decode()
    assert done.status_code == 286  # htmx stops polling and swaps in the finished row
    assert reverse("exports:download", kwargs={"slug": study.slug, "job_id": job.pk}) in done.content.decode()
    assert plain.status_code == 302 and plain["Location"].endswith(f"/export/#job-{job.pk}")


def test_download_serves_the_file_only_to_users_who_may_see_the_study(
    client, researcher, other_researcher, study, media
) -> None:
    job = ExportJob.objects.create(study=study, format="csv")
    export_job_run(export_job_id=job.pk)
    url = reverse("exports:download", kwargs={"slug": study.slug, "job_id": job.pk})

    client.force_login(other_researcher)
    assert client.get(url).status_code == 404
    assert client.get(reverse("exports:export", kwargs={"slug": study.slug})).status_code == 404
    StudyCollaborator.objects.create(study=study, user=other_researcher, role=StudyCollaborator.Role.VIEWER)
    viewer = client.get(url)
    client.force_login(researcher)
    owner = client.get(url)

    assert viewer.status_code == 200
    assert owner["Content-Disposition"] == 'attachment; filename="helpful-comparisons.csv"'
    assert b"".join(owner.streaming_content).decode().count("\n") == 6  # header + 5 rows


def test_download_of_an_unfinished_job_is_404(client, researcher, study, media) -> None:
    job = ExportJob.objects.create(study=study, format="csv")
    client.force_login(researcher)

    assert client.get(reverse("exports:download", kwargs={"slug": study.slug, "job_id": job.pk})).status_code == 404


# --- API -----------------------------------------------------------------------------------------


def test_api_export_job_lifecycle(api_client, study, media, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        created = api_client.post(
            f"/api/v1/studies/{study.slug}/exports", {"format": "preference", "pseudonymize": True}, format="json"
        )
    job_id = created.json()["id"]
    pending = api_client.get(f"/api/v1/exports/{job_id}")
    early = api_client.get(f"/api/v1/exports/{job_id}/download")
    export_run(job_id)  # what the queued callback does in a worker
    done = api_client.get(f"/api/v1/exports/{job_id}")
    download = api_client.get(f"/api/v1/exports/{job_id}/download")

    assert created.status_code == 202 and len(callbacks) == 1
    assert created.json()["status"] == "queued" and created.json()["download_url"] is None
    assert pending.json()["progress"] == 0.0
    assert early.status_code == 409
    assert done.json()["status"] == "done" and done.json()["progress"] == 1.0
    assert done.json()["download_url"].endswith(f"/api/v1/exports/{job_id}/download")
    rows = [json.loads(line) for line in b"".join(download.streaming_content).decode().splitlines()]
    assert len(rows) == 4 and "ada" not in {row["annotator"] for row in rows}


def test_api_export_rejects_unknown_format_and_hides_other_studies(api_client, researcher, other_researcher) -> None:
    mine, theirs = StudyFactory(owner=researcher), StudyFactory(owner=other_researcher)
    job = ExportJob.objects.create(study=theirs, format="csv")

    bad = api_client.post(f"/api/v1/studies/{mine.slug}/exports", {"format": "xlsx"}, format="json")
    hidden = api_client.post(f"/api/v1/studies/{theirs.slug}/exports", {"format": "csv"}, format="json")
    # Authorized before validated: a bad body to someone else's study says nothing about it either.
    hidden_bad = api_client.post(f"/api/v1/studies/{theirs.slug}/exports", {"format": "xlsx"}, format="json")

    assert bad.status_code == 400 and "format" in bad.json()["errors"]
    assert hidden.status_code == 404 and hidden_bad.status_code == 404
    assert api_client.get(f"/api/v1/exports/{job.pk}").status_code == 404
    assert api_client.get(f"/api/v1/exports/{job.pk}/download").status_code == 404
    assert ExportJob.objects.count() == 1


# --- Command -------------------------------------------------------------------------------------


@pytest.mark.parametrize("export_format", ["jsonl", "csv", "parquet", "preference"])
def test_export_command_writes_each_format(study, tmp_path, export_format: str) -> None:
    path = tmp_path / f"out.{export_format}"

    call_command("export_comparisons", study.slug, "--format", export_format, "-o", str(path))

    if export_format == "parquet":
        assert pq.read_table(path).num_rows == 5
    else:
        expected = {"jsonl": 5, "csv": 6, "preference": 4}[export_format]
        assert len(path.read_text().splitlines()) == expected
    assert not list(tmp_path.glob(".*.part"))


def test_export_command_writes_to_stdout(study, capsys) -> None:
    call_command("export_comparisons", study.slug, "--format", "jsonl", "-o", "-", "--include-attention-checks")

    assert len(capsys.readouterr().out.splitlines()) == 6

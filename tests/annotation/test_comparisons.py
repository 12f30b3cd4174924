"""Importing existing comparisons: validation, all-or-nothing writes, no duplicates, denormalised counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotation.comparisons import comparisons_import, comparisons_import_records
from annotation.models import Judgment, Participant
from elicitation.imports import ImportRejected
from elicitation.models import Pair, Prompt, Response, Study
from tests.factories import (
    ParticipantFactory,
    PromptFactory,
    ResponseFactory,
    StudyFactory,
    UserFactory,
    pair_create,
)

DATA = Path(__file__).resolve().parent.parent / "data"
GOOD = {
    "prompt": "Name a fruit.", "response_a": "An apple.", "response_b": "A carrot.", "choice": "a",
    "annotator": "w-1", "strength": 2, "rationale": "Carrots are vegetables.",
    "annotator_attributes": {"age_group": "25-34"}, "id": "x-1", "created_at": "2025-01-02T03:04:05+00:00",
}


def _jsonl(*objects: object) -> bytes:
    return "".join(json.dumps(obj) + "\n" for obj in objects).encode("utf-8")


def _nothing_written() -> bool:
    return not (Judgment.objects.exists() or Participant.objects.exists() or Prompt.objects.exists()
                or Response.objects.exists() or Pair.objects.exists())


@pytest.fixture
def study(researcher):
    return StudyFactory(owner=researcher, slug="books")  # ties allowed, strength labels 1..3


def test_import_creates_prompts_pairs_participants_and_judgments(study) -> None:
    result = comparisons_import(study=study, data=(DATA / "comparisons_small.jsonl").read_bytes())

    assert (result.judgments_created, result.judgments_existing) == (4, 0)
    assert (result.prompts_created, result.responses_created, result.pairs_created) == (2, 5, 3)
    assert result.participants_created == 3
    first = Judgment.objects.get(study=study, external_id="c-1")
    assert first.origin == Judgment.Origin.IMPORTED and first.served_pair is None
    assert (first.response_a.text, first.choice, first.strength) == (
        "Try 'The Martian': funny, fast and hard to put down.", "a", 3)
    assert first.rationale == "More specific."
    assert first.answered_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    second = Judgment.objects.get(external_id="c-2")
    assert second.response_a.text == "Any book is fine."  # kept as shown in the line, not canonical
    assert second.pair_id == first.pair_id
    pair = first.pair
    assert pair.origin == Pair.Origin.IMPORT and pair.response_a_id < pair.response_b_id
    assert pair.judgment_count == 2
    annotator = Participant.objects.get(study=study, external_id="ann-1")
    assert annotator.source == Participant.Source.IMPORT and annotator.consented_at is not None
    assert annotator.attributes == {"age_group": "25-34", "years_education": 16}
    assert annotator.judgment_count == 2
    basil = Judgment.objects.get(participant__external_id="ann-3")
    assert basil.external_id.startswith("sha256:")  # no id in the line: derived from its content
    assert basil.strength is None and basil.rationale == ""


def test_reimporting_the_same_file_adds_nothing(study) -> None:
    data = (DATA / "comparisons_small.jsonl").read_bytes()
    comparisons_import(study=study, data=data)

    again = comparisons_import(study=study, data=data)

    assert (again.judgments_created, again.judgments_existing) == (0, 4)
    assert (again.prompts_created, again.pairs_created, again.participants_created) == (0, 0, 0)
    assert Judgment.objects.count() == 4
    assert sorted(Pair.objects.values_list("judgment_count", flat=True)) == [1, 1, 2]


def test_identical_lines_without_id_are_imported_once(study) -> None:
    line = {k: v for k, v in GOOD.items() if k not in ("id", "created_at")}

    result = comparisons_import(study=study, data=_jsonl(line, line))

    assert (result.judgments_created, result.judgments_existing) == (1, 1)


def test_existing_prompts_responses_and_participants_are_reused_not_overwritten(study) -> None:
    prompt = PromptFactory(study=study, text=GOOD["prompt"])
    apple = ResponseFactory(prompt=prompt, text="An apple.")
    carrot = ResponseFactory(prompt=prompt, text="A carrot.")
    pool_pair = pair_create(prompt=prompt, first=apple, second=carrot)
    person = ParticipantFactory(study=study, external_id="w-1", attributes={"age_group": "65+"})

    result = comparisons_import(study=study, data=_jsonl(GOOD))

    assert (result.prompts_created, result.responses_created, result.pairs_created) == (0, 0, 0)
    assert result.participants_created == 0
    judgment = Judgment.objects.get()
    assert (judgment.pair_id, judgment.participant_id) == (pool_pair.pk, person.pk)
    person.refresh_from_db()
    pool_pair.refresh_from_db()
    assert person.attributes == {"age_group": "65+"} and person.judgment_count == 1
    assert pool_pair.judgment_count == 1 and pool_pair.origin == Pair.Origin.POOL


def test_comparison_on_an_attention_check_pair_is_flagged(study) -> None:
    prompt = PromptFactory(study=study, text=GOOD["prompt"])
    apple = ResponseFactory(prompt=prompt, text="An apple.")
    carrot = ResponseFactory(prompt=prompt, text="A carrot.")
    pair_create(prompt=prompt, first=apple, second=carrot, is_attention_check=True, correct_response=apple)

    comparisons_import(study=study, data=_jsonl(GOOD, {**GOOD, "id": "x-2", "choice": "b"}))

    passed = dict(Judgment.objects.values_list("external_id", "attention_passed"))
    assert passed == {"x-1": True, "x-2": False}
    assert Judgment.objects.filter(is_attention_check=True).count() == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"choice": "A"}, "line 2: unknown choice 'A' (expected \"a\", \"b\" or \"tie\")"),
        ({"choice": None}, "line 2: missing field 'choice'"),
        ({"annotator": ""}, "line 2: 'annotator' is empty"),
        ({"annotator": 17}, "line 2: 'annotator' must be a string, got a number"),
        ({"prompt": None}, "line 2: missing field 'prompt'"),
        ({"response_b": ["x"]}, "line 2: 'response_b' must be a string, got a list"),
        ({"response_b": "An apple."}, "line 2: 'response_a' and 'response_b' are the same text"),
        ({"strength": 4}, "line 2: 'strength' must be between 1 and 3, or null; got 4"),
        ({"strength": "2"}, "line 2: 'strength' must be a whole number or null, got a string"),
        ({"strength": True}, "line 2: 'strength' must be a whole number or null, got a boolean"),
        ({"rationale": 5}, "line 2: 'rationale' must be a string or null, got a number"),
        ({"annotator_attributes": ["25-34"]}, "line 2: 'annotator_attributes' must be an object, got a list"),
        ({"annotator_attributes": {"langs": ["en"]}}, "line 2: annotator attribute 'langs' must be a string or number"),
        ({"created_at": "yesterday"}, "line 2: 'created_at' is not an ISO-8601 date and time"),
        ({"id": 12}, "line 2: 'id' must be a non-empty string, got a number"),
        ({"id": "x-1"}, "line 2: id 'x-1' is repeated (first used on line 1)"),
        ({"winner": "a"}, "line 2: unknown field 'winner'"),
        ({"attention_check": True}, "line 2: attention-check comparisons cannot be imported"),
    ],
)
def test_bad_line_rejects_the_whole_file(study, change: dict, expected: str) -> None:
    bad = {**GOOD, "id": "x-2", **change}
    bad = {k: v for k, v in bad.items() if v is not None or k in ("strength", "rationale")}

    with pytest.raises(ImportRejected) as rejected:
        comparisons_import(study=study, data=_jsonl(GOOD, bad))

    assert rejected.value.errors[0].startswith(expected), rejected.value.errors
    assert _nothing_written()


def test_ties_are_rejected_when_the_study_allows_none(researcher) -> None:
    strict = StudyFactory(owner=researcher, allow_ties=False)

    with pytest.raises(ImportRejected) as rejected:
        comparisons_import(study=strict, data=_jsonl({**GOOD, "choice": "tie"}))

    assert rejected.value.errors == ["line 1: ties are not allowed in this study"]


def test_strength_must_be_null_without_a_strength_scale(researcher) -> None:
    plain = StudyFactory(owner=researcher, strength_labels=[])

    with pytest.raises(ImportRejected) as rejected:
        comparisons_import(study=plain, data=_jsonl(GOOD))

    assert rejected.value.errors == ["line 1: this study has no strength scale, so 'strength' must be null"]


def test_malformed_json_and_wrong_encoding_are_reported(study) -> None:
    with pytest.raises(ImportRejected) as broken:
        comparisons_import(study=study, data=_jsonl(GOOD) + b'{"prompt": "x",\n')
    with pytest.raises(ImportRejected) as latin:
        comparisons_import(study=study, data=json.dumps({**GOOD, "prompt": "Café?"}, ensure_ascii=False).encode("cp1252"))

    assert broken.value.errors[0].startswith("line 2: not valid JSON")
    assert latin.value.errors[0].startswith("line 1: the file is not UTF-8 text")
    assert _nothing_written()


def test_oversized_comparison_file_is_refused(study, settings) -> None:
    settings.POLYPHONY_IMPORT_MAX_BYTES = 50

    with pytest.raises(ImportRejected, match="larger than the import limit"):
        comparisons_import(study=study, data=_jsonl(GOOD))
    assert _nothing_written()


def test_naive_created_at_is_taken_as_utc(study) -> None:
    comparisons_import_records(study=study, records=[{**GOOD, "created_at": "2025-06-01T08:30:00"}])

    assert Judgment.objects.get().answered_at == datetime(2025, 6, 1, 8, 30, tzinfo=UTC)


# --- Page, API, command ------------------------------------------------------------------------


def test_import_page_accepts_comparisons(client, researcher, study) -> None:
    client.force_login(researcher)
    upload = SimpleUploadedFile("c.jsonl", (DATA / "comparisons_small.jsonl").read_bytes())

    response = client.post(
        reverse("imports:import", kwargs={"slug": study.slug}), {"kind": "comparisons", "file": upload}, follow=True
    )

    assert "4 comparisons imported (0 already present)" in response.content.decode()


def test_api_imports_comparisons_and_reports_errors(api_client, study) -> None:
    url = f"/api/v1/studies/{study.slug}/import/comparisons"

    created = api_client.post(url, {"lines": [GOOD]}, format="json")
    rejected = api_client.post(url, {"lines": [{**GOOD, "id": "x-9", "choice": "c"}]}, format="json")
    upload = api_client.post(
        url, {"file": SimpleUploadedFile("c.jsonl", _jsonl(GOOD))}, format="multipart"
    )

    assert created.status_code == 201 and created.json()["judgments_created"] == 1
    assert rejected.status_code == 400
    assert rejected.json()["errors"] == ["line 1: unknown choice 'c' (expected \"a\", \"b\" or \"tie\")"]
    assert upload.status_code == 201 and upload.json()["judgments_existing"] == 1
    assert Judgment.objects.count() == 1


def test_api_comparisons_import_into_another_researchers_study_is_404(api_client, other_researcher) -> None:
    theirs = StudyFactory(owner=other_researcher)

    response = api_client.post(f"/api/v1/studies/{theirs.slug}/import/comparisons", {"lines": [GOOD]}, format="json")

    assert response.status_code == 404 and not Judgment.objects.exists()


def test_command_imports_into_an_existing_study(study, capsys) -> None:
    call_command("import_comparisons", study.slug, str(DATA / "comparisons_small.jsonl"))

    assert "4 comparisons imported" in capsys.readouterr().out
    assert Judgment.objects.filter(study=study).count() == 4


def test_command_creates_the_study_when_asked(db, capsys) -> None:
    admin = UserFactory(username="root-admin", is_superuser=True, is_staff=True)

    call_command(
        "import_comparisons", "public-prefs", str(DATA / "comparisons_small.jsonl"), "--create-study",
        "--strength-labels", "slightly, clearly, much",
    )

    study = Study.objects.get(slug="public-prefs")
    assert study.owner == admin and study.strength_labels == ["slightly", "clearly", "much"]
    assert study.judgments.count() == 4


def test_command_without_create_study_names_the_missing_study(db) -> None:
    with pytest.raises(CommandError, match="pass --create-study"):
        call_command("import_comparisons", "public-prefs", str(DATA / "comparisons_small.jsonl"))


def test_failed_command_with_create_study_leaves_no_study_behind(db, tmp_path) -> None:
    UserFactory(username="owner")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_jsonl(GOOD, {**GOOD, "id": "x-2", "choice": "maybe"}))

    with pytest.raises(CommandError, match="line 2: unknown choice 'maybe'"):
        call_command("import_comparisons", "public-prefs", str(bad), "--create-study", "--owner", "owner",
                     "--strength-labels", "a,b,c")

    assert not Study.objects.exists() and _nothing_written()


def test_create_study_needs_an_owner(db) -> None:
    with pytest.raises(CommandError, match="No superuser to own the new study"):
        call_command("import_comparisons", "public-prefs", str(DATA / "comparisons_small.jsonl"), "--create-study")
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("import_comparisons", "public-prefs", str(DATA / "comparisons_small.jsonl"),
                     "--create-study", "--owner", "ghost")
    assert not Study.objects.exists()

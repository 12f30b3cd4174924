"""The bad-input catalogue: every hostile or broken request gets a clear 4xx and writes nothing.

API answers are JSON objects with a `detail` (and `errors`) naming the problem; browser pages answer
with the form again and its error. Each test counts the rows of every table a request could touch
(`_rows`) before and after, and asserts they did not change.

Covered here, by surface (→ a test elsewhere where one already covers the case):

Participant API (annotation/participant_apis.py)
  malformed JSON, invalid UTF-8, a body nested too deeply, a non-JSON content type; wrong types;
  unknown choice; served id not a UUID; NUL in the rationale; negative / zero / huge strength; a
  rationale over the limit (and a 1 MB one); a body over DATA_UPLOAD_MAX_MEMORY_SIZE (413, both
  refused before reading and found while parsing); a draft (unpublished) study; a withdrawn
  participant's token; script tags in the rationale are stored and returned as data.
  → another participant's served id: tests/annotation/test_participant_api.py
    ::test_a_served_id_of_another_participant_is_not_found
  → a closed study: ::test_a_closed_study_serves_and_stores_nothing
  → bad strength for the scale, "left" as a choice: ::test_bad_judgment_input_is_refused_with_field_errors
  → bad registration attributes (bool) and a closed study: ::test_bad_attributes_are_refused_and_nothing_is_written,
    ::test_registering_in_a_closed_study_is_a_clear_conflict; here: NUL in attributes, over-long id.
Browser annotator (annotation/views.py, POST /s/<slug>/judge/)
  unknown choice; a strength that is not a number, negative or huge; NUL in the rationale; invalid
  UTF-8 in the form body; a body over the upload limit; a draft study.
  → another participant's served id: tests/annotation/test_judgment_page.py
    ::test_served_id_of_another_participant_gets_a_clear_error
  → malformed / stale served id: ::test_stale_or_malformed_served_id_is_rejected
  → missing strength and rationale, a rationale over the limit:
    ::test_invalid_answer_shows_the_pair_again_with_errors_and_keeps_the_input
  → a closed study: tests/annotation/test_participant_flow.py::test_closing_a_study_stops_a_participant_midway
Researcher API (elicitation/apis.py, import_apis.py, annotation/export_apis.py, modeling/apis.py)
  studies: malformed JSON, invalid UTF-8, wrong types, unknown choices (rationale mode, question
  kind, status, role), NUL in text, a survey position past the column's range, an oversized body;
  script tags in a title are stored and returned as data.
  imports: a CSV with a missing column, a file that is not UTF-8, a UTF-16 file (NUL bytes), NUL
  escaped in JSON lines, a line nested too deeply, `lines` of the wrong type, a file over
  POLYPHONY_IMPORT_MAX_BYTES; comparisons with an unknown choice, negative / huge strength, a
  created_at out of range.
  files and paths: errors of the file downloads are JSON even when the client asks for the file's
  type; a path no route matches is a JSON 404; a NUL in a collaborator's username is a 404.
  judgments list: NUL in a filter, a hostile study slug, a malformed cursor.
  → bad study fields (slug, counts, labels, survey): tests/elicitation/test_study_api.py
    ::test_create_study_with_bad_input_is_a_json_400_and_writes_nothing, ::test_patch_that_fails_changes_nothing
  → malformed judgment filters: ::test_malformed_judgment_filters_are_a_json_400
  → bad training requests: tests/modeling/test_model_page.py::test_api_refuses_bad_run_requests
  → import line errors (file): tests/elicitation/test_imports.py (bad JSONL lines, bad CSV, non-UTF-8,
    oversized, empty), tests/elicitation/test_imports_web.py::test_api_rejects_a_bad_line_with_every_error
Researcher import page (elicitation/import_views.py)
  a CSV with a missing column; a file that is not UTF-8.
  → JSONL line errors and an oversized file: tests/elicitation/test_imports_web.py
    ::test_import_page_lists_line_errors_and_writes_nothing, ::test_import_page_refuses_an_oversized_upload

The schema-driven fuzz of every API operation is tests/hardening/test_api_fuzz.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Model
from django.test import Client
from rest_framework.test import APIClient

from annotation.models import ExportJob, Judgment, Participant, ServedPair, SurveyAnswer, Withdrawal
from annotation.services import participant_withdraw
from elicitation.models import Pair, Prompt, Response, Study, StudyCollaborator, SurveyQuestion
from modeling.models import TrainingRun
from tests.annotation.test_judgment_page import answer, judge_url, ready
from tests.factories import study_with_pool

pytestmark = pytest.mark.django_db

NEXT, JUDGE = "/api/v1/participant/next", "/api/v1/participant/judgments"
TABLES: list[type[Model]] = [
    Study, SurveyQuestion, StudyCollaborator, Prompt, Response, Pair, Participant, SurveyAnswer, ServedPair,
    Judgment, Withdrawal, ExportJob, TrainingRun,
]
SCRIPT = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _rows() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in TABLES}


@pytest.fixture
def unchanged():
    """Call with the block's result after the bad requests: asserts no table gained or lost a row."""
    before = _rows()

    def check() -> None:
        assert _rows() == before

    return check


def _api_error(response: Any, status: int, *words: str) -> dict[str, Any]:
    """A JSON error object with `detail`, whose text names the problem (each of `words`)."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert isinstance(body, dict) and body.get("detail"), body
    text = json.dumps(body, ensure_ascii=False).lower()
    for word in words:
        assert word.lower() in text, (word, body)
    return body


@pytest.fixture
def study(researcher) -> Study:
    return study_with_pool(owner=researcher, prompts=2, responses_per_prompt=3, judgments_per_participant=4,
                           rationale_mode=Study.RationaleMode.OPTIONAL)


@pytest.fixture
def participant_api(api_client, study) -> tuple[APIClient, str]:
    """A participant registered through the API, with the served id of their current pair."""
    registered = api_client.post(f"/api/v1/studies/{study.slug}/participants", {"external_id": "api-1"}, format="json")
    assert registered.status_code == 201, registered.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {registered.json()['token']}")
    served_id = client.get(NEXT).json()["served_id"]
    return client, served_id


def _post_raw(client: Client | APIClient, url: str, body: bytes, content_type: str = "application/json") -> Any:
    return client.generic("POST", url, body, content_type=content_type)


# --- Participant API -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b'{"served_id": "', "application/json", 400, ["JSON parse error"]),
        (b'{"served_id": "\xff\xfe", "choice": "a"}', "application/json", 400, ["JSON parse error", "utf-8"]),
        (b"[" * 50_000, "application/json", 400, ["nested too deeply"]),
        (b"served_id=x", "text/plain", 415, ["Unsupported media type"]),
    ],
    ids=["malformed-json", "invalid-utf8", "nested-too-deeply", "text-plain"],
)
def test_participant_api_refuses_an_unreadable_body(participant_api, unchanged, body, content_type, status, words):
    client, _ = participant_api
    _api_error(_post_raw(client, JUDGE, body, content_type), status, *words)
    unchanged()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"served_id": ["0b3c8e0e-0000-4000-8000-000000000000"]}, "served_id"),
        ({"served_id": None}, "served_id"),
        ({"choice": ["a"]}, "choice"),
        ({"choice": "A"}, "choice"),
        ({"choice": "both"}, "choice"),
        ({"strength": "much"}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"strength": -1}, "strength"),
        ({"strength": 0}, "strength"),
        ({"strength": 10**30}, "strength"),
        ({"rationale": {"why": "x"}}, "rationale"),
        ({"rationale": "because\x00"}, "rationale"),
        ({"rationale": "y" * 5001}, "rationale"),
        ({"rationale": "y" * 1_000_000}, "rationale"),
    ],
)
def test_participant_api_names_the_bad_field_and_stores_nothing(participant_api, unchanged, fields, field):
    client, served_id = participant_api
    body = {"served_id": served_id, "choice": "a", "strength": 2, **fields}
    _api_error(client.post(JUDGE, body, format="json"), 400, field)
    unchanged()


@pytest.mark.parametrize("body", [[], ["a"], "a", 7, None], ids=["empty-list", "list", "string", "number", "null"])
def test_participant_api_refuses_a_body_that_is_not_an_object(participant_api, unchanged, body):
    client, _ = participant_api
    _api_error(_post_raw(client, JUDGE, json.dumps(body).encode()), 400)
    unchanged()


@pytest.mark.parametrize("served_id", ["not-a-uuid", "1 OR 1=1", "../../etc/passwd", "", "0" * 1000])
def test_participant_api_refuses_a_served_id_that_is_not_a_uuid(participant_api, unchanged, served_id):
    client, _ = participant_api
    _api_error(client.post(JUDGE, {"served_id": served_id, "choice": "a", "strength": 1}, format="json"),
               400, "served_id")
    unchanged()


def test_participant_api_refuses_an_oversized_body_with_a_json_413(participant_api, unchanged, settings):
    client, served_id = participant_api
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    # Over the limit: Django finds it while DRF reads the body.
    over = {"served_id": served_id, "choice": "a", "strength": 1, "rationale": "y" * 3_000}
    _api_error(client.post(JUDGE, over, format="json"), 413, "too large", "2000 bytes")
    # Far over (past the multipart headroom): refused from Content-Length before anything reads it.
    far_over = {**over, "rationale": "y" * 2_000_000}
    _api_error(client.post(JUDGE, far_over, format="json"), 413, "too large")
    unchanged()


def test_participant_api_refuses_answers_to_a_draft_study(participant_api, study, unchanged):
    """An open study taken back to draft (closed: test_participant_api.py) takes no answers."""
    client, served_id = participant_api
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DRAFT)
    _api_error(client.post(JUDGE, {"served_id": served_id, "choice": "a", "strength": 1}, format="json"),
               409, "not open")
    _api_error(client.get(NEXT), 409, "not open")
    unchanged()


def test_a_withdrawn_participants_token_stops_working(participant_api, unchanged):
    client, served_id = participant_api
    participant_withdraw(participant=Participant.objects.get(external_id="api-1"))
    before = _rows()
    _api_error(client.get(NEXT), 401, "token")
    _api_error(client.post(JUDGE, {"served_id": served_id, "choice": "a", "strength": 1}, format="json"), 401, "token")
    assert _rows() == before


def test_script_tags_in_a_rationale_are_stored_as_text_and_returned_as_data(participant_api, api_client, study):
    client, served_id = participant_api
    stored = client.post(JUDGE, {"served_id": served_id, "choice": "a", "strength": 1, "rationale": SCRIPT},
                         format="json")
    assert stored.status_code == 201, stored.content
    assert Judgment.objects.get().rationale == SCRIPT  # stored as given; pages escape it when they render it
    listed = api_client.get("/api/v1/judgments", {"study": study.slug})
    assert listed["Content-Type"] == "application/json"
    assert listed.json()["results"][0]["rationale"] == SCRIPT


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"external_id": "x" * 201}, ["external_id"]),
        ({"external_id": "a\x00b"}, ["external_id"]),
        ({"external_id": "ok", "attributes": {"age": "3\x004"}}, ["attributes", "NUL"]),
        ({"external_id": "ok", "attributes": {"a\x00": 1}}, ["attributes", "NUL"]),
        ({"external_id": "ok", "attributes": ["age", 3]}, ["attributes"]),
    ],
)
def test_participant_registration_refuses_bad_ids_and_attributes(api_client, study, unchanged, fields, words):
    _api_error(api_client.post(f"/api/v1/studies/{study.slug}/participants", fields, format="json"), 400, *words)
    unchanged()


# --- Browser annotator ---------------------------------------------------------------------------


@pytest.fixture
def browser(client: Client, study: Study) -> tuple[Client, ServedPair]:
    ready(client, study)
    served = client.get(judge_url(study)).context["served"]
    return client, served


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"choice": "left"}, "choice", "at most 3 characters"),
        ({"choice": "B"}, "choice", "Choose A, B or a tie."),
        ({"choice": ""}, "choice", "Choose A, B or a tie."),
        ({"strength": "much"}, "strength", "Pick a strength from the scale."),
        ({"strength": "-1"}, "strength", "Strength must be between 1 and 3."),
        ({"strength": "99999999999999999999"}, "strength", "Strength must be between 1 and 3."),
        ({"rationale": "because\x00"}, "rationale", "Null characters are not allowed."),
    ],
)
def test_judgment_page_shows_the_error_on_the_form_and_stores_nothing(browser, study, unchanged, fields, field,
                                                                      message):
    client, served = browser
    response = client.post(judge_url(study), answer(served, **fields))
    assert response.status_code == 422
    assert f'id="{field}-error"' in response.text and message in response.text
    assert response.context["served"].id == served.id  # the same pair again, with the error
    unchanged()


def test_judgment_page_with_invalid_utf8_in_the_form_is_a_clear_error(browser, study, unchanged):
    client, served = browser
    body = b"served_id=" + str(served.id).encode() + b"&choice=\xff\xfe&strength=1"
    response = _post_raw(client, judge_url(study), body, "application/x-www-form-urlencoded")
    assert response.status_code == 422 and 'id="choice-error"' in response.text
    malformed_id = _post_raw(client, judge_url(study), b"served_id=%ff%fe&choice=a&strength=1",
                             "application/x-www-form-urlencoded")
    assert malformed_id.status_code == 400 and "This comparison id is malformed" in malformed_id.text
    unchanged()


def test_judgment_page_refuses_an_oversized_body(browser, study, unchanged, settings):
    client, served = browser
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    response = client.post(judge_url(study), answer(served, rationale="y" * 3_000))
    assert response.status_code == 400  # Django's bad-request page: the body was never parsed
    unchanged()


def test_judgment_page_of_a_draft_study_takes_no_answer(browser, study, unchanged):
    client, served = browser
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DRAFT)
    response = client.post(judge_url(study), answer(served))
    assert response.status_code == 403 and "not accepting answers" in response.text
    unchanged()


# --- Researcher API: studies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"title": "T", "slug": ', 400, ["JSON parse error"]),
        (b'{"title": "\xff", "slug": "t"}', 400, ["JSON parse error", "utf-8"]),
        (b'{"title": "T", "slug": "t", "judgments_per_participant": NaN}', 400, ["JSON parse error"]),
        (json.dumps({"title": "T", "slug": "t", "judgments_per_participant": "ten"}).encode(), 400,
         ["judgments_per_participant"]),
        (json.dumps({"title": "T", "slug": "t", "allow_ties": "maybe"}).encode(), 400, ["allow_ties"]),
        (json.dumps({"title": "T", "slug": "t", "strength_labels": "weak,strong"}).encode(), 400, ["strength_labels"]),
        (json.dumps({"title": "T", "slug": "t", "rationale_mode": "sometimes"}).encode(), 400, ["rationale_mode"]),
        (json.dumps({"title": "T\x00", "slug": "t"}).encode(), 400, ["title", "null"]),
        (json.dumps({"title": "T", "slug": "t", "survey_questions": [{"key": "k", "text": "?", "kind": "essay"}]})
         .encode(), 400, ["survey_questions", "kind"]),
        (json.dumps({"title": "T", "slug": "t", "survey_questions": [
            {"key": "k", "text": "?", "kind": "text", "position": 10**12}]}).encode(), 400, ["position"]),
        (json.dumps({"title": "T", "slug": "t", "survey_questions": {"key": "k"}}).encode(), 400, ["survey_questions"]),
    ],
    ids=["malformed", "invalid-utf8", "nan", "count-as-text", "bool-as-text", "labels-as-text", "unknown-mode",
         "nul", "unknown-kind", "position-out-of-range", "survey-not-a-list"],
)
def test_study_create_refuses_bad_input_with_json(api_client, unchanged, body, status, words):
    _api_error(_post_raw(api_client, "/api/v1/studies", body), status, *words)
    unchanged()


def test_study_create_refuses_an_oversized_body_with_a_json_413(api_client, unchanged, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2_000
    _api_error(api_client.post("/api/v1/studies", {"title": "T", "slug": "t", "description": "d" * 3_000},
                               format="json"), 413, "too large")
    unchanged()


@pytest.mark.parametrize(("fields", "field"), [({"status": "paused"}, "status"), ({"allow_ties": []}, "allow_ties")])
def test_study_update_refuses_unknown_choices_and_wrong_types(api_client, study, unchanged, fields, field):
    _api_error(api_client.patch(f"/api/v1/studies/{study.slug}", fields, format="json"), 400, field)
    unchanged()
    study.refresh_from_db()
    assert study.status == Study.Status.OPEN


def test_script_tags_in_a_study_title_are_stored_and_returned_as_data(api_client):
    created = api_client.post("/api/v1/studies", {"title": SCRIPT, "slug": "xss"}, format="json")
    assert created.status_code == 201, created.content
    assert Study.objects.get(slug="xss").title == SCRIPT
    assert api_client.get("/api/v1/studies/xss").json()["title"] == SCRIPT


def test_collaborator_endpoints_refuse_unknown_roles_and_nul_usernames(api_client, study, unchanged):
    _api_error(api_client.post(f"/api/v1/studies/{study.slug}/collaborators", {"username": "alice", "role": "owner"},
                               format="json"), 400, "role")
    _api_error(api_client.delete(f"/api/v1/studies/{study.slug}/collaborators/a%00b"), 404, "not a collaborator")
    unchanged()


# --- Researcher API: imports ---------------------------------------------------------------------


def _upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("r.csv", b"prompt,answer\nHow?,Like this.\n", ["missing column 'response'"]),
        ("r.csv", b"response\nLike this.\n", ["missing column 'prompt'"]),
        ("r.csv", "prompt,response\nCafé?,Oui.\n".encode("latin-1"), ["not UTF-8"]),
        ("r.csv", "prompt,response\nHow?,Like this.\n".encode("utf-16-le"), ["NUL", "UTF-16"]),
        ("r.jsonl", b'{"prompt": "p\\u0000", "responses": ["a", "b"]}\n', ["line 1", "NUL"]),
        ("r.jsonl", b'{"prompt": ' + b"[" * 50_000 + b"\n", ["line 1", "nested too deeply"]),
    ],
    ids=["csv-missing-response", "csv-missing-prompt", "latin-1", "utf-16", "escaped-nul", "nested-too-deeply"],
)
def test_responses_import_api_refuses_a_bad_file_and_writes_nothing(api_client, study, unchanged, name, content,
                                                                     words):
    response = api_client.post(f"/api/v1/studies/{study.slug}/import/responses", {"file": _upload(name, content)})
    _api_error(response, 400, "nothing was written", *words)
    unchanged()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"lines": "prompt,response"}, ["lines"]),
        ({"lines": []}, ["lines"]),
        ({"lines": [{"prompt": "p\x00", "responses": ["a", "b"]}]}, ["line 1", "NUL"]),
        ({"lines": [{"prompt": "p", "responses": ["a", "b"], "sources": {"x": "\x00"}}]}, ["line 1", "NUL"]),
    ],
)
def test_responses_import_api_refuses_bad_json_lines(api_client, study, unchanged, body, words):
    _api_error(api_client.post(f"/api/v1/studies/{study.slug}/import/responses", body, format="json"), 400, *words)
    unchanged()


def test_responses_import_api_refuses_a_file_over_the_import_limit(api_client, study, unchanged, settings):
    settings.POLYPHONY_IMPORT_MAX_BYTES = 64
    csv = b"prompt,response\n" + b"How?,Like this.\n" * 10
    response = api_client.post(f"/api/v1/studies/{study.slug}/import/responses", {"file": _upload("r.csv", csv)})
    _api_error(response, 400, "larger than the import limit")
    unchanged()


COMPARISON = {"prompt": "p", "response_a": "a", "response_b": "b", "choice": "a", "annotator": "z"}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"choice": "maybe"}, ["unknown choice 'maybe'"]),
        ({"choice": 1}, ["choice"]),
        ({"strength": -1}, ["strength"]),
        ({"strength": 10**30}, ["strength"]),
        ({"strength": "2"}, ["strength", "whole number"]),
        ({"created_at": "0001-01-01T00:00:00+01:00"}, ["created_at", "out of range"]),
        ({"annotator_attributes": {"age": [1]}}, ["annotator attribute"]),
    ],
)
def test_comparisons_import_api_refuses_bad_comparisons(api_client, researcher, fields, words):
    study = study_with_pool(owner=researcher, prompts=1, responses_per_prompt=2, strength_labels=["weak", "strong"])
    before = _rows()
    response = api_client.post(f"/api/v1/studies/{study.slug}/import/comparisons",
                               {"lines": [{**COMPARISON, **fields}]}, format="json")
    _api_error(response, 400, "nothing was written", *words)
    assert _rows() == before


def test_comparisons_import_stores_a_far_time_zone_as_utc(api_client, study):
    """Python reads offsets up to ±23:59, PostgreSQL stores up to ±15:59: the import converts to UTC."""
    response = api_client.post(f"/api/v1/studies/{study.slug}/import/comparisons",
                               {"lines": [{**COMPARISON, "created_at": "2024-05-01T12:00:00-23:30"}]}, format="json")
    assert response.status_code == 201, response.content
    assert Judgment.objects.get().answered_at.isoformat() == "2024-05-02T11:30:00+00:00"


# --- Researcher import page ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"prompt,answer\nHow?,Like this.\n", "missing column &#x27;response&#x27;"),
        ("prompt,response\nCafé?,Oui.\n".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_import_page_shows_the_file_error_and_writes_nothing(client, researcher, study, unchanged, content, message):
    client.force_login(researcher)
    response = client.post(f"/studies/{study.slug}/import/", {"kind": "responses", "file": _upload("r.csv", content)})
    assert response.status_code == 400
    assert "Import rejected; nothing was written." in response.text and message in response.text
    unchanged()


# --- Researcher API: files and paths -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "accept"),
    [
        ("/api/v1/training-runs/999999/model.zip?format=zip", None),
        ("/api/v1/training-runs/999999/model.zip", "application/zip"),
        ("/api/v1/exports/999999/download?format=file", None),
        ("/api/v1/exports/999999/download", "application/octet-stream"),
        ("/api/v1/studies/no-such-study/moral-graph.graphml?format=graphml", None),
    ],
)
def test_file_downloads_answer_their_errors_in_json(api_client, url, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    _api_error(api_client.get(url, **headers), 404)


def test_an_unfinished_export_download_is_a_json_409(api_client, study):
    job = ExportJob.objects.create(study=study, format=ExportJob.Format.JSONL)
    _api_error(api_client.get(f"/api/v1/exports/{job.pk}/download", HTTP_ACCEPT="application/octet-stream"), 409,
               "not done")


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ({"participant": "a\x00b"}, 400, ["participant", "null"]),
        ({"study": "../etc"}, 400, ["study"]),
        ({"since": "yesterday"}, 400, ["since"]),
        ({"cursor": "not-a-cursor"}, 404, ["cursor"]),
    ],
)
def test_judgment_list_refuses_hostile_filters_with_json(api_client, study, query, status, words):
    _api_error(api_client.get("/api/v1/judgments", query), status, *words)


def test_export_request_refuses_an_unknown_format(api_client, study, unchanged):
    _api_error(api_client.post(f"/api/v1/studies/{study.slug}/exports", {"format": "xlsx"}, format="json"),
               400, "format")
    unchanged()


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/studies/not%20a%20slug", "/api/v1/exports/-1",
                                  "/api/v1/studies/%C2%B4T/prompts", "/api/"])
def test_a_path_no_api_route_matches_is_a_json_404(api_client, path):
    _api_error(api_client.get(path), 404)


def test_pages_outside_the_api_keep_their_html_error_pages(client):
    response = client.get("/s/no-such-study/")
    assert response.status_code == 404 and not response["Content-Type"].startswith("application/json")

"""The import page, the import API and `manage.py import_responses`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from elicitation.models import Pair, Prompt, Response, StudyCollaborator
from tests.factories import StudyFactory

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def study(researcher):
    return StudyFactory(owner=researcher, slug="plants")


def _upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


# --- Page ----------------------------------------------------------------------------------------


def test_import_page_shows_the_form(client, researcher, study, django_assert_max_num_queries) -> None:
    client.force_login(researcher)

    with django_assert_max_num_queries(6):
        page = client.get(reverse("imports:import", kwargs={"slug": study.slug}))

    assert page.status_code == 200
    assert b'type="file"' in page.content and b"Prompts and candidate responses" in page.content


def test_import_page_upload_reports_counts(client, researcher, study) -> None:
    client.force_login(researcher)
    url = reverse("imports:import", kwargs={"slug": study.slug})

    response = client.post(
        url, {"kind": "responses", "file": _upload("r.jsonl", (DATA / "responses_small.jsonl").read_bytes())},
        follow=True,
    )

    assert response.redirect_chain == [(url, 302)]
    assert "3 prompts created (0 already present)" in response.content.decode()
    assert Prompt.objects.filter(study=study).count() == 3


def test_import_page_lists_line_errors_and_writes_nothing(client, researcher, study) -> None:
    client.force_login(researcher)
    bad = b'{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "q"}\n{oops\n'

    response = client.post(
        reverse("imports:import", kwargs={"slug": study.slug}), {"kind": "responses", "file": _upload("r.jsonl", bad)}
    )

    body = response.content.decode()
    assert response.status_code == 400
    assert "Import rejected; nothing was written." in body
    assert "line 2: missing field &#x27;responses&#x27;" in body
    assert "line 3: not valid JSON" in body
    assert not Prompt.objects.exists()


def test_import_page_refuses_an_oversized_upload(client, researcher, study, settings) -> None:
    settings.POLYPHONY_IMPORT_MAX_BYTES = 64
    client.force_login(researcher)

    response = client.post(
        reverse("imports:import", kwargs={"slug": study.slug}),
        {"kind": "responses", "file": _upload("r.csv", b"prompt,response\n" + b"p,a\n" * 40)},
    )

    assert response.status_code == 400
    assert "larger than the import limit of 64 bytes" in response.content.decode()
    assert not Prompt.objects.exists()


def test_import_page_is_hidden_from_other_researchers_and_viewers(client, study, other_researcher) -> None:
    client.force_login(other_researcher)
    url = reverse("imports:import", kwargs={"slug": study.slug})
    assert client.get(url).status_code == 404

    StudyCollaborator.objects.create(study=study, user=other_researcher, role=StudyCollaborator.Role.VIEWER)
    assert client.get(url).status_code == 404

    StudyCollaborator.objects.filter(study=study).update(role=StudyCollaborator.Role.EDITOR)
    assert client.get(url).status_code == 200


def test_import_page_needs_login(client, study) -> None:
    response = client.get(reverse("imports:import", kwargs={"slug": study.slug}))

    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- API -----------------------------------------------------------------------------------------


def test_api_imports_a_multipart_file(api_client, study) -> None:
    response = api_client.post(
        f"/api/v1/studies/{study.slug}/import/responses",
        {"file": _upload("r.csv", (DATA / "responses_small.csv").read_bytes())}, format="multipart",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["prompts_created"] == 2
    assert response.json()["responses_created"] == 4


def test_api_imports_json_lines(api_client, study) -> None:
    lines = [line for line in map(json.loads, (DATA / "responses_small.jsonl").read_text().splitlines())]

    response = api_client.post(f"/api/v1/studies/{study.slug}/import/responses", {"lines": lines}, format="json")
    again = api_client.post(f"/api/v1/studies/{study.slug}/import/responses", {"lines": lines}, format="json")

    assert response.status_code == 201
    assert response.json()["attention_checks_created"] == 1
    assert again.json()["responses_created"] == 0 and again.json()["responses_existing"] == 7
    assert Response.objects.count() == 7 and Pair.objects.count() == 5


def test_api_rejects_a_bad_line_with_every_error(api_client, study) -> None:
    lines = [{"prompt": "ok", "responses": ["a", "b"]}, {"prompt": 3, "responses": ["a"]}, []]

    response = api_client.post(f"/api/v1/studies/{study.slug}/import/responses", {"lines": lines}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Import rejected; nothing was written.",
        "errors": ["line 2: 'prompt' must be a string, got a number", "line 3: expected a JSON object, got a list"],
    }
    assert not Prompt.objects.exists()


def test_api_without_file_or_lines_explains_what_to_send(api_client, study) -> None:
    response = api_client.post(f"/api/v1/studies/{study.slug}/import/responses", {}, format="json")

    assert response.status_code == 400
    assert "multipart" in response.json()["detail"]


def test_api_import_of_another_researchers_study_is_404(api_client, other_researcher) -> None:
    theirs = StudyFactory(owner=other_researcher)

    response = api_client.post(
        f"/api/v1/studies/{theirs.slug}/import/responses", {"lines": [{"prompt": "p", "responses": ["a"]}]},
        format="json",
    )

    assert response.status_code == 404
    assert not Prompt.objects.exists()


def test_import_endpoints_are_in_the_openapi_schema(api_client) -> None:
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    operation = schema["paths"]["/api/v1/studies/{slug}/import/responses"]["post"]
    assert set(operation["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"201", "400"} <= set(operation["responses"])
    assert "/api/v1/studies/{slug}/import/comparisons" in schema["paths"]


# --- Management command ------------------------------------------------------------------------


def test_import_responses_command_imports_and_is_idempotent(study, capsys) -> None:
    call_command("import_responses", study.slug, str(DATA / "responses_small.jsonl"))
    call_command("import_responses", study.slug, str(DATA / "responses_small.jsonl"))

    out = capsys.readouterr().out
    assert "3 prompts created" in out and "0 prompts created (3 already present)" in out
    assert Prompt.objects.count() == 3


def test_import_responses_command_fails_and_writes_nothing_on_a_bad_line(study, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "q", "responses": "x"}\n')

    with pytest.raises(CommandError, match="line 2: 'responses' must be a non-empty list"):
        call_command("import_responses", study.slug, str(bad))

    assert not Prompt.objects.exists()


def test_import_responses_command_names_a_missing_study_or_file(study, tmp_path) -> None:
    with pytest.raises(CommandError, match="No study with slug 'nope'"):
        call_command("import_responses", "nope", str(DATA / "responses_small.jsonl"))
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_responses", study.slug, str(tmp_path / "missing.csv"))

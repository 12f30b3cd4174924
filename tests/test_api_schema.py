"""The OpenAPI schema is valid and complete, and the docs page works without the network."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

RESEARCHER_OPERATIONS = {
    ("/api/v1/studies", "get"), ("/api/v1/studies", "post"),
    ("/api/v1/studies/{slug}", "get"), ("/api/v1/studies/{slug}", "patch"),
    ("/api/v1/studies/{slug}/prompts", "get"),
    ("/api/v1/studies/{slug}/collaborators", "post"),
    ("/api/v1/studies/{slug}/collaborators/{username}", "delete"),
    ("/api/v1/judgments", "get"),
}


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        response = Client().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_schema_is_valid_openapi_3(schema) -> None:
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # raises on anything the OpenAPI 3 JSON schema rejects


def test_schema_documents_every_researcher_operation_with_token_auth(schema) -> None:
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert RESEARCHER_OPERATIONS <= documented
    assert "tokenAuth" in schema["components"]["securitySchemes"]
    for path, method in RESEARCHER_OPERATIONS:
        operation = schema["paths"][path][method]
        assert {"tokenAuth": []} in operation["security"], (path, method)
        assert operation.get("responses"), (path, method)


def test_judgment_list_documents_filters_cursor_pagination_and_the_comparison_format(schema) -> None:
    operation = schema["paths"]["/api/v1/judgments"]["get"]
    parameters = {p["name"] for p in operation["parameters"]}
    assert {"study", "participant", "since", "until", "cursor", "page_size"} <= parameters
    page = schema["components"]["schemas"]["PaginatedJudgmentList"]
    assert {"next", "previous", "results"} <= set(page["properties"])
    judgment = schema["components"]["schemas"]["Judgment"]["properties"]
    assert {"prompt", "response_a", "response_b", "choice", "annotator", "strength", "rationale",
            "annotator_attributes", "id", "created_at", "study", "attention_check", "served_at",
            "answered_at", "policy"} <= set(judgment)


def test_study_schemas_nest_the_survey_read_and_write(schema) -> None:
    schemas = schema["components"]["schemas"]
    assert schemas["Study"]["properties"]["survey_questions"]["readOnly"] is True
    assert "survey_questions" in schemas["StudyCreateInputRequest"]["properties"]
    assert "status" in schemas["PatchedStudyUpdateInputRequest"]["properties"]


def test_docs_page_renders_from_local_assets_only() -> None:
    response = Client().get("/api/docs/")

    assert response.status_code == 200
    body = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', body)
    assert assets, body[:500]
    # The start-up script comes from the page's own URL (?script), not inline: the CSP allows no inline script.
    scripts = [asset for asset in assets if asset.startswith("/api/docs/?script")]
    assert len(scripts) == 1
    for asset in set(assets) - set(scripts):
        assert asset.startswith("/static/"), f"{asset} would need the network"
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not shipped"
    assert "/api/schema/" in Client().get(scripts[0].replace("&amp;", "&")).content.decode()

"""Researcher API: studies, survey, status, prompts, collaborators, judgments; token auth; isolation."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.models import Judgment, Participant
from elicitation.models import Study, StudyCollaborator, SurveyQuestion
from tests.factories import (
    ParticipantFactory,
    StudyFactory,
    SurveyQuestionFactory,
    UserFactory,
    study_with_pool,
)

pytestmark = pytest.mark.django_db

SURVEY = [
    {"key": "age_group", "text": "Your age group?", "kind": "choice", "choices": ["18-34", "35+"]},
    {"key": "years", "text": "Years of education?", "kind": "number", "min_value": 0, "max_value": 30,
     "required": False},
]


def _client_with_token(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def study(researcher) -> Study:
    return study_with_pool(prompts=2, responses_per_prompt=3, owner=researcher, slug="mine", title="My study",
                           status=Study.Status.DRAFT)


# --- authentication --------------------------------------------------------------------------------


def test_token_from_drf_create_token_authenticates(researcher) -> None:
    StudyFactory(owner=researcher, title="Token study")
    out = StringIO()
    call_command("drf_create_token", researcher.username, stdout=out)
    key = out.getvalue().split()[2]  # "Generated token <key> for user alice"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    response = client.get("/api/v1/studies")

    assert response.status_code == 200
    assert [s["title"] for s in response.json()] == ["Token study"]


def test_missing_or_wrong_token_is_refused_with_json() -> None:
    client = APIClient()
    assert client.get("/api/v1/studies").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = client.get("/api/v1/judgments")
    assert response.status_code == 401
    assert "detail" in response.json()


# --- studies ---------------------------------------------------------------------------------------


def test_create_study_with_survey(api_client, researcher) -> None:
    payload = {"title": "Tone study", "slug": "tone", "strength_labels": ["slightly", "clearly", "much"],
               "allow_ties": False, "rationale_mode": "required", "judgments_per_participant": 20,
               "overlap_target": 5, "redirect_url": "https://example.org/done", "survey_questions": SURVEY}

    response = api_client.post("/api/v1/studies", payload, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "draft" and body["owner"] == "alice"
    assert body["participant_path"] == "/s/tone/"
    assert [q["key"] for q in body["survey_questions"]] == ["age_group", "years"]
    assert body["survey_questions"][1]["max_value"] == 30
    study = Study.objects.get(slug="tone")
    assert (study.allow_ties, study.rationale_mode, study.overlap_target) == (False, "required", 5)
    assert len(study.completion_code) == 8


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": "No slug"}, "slug"),
        ({"title": "T", "slug": "bad slug!"}, "slug"),
        ({"title": "T", "slug": "new"}, "slug"),
        ({"title": "T", "slug": "t", "judgments_per_participant": 0}, "judgments_per_participant"),
        ({"title": "T", "slug": "t", "strength_labels": ["one"]}, "strength_labels"),
        ({"title": "T", "slug": "t", "selection_policy": "psychic"}, "selection_policy"),
        ({"title": "T", "slug": "t", "survey_questions": [{"key": "q", "text": "Pick", "kind": "choice",
                                                          "choices": ["only"]}]}, "survey_questions"),
        ({"title": "T", "slug": "t", "survey_questions": [SURVEY[0], SURVEY[0]]}, "survey_questions"),
    ],
)
def test_create_study_with_bad_input_is_a_json_400_and_writes_nothing(api_client, payload, field) -> None:
    response = api_client.post("/api/v1/studies", payload, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "Invalid input."
    assert field in body["errors"], body
    assert Study.objects.count() == 0
    assert SurveyQuestion.objects.count() == 0


def test_list_shows_own_and_shared_studies_with_counts(api_client, researcher, other_researcher,
                                                        django_assert_max_num_queries) -> None:
    own = study_with_pool(prompts=1, responses_per_prompt=3, owner=researcher, title="Own")
    SurveyQuestionFactory(study=own)
    shared = StudyFactory(owner=other_researcher, title="Shared")
    StudyCollaborator.objects.create(study=shared, user=researcher)
    StudyFactory(owner=other_researcher, title="Hidden")

    with django_assert_max_num_queries(4):  # token, studies, survey questions, collaborators
        response = api_client.get("/api/v1/studies")

    titles = {s["title"]: s for s in response.json()}
    assert set(titles) == {"Own", "Shared"}
    assert titles["Own"]["pair_total"] == 3
    assert len(titles["Own"]["survey_questions"]) == 1
    assert titles["Shared"]["collaborators"] == [{"username": "alice", "role": "viewer"}]


def test_patch_updates_fields_replaces_survey_and_opens_the_study(api_client, study) -> None:
    kept = SurveyQuestionFactory(study=study, key="age_group", choices=["young", "old"], position=1)
    SurveyQuestionFactory(study=study, key="to_drop", position=2)

    response = api_client.patch(
        "/api/v1/studies/mine",
        {"title": "Renamed", "status": "open", "survey_questions": SURVEY, "strength_labels": []},
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["title"], body["status"], body["strength_labels"]) == ("Renamed", "open", [])
    questions = list(study.survey_questions.all())
    assert [q.key for q in questions] == ["age_group", "years"]
    assert questions[0].pk == kept.pk  # matched by key, updated in place
    assert questions[0].choices == ["18-34", "35+"]


def test_patch_that_fails_changes_nothing(api_client, study) -> None:
    # A valid title with an impossible status: the whole request is refused.
    empty = StudyFactory(owner=study.owner, slug="empty", status=Study.Status.DRAFT, title="Empty")
    response = api_client.patch("/api/v1/studies/empty", {"title": "Changed", "status": "open"}, format="json")

    assert response.status_code == 400
    assert "no pairs" in str(response.json()["errors"]["status"])
    empty.refresh_from_db()
    assert (empty.title, empty.status) == ("Empty", Study.Status.DRAFT)


def test_patch_survey_question_without_key_is_refused(api_client, study) -> None:
    response = api_client.patch("/api/v1/studies/mine", {"survey_questions": [{"text": "No key?", "kind": "text"}]},
                                format="json")
    assert response.status_code == 400
    assert "key is required" in str(response.json()["errors"]["survey_questions"])


def test_slug_is_fixed_once_participants_exist(api_client, study) -> None:
    ParticipantFactory(study=study)
    response = api_client.patch("/api/v1/studies/mine", {"slug": "moved"}, format="json")
    assert response.status_code == 400
    assert "participant links" in str(response.json()["errors"]["slug"])


def test_viewer_may_read_but_not_patch_and_editor_may_patch(study, other_researcher) -> None:
    membership = StudyCollaborator.objects.create(study=study, user=other_researcher)
    client = _client_with_token(other_researcher)
    assert client.get("/api/v1/studies/mine").status_code == 200
    refused = client.patch("/api/v1/studies/mine", {"title": "Viewer edit"}, format="json")
    assert refused.status_code == 403
    membership.role = StudyCollaborator.Role.EDITOR
    membership.save()
    assert client.patch("/api/v1/studies/mine", {"title": "Editor edit"}, format="json").status_code == 200
    study.refresh_from_db()
    assert study.title == "Editor edit"


def test_owner_manages_collaborators(api_client, study, other_researcher) -> None:
    added = api_client.post("/api/v1/studies/mine/collaborators", {"username": "mallory", "role": "editor"},
                            format="json")
    assert added.status_code == 201
    assert added.json() == {"username": "mallory", "role": "editor"}
    unknown = api_client.post("/api/v1/studies/mine/collaborators", {"username": "nobody"}, format="json")
    assert unknown.status_code == 400
    # A collaborator, even an editor, does not decide who else sees the study.
    as_editor = _client_with_token(other_researcher)
    assert as_editor.post("/api/v1/studies/mine/collaborators", {"username": "alice"}).status_code == 403
    assert api_client.delete("/api/v1/studies/mine/collaborators/mallory").status_code == 204
    assert not StudyCollaborator.objects.exists()
    assert api_client.delete("/api/v1/studies/mine/collaborators/mallory").status_code == 404


def test_superuser_sees_and_reads_every_study(study) -> None:
    admin = _client_with_token(UserFactory(username="admin", is_superuser=True))
    assert [s["slug"] for s in admin.get("/api/v1/studies").json()] == ["mine"]
    assert admin.get("/api/v1/studies/mine").status_code == 200
    assert admin.get("/api/v1/judgments", {"study": "mine"}).status_code == 200


# --- prompts ---------------------------------------------------------------------------------------


def test_prompts_come_with_their_responses_in_pages(api_client, study, django_assert_max_num_queries) -> None:
    with django_assert_max_num_queries(4):  # token, study, prompts, responses
        response = api_client.get("/api/v1/studies/mine/prompts", {"page_size": 1})

    body = response.json()
    assert response.status_code == 200
    assert len(body["results"]) == 1
    assert len(body["results"][0]["responses"]) == 3
    assert body["next"]
    rest = api_client.get(body["next"]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None
    assert rest["results"][0]["id"] != body["results"][0]["id"]


# --- isolation -------------------------------------------------------------------------------------


def test_other_researcher_gets_404_on_every_route_of_a_study_and_sees_no_data(study, other_researcher) -> None:
    participant = ParticipantFactory(study=study, external_id="secret-participant")
    _judgment(participant=participant, pair=study.pairs.first(), seconds=5)
    client = _client_with_token(other_researcher)
    requests = [
        ("get", "/api/v1/studies/mine", None),
        ("patch", "/api/v1/studies/mine", {"title": "Hijacked"}),
        ("get", "/api/v1/studies/mine/prompts", None),
        ("post", "/api/v1/studies/mine/collaborators", {"username": "mallory", "role": "editor"}),
        ("delete", "/api/v1/studies/mine/collaborators/alice", None),
        ("get", "/api/v1/judgments?study=mine", None),
        ("get", "/api/v1/judgments?study=mine&participant=secret-participant", None),
    ]
    for method, url, data in requests:
        response = getattr(client, method)(url, data, format="json") if data else getattr(client, method)(url)
        assert response.status_code == 404, (method, url, response.content)
        assert "secret-participant" not in response.content.decode()
        assert "My study" not in response.content.decode()
    # Unfiltered, the other researcher's judgments list is simply empty.
    assert client.get("/api/v1/judgments").json()["results"] == []
    assert client.get("/api/v1/studies").json() == []
    study.refresh_from_db()
    assert study.title == "My study"
    assert not StudyCollaborator.objects.exists()


# --- judgments -------------------------------------------------------------------------------------

T0 = timezone.now().replace(microsecond=0) - timedelta(days=2)


def _judgment(*, participant: Participant, pair, seconds: int, at: int = 0, **extra: object) -> Judgment:
    answered_at = T0 + timedelta(hours=at)
    return Judgment.objects.create(
        study=participant.study, participant=participant, pair=pair, response_a=pair.response_b,
        response_b=pair.response_a, choice="b", strength=2, rationale=extra.pop("rationale", ""), policy="random",
        served_at=answered_at - timedelta(seconds=seconds), answered_at=answered_at, **extra,
    )


def test_judgments_come_in_the_comparison_format(api_client, study) -> None:
    participant = ParticipantFactory(study=study, external_id="P1", attributes={"age_group": "18-34", "years": 12})
    pair = study.pairs.select_related("prompt", "response_a", "response_b").first()
    judgment = _judgment(participant=participant, pair=pair, seconds=7, rationale="Clearer.")

    item = api_client.get("/api/v1/judgments", {"study": "mine"}).json()["results"][0]

    assert item == {
        "prompt": pair.prompt.text,
        "response_a": pair.response_b.text,  # the response shown first
        "response_b": pair.response_a.text,
        "choice": "b",
        "annotator": "P1",
        "strength": 2,
        "rationale": "Clearer.",
        "annotator_attributes": {"age_group": "18-34", "years": 12},
        "id": f"mine-{judgment.pk}",
        "created_at": judgment.answered_at.isoformat().replace("+00:00", "Z"),
        "study": "mine",
        "attention_check": False,
        "attention_passed": None,
        "served_at": judgment.served_at.isoformat().replace("+00:00", "Z"),
        "answered_at": judgment.answered_at.isoformat().replace("+00:00", "Z"),
        "policy": "random",
        "origin": "annotated",
    }


def test_judgments_filter_by_participant_and_time_and_page_with_a_cursor(
    api_client, study, researcher, django_assert_max_num_queries
) -> None:
    pairs = list(study.pairs.all())
    p1 = ParticipantFactory(study=study, external_id="P1")
    p2 = ParticipantFactory(study=study, external_id="P2")
    mine = [_judgment(participant=p1, pair=pairs[n % len(pairs)], seconds=5, at=n) for n in range(5)]
    _judgment(participant=p2, pair=pairs[0], seconds=5, at=2, rationale="")
    other_study = study_with_pool(prompts=1, responses_per_prompt=2, owner=researcher, slug="second")
    _judgment(participant=ParticipantFactory(study=other_study, external_id="P1"), pair=other_study.pairs.first(),
              seconds=5, at=3)

    since, until = (T0 + timedelta(hours=1)).isoformat(), (T0 + timedelta(hours=4)).isoformat()
    with django_assert_max_num_queries(3):  # token, study, one page of judgments (everything joined)
        first = api_client.get("/api/v1/judgments", {"study": "mine", "participant": "P1", "since": since,
                                                     "until": until, "page_size": 2})
    body = first.json()
    assert [r["annotator"] for r in body["results"]] == ["P1", "P1"]
    second = api_client.get(body["next"]).json()
    ids = [r["id"] for r in body["results"] + second["results"]]
    assert ids == [f"mine-{j.pk}" for j in mine[1:4]]  # hours 1, 2, 3: since inclusive, until exclusive
    assert second["next"] is None

    everything = api_client.get("/api/v1/judgments", {"page_size": 100}).json()["results"]
    assert len(everything) == 7
    assert {r["study"] for r in everything} == {"mine", "second"}
    assert api_client.get("/api/v1/judgments", {"participant": "P2"}).json()["results"][0]["rationale"] is None


@pytest.mark.parametrize(
    "query",
    [{"since": "yesterday"}, {"until": "2024-13-01"}, {"since": "2024-02-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"},
     {"study": "not a slug"}],
)
def test_malformed_judgment_filters_are_a_json_400(api_client, query) -> None:
    response = api_client.get("/api/v1/judgments", query)
    assert response.status_code == 400
    assert response.json()["detail"] == "Invalid input."


def test_unknown_study_filter_is_404_not_an_empty_list(api_client) -> None:
    assert api_client.get("/api/v1/judgments", {"study": "nowhere"}).status_code == 404

"""The participant API: registration by a researcher's platform, bearer tokens, next pair, judgments."""

from __future__ import annotations

import hashlib

import pytest
from rest_framework.test import APIClient

from annotation.models import Judgment, Participant, ServedPair
from elicitation.models import Study
from tests.factories import study_with_pool

pytestmark = pytest.mark.django_db

NEXT, JUDGE = "/api/v1/participant/next", "/api/v1/participant/judgments"


def _study(owner, **fields) -> Study:
    fields.setdefault("strength_labels", [])
    fields.setdefault("judgments_per_participant", 3)
    return study_with_pool(prompts=2, responses_per_prompt=3, owner=owner, **fields)


def _register(api_client: APIClient, study: Study, external_id: str = "sim-1", **extra) -> APIClient:
    response = api_client.post(f"/api/v1/studies/{study.slug}/participants",
                               {"external_id": external_id, **extra}, format="json")
    assert response.status_code == 201, response.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    return client


def test_registering_a_participant_records_api_consent_and_stores_only_the_token_hash(api_client, researcher):
    study = _study(researcher)
    response = api_client.post(f"/api/v1/studies/{study.slug}/participants",
                               {"external_id": "sim-1", "attributes": {"age": 34, "country": "NL"}}, format="json")
    assert response.status_code == 201
    token = response.json()["token"]
    participant = Participant.objects.get(study=study, external_id="sim-1")
    assert participant.source == Participant.Source.API and participant.consented_at is not None
    assert participant.attributes == {"age": 34, "country": "NL"}
    assert participant.api_token_hash == hashlib.sha256(token.encode()).hexdigest() != token


def test_registering_needs_edit_rights_on_the_study(api_client, other_researcher):
    study = _study(other_researcher)
    response = api_client.post(f"/api/v1/studies/{study.slug}/participants", {"external_id": "x"}, format="json")
    assert response.status_code == 404
    assert APIClient().post(f"/api/v1/studies/{study.slug}/participants", {"external_id": "x"},
                            format="json").status_code == 401
    assert not Participant.objects.exists()


def test_bad_attributes_are_refused_and_nothing_is_written(api_client, researcher):
    study = _study(researcher)
    response = api_client.post(f"/api/v1/studies/{study.slug}/participants",
                               {"external_id": "x", "attributes": {"flag": True}}, format="json")
    assert response.status_code == 400
    assert "flag" in str(response.json())
    assert not Participant.objects.exists()


def test_registering_in_a_closed_study_is_a_clear_conflict(api_client, researcher):
    study = _study(researcher, status=Study.Status.CLOSED)
    response = api_client.post(f"/api/v1/studies/{study.slug}/participants", {"external_id": "x"}, format="json")
    assert response.status_code == 409 and "not open" in response.json()["detail"]


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Bearer", "Token abc"])
def test_participant_endpoints_answer_401_without_a_valid_token(header):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get(NEXT).status_code == 401
    assert client.post(JUDGE, {"served_id": "00000000-0000-0000-0000-000000000000", "choice": "a"},
                       format="json").status_code == 401


def test_a_researcher_token_is_not_a_participant_token(api_client):
    assert api_client.get(NEXT).status_code == 401


def test_participant_answers_until_done_then_gets_204(api_client, researcher):
    study = _study(researcher)
    client = _register(api_client, study)
    seen = []
    for _ in range(3):
        body = client.get(NEXT).json()
        assert set(body) == {"served_id", "prompt", "response_a", "response_b"}
        assert client.get(NEXT).json()["served_id"] == body["served_id"]  # same pair until answered
        seen.append(body["served_id"])
        response = client.post(JUDGE, {"served_id": body["served_id"], "choice": "b"}, format="json")
        assert response.status_code == 201 and response.json()["duplicate"] is False
    assert response.json()["completed"] is True
    assert client.get(NEXT).status_code == 204
    participant = Participant.objects.get(study=study)
    assert participant.completed_at is not None and participant.judgment_count == 3
    served = ServedPair.objects.filter(participant=participant)
    assert len({s.pair_id for s in served}) == 3 == len(set(seen))


def test_submitting_the_same_served_id_twice_stores_one_judgment(api_client, researcher):
    study = _study(researcher)
    client = _register(api_client, study)
    served_id = client.get(NEXT).json()["served_id"]
    first = client.post(JUDGE, {"served_id": served_id, "choice": "a"}, format="json")
    again = client.post(JUDGE, {"served_id": served_id, "choice": "b"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "duplicate": True}
    judgment = Judgment.objects.get()
    assert judgment.choice == "a" and judgment.pair.judgment_count == 1


def test_a_served_id_of_another_participant_is_not_found(api_client, researcher):
    study = _study(researcher)
    alice, bob = _register(api_client, study, "alice"), _register(api_client, study, "bob")
    served_id = alice.get(NEXT).json()["served_id"]
    response = bob.post(JUDGE, {"served_id": served_id, "choice": "a"}, format="json")
    assert response.status_code == 404
    assert not Judgment.objects.exists()


def test_bad_judgment_input_is_refused_with_field_errors(api_client, researcher):
    study = _study(researcher, strength_labels=["slightly", "much"])
    client = _register(api_client, study)
    served_id = client.get(NEXT).json()["served_id"]
    response = client.post(JUDGE, {"served_id": served_id, "choice": "a", "strength": 7}, format="json")
    assert response.status_code == 400 and "strength" in str(response.json())
    assert client.post(JUDGE, {"served_id": "nope", "choice": "a"}, format="json").status_code == 400
    assert client.post(JUDGE, {"served_id": served_id, "choice": "left"}, format="json").status_code == 400
    assert not Judgment.objects.exists()


def test_a_closed_study_serves_and_stores_nothing(api_client, researcher):
    study = _study(researcher)
    client = _register(api_client, study)
    served_id = client.get(NEXT).json()["served_id"]
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    assert client.get(NEXT).status_code == 409
    response = client.post(JUDGE, {"served_id": served_id, "choice": "a"}, format="json")
    assert response.status_code == 409 and "not open" in response.json()["detail"]
    assert not Judgment.objects.exists()


def test_re_registering_replaces_the_token(api_client, researcher):
    study = _study(researcher)
    old = _register(api_client, study, "sim-1")
    new = _register(api_client, study, "sim-1")
    assert old.get(NEXT).status_code == 401
    assert new.get(NEXT).status_code == 200
    assert Participant.objects.filter(study=study).count() == 1


def test_next_pair_takes_few_queries(api_client, researcher, django_assert_max_num_queries):
    study = _study(researcher)
    client = _register(api_client, study)
    with django_assert_max_num_queries(10):
        assert client.get(NEXT).status_code == 200


def test_the_selection_policy_is_set_through_the_studies_api(api_client, researcher):
    study = _study(researcher)
    response = api_client.patch(f"/api/v1/studies/{study.slug}", {"selection_policy": "information_gain"},
                                format="json")
    assert response.status_code == 200, response.content
    study.refresh_from_db()
    assert study.selection_policy == "information_gain"
    # Without a trained model the study keeps serving (with random) through the participant API.
    client = _register(api_client, study)
    assert client.get(NEXT).status_code == 200
    assert ServedPair.objects.get().policy == "random"

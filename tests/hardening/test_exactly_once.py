"""Every judgment is stored exactly once: the database refuses a double, and racing resubmissions
of one served pair through the participant API store one row and all get the stored result."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from annotation.models import Judgment, Participant, ServedPair
from elicitation.models import Pair
from tests.factories import study_with_pool

NEXT, JUDGE = "/api/v1/participant/next", "/api/v1/participant/judgments"
RACERS = 8


def _participant_client(api_client: APIClient, *, slug: str, external_id: str) -> APIClient:
    response = api_client.post(f"/api/v1/studies/{slug}/participants", {"external_id": external_id}, format="json")
    assert response.status_code == 201, response.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    return client


@pytest.mark.django_db
def test_the_database_refuses_a_second_judgment_of_one_served_pair(researcher: Any) -> None:
    study = study_with_pool(prompts=1, responses_per_prompt=2, owner=researcher, strength_labels=[])
    participant = Participant.objects.create(study=study, external_id="p")
    pair = Pair.objects.get(study=study)
    served = ServedPair.objects.create(participant=participant, pair=pair, left_response=pair.response_a,
                                       right_response=pair.response_b, served_at=timezone.now())
    fields = {"study": study, "participant": participant, "pair": pair, "served_pair": served,
              "response_a": pair.response_a, "response_b": pair.response_b, "answered_at": timezone.now()}
    Judgment.objects.create(choice="a", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.create(choice="b", **fields)  # even bypassing the service
    assert Judgment.objects.filter(served_pair=served).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="Concurrent writers on separate connections need PostgreSQL (SQLite serialises all writes).",
)
def test_racing_resubmissions_through_the_api_store_one_judgment_and_all_get_it(
    api_client: APIClient, researcher: Any
) -> None:
    study = study_with_pool(prompts=2, responses_per_prompt=3, owner=researcher, strength_labels=[],
                            judgments_per_participant=3)
    annotator = _participant_client(api_client, slug=study.slug, external_id="racer")
    served_id = annotator.get(NEXT).json()["served_id"]
    barrier = threading.Barrier(RACERS)
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def submit(choice: str) -> None:
        # Each thread has its own database connection: real concurrent transactions.
        try:
            barrier.wait(timeout=30)
            response = annotator.post(JUDGE, {"served_id": served_id, "choice": choice}, format="json")
            with lock:
                answers.append((response.status_code, response.json()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit, args=("ab"[i % 2],)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(answers) == RACERS
    assert sorted(code for code, _ in answers) == [200] * (RACERS - 1) + [201]  # one stored, the rest told so
    stored = Judgment.objects.get(served_pair_id=served_id)  # exactly one row
    assert {body["judgment_id"] for _, body in answers} == {stored.pk}  # everybody got the stored result
    assert [body["duplicate"] for code, body in answers if code == 201] == [False]
    participant = Participant.objects.get(study=study, external_id="racer")
    assert participant.judgment_count == 1 and Pair.objects.get(pk=stored.pair_id).judgment_count == 1

    # A later resubmission, even with another choice, returns the stored result and changes nothing.
    later = annotator.post(JUDGE, {"served_id": served_id, "choice": "b" if stored.choice == "a" else "a"},
                           format="json")
    assert later.status_code == 200 and later.json()["judgment_id"] == stored.pk and later.json()["duplicate"]
    assert Judgment.objects.get(served_pair_id=served_id).choice == stored.choice
    assert Judgment.objects.filter(participant=participant).count() == 1

"""Deduplication of values cards with the real bundled sentence-transformers model (offline): a
near-identical card is offered as "captures my value", an unrelated one is not; the participant's
choice makes the near card canonical, with their card kept as a member."""

from __future__ import annotations

import numpy as np
import pytest
from django.test import Client

from annotation.models import ValuesCard
from modeling.core.moral_graph import cosine_similarities, near_indices
from modeling.moral_services import values_card_near_cards
from tests.moral.conftest import ValuesCardFactory, join, moral_study

pytestmark = pytest.mark.django_db

LISTENING = {
    "title": "Careful listening",
    "description": "Helping someone feel heard before offering any advice.",
    "attention_policies": ["FEELINGS the person has not yet put into words",
                           "MOMENTS when advice would cut the person short"],
}
LISTENING_AGAIN = {  # the same card with a typo and different punctuation and case
    "title": "careful listening",
    "description": "Helping someone feel heard before offering any advise",
    "attention_policies": ["FEELINGS the person has not yet put into words.",
                           "MOMENTS when advice would cut the person short"],
}
BUDGETING = {
    "title": "Financial prudence",
    "description": "Keeping enough savings to weather a bad year.",
    "attention_policies": ["BUDGETS that leave room for emergencies", "DEBTS that grow quietly"],
}


def test_cosine_similarity_and_thresholding_on_given_vectors() -> None:
    query = np.array([1.0, 0.0], dtype=np.float32)
    candidates = np.array([[0.0, 1.0], [1.0, 0.1], [0.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    assert cosine_similarities(query, candidates) == pytest.approx([0.0, 0.995037, 0.0, -1.0], abs=1e-5)
    assert near_indices(query, candidates, threshold=0.9, limit=3) == [(1, pytest.approx(0.995037, abs=1e-5))]
    with pytest.raises(ValueError, match="different sizes"):
        cosine_similarities(query, np.ones((2, 3), dtype=np.float32))


def test_a_near_identical_card_is_found_and_an_unrelated_one_is_not(settings) -> None:
    settings.POLYPHONY_DEDUP_THRESHOLD = 0.85
    _, [context] = moral_study()
    listening = ValuesCardFactory(context=context, **LISTENING)
    budgeting = ValuesCardFactory(context=context, **BUDGETING)
    new = ValuesCardFactory(context=context, status=ValuesCard.Status.REVIEW, **LISTENING_AGAIN)
    near = values_card_near_cards(card_id=new.pk)
    assert [card for card, _ in near] == [listening]
    assert near[0][1] > 0.9
    unrelated = ValuesCardFactory(context=context, status=ValuesCard.Status.REVIEW, title="Punctuality",
                                  description="Arriving on time for every meeting.",
                                  attention_policies=["CLOCKS and calendars"])
    assert values_card_near_cards(card_id=unrelated.pk) == []
    # Every card involved now carries its embedding, so the next look-up embeds nothing.
    for card in (listening, budgeting, new):
        card.refresh_from_db()
        assert card.embedding_model == settings.POLYPHONY_EMBEDDING_MODEL and len(bytes(card.embedding)) == 384 * 4


def test_cards_of_other_contexts_and_merged_members_are_not_offered() -> None:
    _, [mine, other] = moral_study(contexts=2)
    ValuesCardFactory(context=other, **LISTENING)
    canonical = ValuesCardFactory(context=mine, **BUDGETING)
    ValuesCardFactory(context=mine, canonical=canonical, **LISTENING)  # a member, not a canonical card
    new = ValuesCardFactory(context=mine, status=ValuesCard.Status.REVIEW, **LISTENING_AGAIN)
    assert values_card_near_cards(card_id=new.pk) == []


def _write_card(client: Client, slug: str, card: ValuesCard, values: dict) -> object:
    client.post(f"/s/{slug}/values/interview/{card.pk}/", {"answer_0": "Listen first.", "answer_1": "", "answer_2": ""})
    return client.post(f"/s/{slug}/values/card/{card.pk}/", {
        "title": values["title"], "description": values["description"],
        "attention_policies": "\n".join(values["attention_policies"]), "confirm": "yes",
    })


def test_the_participant_says_a_near_card_captures_their_value(client: Client) -> None:
    study, [context] = moral_study()
    seeded = ValuesCardFactory(context=context, **LISTENING)
    ValuesCardFactory(context=context, **BUDGETING)
    participant = join(client, study)
    client.post(f"/s/{study.slug}/values/")
    card = ValuesCard.objects.get(participant=participant)
    response = _write_card(client, study.slug, card, LISTENING_AGAIN)
    assert response.url == f"/s/{study.slug}/values/card/{card.pk}/similar/"
    page = client.get(response.url)
    assert "Others wrote similar values" in page.text and LISTENING["description"] in page.text
    assert BUDGETING["title"] not in page.text
    assert client.post(response.url, {"same_as": "12345678"}).status_code == 422  # not one of the cards
    client.post(response.url, {"same_as": str(seeded.pk)})
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.CONFIRMED and card.canonical_id == seeded.pk
    assert list(seeded.members.all()) == [card]


def test_the_participant_keeps_their_own_card_when_none_captures_it(client: Client) -> None:
    study, [context] = moral_study()
    ValuesCardFactory(context=context, **LISTENING)
    participant = join(client, study)
    client.post(f"/s/{study.slug}/values/")
    card = ValuesCard.objects.get(participant=participant)
    response = _write_card(client, study.slug, card, LISTENING_AGAIN)
    client.post(response.url, {"same_as": "none"})
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.CONFIRMED and card.canonical_id is None


def test_an_unrelated_card_skips_the_similar_cards_step(client: Client) -> None:
    study, [context] = moral_study()
    ValuesCardFactory(context=context, **LISTENING)
    participant = join(client, study)
    client.post(f"/s/{study.slug}/values/")
    card = ValuesCard.objects.get(participant=participant)
    response = _write_card(client, study.slug, card, BUDGETING)
    assert response.url == f"/s/{study.slug}/values/vote/"
    card.refresh_from_db()
    assert card.status == ValuesCard.Status.CONFIRMED and card.canonical_id is None

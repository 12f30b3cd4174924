"""Deliberate consistency repeats (Study.consistency_repeats): answered pairs asked again, inside the quota,
never right after their first answer, never an attention check; configurable on the study page and API."""

from __future__ import annotations

from collections import Counter

import pytest
from django.urls import reverse

from annotation.models import Judgment, Participant, ServedPair
from annotation.services import CONSISTENCY_REPEAT_POLICY, judgment_submit, pair_serve_next
from elicitation.models import Study
from tests.factories import ParticipantFactory, PromptFactory, ResponseFactory, pair_create, study_with_pool

pytestmark = pytest.mark.django_db


def _run_participant(study: Study, external_id: str) -> list[ServedPair]:
    participant = Participant.objects.select_related("study").get(
        pk=ParticipantFactory(study=study, external_id=external_id).pk)
    served_in_order = []
    while (served := pair_serve_next(participant=participant)) is not None:
        served_in_order.append(served)
        strength = 1 if study.uses_strength else None
        judgment_submit(participant=participant, served_id=served.id, choice="a", strength=strength, rationale="")
    return served_in_order


def test_repeats_fall_inside_the_quota_and_repeat_only_earlier_answers() -> None:
    study = study_with_pool(prompts=4, responses_per_prompt=4, judgments_per_participant=10, consistency_repeats=3)
    prompt = PromptFactory(study=study)
    good, bad = ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)
    check = pair_create(prompt=prompt, first=good, second=bad, is_attention_check=True, correct_response=good)

    for i in range(8):  # the draw is random: several participants exercise its positions
        served = _run_participant(study, f"p{i}")
        policies = [s.policy for s in served]
        pair_ids = [s.pair_id for s in served]
        assert len(served) == 10, "repeats count towards the quota"
        assert policies.count(CONSISTENCY_REPEAT_POLICY) == 3
        assert pair_ids.count(check.pk) == 1, "the attention check keeps its place"
        for position, s in enumerate(served):
            if s.policy != CONSISTENCY_REPEAT_POLICY:
                assert pair_ids[:position].count(s.pair_id) == 0, "only a repeat serves a pair twice"
                continue
            earlier = pair_ids[:position]
            assert s.pair_id in earlier[:-1], "a repeat is of an earlier answer, not the one just given"
            assert s.pair_id != check.pk
        assert max(Counter(pair_ids).values()) <= 2
    assert Judgment.objects.filter(study=study, policy=CONSISTENCY_REPEAT_POLICY).count() == 24


def test_without_repeats_no_pair_is_served_twice() -> None:
    study = study_with_pool(prompts=3, responses_per_prompt=4, judgments_per_participant=12)
    pair_ids = [s.pair_id for s in _run_participant(study, "p")]
    assert len(pair_ids) == 12 and len(set(pair_ids)) == 12


def test_the_api_sets_repeats_and_the_mixed_share_and_refuses_bad_values(api_client, researcher) -> None:
    study = study_with_pool(owner=researcher)
    url = reverse("api-study-detail", kwargs={"slug": study.slug})

    response = api_client.patch(url, {"consistency_repeats": 2, "mixed_epsilon": 0.3}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["consistency_repeats"], response.json()["mixed_epsilon"]) == (2, 0.3)

    for bad in ({"mixed_epsilon": 1.5}, {"mixed_epsilon": "lots"}, {"consistency_repeats": -1},
                {"consistency_repeats": 101}):
        response = api_client.patch(url, bad, format="json")
        assert response.status_code == 400, bad
        assert next(iter(bad)) in response.json()["errors"]
    study.refresh_from_db()
    assert (study.consistency_repeats, study.mixed_epsilon) == (2, 0.3)


def test_the_study_form_offers_both_settings(client, researcher) -> None:
    study = study_with_pool(owner=researcher)
    client.force_login(researcher)
    page = client.get(reverse("elicitation:study_edit", kwargs={"slug": study.slug}))
    assert page.status_code == 200
    assert b'name="consistency_repeats"' in page.content and b'name="mixed_epsilon"' in page.content


def test_the_study_form_keeps_the_settings_when_left_empty_and_refuses_bad_values(client, researcher) -> None:
    study = study_with_pool(owner=researcher, consistency_repeats=2, mixed_epsilon=0.4)
    client.force_login(researcher)
    url = reverse("elicitation:study_edit", kwargs={"slug": study.slug})
    form = client.get(url).context["form"]
    data = {name: value for name, value in form.initial.items() if value is not None and name != "strength_labels"}
    data.update(strength_labels="", consistency_repeats="", mixed_epsilon="")
    assert client.post(url, data).status_code == 302
    study.refresh_from_db()
    assert (study.consistency_repeats, study.mixed_epsilon) == (2, 0.4)

    data.update(mixed_epsilon="1.5")
    page = client.post(url, data)
    assert page.status_code == 200 and "mixed_epsilon" in page.context["form"].errors
    study.refresh_from_db()
    assert study.mixed_epsilon == 0.4

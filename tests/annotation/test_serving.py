"""pair_serve_next and the serving done by judgment_submit: what a participant is shown, and that nothing is
shown twice."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from django.utils import timezone

from annotation.models import Participant, ServedPair
from annotation.services import StudyNotOpen, judgment_submit, pair_choose_random, pair_serve_next
from elicitation.models import Pair, Study
from tests.factories import (
    ParticipantFactory,
    PromptFactory,
    ResponseFactory,
    StudyFactory,
    pair_create,
    study_with_pool,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # The factories' researchers get hashed passwords; PBKDF2 costs ~1 s a test on this machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _participant(study: Study, **fields: object) -> Participant:
    participant = ParticipantFactory(study=study, **fields)
    return Participant.objects.select_related("study").get(pk=participant.pk)


def _answer(participant: Participant, served: ServedPair, choice: str = "a") -> None:
    strength = 1 if participant.study.uses_strength and choice != "tie" else None
    judgment_submit(participant=participant, served_id=served.id, choice=choice, strength=strength, rationale="")


def _attention_pair(study: Study) -> Pair:
    prompt = PromptFactory(study=study)
    good, bad = ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)
    return pair_create(prompt=prompt, first=good, second=bad, is_attention_check=True, correct_response=good)


def test_outstanding_pair_is_served_again_until_answered() -> None:
    participant = _participant(study_with_pool())
    first = pair_serve_next(participant=participant)
    second = pair_serve_next(participant=participant)
    assert first is not None and second is not None
    assert first.id == second.id
    assert ServedPair.objects.filter(participant=participant).count() == 1


def test_no_pair_is_served_twice_to_the_same_participant() -> None:
    study = study_with_pool(prompts=3, responses_per_prompt=4, judgments_per_participant=18)
    participant = _participant(study)
    seen = []
    for _ in range(18):
        served = pair_serve_next(participant=participant)
        assert served is not None
        seen.append(served.pair_id)
        _answer(participant, served)
    assert len(set(seen)) == 18 == Pair.objects.filter(study=study).count()


def test_served_pair_records_left_and_right_in_a_random_order() -> None:
    study = study_with_pool(prompts=5, responses_per_prompt=5, judgments_per_participant=50)
    participant = _participant(study)
    swapped = Counter()
    for _ in range(40):
        served = pair_serve_next(participant=participant)
        assert {served.left_response_id, served.right_response_id} == {
            served.pair.response_a_id, served.pair.response_b_id,
        }
        swapped[served.left_response_id == served.pair.response_b_id] += 1
        _answer(participant, served)
    # 40 fair coin flips: both orders appear (probability of failure 2 * 2**-40).
    assert swapped[True] > 0 and swapped[False] > 0


def test_least_judged_pairs_are_served_first() -> None:
    study = study_with_pool(prompts=2, responses_per_prompt=3, overlap_target=2)
    pairs = list(Pair.objects.filter(study=study))
    Pair.objects.filter(pk__in=[p.pk for p in pairs[1:]]).update(judgment_count=5)
    participant = _participant(study)
    served = pair_serve_next(participant=participant)
    assert served.pair_id == pairs[0].pk


def test_pairs_below_the_overlap_target_come_before_prompt_balance() -> None:
    study = study_with_pool(prompts=2, responses_per_prompt=3, overlap_target=1, judgments_per_participant=2)
    first_prompt, second_prompt = study.prompts.order_by("id")
    # Every pair of the second prompt already met the target; the first prompt's pairs did not.
    Pair.objects.filter(prompt=second_prompt).update(judgment_count=1)
    participant = _participant(study)
    _answer(participant, pair_serve_next(participant=participant))
    served = pair_serve_next(participant=participant)
    assert served.pair.prompt_id == first_prompt.pk


def test_prompts_the_participant_has_seen_least_come_first() -> None:
    study = study_with_pool(prompts=3, responses_per_prompt=4, judgments_per_participant=3)
    participant = _participant(study)
    prompts_seen = []
    for _ in range(3):
        served = pair_serve_next(participant=participant)
        prompts_seen.append(served.pair.prompt_id)
        _answer(participant, served)
    assert len(set(prompts_seen)) == 3


def test_each_attention_check_is_served_once_within_the_quota() -> None:
    study = study_with_pool(prompts=2, responses_per_prompt=4, judgments_per_participant=6)
    checks = {_attention_pair(study).pk for _ in range(3)}
    for n in range(5):
        participant = _participant(study, external_id=f"p{n}")
        served_checks = []
        while (served := pair_serve_next(participant=participant)) is not None:
            if served.pair.is_attention_check:
                served_checks.append(served.pair_id)
            _answer(participant, served)
        assert participant.judgment_count == 6
        assert sorted(served_checks) == sorted(checks)


def test_participant_is_done_after_the_quota() -> None:
    study = study_with_pool(judgments_per_participant=2)
    participant = _participant(study)
    for _ in range(2):
        _answer(participant, pair_serve_next(participant=participant))
    assert pair_serve_next(participant=participant) is None
    participant.refresh_from_db()
    assert participant.completed_at is not None


def test_exhausted_pool_completes_a_participant_who_answered() -> None:
    study = study_with_pool(prompts=1, responses_per_prompt=2, judgments_per_participant=5)
    participant = _participant(study)
    _answer(participant, pair_serve_next(participant=participant))
    assert pair_serve_next(participant=participant) is None
    participant.refresh_from_db()
    assert participant.completed_at is not None and participant.judgment_count == 1


def test_empty_pool_serves_nothing_and_completes_nobody() -> None:
    participant = _participant(StudyFactory())
    assert pair_serve_next(participant=participant) is None
    participant.refresh_from_db()
    assert participant.completed_at is None


def test_closed_study_serves_nothing() -> None:
    study = study_with_pool(status=Study.Status.CLOSED)
    with pytest.raises(StudyNotOpen):
        pair_serve_next(participant=_participant(study))
    assert not ServedPair.objects.exists()


def test_unknown_policy_falls_back_to_random_and_records_it() -> None:
    study = study_with_pool(selection_policy=Study.SelectionPolicy.UNCERTAINTY)
    served = pair_serve_next(participant=_participant(study))
    assert served.policy == "random"


def test_choosing_a_pair_is_a_constant_number_of_queries(django_assert_max_num_queries) -> None:
    study = study_with_pool(prompts=10, responses_per_prompt=6, judgments_per_participant=30)
    participant = _participant(study)
    for _ in range(10):
        _answer(participant, pair_serve_next(participant=participant))
    with django_assert_max_num_queries(2):
        assert pair_choose_random(participant=participant) is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_concurrent_requests_of_one_participant_get_one_served_pair() -> None:
    study = study_with_pool(prompts=4, responses_per_prompt=4)
    participant_id = _participant(study).pk
    barrier = threading.Barrier(6)
    served_ids: list[object] = []

    def serve() -> None:
        try:
            participant = Participant.objects.select_related("study").get(pk=participant_id)
            barrier.wait()
            served_ids.append(pair_serve_next(participant=participant).id)
        finally:
            connection.close()

    threads = [threading.Thread(target=serve) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(served_ids) == 6 and len(set(served_ids)) == 1
    assert ServedPair.objects.filter(participant_id=participant_id, answered_at__isnull=True).count() == 1


def test_served_time_is_recorded_by_the_server() -> None:
    before = timezone.now()
    served = pair_serve_next(participant=_participant(study_with_pool()))
    assert before <= served.served_at <= timezone.now()

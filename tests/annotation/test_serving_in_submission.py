"""Serving inside the submission: on PostgreSQL, judgment_submit stores the answer and serves the next
pair in one statement. The guarantees of pair_serve_next must hold there too: one outstanding pair, no
repeats, coverage first, attention checks, completion with the last judgment only."""

from __future__ import annotations

import pytest
from django.db import connection

from annotation.models import Judgment, Participant, ServedPair
from annotation.services import _submission_sql, judgment_submit, pair_serve_next
from elicitation.models import Pair, Study
from tests.concurrency import race
from tests.factories import ParticipantFactory, PromptFactory, ResponseFactory, pair_create, study_with_pool

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="serving inside the submission needs PostgreSQL"),
]


def _participant(study: Study, **fields: object) -> Participant:
    participant = ParticipantFactory(study=study, **fields)
    return Participant.objects.select_related("study").get(pk=participant.pk)


def _submit(participant: Participant, served: ServedPair, choice: str = "a"):
    return judgment_submit(participant=participant, served_id=served.id, choice=choice, strength=1, rationale="")


def test_submission_serves_the_next_pair_with_its_texts(django_assert_num_queries) -> None:
    participant = _participant(study_with_pool())
    served = pair_serve_next(participant=participant)
    with django_assert_num_queries(3):  # savepoint (the test's transaction), the statement, release
        result = _submit(participant, served)
    following = result.next_served
    assert following is not None and following.pair_id != served.pair_id
    assert following.pair.prompt.text and following.left_response.text and following.right_response.text
    assert {following.left_response_id, following.right_response_id} == {
        following.pair.response_a_id, following.pair.response_b_id,
    }
    assert following.policy == "random" and following.participant is participant
    assert ServedPair.objects.get(participant=participant, answered_at__isnull=True).pk == following.id
    assert pair_serve_next(participant=participant).id == following.id  # what the next page shows


def test_submission_never_serves_a_pair_twice_and_ends_at_the_quota() -> None:
    study = study_with_pool(prompts=3, responses_per_prompt=4, judgments_per_participant=18)
    participant = _participant(study)
    served, seen, results = pair_serve_next(participant=participant), [], []
    while served is not None:
        seen.append(served.pair_id)
        results.append(_submit(participant, served))
        served = results[-1].next_served
    assert len(seen) == len(set(seen)) == 18 == Pair.objects.filter(study=study).count()
    assert [r.completed for r in results] == [False] * 17 + [True]
    participant.refresh_from_db()
    assert participant.judgment_count == 18 and participant.completed_at == results[-1].judgment.answered_at
    assert not ServedPair.objects.filter(participant=participant, answered_at__isnull=True).exists()


def test_submission_serves_pairs_below_the_overlap_target_first() -> None:
    study = study_with_pool(prompts=3, responses_per_prompt=3, overlap_target=2, judgments_per_participant=4)
    participant = _participant(study)
    served = pair_serve_next(participant=participant)
    below = Pair.objects.filter(study=study).exclude(pk=served.pair_id).order_by("id").first()
    Pair.objects.filter(study=study).exclude(pk__in=[served.pair_id, below.pk]).update(judgment_count=2)
    assert _submit(participant, served).next_served.pair_id == below.pk


def test_submission_serves_the_prompt_seen_least() -> None:
    study = study_with_pool(prompts=2, responses_per_prompt=4, judgments_per_participant=2)
    participant = _participant(study)
    served = pair_serve_next(participant=participant)
    assert _submit(participant, served).next_served.pair.prompt_id != served.pair.prompt_id


def test_submission_serves_every_attention_check_once_within_the_quota() -> None:
    study = study_with_pool(prompts=2, responses_per_prompt=4, judgments_per_participant=6)
    checks = set()
    for _ in range(3):
        prompt = PromptFactory(study=study)
        good, bad = ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)
        checks.add(pair_create(prompt=prompt, first=good, second=bad, is_attention_check=True,
                               correct_response=good).pk)
    for n in range(5):
        participant = _participant(study, external_id=f"p{n}")
        served, served_checks = pair_serve_next(participant=participant), []
        while served is not None:
            if served.pair.is_attention_check:
                served_checks.append(served.pair_id)
            correct = "a" if served.left_response_id == served.pair.correct_response_id else "b"
            result = _submit(participant, served, choice=correct)
            assert result.judgment.attention_passed is (True if served.pair.is_attention_check else None)
            served = result.next_served or pair_serve_next(participant=participant)
        assert sorted(served_checks) == sorted(checks)
        assert Judgment.objects.filter(participant=participant).count() == 6


def test_submission_when_the_pool_is_exhausted_serves_nothing_then_completes() -> None:
    study = study_with_pool(prompts=1, responses_per_prompt=2, judgments_per_participant=5)
    participant = _participant(study)
    result = _submit(participant, pair_serve_next(participant=participant))
    assert result.next_served is None and not result.completed
    assert pair_serve_next(participant=participant) is None  # nothing left: completed there
    participant.refresh_from_db()
    assert participant.completed_at is not None


def test_submission_statement_fits_psycopg_statement_cache() -> None:
    # psycopg re-parses statements longer than 4 kB on every execution (psycopg._queries), which cost
    # more CPU than running this one: a column added to Judgment or ServedPair must keep it under.
    assert len(_submission_sql(serve_next=True)) <= 4096


@pytest.mark.parametrize("threshold", [None, 1])
def test_submission_works_with_server_side_binding_and_prepared_statements(threshold: int | None) -> None:
    """The judging statements go through annotation.selectors.hot_cursor, which binds parameters
    server-side (and so lets psycopg prepare them) when the database OPTIONS set prepare_threshold:
    untyped parameters that PostgreSQL cannot type would fail there only."""
    participant = _participant(study_with_pool(judgments_per_participant=4))
    options = connection.settings_dict["OPTIONS"]
    saved_option, saved_threshold = options.get("prepare_threshold"), connection.connection.prepare_threshold
    options["prepare_threshold"], connection.connection.prepare_threshold = threshold or 1, threshold
    try:
        served = pair_serve_next(participant=participant)
        for choice in ("a", "tie", "b"):
            result = judgment_submit(participant=participant, served_id=served.id, choice=choice,
                                     strength=None if choice == "tie" else 2, rationale="why")
            assert not result.duplicate and result.judgment.choice == choice
            served = result.next_served
        again = judgment_submit(participant=participant, served_id=result.judgment.served_pair_id, choice="a",
                                strength=1, rationale="")
        assert again.duplicate
    finally:
        options["prepare_threshold"], connection.connection.prepare_threshold = saved_option, saved_threshold
        if saved_option is None:
            del options["prepare_threshold"]
    judgments = Judgment.objects.filter(participant=participant).order_by("id")
    assert [(j.choice, j.strength, j.rationale) for j in judgments] == [
        ("a", 2, "why"), ("tie", None, "why"), ("b", 2, "why"),
    ]


@pytest.mark.django_db(transaction=True)
def test_concurrent_submit_and_page_loads_leave_one_outstanding_pair() -> None:
    """A submission (which serves the next pair) racing with other tabs loading the page (which serve
    under the participant lock) never leaves two outstanding pairs, and stores the answer once."""
    study = study_with_pool(prompts=4, responses_per_prompt=4)
    participant_id = _participant(study).pk
    first = pair_serve_next(participant=Participant.objects.select_related("study").get(pk=participant_id))

    def act(n: int) -> None:
        participant = Participant.objects.select_related("study").get(pk=participant_id)
        if n % 2:
            _submit(participant, first)
        else:
            pair_serve_next(participant=participant)

    assert race(act, threads=6) == []
    assert Judgment.objects.filter(participant_id=participant_id).count() == 1
    assert ServedPair.objects.filter(participant_id=participant_id, answered_at__isnull=True).count() == 1
    assert Participant.objects.get(pk=participant_id).judgment_count == 1
    assert Pair.objects.get(pk=first.pair_id).judgment_count == 1

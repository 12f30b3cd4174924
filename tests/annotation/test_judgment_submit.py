"""judgment_submit: validation, exactly-once storage, attention flags, completion."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from annotation.models import Judgment, Participant, ServedPair
from annotation.services import (
    RATIONALE_MAX_CHARS,
    ServedPairNotFound,
    StudyNotOpen,
    judgment_submit,
    pair_serve_next,
)
from elicitation.models import Pair, Study
from tests.factories import ParticipantFactory, PromptFactory, ResponseFactory, pair_create, study_with_pool

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    # The factories' researchers get hashed passwords; PBKDF2 costs ~1 s a test on this machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _participant(study: Study, **fields: object) -> Participant:
    participant = ParticipantFactory(study=study, **fields)
    return Participant.objects.select_related("study").get(pk=participant.pk)


def _submit(participant: Participant, served: ServedPair, **overrides: object):
    fields = {"choice": "a", "strength": 2, "rationale": ""}
    fields.update(overrides)
    return judgment_submit(participant=participant, served_id=served.id, **fields)


def _nothing_stored(participant: Participant, served: ServedPair) -> bool:
    served.refresh_from_db()
    participant.refresh_from_db()
    return (
        not Judgment.objects.exists()
        and served.answered_at is None
        and participant.judgment_count == 0
        and Pair.objects.get(pk=served.pair_id).judgment_count == 0
    )


def test_judgment_stores_the_shown_order_and_server_times() -> None:
    participant = _participant(study_with_pool())
    served = pair_serve_next(participant=participant)
    result = _submit(participant, served, choice="b", strength=3, rationale="  clearer  ")
    judgment = result.judgment
    assert not result.duplicate
    assert (judgment.response_a_id, judgment.response_b_id) == (served.left_response_id, served.right_response_id)
    assert judgment.choice == "b" and judgment.strength == 3 and judgment.rationale == "clearer"
    assert judgment.policy == "random" and judgment.origin == Judgment.Origin.ANNOTATED
    served.refresh_from_db()
    assert judgment.served_at == served.served_at
    assert judgment.answered_at == served.answered_at and judgment.answered_at >= judgment.served_at
    assert Pair.objects.get(pk=served.pair_id).judgment_count == 1
    participant.refresh_from_db()
    assert participant.judgment_count == 1


def test_duplicate_submission_is_ignored() -> None:
    participant = _participant(study_with_pool())
    served = pair_serve_next(participant=participant)
    first = _submit(participant, served, choice="a")
    again = _submit(participant, served, choice="b", strength=1)
    assert again.duplicate and again.judgment.pk == first.judgment.pk
    assert Judgment.objects.get().choice == "a"
    participant.refresh_from_db()
    assert participant.judgment_count == 1
    assert Pair.objects.get(pk=served.pair_id).judgment_count == 1


def test_duplicate_with_invalid_fields_is_still_rejected_as_invalid() -> None:
    participant = _participant(study_with_pool())
    served = pair_serve_next(participant=participant)
    _submit(participant, served)
    with pytest.raises(ValidationError):
        _submit(participant, served, choice="maybe")


def test_unknown_served_id_is_rejected() -> None:
    participant = _participant(study_with_pool())
    pair_serve_next(participant=participant)
    with pytest.raises(ServedPairNotFound):
        judgment_submit(participant=participant, served_id=uuid.uuid4(), choice="a", strength=1, rationale="")
    assert not Judgment.objects.exists()


def test_another_participants_served_id_is_rejected() -> None:
    study = study_with_pool()
    owner, intruder = _participant(study, external_id="owner"), _participant(study, external_id="intruder")
    served = pair_serve_next(participant=owner)
    with pytest.raises(ServedPairNotFound):
        _submit(intruder, served)
    _submit(owner, served)
    # Once answered, the intruder still cannot read it back as a "duplicate".
    with pytest.raises(ServedPairNotFound):
        _submit(intruder, served)
    assert Judgment.objects.get().participant_id == owner.pk


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"choice": "c"}, "choice", "Choose A, B or a tie."),
        ({"choice": ""}, "choice", "Choose A, B or a tie."),
        ({"strength": None}, "strength", "Say how much better"),
        ({"strength": 0}, "strength", "between 1 and 3"),
        ({"strength": 4}, "strength", "between 1 and 3"),
        ({"rationale": "x" * (RATIONALE_MAX_CHARS + 1)}, "rationale", "under 5000 characters"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error_and_nothing_stored(fields, field, message) -> None:
    participant = _participant(study_with_pool())
    served = pair_serve_next(participant=participant)
    with pytest.raises(ValidationError) as exc:
        _submit(participant, served, **fields)
    assert message in " ".join(exc.value.message_dict[field])
    assert _nothing_stored(participant, served)


def test_tie_is_rejected_when_the_study_has_no_ties() -> None:
    participant = _participant(study_with_pool(allow_ties=False))
    served = pair_serve_next(participant=participant)
    with pytest.raises(ValidationError) as exc:
        _submit(participant, served, choice="tie", strength=None)
    assert "no ties" in exc.value.message_dict["choice"][0]
    assert _nothing_stored(participant, served)


def test_tie_stores_no_strength() -> None:
    participant = _participant(study_with_pool())
    served = pair_serve_next(participant=participant)
    judgment = _submit(participant, served, choice="tie", strength=3).judgment
    assert judgment.choice == "tie" and judgment.strength is None


def test_study_without_a_scale_stores_no_strength() -> None:
    participant = _participant(study_with_pool(strength_labels=[]))
    served = pair_serve_next(participant=participant)
    assert _submit(participant, served, strength=None).judgment.strength is None


def test_required_rationale_must_be_given() -> None:
    participant = _participant(study_with_pool(rationale_mode=Study.RationaleMode.REQUIRED))
    served = pair_serve_next(participant=participant)
    with pytest.raises(ValidationError) as exc:
        _submit(participant, served, rationale="   ")
    assert "rationale" in exc.value.message_dict
    assert _nothing_stored(participant, served)
    assert _submit(participant, served, rationale="shorter").judgment.rationale == "shorter"


def test_rationale_is_ignored_when_the_study_asks_for_none() -> None:
    participant = _participant(study_with_pool(rationale_mode=Study.RationaleMode.OFF))
    served = pair_serve_next(participant=participant)
    assert _submit(participant, served, rationale="x" * 9000).judgment.rationale == ""


def test_closed_study_accepts_no_answers() -> None:
    study = study_with_pool()
    participant = _participant(study)
    served = pair_serve_next(participant=participant)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    participant = Participant.objects.select_related("study").get(pk=participant.pk)
    with pytest.raises(StudyNotOpen):
        _submit(participant, served)
    assert _nothing_stored(participant, served)


def _attention_study() -> tuple[Participant, Pair]:
    study = study_with_pool(prompts=0, judgments_per_participant=1)
    prompt = PromptFactory(study=study)
    good, bad = ResponseFactory(prompt=prompt), ResponseFactory(prompt=prompt)
    pair = pair_create(prompt=prompt, first=good, second=bad, is_attention_check=True, correct_response=good)
    return _participant(study), pair


@pytest.mark.parametrize(("pick", "passed"), [("correct", True), ("wrong", False), ("tie", False)])
def test_attention_check_answers_are_flagged(pick: str, passed: bool) -> None:
    participant, pair = _attention_study()
    served = pair_serve_next(participant=participant)
    assert served.pair_id == pair.pk
    correct_side = "a" if served.left_response_id == pair.correct_response_id else "b"
    choice = {"correct": correct_side, "wrong": "b" if correct_side == "a" else "a", "tie": "tie"}[pick]
    judgment = _submit(participant, served, choice=choice).judgment
    assert judgment.is_attention_check is True
    assert judgment.attention_passed is passed


def test_ordinary_judgments_have_no_attention_result() -> None:
    participant = _participant(study_with_pool())
    judgment = _submit(participant, pair_serve_next(participant=participant)).judgment
    assert judgment.is_attention_check is False and judgment.attention_passed is None


def test_participant_is_completed_by_the_last_required_judgment_only() -> None:
    study = study_with_pool(judgments_per_participant=3)
    participant = _participant(study)
    results = []
    for _ in range(3):
        participant.refresh_from_db()
        assert participant.completed_at is None
        results.append(_submit(participant, pair_serve_next(participant=participant)))
    assert [r.completed for r in results] == [False, False, True]
    participant.refresh_from_db()
    assert participant.completed_at is not None and participant.completed_at <= timezone.now()
    assert participant.completed_at == results[-1].judgment.answered_at


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
def test_concurrent_submissions_of_one_served_pair_store_one_judgment() -> None:
    study = study_with_pool()
    participant_id = _participant(study).pk
    served = pair_serve_next(participant=Participant.objects.select_related("study").get(pk=participant_id))
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []

    def submit(choice: str) -> None:
        try:
            participant = Participant.objects.select_related("study").get(pk=participant_id)
            barrier.wait()
            outcomes.append(_submit(participant, served, choice=choice).duplicate)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=("ab"[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] + [True] * 7
    assert Judgment.objects.count() == 1
    assert Participant.objects.get(pk=participant_id).judgment_count == 1
    assert Pair.objects.get(pk=served.pair_id).judgment_count == 1


HOOK_CALLS: list[dict[str, object]] = []


def record_hook(**kwargs: object) -> None:
    """Stands in for modeling's retrain trigger (named in settings, called after commit)."""
    HOOK_CALLS.append(kwargs)


def test_judgment_hooks_run_after_commit_once_per_stored_judgment(settings, django_capture_on_commit_callbacks) -> None:
    settings.POLYPHONY_JUDGMENT_HOOKS = ["tests.annotation.test_judgment_submit.record_hook"]
    HOOK_CALLS.clear()
    participant = _participant(study_with_pool())
    served = pair_serve_next(participant=participant)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        _submit(participant, served)
    assert HOOK_CALLS == []  # nothing runs before the judgment is committed
    for callback in callbacks:
        callback()
    assert HOOK_CALLS == [{"study_id": participant.study_id}]
    with django_capture_on_commit_callbacks(execute=True):
        _submit(participant, served)  # a duplicate stores nothing, so tells no one
    assert len(HOOK_CALLS) == 1

"""Writes for the annotator flow: consent, survey, serving pairs, storing judgments, withdrawal.

Exactly-once rules (STYLE.md §4): a ServedPair's id is the one-time submission key. Serving is
serialised per participant by a row lock on the Participant, so two tabs of one participant see the
same outstanding pair; answering claims the ServedPair with a compare-and-swap update, so a double
click, a retried request or a second tab stores one judgment.
"""

from __future__ import annotations

import functools
import math
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, OuterRef, Subquery, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.module_loading import import_string

from annotation.models import ConsentRefusal, Judgment, Participant, ServedPair, SurveyAnswer, Withdrawal
from annotation.selectors import (
    pair_for_display,
    row_instances,
    row_shape,
    served_pair_outstanding,
    survey_questions_for_study,
)
from elicitation.models import Pair, Study, SurveyQuestion

RATIONALE_MAX_CHARS = 5000
SURVEY_TEXT_MAX_CHARS = 2000
EXTERNAL_ID_MAX_CHARS = 200
# Multi-choice answers are lists in SurveyAnswer.value but one string in Participant.attributes,
# because the comparison format's annotator_attributes values are str | number.
MULTI_CHOICE_SEPARATOR = ";"
# Coverage-first serving looks at this many least-judged unseen pairs (one index range scan on
# pair_coverage_idx) and picks among them; see pair_choose_random.
CANDIDATE_WINDOW = 300


class StudyNotOpen(Exception):
    """The study is draft or closed: nothing is served or stored."""


class ServedPairNotFound(Exception):
    """A submission names a served pair this participant was never shown (unknown, foreign or withdrawn)."""


@dataclass(frozen=True)
class JudgmentResult:
    judgment: Judgment
    duplicate: bool  # True: this served pair was already answered; nothing changed
    completed: bool  # the participant has stored their last required judgment


# --- Consent -----------------------------------------------------------------------------------


def participant_consent(
    *,
    study: Study,
    external_id: str | None,
    source: str,
    platform_study_id: str = "",
    platform_session_id: str = "",
) -> Participant:
    """Create the participant at the moment consent is given (get-or-create, so a returning id resumes).

    `external_id=None` makes an anonymous participant with a fresh random id.
    """
    if not study.is_open:
        raise StudyNotOpen(study.slug)
    if external_id is None:
        external_id, source = f"anon-{uuid.uuid4().hex}", Participant.Source.ANONYMOUS
    external_id = external_id.strip()
    if not external_id or len(external_id) > EXTERNAL_ID_MAX_CHARS:
        raise ValidationError(
            {"external_id": f"The participant id must be 1 to {EXTERNAL_ID_MAX_CHARS} characters."}
        )
    if source not in Participant.Source.values:
        raise ValidationError({"source": f"Unknown participant source {source!r}."})
    # get_or_create retries the read on IntegrityError, so two tabs agreeing at once make one row.
    participant, created = Participant.objects.get_or_create(
        study=study,
        external_id=external_id,
        defaults={
            "source": source,
            "platform_study_id": platform_study_id[:200],
            "platform_session_id": platform_session_id[:200],
            "consented_at": timezone.now(),
        },
    )
    if not created and participant.consented_at is None:
        participant.consented_at = timezone.now()
        participant.save(update_fields=["consented_at"])
    participant.study = study
    return participant


def consent_decline(*, study: Study) -> ConsentRefusal:
    """Declining stores that a refusal happened and when; nothing about the person."""
    return ConsentRefusal.objects.create(study=study)


# --- Survey and instructions -------------------------------------------------------------------


def survey_submit(*, participant: Participant, answers: Mapping[str, object]) -> Participant:
    """Validate answers against the study's questions, then store SurveyAnswer rows and attributes.

    `answers` maps question keys to a string (choice, text), a list of strings (multi_choice) or a
    number or numeric string (number). All errors are raised together, keyed by question key, and
    nothing is written. A second submission after the first succeeded changes nothing.
    """
    questions = survey_questions_for_study(study=participant.study)
    cleaned = _survey_answers_clean(questions=questions, answers=answers)
    with transaction.atomic():
        locked = Participant.objects.select_for_update().get(pk=participant.pk)
        if locked.survey_completed_at is not None:
            return locked
        SurveyAnswer.objects.bulk_create(
            SurveyAnswer(participant=locked, question=q, value=cleaned[q.key]) for q in questions if q.key in cleaned
        )
        locked.attributes = {
            **locked.attributes,
            **{
                key: MULTI_CHOICE_SEPARATOR.join(value) if isinstance(value, list) else value
                for key, value in cleaned.items()
            },
        }
        locked.survey_completed_at = timezone.now()
        locked.save(update_fields=["attributes", "survey_completed_at"])
    locked.study = participant.study
    return locked


def _survey_answers_clean(
    *, questions: list[SurveyQuestion], answers: Mapping[str, object]
) -> dict[str, object]:
    by_key = {q.key: q for q in questions}
    errors: dict[str, list[str]] = {}
    unknown = sorted(set(answers) - set(by_key))
    if unknown:
        errors["__all__"] = [f"Unknown question(s): {', '.join(unknown)}."]
    cleaned: dict[str, object] = {}
    for question in questions:
        try:
            value = _survey_answer_clean(question=question, raw=answers.get(question.key))
        except ValidationError as exc:
            errors[question.key] = exc.messages
            continue
        if value is not None:
            cleaned[question.key] = value
    if errors:
        raise ValidationError(errors)
    return cleaned


def _survey_answer_clean(*, question: SurveyQuestion, raw: object) -> object:
    """One answer, normalised; None for an unanswered optional question."""
    empty = raw is None or raw == "" or raw == [] or (isinstance(raw, str) and not raw.strip())
    if empty:
        if question.required:
            raise ValidationError("This question is required.")
        return None
    kind = question.kind
    if kind == SurveyQuestion.Kind.CHOICE:
        if not isinstance(raw, str) or raw not in question.choices:
            raise ValidationError("Choose one of the options.")
        return raw
    if kind == SurveyQuestion.Kind.MULTI_CHOICE:
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or any(v not in question.choices for v in values):
            raise ValidationError("Choose among the options.")
        return [c for c in question.choices if c in values]  # options order, no repeats
    if kind == SurveyQuestion.Kind.NUMBER:
        return _survey_number_clean(question=question, raw=raw)
    if not isinstance(raw, str):
        raise ValidationError("Enter text.")
    text = raw.strip()
    if len(text) > SURVEY_TEXT_MAX_CHARS:
        raise ValidationError(f"Keep the answer under {SURVEY_TEXT_MAX_CHARS} characters.")
    return text


def _survey_number_clean(*, question: SurveyQuestion, raw: object) -> int | float:
    if isinstance(raw, bool):
        raise ValidationError("Enter a number.")
    try:
        number = float(raw) if isinstance(raw, str | int | float) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValidationError("Enter a number.")
    if question.min_value is not None and number < question.min_value:
        raise ValidationError(f"Enter a number of at least {question.min_value:g}.")
    if question.max_value is not None and number > question.max_value:
        raise ValidationError(f"Enter a number of at most {question.max_value:g}.")
    return int(number) if number.is_integer() else number


def instructions_acknowledge(*, participant: Participant) -> Participant:
    if participant.instructions_seen_at is None:
        now = timezone.now()
        Participant.objects.filter(pk=participant.pk, instructions_seen_at__isnull=True).update(
            instructions_seen_at=now
        )
        participant.instructions_seen_at = now
    return participant


# --- Serving -----------------------------------------------------------------------------------


def pair_serve_next(*, participant: Participant) -> ServedPair | None:
    """The pair the participant should answer now, or None when they are done.

    Returns the outstanding served pair if there is one (two tabs see the same pair, the second
    submit is a no-op). Otherwise, unless the participant has given all their judgments, chooses a
    pair with the study's policy and records a new ServedPair with a random left/right order. When
    the pool has nothing left for a participant who has answered at least once, they are completed.
    The returned served pair carries its pair, prompt and response texts for display.
    """
    study = participant.study
    if not study.is_open:
        raise StudyNotOpen(study.slug)
    with transaction.atomic():
        judgment_count, completed = _participant_lock(participant=participant)
        participant.judgment_count = judgment_count
        # A separate statement after the lock: it reads a snapshot taken after any concurrent
        # serving committed (a join inside the locking statement would read the older one).
        outstanding = served_pair_outstanding(participant=participant)
        if outstanding is not None:
            return outstanding
        if completed:
            if participant.completed_at is None:
                participant.refresh_from_db(fields=["completed_at"])
            return None
        if judgment_count >= study.judgments_per_participant:
            return _participant_complete(participant=participant)
        policy, choose = _chooser_for(study=study)
        pair = choose(participant=participant)
        if pair is None:
            return _participant_complete(participant=participant) if judgment_count else None
        left, right = (pair.response_a, pair.response_b)
        if random.random() < 0.5:
            left, right = right, left
        return ServedPair.objects.create(
            participant=participant,
            pair=pair,
            left_response=left,
            right_response=right,
            policy=policy,
            served_at=timezone.now(),
        )


def _participant_lock(*, participant: Participant) -> tuple[int, bool]:
    """Lock the participant row for the transaction; return (judgment_count, completed).

    The row lock serialises serving for one participant (two tabs, double requests). On SQLite,
    which has no row locks, the IMMEDIATE transaction mode serialises writers instead.
    """
    table = connection.ops.quote_name(Participant._meta.db_table)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    sql = f"SELECT judgment_count, completed_at IS NOT NULL FROM {table} WHERE id = %s{lock}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [participant.pk])
        row = cursor.fetchone()
    if row is None:
        raise Participant.DoesNotExist("This participant has withdrawn.")
    return row[0], bool(row[1])


def _participant_complete(*, participant: Participant) -> None:
    """Mark completed (idempotent); used when the quota is met or the pool is exhausted."""
    now = timezone.now()
    Participant.objects.filter(pk=participant.pk, completed_at__isnull=True).update(completed_at=now)
    participant.completed_at = participant.completed_at or now
    return None


def pair_choose_random(*, participant: Participant) -> Pair | None:
    """Coverage-first random choice among pairs the participant has not been served.

    Order: pairs below the study's overlap target first, then pairs whose prompt this participant
    has seen least, then the fewest judgments, then random. To stay one index range scan on the hot
    path, only the CANDIDATE_WINDOW least-judged unseen pairs are ranked (ties at the window's
    edge are cut in index order, so random tie-breaking is within the window, not the whole pool).

    Attention-check pairs are served once each per participant at random positions: at every step
    one is chosen with probability (attention checks left) / (judgments left), so all of them fall
    inside the participant's quota whatever its size.

    One SQL query for the choice, one to load the chosen pair with its texts. The attention-check
    branch filters on `correct_response_id IS NOT NULL` (every attention check has one, a check
    constraint says so) so that the foreign key's index finds them: filtering on the flag alone
    scanned the whole pool (30 ms at 100k pairs, against 0.1 ms).
    """
    study = participant.study
    pair_table, served_table = Pair._meta.db_table, ServedPair._meta.db_table
    sql = f"""
        WITH seen AS (
            SELECT s.pair_id, p.prompt_id FROM {served_table} s JOIN {pair_table} p ON p.id = s.pair_id
            WHERE s.participant_id = %s
        ),
        prompt_seen AS (SELECT prompt_id, COUNT(*) AS n FROM seen GROUP BY prompt_id),
        candidates AS (
            SELECT id, prompt_id, judgment_count FROM {pair_table}
            WHERE study_id = %s AND is_attention_check = %s AND id NOT IN (SELECT pair_id FROM seen)
            ORDER BY judgment_count LIMIT %s
        ),
        best AS (
            SELECT c.id FROM candidates c LEFT JOIN prompt_seen ps ON ps.prompt_id = c.prompt_id
            ORDER BY (c.judgment_count >= %s), COALESCE(ps.n, 0), c.judgment_count, RANDOM() LIMIT 1
        )
        SELECT id, 0 FROM best
        UNION ALL
        SELECT id, 1 FROM {pair_table}
        WHERE correct_response_id IS NOT NULL AND study_id = %s AND is_attention_check = %s
          AND id NOT IN (SELECT pair_id FROM seen)
    """
    # No parameters in SELECT lists: with server-side binding PostgreSQL could not type them.
    params = [participant.pk, study.pk, False, CANDIDATE_WINDOW, study.overlap_target, study.pk, True]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    regular = [pair_id for pair_id, is_check in rows if not is_check]
    checks = [pair_id for pair_id, is_check in rows if is_check]
    judgments_left = max(1, study.judgments_per_participant - participant.judgment_count)
    if checks and (not regular or random.random() < len(checks) / judgments_left):
        chosen = random.choice(checks)
    elif regular:
        chosen = regular[0]
    else:
        return None
    return pair_for_display(pair_id=chosen)


# Policy name (Study.selection_policy) → chooser. Policies not written yet fall back to random,
# and the recorded policy says what actually chose the pair.
PAIR_CHOOSERS: dict[str, Callable[..., Pair | None]] = {Study.SelectionPolicy.RANDOM: pair_choose_random}


def _chooser_for(*, study: Study) -> tuple[str, Callable[..., Pair | None]]:
    policy = study.selection_policy if study.selection_policy in PAIR_CHOOSERS else Study.SelectionPolicy.RANDOM
    return str(policy), PAIR_CHOOSERS[policy]


# --- Judgments ---------------------------------------------------------------------------------


def judgment_submit(
    *,
    participant: Participant,
    served_id: uuid.UUID,
    choice: str,
    strength: int | None,
    rationale: str,
) -> JudgmentResult:
    """Store the participant's answer to one served pair, exactly once.

    `choice` is relative to the order shown ("a" = left). Raises ValidationError (keyed by field)
    for bad input, ServedPairNotFound for a served id this participant was not shown, StudyNotOpen
    when the study stopped accepting answers. A served id already answered returns the stored
    judgment with `duplicate=True` and changes nothing.
    """
    study = participant.study
    if not study.is_open:
        raise StudyNotOpen(study.slug)
    choice, strength, rationale = _judgment_input_clean(
        study=study, choice=choice, strength=strength, rationale=rationale
    )
    now = timezone.now()
    try:
        with transaction.atomic():
            claimed = _served_pair_claim(participant=participant, served_id=served_id, answered_at=now)
            if claimed is not None:
                return _judgment_store(
                    participant=participant, served=claimed, choice=choice, strength=strength, rationale=rationale,
                )
    except IntegrityError:
        # Judgment.served_pair is unique: the database's own guarantee against a double store.
        pass
    existing = Judgment.objects.filter(served_pair_id=served_id, participant_id=participant.pk).first()
    if existing is None:
        raise ServedPairNotFound(str(served_id))
    return JudgmentResult(judgment=existing, duplicate=True, completed=participant.completed_at is not None)


_CLAIM_FIELDS = ("id", "pair_id", "left_response_id", "right_response_id", "policy", "served_at", "answered_at")


def _served_pair_claim(*, participant: Participant, served_id: uuid.UUID, answered_at: datetime) -> ServedPair | None:
    """Compare-and-swap: mark the served pair answered if it is this participant's and still open.

    Of two concurrent submits of one served id exactly one gets the row back; None for the other,
    and for ids that are unknown or another participant's. One statement: UPDATE … RETURNING, with
    the pair's attention-check fields (`pair` on the result holds only those).
    """
    shape = row_shape(ServedPair, None, _CLAIM_FIELDS)
    pair_table = connection.ops.quote_name(Pair._meta.db_table)
    served_table = connection.ops.quote_name(ServedPair._meta.db_table)
    pair_of_row = f"FROM {pair_table} WHERE {pair_table}.id = {served_table}.pair_id"
    sql = (
        f"UPDATE {served_table} SET answered_at = %s "
        "WHERE id = %s AND participant_id = %s AND answered_at IS NULL "
        f"RETURNING {shape.select}, (SELECT is_attention_check {pair_of_row}), "
        f"(SELECT correct_response_id {pair_of_row})"
    )
    params = [
        ServedPair._meta.get_field("answered_at").get_db_prep_value(answered_at, connection),
        ServedPair._meta.pk.get_db_prep_value(served_id, connection),
        participant.pk,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    (served,) = row_instances(row[:-2], shape)
    served.pair = Pair.from_db(
        connection.alias, ["id", "is_attention_check", "correct_response_id"], [served.pair_id, bool(row[-2]), row[-1]]
    )
    return served


def _judgment_store(
    *, participant: Participant, served: ServedPair, choice: str, strength: int | None, rationale: str
) -> JudgmentResult:
    """Inside judgment_submit's transaction, after the served pair was claimed."""
    study = participant.study
    pair = served.pair
    attention_passed = None
    if pair.is_attention_check:
        chosen = {"a": served.left_response_id, "b": served.right_response_id}.get(choice)
        attention_passed = chosen is not None and chosen == pair.correct_response_id
    answered_at = served.answered_at
    judgment = Judgment.objects.create(
        study=study,
        participant=participant,
        pair_id=served.pair_id,
        served_pair_id=served.id,
        response_a_id=served.left_response_id,
        response_b_id=served.right_response_id,
        choice=choice,
        strength=strength,
        rationale=rationale,
        policy=served.policy,
        is_attention_check=pair.is_attention_check,
        attention_passed=attention_passed,
        served_at=served.served_at,
        answered_at=answered_at,
    )
    Pair.objects.filter(pk=served.pair_id).update(judgment_count=F("judgment_count") + 1)
    # No concurrent writer: this participant's only outstanding served pair was just claimed here,
    # so the count read at the start of the request is current.
    new_count = participant.judgment_count + 1
    completed = new_count >= study.judgments_per_participant
    updates: dict[str, object] = {"judgment_count": F("judgment_count") + 1}
    if completed:
        updates["completed_at"] = answered_at
    Participant.objects.filter(pk=participant.pk).update(**updates)
    participant.judgment_count = new_count
    if completed:
        participant.completed_at = answered_at
    for hook in _judgment_hooks(tuple(settings.POLYPHONY_JUDGMENT_HOOKS)):
        # After commit: a hook (e.g. modeling's retrain trigger) must never see, or undo, a judgment
        # that is not stored; annotation calls it by name so it need not import modeling.
        transaction.on_commit(functools.partial(hook, study_id=study.pk))
    return JudgmentResult(judgment=judgment, duplicate=False, completed=completed)


@functools.cache
def _judgment_hooks(paths: tuple[str, ...]) -> list[Callable[..., None]]:
    """The callables named in settings.POLYPHONY_JUDGMENT_HOOKS, each called as hook(study_id=…)."""
    return [import_string(path) for path in paths]


def _judgment_input_clean(
    *, study: Study, choice: str, strength: int | None, rationale: str
) -> tuple[str, int | None, str]:
    errors: dict[str, str] = {}
    allowed = ["a", "b", "tie"] if study.allow_ties else ["a", "b"]
    if choice not in allowed:
        errors["choice"] = "Choose A, B or a tie." if study.allow_ties else "Choose A or B (this study has no ties)."
    if choice == "tie" or not study.uses_strength:
        # A tie has no direction, so no strength; studies without a scale ignore a stray value.
        strength = None
    elif strength is None:
        errors["strength"] = "Say how much better the chosen response is."
    elif not 1 <= strength <= len(study.strength_labels):
        errors["strength"] = f"Strength must be between 1 and {len(study.strength_labels)}."
    rationale = (rationale or "").strip()
    if study.rationale_mode == Study.RationaleMode.OFF:
        rationale = ""
    elif len(rationale) > RATIONALE_MAX_CHARS:
        errors["rationale"] = f"Keep the reason under {RATIONALE_MAX_CHARS} characters (it has {len(rationale)})."
    elif study.rationale_mode == Study.RationaleMode.REQUIRED and not rationale:
        errors["rationale"] = "Please say briefly why."
    if errors:
        raise ValidationError(errors)
    return choice, strength, rationale


# --- Withdrawal --------------------------------------------------------------------------------


def participant_withdraw(*, participant: Participant) -> Withdrawal:
    """Delete the participant and everything they gave (cascade), keeping only a Withdrawal count.

    Pair.judgment_count is decremented for the removed judgments so coverage stays true.
    """
    with transaction.atomic():
        locked = Participant.objects.select_for_update().filter(pk=participant.pk).first()
        if locked is None:
            raise Participant.DoesNotExist("This participant has already withdrawn.")
        per_pair = (
            Judgment.objects.filter(participant=locked, pair=OuterRef("pk"))
            .values("pair")
            .annotate(n=Count("id"))
            .values("n")
        )
        removed = Judgment.objects.filter(participant=locked).count()
        if removed:
            Pair.objects.filter(judgments__participant=locked).update(
                judgment_count=Greatest(F("judgment_count") - Subquery(per_pair), Value(0))
            )
        locked.delete()
        return Withdrawal.objects.create(study_id=participant.study_id, judgments_removed=removed)

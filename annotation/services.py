"""Writes for the annotator flow: consent, survey, serving pairs, storing judgments, withdrawal.

Exactly-once rules (STYLE.md §4): a ServedPair's id is the one-time submission key. A participant
has at most one outstanding served pair, so two tabs of one participant see the same pair: a new one
is created either under a row lock on the Participant (pair_serve_next) or by the submission that
claimed the outstanding one (judgment_submit). Answering claims the ServedPair with a compare-and-
swap update, so a double click, a retried request or a second tab stores one judgment.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Model, OuterRef, Subquery, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.module_loading import import_string

from annotation.models import ConsentRefusal, Judgment, Participant, ServedPair, SurveyAnswer, Withdrawal
from annotation.selectors import (
    hot_cursor,
    pair_for_display,
    row_instances,
    row_shape,
    served_pair_display,
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
# pair_coverage_idx) and picks among them; see _choose_random_sql.
CANDIDATE_WINDOW = 300


class StudyNotOpen(Exception):
    """The study is draft or closed: nothing is served or stored."""


class ParticipantIdInUse(Exception):
    """The recruitment id belongs to a participant this caller may not resume (another browser's)."""


class ServedPairNotFound(Exception):
    """A submission names a served pair this participant was never shown (unknown, foreign or withdrawn)."""


@dataclass(frozen=True)
class JudgmentResult:
    judgment: Judgment
    duplicate: bool  # True: this served pair was already answered; nothing changed
    completed: bool  # the participant has stored their last required judgment
    next_served: ServedPair | None = None  # served with this judgment, texts loaded (see judgment_submit)


@dataclass(frozen=True)
class PendingAnswer:
    """An answer being submitted, not stored yet: the next pair is chosen before the store, as if it
    were stored (see judgment_submit). `choice` is relative to the order shown ("a" = left)."""

    served_id: uuid.UUID
    choice: str


# --- Consent -----------------------------------------------------------------------------------


def participant_consent(
    *,
    study: Study,
    external_id: str | None,
    source: str,
    platform_study_id: str = "",
    platform_session_id: str = "",
    may_resume: Callable[[Participant], bool] | None = None,
) -> Participant:
    """Create the participant at the moment consent is given (get-or-create, so a returning id resumes).

    `external_id=None` makes an anonymous participant with a fresh random id. With `may_resume`, an id
    that already has a participant resumes only if `may_resume(participant)` says so, else
    ParticipantIdInUse is raised and nothing is written: the check is made on the row the get-or-create
    found, so two browsers agreeing with one id at the same moment cannot both become that participant.
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
    if not created and may_resume is not None and not may_resume(participant):
        raise ParticipantIdInUse(external_id)
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
#
# The hot path is hand-written SQL (the ORM's compiler cost more CPU than the queries: see
# docs/benchmarks.md, "Annotation load"). The statements run unchanged on PostgreSQL and SQLite
# (≥ 3.35: RETURNING); only PostgreSQL can also put UPDATE and INSERT inside a WITH, which lets a
# submission store its judgment and serve the next pair in one statement (_submission_sql).
# Parameters are named so one dict serves every statement of a submission; string parameters are
# CAST because with psycopg's server-side binding PostgreSQL cannot type a bare parameter in a
# SELECT list.


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
    # Usually the submission of the last answer served this pair already (judgment_submit). Reading
    # it needs no lock: only creating one must be serialised, and that path takes the lock and
    # reads again.
    outstanding = served_pair_outstanding(participant=participant)
    if outstanding is not None:
        return outstanding
    return _pair_serve_locked(participant=participant)


def _pair_serve_locked(*, participant: Participant) -> ServedPair | None:
    """pair_serve_next past its unlocked read: lock the participant, read again, choose, serve."""
    study = participant.study
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
        pair_id, policy = _pair_choose(participant=participant)
        if pair_id is None:
            return _participant_complete(participant=participant) if judgment_count else None
        return _served_pair_create(participant=participant, pair_id=pair_id, policy=policy)


def _served_pair_create(*, participant: Participant, pair_id: int, policy: str) -> ServedPair:
    """Record the chosen pair as served, in a random left/right order, loaded for display.

    On PostgreSQL one statement inserts it and reads back the texts (_serve_sql, as the submission
    statement does); SQLite cannot put an INSERT in a WITH, so there it is a read and an insert.
    """
    swap = random.random() < 0.5
    if connection.vendor == "postgresql":
        params = {"pair_id": pair_id, "participant_id": participant.pk, "swap": swap, "policy": policy,
                  "next_id": _db_value(ServedPair, "id", uuid.uuid4()),
                  "now": _db_value(ServedPair, "served_at", timezone.now())}
        with hot_cursor() as cursor:
            cursor.execute(_served_pair_create_sql(), params)
            row = cursor.fetchone()
        served = served_pair_display().served(row, participant=participant)
        if served is None:
            raise Pair.DoesNotExist(str(pair_id))
        return served
    pair = pair_for_display(pair_id=pair_id)
    left, right = (pair.response_b, pair.response_a) if swap else (pair.response_a, pair.response_b)
    return ServedPair.objects.create(
        participant=participant,
        pair=pair,
        left_response=left,
        right_response=right,
        policy=policy,
        served_at=timezone.now(),
    )


@functools.cache
def _served_pair_create_sql() -> str:
    display = served_pair_display()
    _, *joined_shapes = display.shapes
    sql = f"""
        WITH chosen AS (SELECT CAST(%(pair_id)s AS BIGINT) AS id),
        s AS ({_serve_sql()} RETURNING {row_shape(ServedPair, None).select})
        SELECT s.*, {", ".join(shape.select for shape in joined_shapes)} FROM {display.joined(None)}"""
    return " ".join(sql.split())


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
    """The random policy's next pair for the participant (see _choose_random_sql), with its prompt and
    texts: one query to choose, one to load."""
    pair_id = _pair_choose_random_id(participant=participant)
    return None if pair_id is None else pair_for_display(pair_id=pair_id)


def _pair_choose_random_id(*, participant: Participant) -> int | None:
    params = {**_choice_params(participant=participant), "done": participant.judgment_count}
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {_choose_random_sql(done='%(done)s')} SELECT id FROM chosen", params)
        row = cursor.fetchone()
    return None if row is None else row[0]


def _choose_random_sql(*, done: str) -> str:
    """CTEs ending in `chosen(id)`, at most one row: the random policy's next pair for a participant.
    `done` is SQL for the number of judgments the participant has given.

    Order: pairs below the study's overlap target first, then pairs whose prompt this participant
    has seen least, then the fewest judgments, then random. To stay one index range scan on the hot
    path, only the CANDIDATE_WINDOW least-judged unseen pairs are ranked (ties at the window's
    edge are cut in index order, so random tie-breaking is within the window, not the whole pool).

    Attention-check pairs are served once each per participant at random positions: at every step
    one is chosen with probability (attention checks left) / (judgments left), so all of them fall
    inside the participant's quota whatever its size. Their branch filters on `correct_response_id
    IS NOT NULL` (every attention check has one, a check constraint says so) so that the foreign
    key's index finds them: filtering on the flag alone scanned the whole pool (30 ms at 100k pairs,
    against 0.1 ms). The window is written into the statement, not passed: a prepared statement's
    generic plan would otherwise guess the LIMIT and could prefer scanning the whole pool.
    """
    pair, served = _table(Pair), _table(ServedPair)
    return f"""
        seen AS (
            SELECT s.pair_id, p.prompt_id FROM {served} s INNER JOIN {pair} p ON p.id = s.pair_id
            WHERE s.participant_id = %(participant_id)s
        ),
        prompt_seen AS (SELECT prompt_id, COUNT(*) AS n FROM seen GROUP BY prompt_id),
        candidates AS (
            SELECT id, prompt_id, judgment_count FROM {pair}
            WHERE study_id = %(study_id)s AND is_attention_check = FALSE AND id NOT IN (SELECT pair_id FROM seen)
            ORDER BY judgment_count LIMIT {CANDIDATE_WINDOW}
        ),
        best AS (
            SELECT c.id FROM candidates c LEFT JOIN prompt_seen ps ON ps.prompt_id = c.prompt_id
            ORDER BY (c.judgment_count >= %(overlap)s), COALESCE(ps.n, 0), c.judgment_count, RANDOM() LIMIT 1
        ),
        checks AS (
            SELECT id FROM {pair}
            WHERE correct_response_id IS NOT NULL AND study_id = %(study_id)s AND is_attention_check = TRUE
              AND id NOT IN (SELECT pair_id FROM seen)
        ),
        chosen AS (
            SELECT id FROM (
                SELECT id, 0 AS priority FROM (SELECT id FROM checks ORDER BY RANDOM() LIMIT 1) one_check
                WHERE NOT EXISTS (SELECT 1 FROM best)
                   OR %(draw)s * (%(quota)s - {done}) < (SELECT COUNT(*) FROM checks)
                UNION ALL
                SELECT id, 1 FROM best
            ) ranked ORDER BY priority LIMIT 1
        )"""


def _choice_params(*, participant: Participant) -> dict[str, object]:
    """Parameters of _choose_random_sql. The random draw is made here: SQLite's RANDOM() is an
    integer, PostgreSQL's a fraction."""
    study = participant.study
    return {
        "participant_id": participant.pk,
        "study_id": study.pk,
        "overlap": study.overlap_target,
        "quota": study.judgments_per_participant,
        "draw": random.random(),
    }


# (pair id, or None when nothing is left to serve; the policy that Judgment.policy records)
PairChoice = tuple[int | None, str]

# Policy name (Study.selection_policy) → chooser, for the policies that need more than SQL: modeling
# registers its model-based chooser here (annotation must not import modeling). A chooser is called
# as chooser(participant=…, pending=…) and returns a PairChoice, or None to let the random policy
# serve. `pending` is None under the participant lock (pair_serve_next); in judgment_submit it is the
# PendingAnswer about to be stored, and the chooser chooses as if it were: it must count that answer
# in whatever it reads (the served pair `pending.served_id`, still unanswered in the database, is
# answered `pending.choice`); when that served pair is not outstanding it may return anything (the
# claim will fail, and the choice is discarded). Policies without a chooser are served by random.
PAIR_CHOOSERS: dict[str, Callable[..., PairChoice | None]] = {}


# What ServedPair.policy / Judgment.policy record for a deliberate repeat (Study.consistency_repeats).
CONSISTENCY_REPEAT_POLICY = "consistency_repeat"


def _pair_choose(*, participant: Participant) -> PairChoice:
    choice = _pair_choose_in_python(participant=participant, pending=None)
    if choice is not None:
        return choice
    return _pair_choose_random_id(participant=participant), str(Study.SelectionPolicy.RANDOM)


def _pair_choose_in_python(*, participant: Participant, pending: PendingAnswer | None) -> PairChoice | None:
    """A consistency repeat or the registered chooser's pair; None: the random policy serves."""
    repeat = _consistency_repeat_choose(participant=participant, pending=pending)
    if repeat is not None:
        return repeat, CONSISTENCY_REPEAT_POLICY
    chooser = PAIR_CHOOSERS.get(participant.study.selection_policy)
    return chooser(participant=participant, pending=pending) if chooser is not None else None


def _consistency_repeat_choose(*, participant: Participant, pending: PendingAnswer | None = None) -> int | None:
    """A pair this participant answered before, to ask again (self-consistency), or None.

    Drawn as attention checks are: at each step with probability (repeats left) / (judgments left
    after the attention checks still to come), so every repeat falls inside the quota and the checks
    keep their places. Never the pair answered last (a repeat right away measures memory, not
    consistency), an attention check, or a pair already repeated. Two queries, and only in studies
    that ask for repeats: the hot path of the others is unchanged. With `pending` (judgment_submit
    chooses before its store) that served pair counts as answered, and as the last answer.
    """
    study = participant.study
    if study.consistency_repeats <= 0:
        return None
    served, done = [], participant.judgment_count
    for served_id, pair_id, policy, answered_at, is_check in (
        ServedPair.objects.filter(participant_id=participant.pk)
        .order_by("served_at", "id")
        .values_list("id", "pair_id", "policy", "answered_at", "pair__is_attention_check")
    ):
        if answered_at is None and pending is not None and served_id == pending.served_id:
            answered_at, done = timezone.now(), done + 1
        served.append((pair_id, policy, answered_at, is_check))
    repeated = {pair_id for pair_id, policy, _, _ in served if policy == CONSISTENCY_REPEAT_POLICY}
    left = study.consistency_repeats - len(repeated)
    answered = [pair_id for pair_id, policy, answered_at, is_check in served
                if answered_at is not None and not is_check and policy != CONSISTENCY_REPEAT_POLICY]
    candidates = [pair_id for pair_id in answered[:-1] if pair_id not in repeated]
    if left <= 0 or not candidates:
        return None
    served_ids = {pair_id for pair_id, _, _, _ in served}
    checks_left = sum(1 for pair_id in Pair.objects.filter(
        study_id=study.pk, is_attention_check=True, correct_response__isnull=False).values_list("id", flat=True)
        if pair_id not in served_ids)
    slots = study.judgments_per_participant - done - checks_left
    if slots <= 0 or random.random() >= left / slots:
        return None
    return random.choice(candidates)


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

    One transaction claims the served pair with a compare-and-swap (`answered_at IS NULL`), inserts
    the judgment (Judgment.served_pair is unique: the database's own guard against a double store)
    and counts it on the pair and the participant, completing them with their last one. On
    PostgreSQL the same statement also serves the next pair (`next_served` on the result): only the
    submission that claimed the participant's one outstanding pair can create the next, so the claim
    serialises that serving as the participant lock does in pair_serve_next. Under the random policy
    the statement chooses the pair itself (_choose_random_sql). Under a registered chooser (a model
    policy) or with consistency repeats the pair is chosen in Python *before* the statement, as if
    this answer were stored (PendingAnswer: the chooser counts it, so the answer just given moves
    the choice), and the statement serves that pair. Choosing before the claim is sound because the
    claim can only win while `served_id` is the participant's one outstanding pair, and while a pair
    is outstanding nothing else serves or stores for this participant (pair_serve_next returns it;
    every submission must claim it): so what the chooser read is what the database holds at the
    claim, plus this answer. When the claim loses, the statement serves nothing and the choice is
    discarded. On SQLite the chosen pair is served by the submission's own transaction (IMMEDIATE:
    writers are serialised); there, under random, `next_served` is None and pair_serve_next serves
    on the next read, as it does everywhere once the quota is met.
    """
    study = participant.study
    if not study.is_open:
        raise StudyNotOpen(study.slug)
    choice, strength, rationale = _judgment_input_clean(
        study=study, choice=choice, strength=strength, rationale=rationale
    )
    now = timezone.now()
    params = {
        **_choice_params(participant=participant),
        "served_id": _db_value(ServedPair, "id", served_id),
        "now": _db_value(ServedPair, "answered_at", now),
        "choice": choice,
        "strength": strength,
        "rationale": rationale,
        "next_id": _db_value(ServedPair, "id", uuid.uuid4()),
        "swap": random.random() < 0.5,
        "policy": str(Study.SelectionPolicy.RANDOM),
    }
    # A study with consistency repeats chooses in Python too (_consistency_repeat_choose).
    chooses_in_python = study.selection_policy in PAIR_CHOOSERS or study.consistency_repeats > 0
    chosen = None
    if (chooses_in_python and participant.completed_at is None
            and participant.judgment_count + 1 < study.judgments_per_participant):
        chosen = _pair_choose_in_python(participant=participant,
                                        pending=PendingAnswer(served_id=served_id, choice=choice))
        if chosen is None and connection.vendor != "postgresql":
            # SQLite has no serving in the statement and the chooser fell back to random: the random
            # pair is chosen after the store, in the submission's transaction (see _judgment_store).
            chosen = (None, str(Study.SelectionPolicy.RANDOM))
        if chosen is not None:
            params["pair_id"], params["policy"] = chosen
    try:
        with _submission_atomic():
            stored = _judgment_store(participant=participant, params=params, chosen=chosen)
    except IntegrityError:
        stored = None  # a judgment for this served pair exists already: see below
    if stored is None:
        existing = Judgment.objects.filter(served_pair_id=served_id, participant_id=participant.pk).first()
        if existing is None:
            raise ServedPairNotFound(str(served_id))
        return JudgmentResult(judgment=existing, duplicate=True, completed=participant.completed_at is not None)
    judgment, next_served = stored
    for hook in _judgment_hooks(tuple(settings.POLYPHONY_JUDGMENT_HOOKS)):
        # After commit: a hook (e.g. modeling's retrain trigger) must never see, or undo, a judgment
        # that is not stored; annotation calls it by name so it need not import modeling.
        transaction.on_commit(functools.partial(hook, study_id=study.pk))
    completed = participant.completed_at is not None
    return JudgmentResult(judgment=judgment, duplicate=False, completed=completed, next_served=next_served)


def _submission_atomic() -> AbstractContextManager[object]:
    """The transaction of one submission.

    On PostgreSQL the submission is one statement: in autocommit mode it is its own transaction
    (BEGIN and COMMIT would be two more round trips), inside a caller's transaction a savepoint
    keeps a failed statement from breaking it. On SQLite it is several statements.
    """
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        return contextlib.nullcontext()
    return transaction.atomic()


def _judgment_store(
    *, participant: Participant, params: dict[str, object], chosen: PairChoice | None
) -> tuple[Judgment, ServedPair | None] | None:
    """Claim, store, count and serve the next pair (see judgment_submit); None when the claim found
    nothing to answer. `chosen`: the pair chosen in Python, also in `params` (on SQLite a pair id
    None stands for the random policy's choice); None: the random policy's SQL chooses (PostgreSQL).

    Sets `participant.judgment_count` and `completed_at` to what was stored.
    """
    judgment_shape, progress_shape = row_shape(Judgment, None), row_shape(Participant, None, _PROGRESS)
    next_served = None
    if connection.vendor == "postgresql":
        with hot_cursor() as cursor:
            cursor.execute(_submission_sql(serve_next=True, chosen=chosen is not None), params)
            row = cursor.fetchone()
        if row is None:
            return None
        judgment, progress = row_instances(row, judgment_shape, progress_shape)
        rest = row[len(judgment_shape.attnames) + len(progress_shape.attnames):]
        next_served = served_pair_display().served(rest, participant=participant)
    else:
        # The steps of _submission_sql one by one, reading the claimed row back from its table.
        claimed = f"(SELECT {_CLAIMED} FROM {_table(ServedPair)} WHERE id = %(served_id)s)"
        with connection.cursor() as cursor:
            cursor.execute(_claim_sql(), params)
            if cursor.fetchone() is None:
                return None
            cursor.execute(_judgment_insert_sql(claimed=claimed), params)
            (judgment,) = row_instances(cursor.fetchone(), judgment_shape)
            cursor.execute(_pair_count_sql(claimed=claimed), params)
            cursor.execute(_progress_sql(claimed=claimed), params)
            (progress,) = row_instances(cursor.fetchone(), progress_shape)
    participant.judgment_count, participant.completed_at = progress.judgment_count, progress.completed_at
    if chosen is not None and connection.vendor != "postgresql" and progress.completed_at is None:
        # Inside the submission's transaction (IMMEDIATE: it holds SQLite's write lock from BEGIN).
        pair_id, policy = chosen
        if pair_id is None:
            pair_id = _pair_choose_random_id(participant=participant)
        if pair_id is not None:
            next_served = _served_pair_create(participant=participant, pair_id=pair_id, policy=policy)
    return judgment, next_served


_CLAIMED = "id, pair_id, left_response_id, right_response_id, policy, served_at, answered_at"
_PROGRESS = ("judgment_count", "completed_at")


@functools.cache
def _submission_sql(*, serve_next: bool, chosen: bool = False) -> str:
    """PostgreSQL: the whole submission as one statement (built once per process).

    Data-modifying CTEs all see the snapshot taken when the statement started and run to completion
    whether or not they are read; every step past the claim reads `claimed`, so nothing happens
    unless the compare-and-swap won. With `serve_next`, the row also carries the next served pair
    (all NULL when none was served: quota met, or nothing left in the pool), chosen by the random
    policy's SQL or, with `chosen`, the pair `%(pair_id)s` that judgment_submit chose before.

    `x.*` of a CTE lists its RETURNING columns in order, and whitespace is squeezed out: psycopg
    caches its parsing of statements up to 4 kB, and parsing this one cost more than running it.
    """
    steps = f"""
        WITH claimed AS ({_claim_sql()}),
        j AS ({_judgment_insert_sql(claimed="claimed")}),
        counted AS ({_pair_count_sql(claimed="claimed")}),
        progress AS ({_progress_sql(claimed="claimed")})"""
    if not serve_next:
        return " ".join(f"{steps} SELECT j.*, progress.* FROM j CROSS JOIN progress".split())
    display = served_pair_display()
    _, *joined_shapes = display.shapes
    # `seen` in the choice reads the snapshot, which has the pair just answered: it is not served again.
    choose = ("chosen AS (SELECT CAST(%(pair_id)s AS BIGINT) AS id)" if chosen
              else _choose_random_sql(done="(SELECT judgment_count FROM progress)"))
    sql = f"""{steps},
        {choose},
        s AS ({_serve_sql()} AND (SELECT judgment_count FROM progress) < %(quota)s
            RETURNING {row_shape(ServedPair, None).select})
        SELECT j.*, progress.*, s.*, {", ".join(shape.select for shape in joined_shapes)}
        FROM j CROSS JOIN progress LEFT JOIN ({display.joined(None)}) ON TRUE"""
    return " ".join(sql.split())


def _claim_sql() -> str:
    """The compare-and-swap: of two concurrent submits of one served id exactly one gets the row back;
    none for ids that are unknown or another participant's."""
    return (
        f"UPDATE {_table(ServedPair)} SET answered_at = %(now)s "
        "WHERE id = %(served_id)s AND participant_id = %(participant_id)s AND answered_at IS NULL "
        f"RETURNING {_CLAIMED}"
    )


def _judgment_insert_sql(*, claimed: str) -> str:
    """The judgment of the claimed served pair: `response_a` is the response shown on the left. An
    attention check is passed when the response picked is the correct one (a tie fails it)."""
    return f"""
        INSERT INTO {_table(Judgment)} (study_id, participant_id, pair_id, served_pair_id, response_a_id,
            response_b_id, choice, strength, rationale, policy, is_attention_check, attention_passed, origin,
            external_id, served_at, answered_at)
        SELECT %(study_id)s, %(participant_id)s, c.pair_id, c.id, c.left_response_id, c.right_response_id,
            CAST(%(choice)s AS VARCHAR(3)), CAST(%(strength)s AS SMALLINT), CAST(%(rationale)s AS TEXT), c.policy,
            p.is_attention_check,
            CASE WHEN p.is_attention_check THEN COALESCE(p.correct_response_id = CASE CAST(%(choice)s AS VARCHAR(3))
                WHEN 'a' THEN c.left_response_id WHEN 'b' THEN c.right_response_id END, FALSE) END,
            '{Judgment.Origin.ANNOTATED.value}', '', c.served_at, c.answered_at
        FROM {claimed} c INNER JOIN {_table(Pair)} p ON p.id = c.pair_id
        RETURNING {row_shape(Judgment, None).select}"""


def _pair_count_sql(*, claimed: str) -> str:
    return f"UPDATE {_table(Pair)} SET judgment_count = judgment_count + 1 WHERE id IN (SELECT pair_id FROM {claimed})"


def _progress_sql(*, claimed: str) -> str:
    """Count the judgment on the participant; the one that meets the quota completes them, at the
    judgment's own time. (Expressions on the right of SET see the row as it was.)"""
    return (
        f"UPDATE {_table(Participant)} SET judgment_count = judgment_count + 1, completed_at = COALESCE("
        "completed_at, CASE WHEN judgment_count + 1 >= %(quota)s THEN %(now)s END) "
        f"WHERE id = %(participant_id)s AND EXISTS (SELECT 1 FROM {claimed}) "
        f"RETURNING {row_shape(Participant, None, _PROGRESS).select}"
    )


def _serve_sql() -> str:
    """INSERT … SELECT of the ServedPair for `chosen`, in a random left/right order (`swap`); the
    caller appends conditions to its WHERE and the RETURNING clause."""
    return f"""
        INSERT INTO {_table(ServedPair)} (id, participant_id, pair_id, left_response_id, right_response_id,
            policy, served_at)
        SELECT %(next_id)s, %(participant_id)s, pa.id,
            CASE WHEN %(swap)s THEN pa.response_b_id ELSE pa.response_a_id END,
            CASE WHEN %(swap)s THEN pa.response_a_id ELSE pa.response_b_id END,
            CAST(%(policy)s AS VARCHAR(20)), %(now)s
        FROM {_table(Pair)} pa WHERE pa.id IN (SELECT id FROM chosen)"""


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _db_value(model: type[Model], field: str, value: object) -> object:
    """`value` as the database takes it (SQLite: UUIDs as hex, datetimes as text)."""
    return model._meta.get_field(field).get_db_prep_value(value, connection)


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

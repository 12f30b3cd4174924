"""Reads for the annotator flow: who the participant is, where they are, what they are looking at.

The judgment page is the hot path (one request per judgment, hundreds a second). Its reads are
hand-written joins turned into model instances with `Model.from_db`: compiling the equivalent
select_related querysets cost more CPU than running them (about 1-2 ms each, profiled with the
load benchmark), so the few queries of that path skip the ORM compiler.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Model
from django.http import Http404

from annotation.models import Participant, ServedPair
from elicitation.models import Pair, Prompt, Response, Study, SurveyQuestion

# Session keys. The session is a signed cookie and holds ids only (settings.SESSION_ENGINE).
SESSION_PARTICIPANTS = "participants"  # {slug: participant_id}
SESSION_PENDING = "pending"  # {slug: {"external_id", "source", "platform_study_id", "platform_session_id"}}


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


def study_get_for_participation(*, slug: str) -> Study:
    """Any study by slug, whatever its status: the views decide what a closed study shows."""
    study = Study.objects.filter(slug=slug).first()
    if study is None:
        raise Http404("No such study.")
    return study


def participant_id_from_session(*, session: Mapping[str, object], slug: str) -> int | None:
    participants = session.get(SESSION_PARTICIPANTS)
    if not isinstance(participants, dict):
        return None
    value = participants.get(slug)
    return value if isinstance(value, int) else None


def participant_get_for_session(*, session: Mapping[str, object], slug: str) -> Participant | None:
    """The participant this browser consented as in this study (study loaded along, one query), if any.

    A stale id (the participant withdrew, or the database was reset) reads as no participant.
    """
    participant_id = participant_id_from_session(session=session, slug=slug)
    if participant_id is None:
        return None
    participant_shape, study_shape = row_shape(Participant, "p"), row_shape(Study, "st")
    row = _fetchone(
        f"SELECT {participant_shape.select}, {study_shape.select} "
        f"FROM {_table(Participant)} p INNER JOIN {_table(Study)} st ON st.id = p.study_id "
        "WHERE p.id = %s AND st.slug = %s",
        [participant_id, slug],
    )
    if row is None:
        return None
    participant, study = row_instances(row, participant_shape, study_shape)
    participant.study = study
    return participant


def participant_get_by_external_id(*, study: Study, external_id: str) -> Participant | None:
    return Participant.objects.filter(study=study, external_id=external_id).first()


def participant_may_resume_from_link(
    *, participant: Participant, session: Mapping[str, object], slug: str, platform_session_id: str
) -> bool:
    """Whether a browser that opened the study link with this participant's recruitment id may go on as them.

    Knowing the id is not enough: a Prolific PID is no secret (it appears in messages, screenshots,
    payment records), and whoever resumed could read the outstanding pair, answer in the
    participant's name, or withdraw and delete their data. So only (a) the browser whose signed
    session already belongs to the participant, or (b) a link that carries the platform session id
    the participant consented with (Prolific's SESSION_ID: the same Prolific session reopened on
    another device) may resume. Both compared in constant time: the answer must not tell how much
    of a guess was right.
    """
    in_session = participant_id_from_session(session=session, slug=slug)
    if in_session is not None and hmac.compare_digest(str(in_session).encode(), str(participant.pk).encode()):
        return True
    stored = participant.platform_session_id
    return bool(stored) and hmac.compare_digest(stored.encode("utf-8"), platform_session_id.encode("utf-8"))


def study_has_survey(*, study: Study) -> bool:
    return SurveyQuestion.objects.filter(study=study).exists()


def survey_questions_for_study(*, study: Study) -> list[SurveyQuestion]:
    return list(SurveyQuestion.objects.filter(study=study).order_by("position", "id"))


def participant_next_step(*, participant: Participant) -> str:
    """Name of the `annotation:` URL the participant should be on now (resuming goes through here)."""
    if participant.completed_at is not None:
        return "done"
    if participant.survey_completed_at is None and study_has_survey(study=participant.study):
        return "survey"
    if participant.instructions_seen_at is None:
        return "instructions"
    return "judge"


def participant_progress(*, participant: Participant) -> Progress:
    return Progress(done=participant.judgment_count, total=participant.study.judgments_per_participant)


def served_pair_outstanding(*, participant: Participant) -> ServedPair | None:
    """The participant's served pair awaiting an answer (at most one exists) with its pair, prompt and
    texts, in one query. Prompt and responses carry ids and text only (other fields load on access).
    """
    display = served_pair_display()
    row = _fetchone(
        f"SELECT {display.select} FROM {display.joined(_table(ServedPair))} "
        "WHERE s.participant_id = %s AND s.answered_at IS NULL ORDER BY s.served_at LIMIT 1",
        [participant.pk],
    )
    return display.served(row, participant=participant)


@dataclass(frozen=True)
class ServedPairDisplay:
    """The columns and joins that load a served pair (alias `s`) with everything its page shows.

    Shared by the outstanding-pair read and annotation.services' submit-and-serve statement, which
    joins the served pair it has just inserted the same way.
    """

    shapes: tuple[RowShape, ...]
    select: str

    def joined(self, source: str | None) -> str:
        """FROM-clause joins from `source` (the served-pair table, or None for a CTE named `s`)."""
        return (
            f"{source + ' ' if source else ''}s INNER JOIN {_table(Pair)} pa ON pa.id = s.pair_id "
            f"INNER JOIN {_table(Prompt)} pr ON pr.id = pa.prompt_id "
            f"INNER JOIN {_table(Response)} l ON l.id = s.left_response_id "
            f"INNER JOIN {_table(Response)} r ON r.id = s.right_response_id"
        )

    def served(self, row: Sequence[Any] | None, *, participant: Participant) -> ServedPair | None:
        """The instances of one row (None for no row, or a row of NULLs from an outer join)."""
        if row is None or row[0] is None:
            return None
        served, pair, prompt, left, right = row_instances(row, *self.shapes)
        pair.prompt = prompt
        served.pair, served.left_response, served.right_response = pair, left, right
        served.participant = participant
        return served


@functools.cache
def served_pair_display() -> ServedPairDisplay:
    shapes = (
        row_shape(ServedPair, "s"),
        row_shape(Pair, "pa"),
        row_shape(Prompt, "pr", ("id", "study_id", "text")),
        row_shape(Response, "l", _TEXT_ONLY),
        row_shape(Response, "r", _TEXT_ONLY),
    )
    return ServedPairDisplay(shapes=shapes, select=", ".join(shape.select for shape in shapes))


def pair_for_display(*, pair_id: int) -> Pair:
    """A pool pair with its prompt and both responses (ids and text), in one query."""
    pair_shape = row_shape(Pair, "pa")
    prompt_shape = row_shape(Prompt, "pr", ("id", "study_id", "text"))
    a_shape, b_shape = row_shape(Response, "ra", _TEXT_ONLY), row_shape(Response, "rb", _TEXT_ONLY)
    row = _fetchone(
        f"SELECT {pair_shape.select}, {prompt_shape.select}, {a_shape.select}, {b_shape.select} "
        f"FROM {_table(Pair)} pa INNER JOIN {_table(Prompt)} pr ON pr.id = pa.prompt_id "
        f"INNER JOIN {_table(Response)} ra ON ra.id = pa.response_a_id "
        f"INNER JOIN {_table(Response)} rb ON rb.id = pa.response_b_id WHERE pa.id = %s",
        [pair_id],
    )
    if row is None:
        raise Pair.DoesNotExist(str(pair_id))
    pair, prompt, response_a, response_b = row_instances(row, pair_shape, prompt_shape, a_shape, b_shape)
    pair.prompt, pair.response_a, pair.response_b = prompt, response_a, response_b
    return pair


# --- Hand-written rows to model instances ---------------------------------------------------------------

_TEXT_ONLY = ("id", "prompt_id", "text")
Converter = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class RowShape:
    """Some columns of one model in a hand-written SELECT, and how to make an instance from them."""

    model: type[Model]
    attnames: tuple[str, ...]
    select: str  # the SELECT list, e.g. 'p."id", p."study_id"'
    converters: tuple[tuple[Converter, ...], ...]  # per column, as the ORM compiler would apply
    expressions: tuple[Any, ...]


@functools.cache
def row_shape(model: type[Model], alias: str | None, attnames: tuple[str, ...] | None = None) -> RowShape:
    """Columns of `model` (all, or `attnames`) as `alias."column"` (bare with alias None).

    Built once per process (and database vendor: tests switch it between runs, never within one).
    """
    fields = [
        field for field in model._meta.concrete_fields if attnames is None or field.attname in attnames
    ]
    quote = connection.ops.quote_name
    expressions = tuple(field.get_col(alias or model._meta.db_table) for field in fields)
    return RowShape(
        model=model,
        attnames=tuple(field.attname for field in fields),
        select=", ".join(f"{alias}.{quote(field.column)}" if alias else quote(field.column) for field in fields),
        converters=tuple(
            tuple(connection.ops.get_db_converters(col) + col.get_db_converters(connection)) for col in expressions
        ),
        expressions=expressions,
    )


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _fetchone(sql: str, params: Sequence[object]) -> tuple[Any, ...] | None:
    with hot_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def hot_cursor() -> CursorWrapper:
    """A cursor (use it as a context manager) for the statements run on every judgment.

    On PostgreSQL, when the database OPTIONS set psycopg's `prepare_threshold`, it binds parameters
    server-side, so psycopg prepares a statement once it has run that many times on a connection:
    planning the submission statement cost several times more than running it. Django's own
    cursors bind client-side and are never prepared, whatever the threshold. Elsewhere, or without
    a threshold, this is Django's usual cursor.
    """
    if connection.vendor != "postgresql" or connection.settings_dict["OPTIONS"].get("prepare_threshold") is None:
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor  # psycopg only where it runs

    connection.validate_thread_sharing()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = ServerBindingCursor(connection.connection)
    return connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)


def row_instances(row: Sequence[Any], *shapes: RowShape) -> list[Any]:
    """Split a row into one instance per shape; database values are converted like the ORM does."""
    instances, start = [], 0
    for shape in shapes:
        values = list(row[start:start + len(shape.attnames)])
        start += len(shape.attnames)
        for i, (converters, expression) in enumerate(zip(shape.converters, shape.expressions, strict=True)):
            for convert in converters:
                values[i] = convert(values[i], expression, connection)
        instances.append(shape.model.from_db(connection.alias, list(shape.attnames), values))
    return instances


def completion_redirect_url(*, study: Study) -> str:
    """Where the done page sends the participant, carrying the completion code.

    `{code}` in the study's redirect URL is replaced by the code; a URL that already contains the
    code (Prolific's `…/submissions/complete?cc=CODE`) is kept; otherwise `cc=<code>` is appended,
    Prolific's parameter name. Empty when the study has no redirect URL.
    """
    url, code = study.redirect_url, study.completion_code
    if not url or not code:
        return url
    if "{code}" in url:
        return url.replace("{code}", quote(code, safe=""))
    if code in url:
        return url
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("cc", code)])
    return urlunsplit(parts._replace(query=query))

"""Importing existing comparisons (e.g. a public preference dataset) in the comparison format.

One JSON object a line:
`{"prompt", "response_a", "response_b", "choice": "a"|"b"|"tie", "annotator", "strength",
"rationale", "annotator_attributes", "id"?, "created_at"?}` -- the same format the JSONL export
writes, so an export imports back unchanged. All or nothing, like every import: each line is
validated first, then everything is written in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import Judgment, Participant
from elicitation.imports import (
    LOOKUP_CHUNK,
    ErrorCollector,
    ImportRejected,
    import_text_decode,
    json_lines_records,
    json_type_name,
    jsonl_records,
    prompts_get_or_create,
    responses_get_or_create,
    text_field_get,
    unknown_fields_check,
)
from elicitation.models import Pair, Study, content_hash

COMPARISON_FIELDS = (
    "prompt", "response_a", "response_b", "choice", "annotator", "strength", "rationale",
    "annotator_attributes", "id", "created_at",
    # Written by exports that include attention checks; accepted only as false (see below).
    "attention_check", "attention_passed",
)
MAX_ID_LENGTH = 200  # Participant.external_id and Judgment.external_id


@dataclass(frozen=True)
class _Comparison:
    line: int
    prompt: str
    response_a: str
    response_b: str
    choice: str
    annotator: str
    strength: int | None
    rationale: str
    attributes: dict[str, str | int | float]
    external_id: str
    answered_at: datetime | None


@dataclass(frozen=True)
class ComparisonImportResult:
    judgments_created: int
    judgments_existing: int
    prompts_created: int
    responses_created: int
    pairs_created: int
    participants_created: int

    def summary(self) -> str:
        return (
            f"{self.judgments_created} comparisons imported ({self.judgments_existing} already present), "
            f"{self.prompts_created} prompts, {self.responses_created} responses, {self.pairs_created} pairs "
            f"and {self.participants_created} annotators created."
        )


def comparisons_import(*, study: Study, data: bytes) -> ComparisonImportResult:
    """Import a JSONL file of comparisons into `study`, all or nothing."""
    text = import_text_decode(data=data)
    errors = ErrorCollector()
    comparisons = _comparisons_parse(study=study, records=jsonl_records(text=text, errors=errors), errors=errors)
    errors.raise_if_any()
    return _comparisons_write(study=study, comparisons=comparisons)


def comparisons_import_records(*, study: Study, records: list[Any]) -> ComparisonImportResult:
    """Import already-parsed comparison objects (the API's JSON body), all or nothing."""
    errors = ErrorCollector()
    comparisons = _comparisons_parse(
        study=study, records=json_lines_records(lines=records, errors=errors), errors=errors
    )
    errors.raise_if_any()
    return _comparisons_write(study=study, comparisons=comparisons)


def comparisons_import_new_study(
    *, slug: str, data: bytes, owner_username: str | None = None, title: str = "",
    allow_ties: bool = True, strength_labels: list[str] | None = None,
) -> tuple[Study, ComparisonImportResult]:
    """Create the study `slug` if it does not exist, then import into it.

    One transaction around both, so a rejected file does not leave an empty study behind.
    """
    text = import_text_decode(data=data)  # before the transaction: no need to hold it to decode
    with transaction.atomic():
        study = Study.objects.filter(slug=slug).first() or _study_create(
            slug=slug, owner_username=owner_username, title=title,
            allow_ties=allow_ties, strength_labels=strength_labels or [],
        )
        errors = ErrorCollector()
        comparisons = _comparisons_parse(
            study=study, records=jsonl_records(text=text, errors=errors), errors=errors
        )
        errors.raise_if_any()  # rolls back the study created above
        return study, _comparisons_write(study=study, comparisons=comparisons)


def _study_create(
    *, slug: str, owner_username: str | None, title: str, allow_ties: bool, strength_labels: list[str]
) -> Study:
    try:
        validate_slug(slug)
    except Exception:
        raise ImportRejected([f"{slug!r} is not a valid study slug (letters, digits, - and _ only)."]) from None
    users = get_user_model().objects
    if owner_username:
        owner = users.filter(username=owner_username).first()
        if owner is None:
            raise ImportRejected([f"No user named {owner_username!r} to own the new study."])
    else:
        owner = users.filter(is_superuser=True).order_by("id").first()
        if owner is None:
            raise ImportRejected(["No superuser to own the new study; create one or name an owner."])
    return Study.objects.create(
        slug=slug, owner=owner, title=title or slug.replace("-", " ").capitalize(),
        allow_ties=allow_ties, strength_labels=strength_labels,
    )


# --- Validation ------------------------------------------------------------------------------


def _comparisons_parse(
    *, study: Study, records: Iterable[tuple[int, dict[str, Any]]], errors: ErrorCollector
) -> list[_Comparison]:
    comparisons: list[_Comparison] = []
    first_line_of_id: dict[str, int] = {}
    for line, record in records:
        comparison = _comparison_parse(study=study, line=line, record=record, errors=errors)
        if comparison is None:
            continue
        if "id" in record and record["id"] is not None:
            seen = first_line_of_id.setdefault(comparison.external_id, line)
            if seen != line:
                errors.add(line, f"id {comparison.external_id!r} is repeated (first used on line {seen})")
                continue
        comparisons.append(comparison)
    if not comparisons and not errors:
        errors.add(None, "The file has no comparisons.")
    return comparisons


def _comparison_parse(
    *, study: Study, line: int, record: dict[str, Any], errors: ErrorCollector
) -> _Comparison | None:
    if not unknown_fields_check(record=record, allowed=COMPARISON_FIELDS, line=line, errors=errors):
        return None
    before = len(errors.errors) + errors.hidden
    prompt = text_field_get(record=record, name="prompt", line=line, errors=errors)
    response_a = text_field_get(record=record, name="response_a", line=line, errors=errors)
    response_b = text_field_get(record=record, name="response_b", line=line, errors=errors)
    annotator = text_field_get(record=record, name="annotator", line=line, errors=errors)
    choice = _choice_get(study=study, record=record, line=line, errors=errors)
    strength = _strength_get(study=study, record=record, line=line, errors=errors)
    rationale = record.get("rationale")
    if rationale is not None and not isinstance(rationale, str):
        errors.add(line, f"'rationale' must be a string or null, got {json_type_name(rationale)}")
    attributes = _attributes_get(record=record, line=line, errors=errors)
    answered_at = _created_at_get(record=record, line=line, errors=errors)
    given_id = record.get("id")
    if given_id is not None and (not isinstance(given_id, str) or not given_id.strip()):
        errors.add(line, f"'id' must be a non-empty string, got {json_type_name(given_id)}")
    elif given_id is not None and len(given_id) > MAX_ID_LENGTH:
        errors.add(line, f"'id' is longer than {MAX_ID_LENGTH} characters")
    if annotator is not None and len(annotator) > MAX_ID_LENGTH:
        errors.add(line, f"'annotator' is longer than {MAX_ID_LENGTH} characters")
    if response_a is not None and response_a == response_b:
        errors.add(line, "'response_a' and 'response_b' are the same text")
    if record.get("attention_check", False) is not False:
        # An attention check's correct answer is not part of the format, so such a line
        # cannot be imported faithfully; exports leave them out unless asked.
        errors.add(line, "attention-check comparisons cannot be imported; export without attention checks")
    if len(errors.errors) + errors.hidden > before:
        return None
    assert prompt and response_a and response_b and annotator and choice and attributes is not None
    return _Comparison(
        line=line, prompt=prompt, response_a=response_a, response_b=response_b, choice=choice,
        annotator=annotator, strength=strength, rationale=rationale or "", attributes=attributes,
        external_id=given_id or _derived_id(record=record), answered_at=answered_at,
    )


def _choice_get(*, study: Study, record: dict[str, Any], line: int, errors: ErrorCollector) -> str | None:
    choice = record.get("choice")
    if choice is None:
        errors.add(line, "missing field 'choice'")
        return None
    if choice not in ("a", "b", "tie"):
        errors.add(line, f"unknown choice {choice!r} (expected \"a\", \"b\" or \"tie\")")
        return None
    if choice == "tie" and not study.allow_ties:
        errors.add(line, "ties are not allowed in this study")
        return None
    return choice


def _strength_get(*, study: Study, record: dict[str, Any], line: int, errors: ErrorCollector) -> int | None:
    strength = record.get("strength")
    if strength is None:
        return None
    if isinstance(strength, bool) or not isinstance(strength, int):
        errors.add(line, f"'strength' must be a whole number or null, got {json_type_name(strength)}")
        return None
    levels = len(study.strength_labels or [])
    if not levels:
        errors.add(line, "this study has no strength scale, so 'strength' must be null")
    elif not 1 <= strength <= levels:
        errors.add(line, f"'strength' must be between 1 and {levels}, or null; got {strength}")
    return strength


def _attributes_get(
    *, record: dict[str, Any], line: int, errors: ErrorCollector
) -> dict[str, str | int | float] | None:
    attributes = record.get("annotator_attributes")
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        errors.add(line, f"'annotator_attributes' must be an object, got {json_type_name(attributes)}")
        return None
    for key, value in attributes.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            errors.add(line, f"annotator attribute {key!r} must be a string or number, got {json_type_name(value)}")
            return None
    return attributes


def _created_at_get(*, record: dict[str, Any], line: int, errors: ErrorCollector) -> datetime | None:
    raw = record.get("created_at")
    if raw is None:
        return None
    if not isinstance(raw, str):
        errors.add(line, f"'created_at' must be an ISO-8601 string, got {json_type_name(raw)}")
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        errors.add(line, f"'created_at' is not an ISO-8601 date and time: {raw[:40]!r}")
        return None
    # A time without a zone is taken as UTC rather than the server's zone, so the result
    # does not depend on where the import runs. Stored as UTC: PostgreSQL refuses offsets past
    # ±15:59 that Python accepts (up to ±23:59).
    try:
        return value.astimezone(UTC) if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        errors.add(line, f"'created_at' is out of range: {raw[:40]!r}")
        return None


def _derived_id(*, record: dict[str, Any]) -> str:
    """An id for a line without one, from its content: re-importing the same line finds it again."""
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"sha256:{content_hash(canonical)[:40]}"


# --- Writing ---------------------------------------------------------------------------------


def _comparisons_write(*, study: Study, comparisons: list[_Comparison]) -> ComparisonImportResult:
    with transaction.atomic():
        existing_ids = _judgment_ids_existing(study=study, external_ids=[c.external_id for c in comparisons])
        new: dict[str, _Comparison] = {}
        for comparison in comparisons:
            if comparison.external_id not in existing_ids:
                new.setdefault(comparison.external_id, comparison)  # identical id-less lines: keep one
        prompt_ids, prompts_created = prompts_get_or_create(
            study=study, texts={c.prompt: "" for c in new.values()}
        )
        response_ids, responses_created = responses_get_or_create(
            items={
                (prompt_ids[c.prompt], text): "" for c in new.values() for text in (c.response_a, c.response_b)
            }
        )

        def response_id(comparison: _Comparison, text: str) -> int:
            return response_ids[(prompt_ids[comparison.prompt], text)]

        pairs, pairs_created = _pairs_get_or_create(
            study=study,
            wanted={
                _canonical(response_id(c, c.response_a), response_id(c, c.response_b)): prompt_ids[c.prompt]
                for c in new.values()
            },
        )
        participant_ids, participants_created = _participants_get_or_create(
            study=study, comparisons=list(new.values())
        )
        now = timezone.now()
        judgments = []
        for c in new.values():
            a, b = response_id(c, c.response_a), response_id(c, c.response_b)
            pair = pairs[_canonical(a, b)]
            chosen = {"a": a, "b": b}.get(c.choice)
            judgments.append(Judgment(
                study=study, participant_id=participant_ids[c.annotator], pair_id=pair.pk,
                response_a_id=a, response_b_id=b, choice=c.choice, strength=c.strength, rationale=c.rationale,
                is_attention_check=pair.is_attention_check,
                attention_passed=(chosen == pair.correct_response_id) if pair.is_attention_check else None,
                origin=Judgment.Origin.IMPORTED, external_id=c.external_id, answered_at=c.answered_at or now,
            ))
        Judgment.objects.bulk_create(judgments, batch_size=1000)
        judgment_counts_refresh(
            pair_ids={j.pair_id for j in judgments}, participant_ids={j.participant_id for j in judgments}
        )
    return ComparisonImportResult(
        judgments_created=len(judgments),
        judgments_existing=len(comparisons) - len(judgments),
        prompts_created=prompts_created,
        responses_created=responses_created,
        pairs_created=pairs_created,
        participants_created=participants_created,
    )


def _canonical(first: int, second: int) -> tuple[int, int]:
    return (first, second) if first < second else (second, first)


def _judgment_ids_existing(*, study: Study, external_ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(external_ids), LOOKUP_CHUNK):
        chunk = external_ids[start:start + LOOKUP_CHUNK]
        found.update(Judgment.objects.filter(study=study, external_id__in=chunk).values_list("external_id", flat=True))
    return found


def _pairs_get_or_create(*, study: Study, wanted: dict[tuple[int, int], int]) -> tuple[dict[tuple[int, int], Pair], int]:
    """Map canonical (response_a_id, response_b_id) -> Pair, creating missing ones (origin import)."""
    found = _pairs_find(keys=list(wanted))
    missing = [
        Pair(study=study, prompt_id=prompt_id, response_a_id=a, response_b_id=b, origin=Pair.Origin.IMPORT)
        for (a, b), prompt_id in wanted.items() if (a, b) not in found
    ]
    Pair.objects.bulk_create(missing, batch_size=1000, ignore_conflicts=True)
    if missing:
        found = _pairs_find(keys=list(wanted))
    return found, len(missing)


def _pairs_find(*, keys: list[tuple[int, int]]) -> dict[tuple[int, int], Pair]:
    found: dict[tuple[int, int], Pair] = {}
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = set(keys[start:start + LOOKUP_CHUNK])
        pairs = Pair.objects.filter(
            response_a_id__in={a for a, _ in chunk}, response_b_id__in={b for _, b in chunk}
        ).only("id", "response_a_id", "response_b_id", "is_attention_check", "correct_response_id")
        found.update({key: pair for pair in pairs if (key := (pair.response_a_id, pair.response_b_id)) in chunk})
    return found


def _participants_get_or_create(*, study: Study, comparisons: list[_Comparison]) -> tuple[dict[str, int], int]:
    """Map annotator -> participant id. Existing participants are reused as they are.

    A new participant's attributes are the union over its lines, the first value of each key
    winning; an existing participant's attributes are not overwritten.
    """
    attributes: dict[str, dict[str, str | int | float]] = {}
    for c in comparisons:
        merged = attributes.setdefault(c.annotator, {})
        for key, value in c.attributes.items():
            merged.setdefault(key, value)
    found = _participant_ids(study=study, external_ids=list(attributes))
    now = timezone.now()
    missing = [
        Participant(study=study, external_id=annotator, source=Participant.Source.IMPORT,
                    attributes=attrs, consented_at=now)
        for annotator, attrs in attributes.items() if annotator not in found
    ]
    Participant.objects.bulk_create(missing, batch_size=1000, ignore_conflicts=True)
    if missing:
        found = _participant_ids(study=study, external_ids=list(attributes))
    return found, len(missing)


def _participant_ids(*, study: Study, external_ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(external_ids), LOOKUP_CHUNK):
        chunk = external_ids[start:start + LOOKUP_CHUNK]
        found.update(
            Participant.objects.filter(study=study, external_id__in=chunk).values_list("external_id", "id")
        )
    return found


def judgment_counts_refresh(*, pair_ids: Iterable[int], participant_ids: Iterable[int]) -> None:
    """Recompute the denormalised judgment counts of these pairs and participants from the judgments.

    A recount rather than `F() + n`: exact even if an earlier writer got it wrong, and one
    UPDATE per chunk either way.
    """
    for model, ids, column in ((Pair, sorted(pair_ids), "pair_id"), (Participant, sorted(participant_ids), "participant_id")):
        per_row = (
            Judgment.objects.filter(**{column: OuterRef("pk")}).order_by().values(column)
            .annotate(n=Count("id")).values("n")
        )
        for start in range(0, len(ids), LOOKUP_CHUNK):
            model.objects.filter(id__in=ids[start:start + LOOKUP_CHUNK]).update(
                judgment_count=Coalesce(Subquery(per_row), 0)
            )

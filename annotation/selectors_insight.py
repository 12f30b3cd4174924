"""Reads for the researcher insight dashboard (modeling/analytics_services.py), as plain tuples.

One query each, `values_list` only: a study of 20,000 judgments must not build model instances.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q

from annotation.exclusions import excluded_participant_ids
from annotation.models import Judgment, Participant
from elicitation.models import Pair, Response

# (participant id, external id, attributes)
ParticipantRow = tuple[int, str, dict[str, Any]]
# (participant id, pair id, shown-first response id, choice, attention check?, attention passed,
#  served_at, answered_at)
JudgmentRow = tuple[int, int, int, str, bool, bool | None, datetime | None, datetime]
# (pair id, prompt id, response_a id, response_b id)
PairRow = tuple[int, int, int, int]
# (response id, prompt id, response text, prompt text)
ResponseRow = tuple[int, int, str, str]


def insight_participants(*, study_id: int) -> list[ParticipantRow]:
    return list(
        Participant.objects.filter(study_id=study_id).order_by("id").values_list("id", "external_id", "attributes")
    )


def insight_excluded_ids(*, study_id: int) -> set[int]:
    return set(excluded_participant_ids(study_id=study_id).values_list("participant_id", flat=True))


def insight_judgments(*, study_id: int) -> list[JudgmentRow]:
    """Every judgment of a study; a judgment on an attention-check pair counts as a check."""
    rows = (
        Judgment.objects.filter(study_id=study_id)
        .order_by("id")
        .values_list(
            "participant_id", "pair_id", "response_a_id", "choice", "is_attention_check", "attention_passed",
            "served_at", "answered_at", "pair__is_attention_check",
        )
    )
    return [(p, pair, a, c, bool(check or pair_check), passed, served, answered)
            for p, pair, a, c, check, passed, served, answered, pair_check in rows]


def insight_pairs(*, study_id: int) -> list[PairRow]:
    return list(
        Pair.objects.filter(study_id=study_id).filter(~Q(is_attention_check=True)).order_by("id")
        .values_list("id", "prompt_id", "response_a_id", "response_b_id")
    )


def insight_responses(*, study_id: int) -> list[ResponseRow]:
    return list(
        Response.objects.filter(prompt__study_id=study_id).order_by("prompt_id", "id")
        .values_list("id", "prompt_id", "text", "prompt__text")
    )

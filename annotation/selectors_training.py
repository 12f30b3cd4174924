"""Reads of judgments for the reward models (the only door from `modeling` into annotation's tables).

Rows are plain tuples from `values_list`, one query each: a training snapshot of 100k judgments
must not build 100k model instances, and `modeling` should not need to know annotation's models.
Attention-check judgments are left out everywhere here: they test care, not preference.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from annotation.exclusions import excluded_participant_ids
from annotation.models import Judgment, Participant
from elicitation.models import Study

# (annotator external id, prompt text, text shown first, text shown second, "a"|"b"|"tie", strength or None)
TrainingRow = tuple[str, str, str, str, str, int | None]
# (prompt text, text shown first, text shown second, "a"|"b"|"tie", strength or None)
AdaptationRow = tuple[str, str, str, str, int | None]


def _preference_judgments(*, study_id: int) -> QuerySet[Judgment]:
    # Participants a researcher excluded (annotation/exclusions.py) never train a model.
    return Judgment.objects.filter(study_id=study_id, is_attention_check=False).exclude(
        participant_id__in=excluded_participant_ids(study_id=study_id)
    )


def judgments_for_training(*, study: Study) -> list[TrainingRow]:
    """Every preference judgment of a study as a plain row, in id order (one query)."""
    return list(
        _preference_judgments(study_id=study.pk)
        .order_by("id")
        .values_list(
            "participant__external_id", "pair__prompt__text", "response_a__text", "response_b__text",
            "choice", "strength",
        )
    )


def participant_judgments_for_adaptation(*, study: Study, external_id: str) -> list[AdaptationRow]:
    """One annotator's preference judgments in a study (one query; empty for an unknown annotator)."""
    return list(
        _preference_judgments(study_id=study.pk)
        .filter(participant__external_id=external_id)
        .order_by("id")
        .values_list("pair__prompt__text", "response_a__text", "response_b__text", "choice", "strength")
    )


def judgments_for_adaptation(*, study: Study, external_ids: Iterable[str]) -> dict[str, list[AdaptationRow]]:
    """`participant_judgments_for_adaptation` for many annotators at once (one query per 500 of them)."""
    wanted = list(dict.fromkeys(external_ids))
    found: dict[str, list[AdaptationRow]] = {}
    for start in range(0, len(wanted), 500):
        rows = (
            _preference_judgments(study_id=study.pk)
            .filter(participant__external_id__in=wanted[start:start + 500])
            .order_by("id")
            .values_list(
                "participant__external_id", "pair__prompt__text", "response_a__text", "response_b__text",
                "choice", "strength",
            )
        )
        for external_id, *row in rows:
            found.setdefault(external_id, []).append(tuple(row))  # type: ignore[arg-type]
    return found


def judgment_count_for_training(*, study_id: int) -> int:
    """How many judgments a training run would see now (what the retrain trigger counts)."""
    return _preference_judgments(study_id=study_id).count()


def participant_ids_by_external_id(*, study: Study, external_ids: Iterable[str]) -> dict[str, int]:
    """Participant primary keys of a study by external id; ids without a participant are left out."""
    wanted = list(dict.fromkeys(external_ids))
    found: dict[str, int] = {}
    # Chunks keep each IN list well under SQLite's bound-parameter limit.
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        found.update(
            Participant.objects.filter(study=study, external_id__in=chunk).values_list("external_id", "id")
        )
    return found

"""Excluding participants from training and exports: by hand or by rule, with a reason, reversible.

Writes (`participant_exclude`, `participant_exclusion_revoke`, `participants_exclude_by_rule`)
and the reads every other module uses to honour exclusions (`excluded_participant_ids`).
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from annotation.models import Participant, ParticipantExclusion
from elicitation.models import Study

RULE_ATTENTION = "attention_below"
RULE_FLAGGED = "flagged"
RULE_TOO_FAST = "too_fast"
MAX_REASON_CHARS = 300


def active_exclusions(*, study: Study) -> QuerySet[ParticipantExclusion]:
    return ParticipantExclusion.objects.filter(participant__study=study, revoked_at__isnull=True)


def excluded_participant_ids(*, study_id: int) -> QuerySet[ParticipantExclusion]:
    """A subquery of the participant ids currently excluded from a study (use in `__in`)."""
    return ParticipantExclusion.objects.filter(
        participant__study_id=study_id, revoked_at__isnull=True
    ).values("participant_id")


def participant_get_in_study(*, study: Study, participant_id: int) -> Participant:
    """A participant of this study; 404 for an id of another study, so ids do not leak."""
    participant = Participant.objects.filter(study=study, pk=participant_id).first()
    if participant is None:
        raise Http404("No such participant in this study.")
    return participant


def _clean_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Give a reason for the exclusion.")
    if len(reason) > MAX_REASON_CHARS:
        raise ValidationError(f"Keep the reason under {MAX_REASON_CHARS} characters.")
    return reason


def participant_exclude(
    *, participant: Participant, reason: str, created_by: AbstractBaseUser | None, rule: str = "",
) -> tuple[ParticipantExclusion, bool]:
    """Exclude a participant; returns (the active exclusion, whether it is new).

    Excluding someone already excluded keeps the existing record (idempotent): the partial
    unique constraint makes a concurrent double click fail one insert, which we then read back.
    """
    reason = _clean_reason(reason)
    existing = ParticipantExclusion.objects.filter(participant=participant, revoked_at__isnull=True).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            return ParticipantExclusion.objects.create(
                participant=participant, reason=reason, rule=rule, created_by=created_by
            ), True
    except IntegrityError:
        return ParticipantExclusion.objects.get(participant=participant, revoked_at__isnull=True), False


def participant_exclusion_revoke(*, participant: Participant, revoked_by: AbstractBaseUser | None) -> int:
    """Bring an excluded participant back; returns how many exclusions were revoked (0 or 1)."""
    return ParticipantExclusion.objects.filter(participant=participant, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=revoked_by
    )


def participants_below_attention(*, study: Study, min_pass_rate: float) -> list[int]:
    """Ids of participants with at least one graded attention check and a pass rate below the bar."""
    rows = (
        Participant.objects.filter(study=study)
        .annotate(
            checks=Count("judgments", filter=Q(judgments__attention_passed__isnull=False)),
            passed=Count("judgments", filter=Q(judgments__attention_passed=True)),
        )
        .filter(checks__gt=0)
        .values_list("id", "checks", "passed")
    )
    return [pk for pk, checks, passed in rows if passed / checks < min_pass_rate]


def participants_exclude_by_rule(
    *, study: Study, participant_ids: list[int], rule: str, reason: str, created_by: AbstractBaseUser | None,
) -> int:
    """Exclude the given participants of a study in one transaction; returns how many were newly excluded.

    Participants already excluded are left as they are; ids of other studies are ignored.
    """
    reason = _clean_reason(reason)
    with transaction.atomic():
        already = set(active_exclusions(study=study).values_list("participant_id", flat=True))
        wanted = Participant.objects.filter(study=study, pk__in=participant_ids).exclude(pk__in=already)
        created = ParticipantExclusion.objects.bulk_create([
            ParticipantExclusion(participant_id=pk, reason=reason, rule=rule, created_by=created_by)
            for pk in wanted.values_list("id", flat=True)
        ])
    return len(created)

"""Reads for the researcher's study page: progress statistics and per-participant progress.

Everything is a handful of aggregate queries per page, whatever the number of participants:
no per-participant loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce

from annotation.models import ConsentRefusal, Judgment, Participant, Withdrawal
from elicitation.models import Pair, Study
from elicitation.selectors import study_list_for_user

PARTICIPANTS_PER_PAGE = 25


@dataclass(frozen=True)
class StudyProgress:
    judgments_total: int
    judgments_annotated: int
    judgments_imported: int
    # Participants who consented here; annotators of imported comparisons are not counted, they
    # were never asked for `judgments_per_participant` answers.
    participants_total: int
    participants_completed: int
    pairs_total: int
    pairs_below_target: int
    median_time_per_judgment: timedelta | None
    consent_refusals: int
    withdrawals: int
    judgments_withdrawn: int
    attention_checks_answered: int
    attention_checks_passed: int

    @property
    def participants_in_progress(self) -> int:
        return self.participants_total - self.participants_completed

    @property
    def completion_rate(self) -> float | None:
        return self.participants_completed / self.participants_total if self.participants_total else None

    @property
    def attention_pass_rate(self) -> float | None:
        if not self.attention_checks_answered:
            return None
        return self.attention_checks_passed / self.attention_checks_answered

    @property
    def median_seconds_per_judgment(self) -> float | None:
        return None if self.median_time_per_judgment is None else self.median_time_per_judgment.total_seconds()


class _Median(Aggregate):
    """PostgreSQL's exact median of an interval (NULLs, i.e. imported judgments, are ignored)."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


def _time_to_answer() -> ExpressionWrapper:
    return ExpressionWrapper(F("answered_at") - F("served_at"), output_field=DurationField())


def study_progress(*, study: Study) -> StudyProgress:
    """The study page's numbers, in five queries (six on SQLite, which has no percentile function)."""
    judgments = Judgment.objects.filter(study=study)
    on_postgres = connection.vendor == "postgresql"
    judgment_stats = judgments.aggregate(
        total=Count("pk"),
        annotated=Count("pk", filter=Q(origin=Judgment.Origin.ANNOTATED)),
        timed=Count("pk", filter=Q(served_at__isnull=False)),
        attention_answered=Count("pk", filter=Q(is_attention_check=True, attention_passed__isnull=False)),
        attention_passed=Count("pk", filter=Q(is_attention_check=True, attention_passed=True)),
        **({"median": _Median(_time_to_answer())} if on_postgres else {}),
    )
    median = judgment_stats["median"] if on_postgres else _median_time_portable(
        judgments=judgments, timed=judgment_stats["timed"]
    )
    people = Participant.objects.filter(study=study).exclude(source=Participant.Source.IMPORT).aggregate(
        total=Count("pk"), completed=Count("pk", filter=Q(completed_at__isnull=False))
    )
    # Pair.judgment_count is kept by the submit and import services under the same transaction
    # as the judgment, and has an index with the study: cheap enough to poll every few seconds.
    pairs = Pair.objects.filter(study=study, is_attention_check=False).aggregate(
        total=Count("pk"), below=Count("pk", filter=Q(judgment_count__lt=study.overlap_target))
    )
    withdrawals = Withdrawal.objects.filter(study=study).aggregate(
        total=Count("pk"), judgments=Coalesce(Sum("judgments_removed"), 0)
    )
    return StudyProgress(
        judgments_total=judgment_stats["total"],
        judgments_annotated=judgment_stats["annotated"],
        judgments_imported=judgment_stats["total"] - judgment_stats["annotated"],
        participants_total=people["total"],
        participants_completed=people["completed"],
        pairs_total=pairs["total"],
        pairs_below_target=pairs["below"],
        median_time_per_judgment=median,
        consent_refusals=ConsentRefusal.objects.filter(study=study).count(),
        withdrawals=withdrawals["total"],
        judgments_withdrawn=withdrawals["judgments"],
        attention_checks_answered=judgment_stats["attention_answered"],
        attention_checks_passed=judgment_stats["attention_passed"],
    )


def _median_time_portable(*, judgments: QuerySet[Judgment], timed: int) -> timedelta | None:
    """Exact median without a percentile function: sort by duration and read the middle one or
    two rows, so no more than two values ever leave the database."""
    if not timed:
        return None
    durations = (
        judgments.filter(served_at__isnull=False)
        .annotate(duration=_time_to_answer())
        .order_by("duration")
        .values_list("duration", flat=True)
    )
    middle = list(durations[(timed - 1) // 2: timed // 2 + 1])
    return sum(middle, timedelta()) / len(middle)


def participant_progress_page(*, study: Study, page_number: int | str | None) -> Page:
    """Participants, newest first, each with `answered`, `attention_answered` and `attention_passed`.

    Two queries per page. The counts are correlated subqueries, evaluated only for the rows of the
    page, rather than a join and GROUP BY over every judgment of the study.
    """
    participants = (
        Participant.objects.filter(study=study)
        .order_by("-id")
        .annotate(
            answered=_judgment_count(),
            attention_answered=_judgment_count(is_attention_check=True, attention_passed__isnull=False),
            attention_passed=_judgment_count(is_attention_check=True, attention_passed=True),
        )
    )
    return Paginator(participants, PARTICIPANTS_PER_PAGE).get_page(page_number)


def _judgment_count(**conditions: object) -> Coalesce:
    counted = (
        Judgment.objects.filter(participant=OuterRef("pk"), **conditions)
        .order_by()
        .values("participant")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def judgment_list_for_user(
    *,
    user: AbstractBaseUser | AnonymousUser,
    study: Study | None = None,
    participant_external_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Judgment]:
    """Judgments the user may read, in id order, with everything the comparison format shows
    joined in (one query per page). `study` must come from `study_get_for_user`; without it,
    every study the user may see. `since` is inclusive, `until` exclusive (on answered_at)."""
    if study is not None:
        judgments = Judgment.objects.filter(study=study)
    elif user.is_superuser:
        judgments = Judgment.objects.all()
    else:
        judgments = Judgment.objects.filter(study__in=study_list_for_user(user=user).values("pk"))
    if participant_external_id is not None:
        judgments = judgments.filter(participant__external_id=participant_external_id)
    if since is not None:
        judgments = judgments.filter(answered_at__gte=since)
    if until is not None:
        judgments = judgments.filter(answered_at__lt=until)
    return judgments.select_related("study", "participant", "pair__prompt", "response_a", "response_b").order_by("id")

"""Reads and permission-scoped lookups for studies."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404

from elicitation.models import Pair, Prompt, Response, Study, StudyCollaborator


def study_list_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Study]:
    """Studies a user may see: all for site admins, owned or shared otherwise."""
    if not user.is_authenticated:
        return Study.objects.none()
    if user.is_superuser:
        return Study.objects.all()
    return Study.objects.filter(Q(owner=user) | Q(collaborators__user=user)).distinct()


def study_get_for_user(*, slug: str, user: AbstractBaseUser | AnonymousUser, edit: bool = False) -> Study:
    """Fetch and authorize in one step. 404 (never 403) for studies the user may not see, so ids do not leak.

    With `edit=True`, viewers (collaborators without the editor role) also get 404.
    """
    study = study_list_for_user(user=user).filter(slug=slug).first()
    if study is None:
        raise Http404("No such study.")
    if edit and not study_user_can_edit(study=study, user=user):
        raise Http404("No such study.")
    return study


def study_user_can_edit(*, study: Study, user: AbstractBaseUser | AnonymousUser) -> bool:
    if not user.is_authenticated:
        return False
    if user.is_superuser or study.owner_id == user.pk:
        return True
    return StudyCollaborator.objects.filter(
        study=study, user=user, role=StudyCollaborator.Role.EDITOR
    ).exists()


def study_user_can_manage(*, study: Study, user: AbstractBaseUser | AnonymousUser) -> bool:
    """Only the owner (or a site admin) decides who else sees a study."""
    return user.is_authenticated and (user.is_superuser or study.owner_id == user.pk)


def study_overview_list_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Study]:
    """The studies a user may see, each with `judgment_total`, `participant_total` and `pair_total`.

    One query. The counts are correlated subqueries rather than joins: counting judgments and
    participants through two joins would multiply the rows (judgments x participants per study),
    and the collaborator join of `study_list_for_user` would multiply them again.
    """
    if not user.is_authenticated:
        return Study.objects.none()
    studies = Study.objects.all()
    if not user.is_superuser:
        shared = StudyCollaborator.objects.filter(user=user).values("study_id")
        studies = studies.filter(Q(owner=user) | Q(pk__in=shared))
    return studies.select_related("owner").annotate(
        judgment_total=_related_count("judgments"),
        participant_total=_related_count("participants"),
        pair_total=_related_count("pairs", condition=Q(pairs__is_attention_check=False)),
    )


def _related_count(relation: str, condition: Q | None = None) -> Coalesce:
    """COUNT over a reverse relation of the outer study, as a scalar subquery.

    Counting through the relation name keeps elicitation free of imports from the apps that
    point at Study (annotation), as the import contract asks.
    """
    counted = (
        Study.objects.filter(pk=OuterRef("pk"))
        .values("pk")
        .annotate(n=Count(relation, filter=condition))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def attention_check_list(*, study: Study) -> QuerySet[Pair]:
    """The study's attention-check pairs with the texts the page shows (one query)."""
    return (
        Pair.objects.filter(study=study, is_attention_check=True)
        .select_related("prompt", "response_a", "response_b", "correct_response")
        .order_by("id")
    )


def attention_check_get(*, study: Study, pair_id: int) -> Pair:
    pair = Pair.objects.filter(study=study, is_attention_check=True, pk=pair_id).first()
    if pair is None:
        raise Http404("No such attention check.")
    return pair


def prompt_list_with_responses(*, study: Study) -> QuerySet[Prompt]:
    """Prompts in id order with their responses prefetched (two queries for any page)."""
    return Prompt.objects.filter(study=study).order_by("id").prefetch_related(
        Prefetch("responses", queryset=Response.objects.order_by("id"))
    )


def study_slug_is_fixed(*, study: Study) -> bool:
    """Participant links contain the slug: it may change only while a draft has no participants."""
    return study.status != Study.Status.DRAFT or study.participants.exists()

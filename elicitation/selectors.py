"""Reads and permission-scoped lookups for studies."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet
from django.http import Http404

from elicitation.models import Study, StudyCollaborator


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

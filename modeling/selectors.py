"""Reads of training runs, current models and annotator weights, permission-scoped where a user asks."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from elicitation.models import Study
from elicitation.selectors import study_list_for_user
from modeling.models import ParticipantWeights, StudyModel, TrainingRun

RUN_HISTORY_LIMIT = 20


def study_get_by_slug(*, slug: str) -> Study:
    """A study by slug for trusted callers (management commands); raises Study.DoesNotExist."""
    return Study.objects.get(slug=slug)


def study_get_by_id(*, study_id: int) -> Study:
    return Study.objects.get(pk=study_id)


def training_run_get_for_user(*, run_id: int, user: AbstractBaseUser | AnonymousUser) -> TrainingRun:
    """Fetch a run and check the user may see its study; 404 otherwise, so run ids do not leak."""
    run = (
        TrainingRun.objects.select_related("study")
        .filter(pk=run_id, study__in=study_list_for_user(user=user))
        .first()
    )
    if run is None:
        raise Http404("No such training run.")
    return run


def training_run_for_study(*, study: Study, run_id: int) -> TrainingRun:
    run = TrainingRun.objects.filter(study=study, pk=run_id).first()
    if run is None:
        raise Http404("No such training run.")
    return run


def training_run_list(*, study: Study, limit: int = RUN_HISTORY_LIMIT) -> QuerySet[TrainingRun]:
    """The study's runs, newest first (one query; metrics are left out: they can be large)."""
    return (
        TrainingRun.objects.filter(study=study).select_related("study").defer("metrics")
        .order_by("-created_at", "-id")[:limit]
    )


def training_run_active(*, study: Study) -> TrainingRun | None:
    """The study's queued or running run, if any (there is at most one)."""
    return TrainingRun.objects.filter(study=study, status__in=TrainingRun.ACTIVE_STATUSES).first()


def training_run_current(*, study: Study) -> TrainingRun | None:
    """The run whose model the study uses now (a finished run), or None."""
    return (
        TrainingRun.objects.filter(pk__in=StudyModel.objects.filter(study=study).values("current_run_id"))
        .filter(status=TrainingRun.Status.DONE)
        .first()
    )


def study_current_run_id(*, study_id: int) -> int | None:
    return StudyModel.objects.filter(study_id=study_id).values_list("current_run_id", flat=True).first()


def training_run_artifact_folder(*, run: TrainingRun) -> Path | None:
    """The saved model folder of a finished run (what `RewardModel.load` reads), or None if absent."""
    if run.status != TrainingRun.Status.DONE or not run.artifact_path:
        return None
    folder = Path(settings.MEDIA_ROOT) / run.artifact_path
    return folder if (folder / "config.json").is_file() and (folder / "weights.pt").is_file() else None


def participant_weights_list(*, run: TrainingRun) -> QuerySet[ParticipantWeights]:
    """Each annotator's weights under a run, with their external id (one query per page)."""
    return (
        ParticipantWeights.objects.filter(run=run)
        .select_related("participant")
        .only("weights", "group", "n_judgments", "participant__external_id")
        .order_by("group", "participant__external_id")
    )


def training_run_archive(*, run: TrainingRun) -> tuple[str, bytes] | None:
    """`(file name, zip bytes)` of a finished run's model folder, or None when it has none.

    Built in memory: a saved model is a few hundred kilobytes (a projection and K prototypes).
    """
    folder = training_run_artifact_folder(run=run)
    if folder is None:
        return None
    root = f"{run.study.slug}-run-{run.pk}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                archive.write(path, arcname=f"{root}/{path.name}")
    return f"{root}.zip", buffer.getvalue()


def retrain_every_for_study(*, study: Study) -> int:
    """New judgments between automatic retrains: the study's own number, else the site's (0 = off)."""
    own = StudyModel.objects.filter(study=study).values_list("retrain_every", flat=True).first()
    return own or settings.POLYPHONY_RETRAIN_EVERY

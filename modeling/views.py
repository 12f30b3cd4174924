"""Researcher pages of a study's reward model: results, retraining, live progress, download.

Each view: parse, authorize (404 for studies the user may not see), one service call, render.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from elicitation.models import Study
from elicitation.selectors import study_get_for_user, study_user_can_edit
from modeling.models import ParticipantWeights, TrainingRun
from modeling.selectors import (
    participant_weights_list,
    retrain_every_for_study,
    training_run_active,
    training_run_archive,
    training_run_current,
    training_run_for_study,
    training_run_list,
)
from modeling.services import MAX_GROUPS, TrainingQueueError, training_run_request

WEIGHTS_PER_PAGE = 100


class RetrainForm(forms.Form):
    """What a researcher chooses for a new run. (Kept here: the page's only form.)"""

    kind = forms.ChoiceField(label="Model", choices=TrainingRun.Kind.choices, initial=TrainingRun.Kind.PAL_A)
    groups = forms.ChoiceField(
        label="Latent groups (K)", initial="auto",
        choices=[("auto", "Choose automatically (1–8)")] + [(str(k), str(k)) for k in range(1, MAX_GROUPS + 1)],
        help_text="Ignored for Bradley-Terry, which has one reward for everybody.",
    )

    def groups_value(self) -> int | None:
        value = self.cleaned_data["groups"]
        return None if value == "auto" else int(value)


@dataclass(frozen=True)
class MetricRow:
    label: str
    help: str
    model: float | None
    btl: float | None
    percent: bool
    higher_is_better: bool

    @property
    def model_is_better(self) -> bool:
        if self.model is None or self.btl is None:
            return False
        return self.model > self.btl if self.higher_is_better else self.model < self.btl


@dataclass(frozen=True)
class GroupRow:
    number: int  # 1-based, as researchers read it
    size: int
    model_accuracy: float | None
    btl_accuracy: float | None
    top_responses: list[dict[str, Any]]


@login_required
@require_GET
def study_model_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    can_edit = study_user_can_edit(study=study, user=request.user)
    context = _model_page_context(study=study, page_number=request.GET.get("page"))
    context.update(
        tab="model", can_edit=can_edit, form=RetrainForm() if can_edit else None,
        retrain_every=retrain_every_for_study(study=study) if can_edit else None,
    )
    return render(request, "modeling/study_model.html", context)


@login_required
@require_POST
def training_run_request_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    form = RetrainForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a model and a number of groups.")
        return redirect("modeling:study_model", slug=study.slug)
    try:
        run, created = training_run_request(
            study=study, kind=form.cleaned_data["kind"], groups=form.groups_value(), trigger="manual",
            requested_by=request.user,
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    except TrainingQueueError:
        messages.error(request, "The training queue is unreachable, so the run could not start. Try again shortly.")
    else:
        if created:
            messages.success(request, f"Training run {run.pk} ({run.get_kind_display()}) is queued.")
        else:
            messages.info(request, f"Run {run.pk} is already {run.get_status_display().lower()}; "
                                   "a study trains one model at a time.")
    return redirect("modeling:study_model", slug=study.slug)


@login_required
@require_GET
def training_progress_view(request: HttpRequest, slug: str) -> HttpResponse:
    """The live progress fragment, polled every second while a run is active."""
    study = study_get_for_user(slug=slug, user=request.user)
    if not request.htmx:
        return redirect("modeling:study_model", slug=study.slug)
    active = training_run_active(study=study)
    if active is None:
        # Status 286 stops the polling; the refresh shows the finished run's metrics (or its error).
        response = HttpResponseStopPolling()
        response["HX-Refresh"] = "true"
        return response
    return render(request, "modeling/study_model.html#progress", {"study": study, "active": active})


@login_required
@require_GET
def training_run_download_view(request: HttpRequest, slug: str, run_id: int) -> HttpResponse:
    """The run's model folder as a .zip (config.json + weights.pt), loadable by modeling.core alone."""
    study = study_get_for_user(slug=slug, user=request.user)
    run = training_run_for_study(study=study, run_id=run_id)
    archive = training_run_archive(run=run)
    if archive is None:
        raise Http404("This run has no saved model.")
    filename, payload = archive
    response = HttpResponse(payload, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _model_page_context(*, study: Study, page_number: str | None) -> dict[str, Any]:
    current = training_run_current(study=study)
    context: dict[str, Any] = {
        "study": study,
        "current": current,
        "active": training_run_active(study=study),
        "runs": list(training_run_list(study=study)),
        "metric_rows": [],
        "group_rows": [],
        "weights_page": None,
    }
    if current is None:
        return context
    metrics = current.metrics or {}
    model, btl = (metrics.get("held_out") or {}).get("model") or {}, (metrics.get("held_out") or {}).get("btl") or {}
    context["metric_rows"] = _metric_rows(model=model, btl=btl)
    context["group_rows"] = _group_rows(metrics=metrics, model=model, btl=btl)
    context["metrics"] = metrics
    page = Paginator(participant_weights_list(run=current), WEIGHTS_PER_PAGE).get_page(page_number)
    context["weights_page"] = page
    per_annotator = model.get("per_annotator_accuracy") or {}
    context["weights_rows"] = [_weights_row(w, per_annotator) for w in page.object_list]
    return context


def _metric_rows(*, model: dict[str, Any], btl: dict[str, Any]) -> list[MetricRow]:
    spec = [
        ("accuracy", "Accuracy", "Share of held-out decisive judgments whose choice the model found more likely.",
         True, True),
        ("worst_group_accuracy", "Worst-group accuracy", "Accuracy in the latent group the model serves worst.",
         True, True),
        ("log_loss", "Log loss", "Mean negative log-likelihood of the held-out choices (lower is better).",
         False, False),
        ("ece", "Calibration error (ECE)", "Expected calibration error of the stated confidence (lower is better).",
         True, False),
    ]
    return [MetricRow(label, help_text, model.get(key), btl.get(key), percent, higher)
            for key, label, help_text, percent, higher in spec]


def _group_rows(*, metrics: dict[str, Any], model: dict[str, Any], btl: dict[str, Any]) -> list[GroupRow]:
    sizes = metrics.get("group_sizes") or {}
    top = metrics.get("top_responses") or []
    model_acc, btl_acc = model.get("per_group_accuracy") or {}, btl.get("per_group_accuracy") or {}
    return [
        GroupRow(
            number=g + 1, size=int(sizes.get(str(g), 0)), model_accuracy=model_acc.get(str(g)),
            btl_accuracy=btl_acc.get(str(g)), top_responses=top[g] if g < len(top) else [],
        )
        for g in range(int(metrics.get("k") or 0))
    ]


def _weights_row(weights: ParticipantWeights, per_annotator: dict[str, float]) -> dict[str, Any]:
    return {
        "external_id": weights.participant.external_id,
        "accuracy": per_annotator.get(weights.participant.external_id),
        "group": weights.group + 1,
        "n_judgments": weights.n_judgments,
        "weights": [(k + 1, w) for k, w in enumerate(weights.weights)],
    }

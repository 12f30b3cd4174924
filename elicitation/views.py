"""Researcher pages for configuring studies. Each view: parse, authorize (404), one service call, render."""

from __future__ import annotations

import copy

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from elicitation.forms import AttentionCheckForm, StudyForm, StudyStatusForm, SurveyFormSet
from elicitation.selectors import (
    attention_check_get,
    attention_check_list,
    study_get_for_user,
    study_overview_list_for_user,
    study_slug_is_fixed,
)
from elicitation.services import (
    attention_check_add,
    attention_check_remove,
    study_create,
    study_set_status,
    study_update,
    survey_questions_save,
)

STUDIES_PER_PAGE = 50


@login_required
@require_GET
def study_list_view(request: HttpRequest) -> HttpResponse:
    studies = study_overview_list_for_user(user=request.user)
    page = Paginator(studies, STUDIES_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "elicitation/study_list.html", {"page": page, "studies": page.object_list})


@login_required
@require_http_methods(["GET", "POST"])
def study_create_view(request: HttpRequest) -> HttpResponse:
    form = StudyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            study = study_create(owner=request.user, values=form.cleaned_data)
        except ValidationError as exc:
            _form_add_service_errors(form, exc)
        else:
            messages.success(request, f"Study “{study.title}” created as a draft.")
            return redirect("monitor:study_detail", slug=study.slug)
    return render(request, "elicitation/study_form.html", {"form": form, "study": None})


@login_required
@require_http_methods(["GET", "POST"])
def study_edit_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    # The form writes the submitted values onto its instance; keep `study` as stored for the page.
    form = StudyForm(request.POST or None, instance=copy.copy(study), slug_locked=study_slug_is_fixed(study=study))
    if request.method == "POST" and form.is_valid():
        try:
            study = study_update(study=study, values=form.cleaned_data)
        except ValidationError as exc:
            _form_add_service_errors(form, exc)
        else:
            messages.success(request, "Study saved.")
            return redirect("monitor:study_detail", slug=study.slug)
    return render(request, "elicitation/study_form.html", {"form": form, "study": study, "tab": "edit"})


@login_required
@require_http_methods(["GET", "POST"])
def study_survey_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    formset = SurveyFormSet(request.POST or None, instance=study, prefix="questions")
    service_errors: list[str] = []
    if request.method == "POST" and formset.is_valid():
        try:
            survey_questions_save(study=study, questions=formset.question_specs())
        except ValidationError as exc:
            service_errors = exc.messages
        else:
            messages.success(request, "Survey saved.")
            return redirect("elicitation:study_survey", slug=study.slug)
    if not formset.is_bound and formset.extra_forms:
        # New questions go after the existing ones unless the researcher says otherwise.
        next_position = max((form.instance.position for form in formset.initial_forms), default=0) + 1
        formset.extra_forms[0].initial.setdefault("position", next_position)
    context = {"study": study, "formset": formset, "service_errors": service_errors, "tab": "survey"}
    return render(request, "elicitation/study_survey.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def attention_check_list_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    form = AttentionCheckForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            attention_check_add(study=study, **form.cleaned_data)
        except ValidationError as exc:
            _form_add_service_errors(form, exc)
        else:
            messages.success(request, "Attention check added.")
            return redirect("elicitation:attention_checks", slug=study.slug)
    context = {"study": study, "form": form, "checks": attention_check_list(study=study), "tab": "attention"}
    return render(request, "elicitation/attention_checks.html", context)


@login_required
@require_POST
def attention_check_remove_view(request: HttpRequest, slug: str, pair_id: int) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    pair = attention_check_get(study=study, pair_id=pair_id)
    deleted = attention_check_remove(pair=pair)
    messages.success(
        request, "Attention check deleted." if deleted else "Pair unmarked; it stays in the pool with its judgments."
    )
    return redirect("elicitation:attention_checks", slug=study.slug)


@login_required
@require_POST
def study_status_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    form = StudyStatusForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Unknown status.")
    else:
        try:
            study = study_set_status(study=study, status=form.cleaned_data["status"])
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"The study is now {study.get_status_display().lower()}.")
    return redirect("monitor:study_detail", slug=study.slug)


def _form_add_service_errors(form: forms.BaseForm, exc: ValidationError) -> None:
    """Show a service's refusal next to the field it names (or above the form)."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


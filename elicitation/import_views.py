"""The researcher's import page: upload prompts and responses, or existing comparisons."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from elicitation.imports import ImportRejected, import_bytes_read, import_file_run
from elicitation.selectors import study_get_for_user


class ImportForm(forms.Form):
    kind = forms.ChoiceField(
        label="What the file holds",
        choices=[
            ("responses", "Prompts and candidate responses (JSONL or CSV)"),
            ("comparisons", "Existing comparisons (JSONL, comparison format)"),
        ],
        initial="responses",
        widget=forms.RadioSelect,
    )
    file = forms.FileField(label="File")


@login_required
@require_http_methods(["GET", "POST"])
def import_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    form = ImportForm(request.POST or None, request.FILES or None)
    errors: list[str] = []
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            data = import_bytes_read(stream=upload)
            result = import_file_run(study=study, kind=form.cleaned_data["kind"], data=data, filename=upload.name)
        except ImportRejected as rejected:
            errors = rejected.errors
        else:
            messages.success(request, f"Imported {upload.name}: {result.summary()}")
            return redirect("imports:import", slug=study.slug)
    return render(
        request, "elicitation/import.html", {"study": study, "form": form, "errors": errors, "max_bytes": settings.POLYPHONY_IMPORT_MAX_BYTES},
        status=400 if errors else 200,
    )

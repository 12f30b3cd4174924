"""The researcher's export page: stream a file now, or prepare one in the background and watch it."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseStopPolling

from annotation.exports import (
    CONTENT_TYPES,
    export_byte_chunks,
    export_filename,
    export_job_create,
    export_job_file,
    export_job_get_for_user,
    export_jobs_for_study,
    export_jobs_resend_due,
    export_row_count,
    export_runs_in_background,
)
from annotation.models import ExportJob
from elicitation.models import Study
from elicitation.selectors import study_get_for_user


class ExportForm(forms.Form):
    format = forms.ChoiceField(label="Format", choices=ExportJob.Format.choices, initial=ExportJob.Format.JSONL)
    include_attention_checks = forms.BooleanField(
        label="Include attention checks (flagged with attention_check and attention_passed)", required=False
    )
    # On unless unticked: a dataset leaves the study's researchers, recruitment-platform ids should not.
    pseudonymize = forms.BooleanField(label="Pseudonymize annotator ids (salted hash)", required=False, initial=True)
    action = forms.ChoiceField(choices=[("download", "Download now"), ("prepare", "Prepare file")], initial="download")


@login_required
@require_http_methods(["GET", "POST"])
def export_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        options = {
            "export_format": form.cleaned_data["format"],
            "include_attention_checks": form.cleaned_data["include_attention_checks"],
        }
        if form.cleaned_data["action"] == "download" and not export_runs_in_background(study=study, **options):
            return _export_stream(study=study, pseudonymize=form.cleaned_data["pseudonymize"], **options)
        job = export_job_create(
            study=study, user=request.user, pseudonymize=form.cleaned_data["pseudonymize"], **options
        )
        if form.cleaned_data["action"] == "download":
            messages.info(
                request,
                f"This export ({job.get_format_display()}, {job.total_rows} rows) is prepared in the background; "
                "its download link appears below when it is ready.",
            )
        else:
            messages.info(request, "The file is being prepared; its download link appears below when it is ready.")
        return redirect("exports:export", slug=study.slug)
    export_jobs_resend_due(study=study)  # a job created while the broker was down goes out now
    return render(request, "annotation/export.html", {
        "study": study,
        "form": form,
        "jobs": export_jobs_for_study(study=study),
        "judgment_count": export_row_count(study=study, export_format=ExportJob.Format.JSONL,
                                           include_attention_checks=True),
        "sync_limit": settings.POLYPHONY_EXPORT_SYNC_LIMIT,
    })


def _export_stream(
    *, study: Study, export_format: str, include_attention_checks: bool, pseudonymize: bool
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        export_byte_chunks(
            study=study, export_format=export_format,
            include_attention_checks=include_attention_checks, pseudonymize=pseudonymize,
        ),
        content_type=CONTENT_TYPES[export_format],
    )
    response["Content-Disposition"] = f'attachment; filename="{export_filename(study=study, export_format=export_format)}"'
    return response


@login_required
@require_GET
def export_job_status_view(request: HttpRequest, slug: str, job_id: int) -> HttpResponse:
    """The job's row on the export page, polled by htmx every second while it runs."""
    job = export_job_get_for_user(job_id=job_id, user=request.user)
    if job.study.slug != slug:
        raise Http404("No such export.")
    if not request.htmx:
        return redirect(f"{reverse('exports:export', kwargs={'slug': slug})}#job-{job.pk}")
    if export_jobs_resend_due(study=job.study, job_id=job.pk):  # the broker is back: sent now
        job.refresh_from_db()
    response = render(request, "annotation/export.html#job", {"study": job.study, "job": job})
    if job.status in (ExportJob.Status.DONE, ExportJob.Status.FAILED):
        # 286 tells htmx to stop polling; the finished row (with its link) is still swapped in.
        return HttpResponseStopPolling(response.content)
    return response


@login_required
@require_GET
def export_download_view(request: HttpRequest, slug: str, job_id: int) -> FileResponse:
    """A finished job's file, for users who may see the study (never a public media URL)."""
    job = export_job_get_for_user(job_id=job_id, user=request.user)
    path = export_job_file(job=job)
    if job.study.slug != slug or path is None:
        raise Http404("No such export file.")
    return FileResponse(
        path.open("rb"), as_attachment=True, filename=export_filename(study=job.study, export_format=job.format),
        content_type=CONTENT_TYPES[job.format],
    )

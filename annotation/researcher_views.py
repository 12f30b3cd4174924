"""The researcher's study page: progress while a study runs, polled by htmx."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseStopPolling

from annotation.selectors_research import participant_progress_page, study_progress
from elicitation.models import Study
from elicitation.selectors import study_get_for_user, study_user_can_edit

# The page's status buttons: (target status, label, button class) for each current status.
STATUS_ACTIONS: dict[str, list[tuple[str, str, str]]] = {
    Study.Status.DRAFT: [(Study.Status.OPEN, "Open to participants", "primary")],
    Study.Status.OPEN: [(Study.Status.CLOSED, "Close", "danger")],
    Study.Status.CLOSED: [(Study.Status.OPEN, "Reopen", "primary")],
}
# Prolific replaces these placeholders in a study URL with the participant's ids.
PROLIFIC_QUERY = "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"


@login_required
@require_GET
def study_detail_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    template = "annotation/research/study_detail.html"
    target = request.htmx.target if request.htmx else None
    if target == "study-stats":
        response = render(request, f"{template}#stats", {"study": study, "progress": study_progress(study=study)})
        if not study.is_open:
            # Nothing changes the numbers of a closed study (or a draft) second by second.
            return HttpResponseStopPolling(response.content)
        return response
    page = participant_progress_page(study=study, page_number=request.GET.get("page"))
    if target == "participants":
        return render(request, f"{template}#participants", {"study": study, "page": page})
    link = request.build_absolute_uri(f"/s/{study.slug}/")
    context = {
        "study": study,
        "progress": study_progress(study=study),
        "page": page,
        "can_edit": study_user_can_edit(study=study, user=request.user),
        "status_actions": STATUS_ACTIONS[study.status],
        "participant_link": link,
        "prolific_link": link + PROLIFIC_QUERY,
        "tab": "overview",
    }
    return render(request, template, context)

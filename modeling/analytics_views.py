"""Researcher insight pages: dashboard, quality (with exclusions), rankings, figures, recompute.

Every page reads the cached AnalyticsSnapshot only, so it costs a handful of queries whatever the
study's size. Viewers read; editors recompute and exclude. 404 for studies the user may not see.
"""

from __future__ import annotations

from typing import Any

from csp.decorators import csp_update
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from annotation.exclusions import (
    MAX_REASON_CHARS,
    RULE_ATTENTION,
    RULE_FLAGGED,
    RULE_TOO_FAST,
    active_exclusions,
    participant_exclude,
    participant_exclusion_revoke,
    participant_get_in_study,
    participants_below_attention,
    participants_exclude_by_rule,
)
from elicitation.models import Study
from elicitation.selectors import study_get_for_user, study_user_can_edit
from modeling.analytics_plots import ATTRIBUTE_MAP_PREFIX, UnknownPlot
from modeling.analytics_selectors import (
    NoAnalysis,
    analytics_latest_done,
    analytics_latest_state,
    analytics_plot_get,
)
from modeling.analytics_services import study_analytics_request
from modeling.models import AnalyticsSnapshot


class ExcludeForm(forms.Form):
    participant = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(label="Reason", max_length=MAX_REASON_CHARS, initial="Excluded by hand")


class RuleForm(forms.Form):
    rule = forms.ChoiceField(label="Rule", choices=[
        (RULE_ATTENTION, "Attention-check pass rate below the bar"),
        (RULE_FLAGGED, "Flagged as unreliable in the latest analysis"),
        (RULE_TOO_FAST, "Flagged as too fast in the latest analysis"),
    ])
    min_pass_rate = forms.FloatField(label="Pass rate bar", min_value=0, max_value=1, initial=0.8, required=False,
                                     help_text="Only for the attention rule: 0.8 = 80%.")


def _context(*, request: HttpRequest, study: Study, tab: str, with_plots: bool = True) -> dict[str, Any]:
    snapshot = analytics_latest_done(study=study, with_plots=with_plots)
    state = analytics_latest_state(study=study)
    return {
        "study": study, "tab": "insight", "section": tab, "snapshot": snapshot,
        "data": snapshot.data if snapshot else None, "plots": (snapshot.plots if snapshot and with_plots else {}),
        "active": state if state and state.status in AnalyticsSnapshot.ACTIVE_STATUSES else None,
        "failed": state if state and state.status == AnalyticsSnapshot.Status.FAILED else None,
        "can_edit": study_user_can_edit(study=study, user=request.user),
    }


# The figures are matplotlib SVG inlined in the page, styled by style attributes and a <style>
# element: these two pages allow inline styles (never inline scripts; the CSP is in settings).
_inline_svg_csp = csp_update({"style-src": ["'unsafe-inline'"]})


@login_required
@require_GET
@_inline_svg_csp
def insight_dashboard_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    context = _context(request=request, study=study, tab="overview")
    data = context["data"]
    colour = request.GET.get("colour", "")
    if data is None or colour not in data.get("attributes", {}):
        colour = ""
    context["colour"] = colour
    context["map_name"] = f"{ATTRIBUTE_MAP_PREFIX}{colour}" if colour else "map"
    if data:
        context["groups"] = _groups_with_agreement(data)
        context["flagged"] = [
            {**p, "time_flag": p["median_seconds"] is not None and bool({"too fast", "slow"} & set(p["flags"]))}
            for p in data["participants"] if p["flags"] and not p["excluded"]
        ]
    if request.htmx and request.GET.get("fragment") == "map":
        return render(request, "modeling/analytics/dashboard.html#map", context)
    return render(request, "modeling/analytics/dashboard.html", context)


@login_required
@require_GET
@_inline_svg_csp
def insight_quality_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    context = _context(request=request, study=study, tab="quality")
    if context["can_edit"]:
        exclusions = {e.participant_id: e for e in active_exclusions(study=study)}
        context["rule_form"] = RuleForm()
    else:
        exclusions = {}
    rows = []
    for row in (context["data"] or {}).get("participants", []):
        rows.append({**row, "exclusion": exclusions.get(row["id"])})
    # Flagged first, then the least reliable: what a researcher checks first.
    rows.sort(key=lambda r: (not r["flags"], r["reliability"] if r["reliability"] is not None else 2))
    context["rows"] = rows
    return render(request, "modeling/analytics/quality.html", context)


@login_required
@require_GET
def insight_rankings_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    return render(request, "modeling/analytics/rankings.html",
                  _context(request=request, study=study, tab="rankings", with_plots=False))


@login_required
@require_POST
def insight_recompute_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    snapshot, created = study_analytics_request(study_id=study.pk, requested_by=request.user)
    if created:
        messages.success(request, "The analysis is queued; this page shows its progress.")
    else:
        messages.info(request, "An analysis of this study is already under way.")
    return redirect("insight:dashboard", slug=study.slug)


@login_required
@require_GET
def insight_progress_view(request: HttpRequest, slug: str) -> HttpResponse:
    """The progress fragment, polled every second while a computation is queued or running."""
    study = study_get_for_user(slug=slug, user=request.user)
    if not request.htmx:
        return redirect("insight:dashboard", slug=study.slug)
    state = analytics_latest_state(study=study)
    if state is None or state.status not in AnalyticsSnapshot.ACTIVE_STATUSES:
        # 286 stops the polling; the refresh shows the new results (or the failure).
        response = HttpResponseStopPolling()
        response["HX-Refresh"] = "true"
        return response
    return render(request, "modeling/analytics/_progress.html", {"study": study, "active": state})


@login_required
@require_GET
def insight_plot_view(request: HttpRequest, slug: str, name: str, fmt: str) -> HttpResponse:
    """A figure of the latest analysis as a download (SVG from the cache, PNG drawn now)."""
    return plot_download(study=study_get_for_user(slug=slug, user=request.user), name=name, fmt=fmt)


def plot_download(*, study: Study, name: str, fmt: str) -> HttpResponse:
    """The figure `name` of the study's latest analysis as an attachment; 404 without one (page and API)."""
    try:
        payload = analytics_plot_get(study=study, name=name, fmt=fmt)
    except NoAnalysis as exc:
        raise Http404("No analysis of this study yet.") from exc
    except UnknownPlot as exc:
        raise Http404("No such figure.") from exc
    response = HttpResponse(payload, content_type="image/svg+xml" if fmt == "svg" else "image/png")
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-{name}.{fmt}"'
    return response


@login_required
@require_POST
def participant_exclude_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    form = ExcludeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a reason (at most 300 characters) to exclude a participant.")
        return redirect("insight:quality", slug=study.slug)
    participant = participant_get_in_study(study=study, participant_id=form.cleaned_data["participant"])
    try:
        _, created = participant_exclude(participant=participant, reason=form.cleaned_data["reason"],
                                         created_by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{participant.external_id} is excluded from training and exports."
                         if created else f"{participant.external_id} was already excluded.")
    return redirect("insight:quality", slug=study.slug)


@login_required
@require_POST
def participant_revoke_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    try:
        participant_id = int(request.POST.get("participant", ""))
    except ValueError as exc:
        raise Http404("No such participant in this study.") from exc
    participant = participant_get_in_study(study=study, participant_id=participant_id)
    if participant_exclusion_revoke(participant=participant, revoked_by=request.user):
        messages.success(request, f"{participant.external_id} is included again.")
    else:
        messages.info(request, f"{participant.external_id} was not excluded.")
    return redirect("insight:quality", slug=study.slug)


@login_required
@require_POST
def participants_exclude_rule_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    form = RuleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a rule, and a pass-rate bar between 0 and 1.")
        return redirect("insight:quality", slug=study.slug)
    rule = form.cleaned_data["rule"]
    if rule == RULE_ATTENTION:
        bar = form.cleaned_data["min_pass_rate"]
        if bar is None:
            messages.error(request, "Give the pass-rate bar for the attention rule.")
            return redirect("insight:quality", slug=study.slug)
        ids = participants_below_attention(study=study, min_pass_rate=bar)
        reason = f"Attention-check pass rate below {bar:.0%}"
    else:
        flag, reason = _RULE_FLAGS[rule]
        snapshot = analytics_latest_done(study=study, with_plots=False)
        ids = [p["id"] for p in (snapshot.data["participants"] if snapshot else []) if flag in p["flags"]]
    count = participants_exclude_by_rule(study=study, participant_ids=ids, rule=rule, reason=reason,
                                         created_by=request.user)
    messages.success(request, f"{count} participant{'s' if count != 1 else ''} newly excluded ({reason.lower()}).")
    return redirect("insight:quality", slug=study.slug)


# Rule -> (the flag of the latest analysis it excludes, the reason recorded).
_RULE_FLAGS = {
    RULE_FLAGGED: ("unreliable", "Unreliable within their latent group in the latest analysis"),
    RULE_TOO_FAST: ("too fast", "Too fast per judgment (robust z) in the latest analysis"),
}


def _groups_with_agreement(data: dict[str, Any]) -> list[dict[str, Any]]:
    alphas = {g["group"]: g for g in data["agreement"]["groups"]}
    return [{**g, "number": g["group"] + 1, "alpha": alphas.get(g["group"])} for g in data["groups"]]

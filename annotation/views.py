"""Participant pages: one link per study, then consent → survey → instructions → judgments → done.

Who the participant is lives in the signed-cookie session ({slug: participant id}); before consent
only the recruitment parameters are kept there (nothing is written to the database until "I agree").
The judgment page is the hot path: it reads the session but never writes it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.template import Context
from django.template.loader import get_template
from django.urls import reverse
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from annotation.forms import ConsentForm, EntryIdentity, EntryParamsForm, JudgmentForm, SurveyForm
from annotation.models import Participant, ServedPair
from annotation.moral_selectors import moral_step_url
from annotation.selectors import (
    SESSION_PARTICIPANTS,
    SESSION_PENDING,
    completion_redirect_url,
    participant_get_by_external_id,
    participant_get_for_session,
    participant_may_resume_from_link,
    participant_next_step,
    participant_progress,
    study_get_for_participation,
    survey_questions_for_study,
)
from annotation.services import (
    RATIONALE_MAX_CHARS,
    ParticipantIdInUse,
    ServedPairNotFound,
    StudyNotOpen,
    consent_decline,
    instructions_acknowledge,
    judgment_submit,
    pair_serve_next,
    participant_consent,
    participant_withdraw,
    survey_submit,
)
from annotation.throttling import participant_page_allowed
from elicitation.models import Study

TEMPLATES = "annotation/participant/"
# Keys that pick a strength, weakest first: the row under the digits, left to right.
STRENGTH_KEYS = "qwertyuio"


# --- Session (ids only) -------------------------------------------------------------------------


def _session_remember(request: HttpRequest, *, slug: str, participant_id: int) -> None:
    participants = dict(request.session.get(SESSION_PARTICIPANTS) or {})
    participants[slug] = participant_id
    request.session[SESSION_PARTICIPANTS] = participants
    _session_pending_clear(request, slug=slug)


def _session_forget(request: HttpRequest, *, slug: str) -> None:
    participants = dict(request.session.get(SESSION_PARTICIPANTS) or {})
    if participants.pop(slug, None) is not None:
        request.session[SESSION_PARTICIPANTS] = participants
    _session_pending_clear(request, slug=slug)


def _session_pending_set(request: HttpRequest, *, slug: str, identity: EntryIdentity) -> None:
    pending = dict(request.session.get(SESSION_PENDING) or {})
    pending[slug] = identity.as_session()
    request.session[SESSION_PENDING] = pending


def _session_pending_clear(request: HttpRequest, *, slug: str) -> None:
    pending = dict(request.session.get(SESSION_PENDING) or {})
    if pending.pop(slug, None) is not None:
        request.session[SESSION_PENDING] = pending


def _session_pending(request: HttpRequest, *, slug: str) -> EntryIdentity:
    pending = request.session.get(SESSION_PENDING) or {}
    return EntryIdentity.from_session(pending.get(slug) if isinstance(pending, dict) else None)


# --- Routing ------------------------------------------------------------------------------------


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    """A redirect that htmx follows as a full page load."""
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _step_url(step: str, study: Study) -> str:
    return reverse(f"annotation:{step}", args=[study.slug])


def _closed(request: HttpRequest, study: Study) -> HttpResponse:
    if request.htmx:  # a fragment swap cannot show a page: reload through the study link
        return HttpResponseClientRedirect(reverse("annotation:entry", args=[study.slug]))
    return render(request, TEMPLATES + "closed.html", {"study": study}, status=403)


def _route(request: HttpRequest, participant: Participant) -> HttpResponse:
    """Send a known participant to where they left off."""
    study = participant.study
    if participant.completed_at is None and not study.is_open:
        return _closed(request, study)
    step = participant_next_step(participant=participant)
    return _redirect(request, moral_step_url(participant=participant, step=step) or _step_url(step, study))


def _participant_or_entry(request: HttpRequest, slug: str) -> Participant | HttpResponse:
    """The consented participant of this browser, or a redirect to the study link to start over."""
    participant = participant_get_for_session(session=request.session, slug=slug)
    if participant is None:
        study_get_for_participation(slug=slug)  # 404 for a study that does not exist
        return _redirect(request, reverse("annotation:entry", args=[slug]))
    return participant


def _page(
    request: HttpRequest, template: str, participant: Participant, *, status: int = 200, **context: object
) -> HttpResponse:
    return render(
        request, TEMPLATES + template, {"study": participant.study, "participant": participant, **context},
        status=status,
    )


# --- Entry and consent --------------------------------------------------------------------------


@require_GET
def entry(request: HttpRequest, slug: str) -> HttpResponse:
    """The one link per study. Recruitment ids in the URL win over whoever this browser was before,
    but resume an existing participant only for their own browser or Prolific session (see
    participant_may_resume_from_link); anyone else who knows the id is refused, and nothing is written."""
    study = study_get_for_participation(slug=slug)
    params = EntryParamsForm(request.GET)
    if not params.is_valid():
        return render(request, TEMPLATES + "bad_link.html", {"study": study, "form": params}, status=400)
    identity = params.identity()
    if identity.external_id is not None:
        existing = participant_get_by_external_id(study=study, external_id=identity.external_id)
        if existing is None:
            _session_forget(request, slug=slug)
        elif not participant_may_resume_from_link(
            participant=existing, session=request.session, slug=slug,
            platform_session_id=identity.platform_session_id,
        ):
            return _id_in_use(request, study)
    else:
        existing = participant_get_for_session(session=request.session, slug=slug)
    if existing is not None:
        existing.study = study
        _session_remember(request, slug=slug, participant_id=existing.pk)
        return _route(request, existing)
    if not study.is_open:
        return _closed(request, study)
    _session_pending_set(request, slug=slug, identity=identity)
    return redirect("annotation:consent", slug=slug)


@require_http_methods(["GET", "POST"])
def consent(request: HttpRequest, slug: str) -> HttpResponse:
    existing = participant_get_for_session(session=request.session, slug=slug)
    if existing is not None:
        return _route(request, existing)
    study = study_get_for_participation(slug=slug)
    if not study.is_open:
        return _closed(request, study)
    identity = _session_pending(request, slug=slug)
    if _id_taken_by_another(request, study=study, identity=identity):
        return _id_in_use(request, study)
    if request.method == "GET":
        return render(request, TEMPLATES + "consent.html", {"study": study})
    form = ConsentForm(request.POST)
    if not form.is_valid():
        return render(
            request, TEMPLATES + "consent.html",
            {"study": study, "error": "Choose “I agree” or “I do not agree”."}, status=400,
        )
    if form.cleaned_data["decision"] == "decline":
        consent_decline(study=study)
        _session_forget(request, slug=slug)
        return redirect("annotation:declined", slug=slug)
    try:
        participant = participant_consent(
            study=study,
            external_id=identity.external_id,
            source=identity.source,
            platform_study_id=identity.platform_study_id,
            platform_session_id=identity.platform_session_id,
            may_resume=lambda found: participant_may_resume_from_link(
                participant=found, session=request.session, slug=study.slug,
                platform_session_id=identity.platform_session_id,
            ),
        )
    except ParticipantIdInUse:
        return _id_in_use(request, study)
    _session_remember(request, slug=slug, participant_id=participant.pk)
    return _route(request, participant)


def _id_taken_by_another(request: HttpRequest, *, study: Study, identity: EntryIdentity) -> bool:
    """The pending recruitment id now belongs to a participant this browser may not resume.

    Checked again at consent, before the form is shown: another browser may have agreed with the same
    id since this one opened the link. participant_consent checks the row it finds once more, so two
    browsers agreeing at the same moment cannot both become one participant.
    """
    if identity.external_id is None:
        return False
    existing = participant_get_by_external_id(study=study, external_id=identity.external_id)
    return existing is not None and not participant_may_resume_from_link(
        participant=existing, session=request.session, slug=study.slug,
        platform_session_id=identity.platform_session_id,
    )


def _id_in_use(request: HttpRequest, study: Study) -> HttpResponse:
    """409 for a recruitment id that started in another browser: no step, no code, nothing written."""
    return render(request, TEMPLATES + "id_in_use.html", {"study": study}, status=409)


@require_GET
def declined(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_participation(slug=slug)
    return render(request, TEMPLATES + "declined.html", {"study": study})


# --- Survey and instructions --------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def survey(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant_or_entry(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    if participant_next_step(participant=participant) != "survey" or not participant.study.is_open:
        return _route(request, participant)
    questions = survey_questions_for_study(study=participant.study)
    if request.method == "GET":
        return _page(request, "survey.html", participant, form=SurveyForm(questions=questions))
    form = SurveyForm(request.POST, questions=questions)
    if form.is_valid():
        try:
            survey_submit(participant=participant, answers=form.answers())
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                form.add_error(None if key not in form.fields else key, messages)
        else:
            return redirect("annotation:instructions", slug=slug)
    return _page(request, "survey.html", participant, form=form, status=400)


@require_http_methods(["GET", "POST"])
def instructions(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant_or_entry(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    step = participant_next_step(participant=participant)
    if moral_step_url(participant=participant, step="instructions"):
        return _route(request, participant)
    # Instructions may be re-read while judging; before the survey is done they are not reached yet.
    if step not in ("instructions", "judge") or not participant.study.is_open:
        return _route(request, participant)
    if request.method == "POST":
        instructions_acknowledge(participant=participant)
        return redirect("annotation:judge", slug=slug)
    return _page(
        request, "instructions.html", participant,
        strength_options=_strength_options(participant.study.strength_labels), already_started=step == "judge",
    )


# --- Judging ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrengthOption:
    value: int  # stored strength, 1 = weakest
    label: str
    key: str  # keyboard shortcut shown on the page ("" past the ninth label)
    checked: bool = False


def _strength_options(labels: Sequence[str], checked: object = None) -> list[StrengthOption]:
    """A study's scale for the page, formatted here rather than with template filters (hot path)."""
    return [
        StrengthOption(
            value=i + 1,
            label=label[:1].upper() + label[1:],
            key=STRENGTH_KEYS[i].upper() if i < len(STRENGTH_KEYS) else "",
            checked=checked == str(i + 1),
        )
        for i, label in enumerate(labels)
    ]


def _controls_context(
    *, allow_ties: bool, strength_labels: Sequence[str], rationale_mode: str,
    errors: Mapping[str, str], values: Mapping[str, str],
) -> dict[str, object]:
    """What the `controls` partial of judge.html (the answer inputs) is rendered from."""
    options = _strength_options(strength_labels, checked=values.get("strength"))
    return {
        "allow_ties": allow_ties,
        "rationale_mode": rationale_mode,
        "strength_options": options,
        "strength_keys": "".join(option.key for option in options),
        "rationale_max": RATIONALE_MAX_CHARS,
        "errors": errors,
        "values": values,
    }


@functools.lru_cache(maxsize=256)
def _controls_html(
    partial: Any, allow_ties: bool, strength_labels: tuple[str, ...], rationale_mode: str
) -> SafeString:
    """The answer inputs with nothing checked and no errors: they depend only on the study's settings,
    so each process renders them once per settings (over half of the fragment's rendering time). `partial`
    keys the cache too: when DEBUG reloads a changed template, its partials are new objects."""
    context = _controls_context(
        allow_ties=allow_ties, strength_labels=strength_labels, rationale_mode=rationale_mode, errors={}, values={}
    )
    return partial.render(Context(context))  # SafeString: the template engine escaped what it inserted


@require_http_methods(["GET", "POST"])
def judge(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant_or_entry(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    if participant.completed_at is not None or participant.instructions_seen_at is None:
        return _route(request, participant)
    if moral_step_url(participant=participant, step="judge"):  # values interview first (or instead)
        return _route(request, participant)
    if not participant.study.is_open:
        return _closed(request, participant.study)
    if request.method == "POST":
        allowed, wait = participant_page_allowed(request=request, participant_id=participant.pk)
        if not allowed:
            return _too_many(request, participant, wait=wait)
        return _judge_submit(request, participant)
    return _judge_show(request, participant)


def _too_many(request: HttpRequest, participant: Participant, *, wait: int | None) -> HttpResponse:
    """429 past POLYPHONY_PARTICIPANT_PAGE_RATE answers: far faster than anyone reads two responses."""
    response = _page(request, "too_many.html", participant, status=429, wait=wait)
    if wait is not None:
        response["Retry-After"] = str(wait)
    return response


def _judge_submit(request: HttpRequest, participant: Participant) -> HttpResponse:
    form = JudgmentForm(request.POST)
    if not form.is_valid():
        status = 400 if "served_id" in form.errors else 422
        errors = {field: " ".join(messages) for field, messages in form.errors.items()}
        return _judge_show(request, participant, errors=errors, values=request.POST, status=status)
    data = form.cleaned_data
    try:
        result = judgment_submit(
            participant=participant,
            served_id=data["served_id"],
            choice=data["choice"],
            strength=data["strength"],
            rationale=data["rationale"],
        )
    except ValidationError as exc:
        errors = {field: " ".join(messages) for field, messages in exc.message_dict.items()}
        return _judge_show(request, participant, errors=errors, values=request.POST, status=422)
    except ServedPairNotFound:
        notice = "That comparison was not shown to you, or it no longer exists. Here is your current one."
        return _judge_show(request, participant, errors={"served_id": notice}, status=404)
    except StudyNotOpen:
        return _closed(request, participant.study)
    if result.completed:
        return _redirect(request, _step_url("done", participant.study))
    if not request.htmx:
        return redirect("annotation:judge", slug=participant.study.slug)  # post/redirect/get
    notice = "That answer was already recorded." if result.duplicate else ""
    return _judge_show(request, participant, notice=notice, served=result.next_served)


def _judge_show(
    request: HttpRequest,
    participant: Participant,
    *,
    errors: dict[str, str] | None = None,
    values: QueryDict | None = None,
    notice: str = "",
    status: int = 200,
    served: ServedPair | None = None,
) -> HttpResponse:
    """The participant's pair: `served` when the submission served it already, else pair_serve_next's."""
    try:
        served = served or pair_serve_next(participant=participant)
    except StudyNotOpen:
        return _closed(request, participant.study)
    except Participant.DoesNotExist:  # withdrew from another tab a moment ago
        return _redirect(request, reverse("annotation:entry", args=[participant.study.slug]))
    if served is None:
        if participant.completed_at is not None:
            return _redirect(request, _step_url("done", participant.study))
        return _page(request, "unavailable.html", participant)
    study = participant.study
    template = TEMPLATES + ("judge.html#pair" if request.htmx else "judge.html")
    progress = participant_progress(participant=participant)
    context = {
        "study": study,
        "participant": participant,
        "served": served,
        # As text: the template engine localizes every number it prints, a third of this page's time.
        "done": str(progress.done),
        "total": str(progress.total),
        "number": str(progress.done + 1),
        "judge_url": reverse("annotation:judge", args=[study.slug]),
        "errors": errors or {},
        "notice": notice,
    }
    if errors or values:  # the answer inputs show the errors and keep what was sent
        context |= _controls_context(
            allow_ties=study.allow_ties, strength_labels=study.strength_labels, rationale_mode=study.rationale_mode,
            errors=errors or {}, values=values or {},
        )
    else:
        partial = get_template(TEMPLATES + "judge.html#controls").template
        context["controls"] = _controls_html(
            partial, study.allow_ties, tuple(study.strength_labels), study.rationale_mode
        )
    return render(request, template, context, status=status)


# --- Completion and withdrawal ------------------------------------------------------------------


@require_GET
def done(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant_or_entry(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    if participant.completed_at is None or moral_step_url(participant=participant, step="done"):
        return _route(request, participant)
    return _page(request, "done.html", participant, redirect_url=completion_redirect_url(study=participant.study))


@require_http_methods(["GET", "POST"])
def withdraw(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant_or_entry(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    if request.method == "GET":
        return _page(request, "withdraw.html", participant)
    if request.POST.get("confirm") != "yes":
        return _page(request, "withdraw.html", participant, error="Confirm with the button below.", status=400)
    try:
        participant_withdraw(participant=participant)
    except Participant.DoesNotExist:
        pass  # a second tab withdrew first: the data are gone either way
    _session_forget(request, slug=slug)
    return redirect("annotation:withdrawn", slug=slug)


@require_GET
def withdrawn(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_participation(slug=slug)
    return render(request, TEMPLATES + "withdrawn.html", {"study": study})

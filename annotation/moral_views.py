"""Participant pages of moral-graph mode, under /s/<slug>/values/.

After consent (and the survey) the participant gets their context(s), and for each: an interview
(guided, or the LLM interviewer) → a drafted values card they edit and confirm → a check against
near cards already written → then wiser-than votes on a few edges → the legitimacy questions →
the completion code (in `only` mode; in `alongside` mode they go on to the pairwise judgments).

Who the participant is comes from the same signed-cookie session as the pairwise pages; every page
works without JavaScript (post/redirect/get), htmx only swaps fragments where it helps.
"""

from __future__ import annotations

import uuid

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from annotation.interviewers import MAX_POLICIES, MESSAGE_MAX_CHARS
from annotation.models import Participant, ValuesCard
from annotation.moral_forms import (
    ChatMessageForm,
    DedupForm,
    GuidedInterviewForm,
    LegitimacyForm,
    ValuesCardForm,
    WiserVoteForm,
)
from annotation.moral_selectors import (
    Edge,
    moral_card_get_for_participant,
    moral_edge_get_for_vote,
    moral_finished,
    moral_next_url,
    moral_participant_cards,
    moral_vote_step,
)
from annotation.moral_services import (
    CardStateError,
    interview_guided_submit,
    interview_llm_message,
    interview_llm_open,
    interview_participant_text,
    interview_switch_to_guided,
    legitimacy_submit,
    moral_contexts_assign,
    values_card_confirm,
    values_card_dedup_decide,
    values_card_near_for_review,
    wiser_vote_submit,
)
from annotation.selectors import (
    completion_redirect_url,
    participant_get_for_session,
    participant_next_step,
    study_get_for_participation,
)
from annotation.services import StudyNotOpen, instructions_acknowledge
from elicitation.models import Study

TEMPLATES = "annotation/moral/"


# --- Helpers ------------------------------------------------------------------------------------


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    """A redirect that htmx follows as a full page load."""
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _closed(request: HttpRequest, study: Study) -> HttpResponse:
    if request.htmx:
        return HttpResponseClientRedirect(reverse("annotation:entry", args=[study.slug]))
    return render(request, "annotation/participant/closed.html", {"study": study}, status=403)


def _participant(request: HttpRequest, slug: str) -> Participant | HttpResponse:
    """This browser's consented participant in a moral-graph study, or a response to send instead."""
    participant = participant_get_for_session(session=request.session, slug=slug)
    if participant is None:
        study_get_for_participation(slug=slug)  # 404 for a study that does not exist
        return _redirect(request, reverse("annotation:entry", args=[slug]))
    study = participant.study
    if study.moral_graph_mode == Study.MoralGraphMode.OFF:
        return _redirect(request, reverse("annotation:entry", args=[slug]))
    if participant.completed_at is None and not study.is_open:
        return _closed(request, study)
    return participant


def _goto(request: HttpRequest, participant: Participant) -> HttpResponse:
    return _redirect(request, moral_next_url(participant=participant))


# Which of the three steps shown at the top of every values page a template belongs to.
STEP_OF_TEMPLATE = {"vote.html": "compare", "legitimacy.html": "finish", "done.html": "finish"}


def _page(
    request: HttpRequest, template: str, participant: Participant, *, status: int = 200, **context: object
) -> HttpResponse:
    step = STEP_OF_TEMPLATE.get(template.split("#")[0], "value")
    return render(
        request, TEMPLATES + template,
        {"study": participant.study, "participant": participant, "moral_step": step, **context}, status=status,
    )


def _errors(exc: ValidationError) -> dict[str, str]:
    """Field → message; errors not about one field under "form" (templates cannot read "__all__")."""
    if hasattr(exc, "error_dict"):
        return {
            "form" if field == NON_FIELD_ERRORS else field: " ".join(messages)
            for field, messages in exc.message_dict.items()
        }
    return {"form": " ".join(exc.messages)}


def _card_for_step(request: HttpRequest, participant: Participant, card_id: int, status: str) -> ValuesCard | HttpResponse:
    """The participant's card (404 for anyone else's), if it is at this step; else where they should be."""
    card = moral_card_get_for_participant(participant=participant, card_id=card_id)
    if card.status != status:
        return _goto(request, participant)
    return card


# --- Start --------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def start(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    study = participant.study
    step = participant_next_step(participant=participant)
    if step == "survey":
        return redirect("annotation:survey", slug=slug)
    if study.moral_graph_mode == Study.MoralGraphMode.ALONGSIDE and step == "instructions":
        return redirect("annotation:instructions", slug=slug)
    if moral_participant_cards(participant=participant) or moral_finished(participant=participant):
        return _goto(request, participant)
    if request.method == "GET":
        return _page(request, "start.html", participant)
    try:
        if study.moral_graph_mode == Study.MoralGraphMode.ONLY:
            instructions_acknowledge(participant=participant)
        cards = moral_contexts_assign(participant=participant)
    except StudyNotOpen:
        return _closed(request, study)
    if not cards:
        return _page(request, "unavailable.html", participant)
    return _goto(request, participant)


# --- Interview ----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def interview(request: HttpRequest, slug: str, card_id: int) -> HttpResponse:
    participant = _participant(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    card = _card_for_step(request, participant, card_id, ValuesCard.Status.INTERVIEW)
    if isinstance(card, HttpResponse):
        return card
    if card.interview_backend == ValuesCard.Backend.LLM:
        return _interview_chat(request, participant, card)
    if request.method == "GET":
        form = GuidedInterviewForm(initial={"answer_0": interview_participant_text(card=card)})
        return _page(request, "interview_guided.html", participant, card=card, form=form, errors={})
    form = GuidedInterviewForm(request.POST)
    errors: dict[str, str] = {}
    if form.is_valid():
        try:
            interview_guided_submit(card=card, answers=form.answers())
        except ValidationError as exc:
            errors = _errors(exc)
        except CardStateError:
            return _goto(request, participant)
        except StudyNotOpen:
            return _closed(request, participant.study)
        else:
            return redirect("values:card", slug=slug, card_id=card.pk)
    else:
        errors = {name: " ".join(messages) for name, messages in form.errors.items()}
    return _page(request, "interview_guided.html", participant, card=card, form=form, errors=errors, status=422)


def _interview_chat(request: HttpRequest, participant: Participant, card: ValuesCard) -> HttpResponse:
    slug = participant.study.slug
    errors: dict[str, str] = {}
    message = ""
    status = 200
    if request.method == "POST":
        if request.POST.get("action") == "guided":
            interview_switch_to_guided(card=card)
            return _redirect(request, reverse("values:interview", args=[slug, card.pk]))
        form = ChatMessageForm(request.POST)
        message = request.POST.get("message", "")
        try:
            if not form.is_valid():
                raise ValidationError({"message": "Please write a shorter answer."})
            outcome = interview_llm_message(card=card, message=form.cleaned_data["message"])
        except ValidationError as exc:
            errors, status = _errors(exc), 422
        except CardStateError:
            return _goto(request, participant)
        except StudyNotOpen:
            return _closed(request, participant.study)
        else:
            if outcome.fell_back or outcome.card.status != ValuesCard.Status.INTERVIEW:
                return _redirect(request, moral_next_url(participant=participant))
            if not request.htmx:
                return redirect("values:interview", slug=slug, card_id=card.pk)
            message = ""
    else:
        card = interview_llm_open(card=card)
    template = "interview_chat.html#chat" if request.htmx else "interview_chat.html"
    return _page(
        request, template, participant, card=card, errors=errors, message=message,
        message_max=MESSAGE_MAX_CHARS, status=status,
    )


# --- The card -----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def card_edit(request: HttpRequest, slug: str, card_id: int) -> HttpResponse:
    participant = _participant(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    card = _card_for_step(request, participant, card_id, ValuesCard.Status.DRAFT)
    if isinstance(card, HttpResponse):
        return card
    values = {
        "title": card.title, "description": card.description,
        "attention_policies": "\n".join(card.attention_policies or []),
    }
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = ValuesCardForm(request.POST)
        values = {key: request.POST.get(key, "") for key in values}
        if not form.is_valid():
            errors = {name: f"This is far too long ({len(values.get(name, ''))} characters)." for name in form.errors}
        elif request.POST.get("confirm") != "yes":
            errors = {"confirm": "Tick the box if this card captures your value (or edit it until it does)."}
        else:
            try:
                result = values_card_confirm(
                    card=card, title=form.cleaned_data["title"], description=form.cleaned_data["description"],
                    attention_policies=form.policy_lines(),
                )
            except ValidationError as exc:
                errors = _errors(exc)
            except CardStateError:
                return _goto(request, participant)
            except StudyNotOpen:
                return _closed(request, participant.study)
            else:
                if result.near:
                    return redirect("values:similar", slug=slug, card_id=card.pk)
                return _goto(request, participant)
    answers = [turn["content"] for turn in card.transcript or [] if turn.get("role") == "user"]
    return _page(
        request, "card.html", participant, card=card, values=values, errors=errors, answers=answers,
        max_policies=MAX_POLICIES, status=422 if errors else 200,
    )


@require_http_methods(["GET", "POST"])
def similar(request: HttpRequest, slug: str, card_id: int) -> HttpResponse:
    participant = _participant(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    card = _card_for_step(request, participant, card_id, ValuesCard.Status.REVIEW)
    if isinstance(card, HttpResponse):
        return card
    error = ""
    if request.method == "POST":
        form = DedupForm(request.POST)
        try:
            if not form.is_valid():
                raise ValidationError({"same_as": "Choose one of the options."})
            try:
                same_as_id = form.same_as_id()
            except ValueError:
                raise ValidationError({"same_as": "Choose one of the options."}) from None
            values_card_dedup_decide(card=card, same_as_id=same_as_id)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        except CardStateError:
            return _goto(request, participant)
        except StudyNotOpen:
            return _closed(request, participant.study)
        else:
            return _goto(request, participant)
    near = values_card_near_for_review(card=card)
    return _page(request, "similar.html", participant, card=card, near=near, error=error, status=422 if error else 200)


# --- Votes --------------------------------------------------------------------------------------


def _cards_all_confirmed(participant: Participant) -> bool:
    cards = moral_participant_cards(participant=participant)
    return bool(cards) and all(card.status == ValuesCard.Status.CONFIRMED for card in cards)


@require_http_methods(["GET", "POST"])
def vote(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    if moral_finished(participant=participant) or not _cards_all_confirmed(participant):
        return _goto(request, participant)
    if request.method == "GET":
        return _vote_show(request, participant)
    form = WiserVoteForm(request.POST)
    if not form.is_valid():
        return _vote_show(request, participant, errors={"form": "This answer was malformed; here is your current question."}, status=400)
    data = form.cleaned_data
    edge = moral_edge_get_for_vote(
        participant=participant, context_id=data["context_id"], from_card_id=data["from_card"],
        to_card_id=data["to_card"],
    )
    try:
        result = wiser_vote_submit(
            participant=participant, edge=edge, answer=data["answer"], reason=data["reason"],
            submission_id=data["submission_id"], better_story=data["better_story"],
        )
    except ValidationError as exc:
        return _vote_show(
            request, participant, edge=edge, errors=_errors(exc), values=request.POST,
            submission_id=data["submission_id"], status=422,
        )
    except StudyNotOpen:
        return _closed(request, participant.study)
    if not request.htmx:
        return redirect("values:vote", slug=slug)  # post/redirect/get
    notice = "That answer was already recorded." if result.duplicate else ""
    return _vote_show(request, participant, notice=notice)


def _vote_show(
    request: HttpRequest,
    participant: Participant,
    *,
    edge: Edge | None = None,
    errors: dict[str, str] | None = None,
    values: object = None,
    submission_id: uuid.UUID | None = None,
    notice: str = "",
    status: int = 200,
) -> HttpResponse:
    step = moral_vote_step(participant=participant)
    if edge is None:
        edge = step.edge
        if edge is None:
            return _goto(request, participant)
    given, target = step.given, max(step.total, step.given + 1)
    template = "vote.html#vote" if request.htmx else "vote.html"
    return _page(
        request, template, participant, edge=edge, errors=errors or {}, values=values or {},
        submission_id=submission_id or uuid.uuid4(), notice=notice, given=given, target=target,
        answers=WiserVoteForm.answer_choices, status=status,
    )


# --- Legitimacy and done ------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def legitimacy(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    if moral_finished(participant=participant) or not _cards_all_confirmed(participant):
        return _goto(request, participant)
    errors: dict[str, str] = {}
    values: object = {}
    if request.method == "POST":
        form = LegitimacyForm(request.POST)
        values = request.POST
        try:
            if not form.is_valid():
                raise ValidationError({"comment": "This is far too long."})
            legitimacy_submit(
                participant=participant, values_represented=form.cleaned_data["values_represented"],
                process_fair=form.cleaned_data["process_fair"], comment=form.cleaned_data["comment"],
            )
        except ValidationError as exc:
            errors = _errors(exc)
        except StudyNotOpen:
            return _closed(request, participant.study)
        else:
            return _goto(request, participant)
    return _page(
        request, "legitimacy.html", participant, errors=errors, values=values, choices=LegitimacyForm.choices,
        status=422 if errors else 200,
    )


@require_GET
def done(request: HttpRequest, slug: str) -> HttpResponse:
    participant = _participant(request, slug)
    if isinstance(participant, HttpResponse):
        return participant
    if not moral_finished(participant=participant):
        return _goto(request, participant)
    if participant.study.moral_graph_mode != Study.MoralGraphMode.ONLY:
        return redirect("annotation:entry", slug=slug)
    return _page(
        request, "done.html", participant, redirect_url=completion_redirect_url(study=participant.study),
        cards=moral_participant_cards(participant=participant),
    )


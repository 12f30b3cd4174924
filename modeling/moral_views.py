"""Researcher pages of moral-graph mode, under /studies/<slug>/values/.

The overview configures the mode, questions and contexts, reports the legitimacy answers and the
winning values per context (filterable by a demographic attribute, swapped in by htmx); a context
page draws its moral graph (modeling/static/modeling/moral_graph.js), lists its cards and lets
editors seed cards, merge cards and write upgrade stories. Each view: parse, authorize with
study_get_for_user (404 for studies the user may not see; `edit=True` for writes), one service
call, render or redirect.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotation.interviewers import llm_is_configured
from annotation.models import UpgradeStory
from annotation.moral_selectors import (
    legitimacy_rates,
    moral_vote_count,
    moral_vote_counts_by_context,
    values_card_get_for_context,
    values_card_members,
    values_cards_for_context,
)
from annotation.moral_services import (
    upgrade_story_create,
    values_card_merge,
    values_card_seed,
    values_card_unmerge,
)
from annotation.selectors import survey_questions_for_study
from elicitation.models import Study, SurveyQuestion
from elicitation.moral import (
    MoralContextForm,
    MoralModeForm,
    MoralQuestionForm,
    moral_context_create,
    moral_context_delete,
    moral_context_get,
    moral_context_update,
    moral_question_create,
    moral_question_delete,
    moral_question_get,
    moral_question_update,
    moral_questions_with_contexts,
    study_moral_mode_set,
)
from elicitation.selectors import study_get_for_user, study_user_can_edit
from modeling.moral_selectors import moral_snapshot_latest, moral_snapshot_latest_for_study
from modeling.moral_services import (
    AttributeFilter,
    moral_graph_export,
    moral_graph_graphml,
    moral_graph_snapshots_create,
    moral_graph_view_data,
    moral_winning_values,
)
from modeling.moral_tasks import moral_graph_aggregate

TEMPLATES = "modeling/moral/"
# "Aggregate now" runs in the request up to this many votes (PageRank over a few hundred cards
# takes well under a second); beyond, it is queued for a worker.
SYNC_AGGREGATE_MAX_VOTES = 20_000


def _flash_errors(request: HttpRequest, exc: ValidationError) -> None:
    for message in exc.messages:
        messages.error(request, message)


def _overview(study: Study) -> HttpResponse:
    return redirect("moral:overview", slug=study.slug)


def _demographic_filters(*, study: Study) -> list[tuple[str, str, str]]:
    """(key, value, label) for every option of the study's choice questions."""
    kinds = (SurveyQuestion.Kind.CHOICE, SurveyQuestion.Kind.MULTI_CHOICE)
    questions = [q for q in survey_questions_for_study(study=study) if q.kind in kinds]
    return [(q.key, str(choice), f"{q.text}: {choice}") for q in questions for choice in q.choices]


def _filter_parse(request: HttpRequest, *, options: list[tuple[str, str, str]]) -> AttributeFilter | None:
    raw = request.GET.get("group", "")
    key, _, value = raw.partition("=")
    if (key, value) in {(k, v) for k, v, _ in options}:
        return AttributeFilter(key=key, value=value)
    return None


@login_required
@require_GET
def moral_overview_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    options = _demographic_filters(study=study)
    only = _filter_parse(request, options=options)
    winners = moral_winning_values(study=study, only=only)
    context = {"study": study, "winners": winners, "filters": options, "group": request.GET.get("group", "")}
    if request.htmx and request.htmx.target == "winners":
        return render(request, TEMPLATES + "overview.html#winners", context)
    questions = list(moral_questions_with_contexts(study=study))
    vote_counts = moral_vote_counts_by_context(study=study)
    for question in questions:
        for moral_context in question.contexts.all():  # prefetched: the template sees these objects
            moral_context.vote_total = vote_counts.get(moral_context.pk, 0)
    context.update({
        "tab": "values",
        "can_edit": study_user_can_edit(study=study, user=request.user),
        "questions": questions,
        "aggregate_every": settings.POLYPHONY_MORAL_AGGREGATE_EVERY,
        "rates": legitimacy_rates(study=study),
        "latest": moral_snapshot_latest_for_study(study=study),
        "mode_form": MoralModeForm(initial={"moral_graph_mode": study.moral_graph_mode}),
        "question_form": MoralQuestionForm(),
    })
    return render(request, TEMPLATES + "overview.html", context)


@login_required
@require_GET
def moral_legitimacy_view(request: HttpRequest, slug: str) -> HttpResponse:
    """The legitimacy rates as a fragment, for the study page to load (hx-get, trigger "load")."""
    study = study_get_for_user(slug=slug, user=request.user)
    return render(request, TEMPLATES + "overview.html#legitimacy", {"study": study, "rates": legitimacy_rates(study=study)})


# --- Configuration ------------------------------------------------------------------------------


@login_required
@require_POST
def moral_mode_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    form = MoralModeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the moral graph modes.")
        return _overview(study)
    study_moral_mode_set(study=study, mode=form.cleaned_data["moral_graph_mode"])
    messages.success(request, f"Moral graph mode: {study.get_moral_graph_mode_display()}.")
    return _overview(study)


@login_required
@require_POST
def moral_question_create_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    form = MoralQuestionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Write the question (at most 2000 characters).")
        return _overview(study)
    try:
        moral_question_create(study=study, text=form.cleaned_data["text"], contexts=form.context_lines())
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        messages.success(request, "Question added.")
    return _overview(study)


@login_required
@require_POST
def moral_question_edit_view(request: HttpRequest, slug: str, question_id: int) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    question = moral_question_get(study=study, question_id=question_id)
    try:
        if request.POST.get("action") == "delete":
            moral_question_delete(question=question)
            messages.success(request, "Question deleted.")
        elif request.POST.get("action") == "add_context":
            form = MoralContextForm(request.POST)
            if not form.is_valid():
                raise ValidationError("Write the context (at most 500 characters).")
            moral_context_create(question=question, text=form.cleaned_data["text"])
            messages.success(request, "Context added.")
        else:
            moral_question_update(question=question, text=request.POST.get("text", ""))
            messages.success(request, "Question saved.")
    except ValidationError as exc:
        _flash_errors(request, exc)
    return _overview(study)


@login_required
@require_POST
def moral_context_edit_view(request: HttpRequest, slug: str, context_id: int) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    context = moral_context_get(study=study, context_id=context_id)
    try:
        if request.POST.get("action") == "delete":
            moral_context_delete(context=context)
            messages.success(request, "Context deleted.")
        else:
            moral_context_update(context=context, text=request.POST.get("text", ""))
            messages.success(request, "Context saved.")
    except ValidationError as exc:
        _flash_errors(request, exc)
    return _overview(study)


@login_required
@require_POST
def moral_aggregate_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    if moral_vote_count(study_id=study.pk) <= SYNC_AGGREGATE_MAX_VOTES:
        snapshots = moral_graph_snapshots_create(study_id=study.pk)
        messages.success(request, f"Aggregated {len(snapshots)} context{'s' if len(snapshots) != 1 else ''}.")
    else:
        moral_graph_aggregate.delay(study.pk)
        messages.success(request, "Aggregation queued; reload this page in a minute.")
    back_to = _card_id(request, "context")  # the button also sits on a context's page
    if back_to is not None:
        return redirect("moral:context", slug=study.slug, context_id=moral_context_get(study=study, context_id=back_to).pk)
    return _overview(study)


# --- A context: graph, cards, merges, stories ---------------------------------------------------


@login_required
@require_GET
def moral_context_view(request: HttpRequest, slug: str, context_id: int) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    context = moral_context_get(study=study, context_id=context_id)
    snapshot = moral_snapshot_latest(context=context)
    cards = list(values_cards_for_context(context=context))
    graph = moral_graph_view_data(context=context, snapshot=snapshot)
    scores = {node["id"]: node["score"] for node in graph["nodes"]}
    canonical = sorted((c for c in cards if c.canonical_id is None), key=lambda c: (-scores.get(c.pk, 0.0), c.pk))
    for card in canonical:
        card.score = scores.get(card.pk, 0.0)
    return render(request, TEMPLATES + "context.html", {
        "study": study, "context": context, "snapshot": snapshot, "graph": graph, "cards": cards,
        "canonical": canonical, "scores": scores, "tab": "values",
        "can_edit": study_user_can_edit(study=study, user=request.user),
        "llm": llm_is_configured(),
    })


@login_required
@require_GET
def moral_card_view(request: HttpRequest, slug: str, context_id: int, card_id: int) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    context = moral_context_get(study=study, context_id=context_id)
    card = values_card_get_for_context(context=context, card_id=card_id)
    page = {"study": study, "context": context, "card": card, "members": values_card_members(card=card), "tab": "values"}
    template = TEMPLATES + ("card.html#card-detail" if request.htmx else "card.html")
    return render(request, template, page)


@login_required
@require_POST
def moral_card_seed_view(request: HttpRequest, slug: str, context_id: int) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    context = moral_context_get(study=study, context_id=context_id)
    try:
        values_card_seed(
            context=context, title=request.POST.get("title", ""), description=request.POST.get("description", ""),
            attention_policies=request.POST.get("attention_policies", "").splitlines(),
        )
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        messages.success(request, "Values card added.")
    return redirect("moral:context", slug=study.slug, context_id=context.pk)


def _card_id(request: HttpRequest, name: str) -> int | None:
    try:
        return int(request.POST.get(name, ""))
    except ValueError:
        return None


@login_required
@require_POST
def moral_card_merge_view(request: HttpRequest, slug: str, context_id: int) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    context = moral_context_get(study=study, context_id=context_id)
    card_id, into_id = _card_id(request, "card"), _card_id(request, "into")
    if card_id is None or (into_id is None and request.POST.get("action") != "unmerge"):
        messages.error(request, "Choose the card to merge and the card to merge it into.")
        return redirect("moral:context", slug=study.slug, context_id=context.pk)
    card = values_card_get_for_context(context=context, card_id=card_id)
    try:
        if request.POST.get("action") == "unmerge":
            values_card_unmerge(card=card)
            messages.success(request, f"“{card.title}” stands on its own again.")
        else:
            into = values_card_get_for_context(context=context, card_id=into_id)  # type: ignore[arg-type]
            values_card_merge(card=card, into=into)
            messages.success(request, f"“{card.title}” merged into “{into.title}”.")
    except ValidationError as exc:
        _flash_errors(request, exc)
    return redirect("moral:context", slug=study.slug, context_id=context.pk)


@login_required
@require_POST
def moral_story_create_view(request: HttpRequest, slug: str, context_id: int) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user, edit=True)
    context = moral_context_get(study=study, context_id=context_id)
    from_id, to_id = _card_id(request, "from_card"), _card_id(request, "to_card")
    if from_id is None or to_id is None:
        messages.error(request, "Choose the value the story starts from and the one it arrives at.")
        return redirect("moral:context", slug=study.slug, context_id=context.pk)
    try:
        upgrade_story_create(
            from_card=values_card_get_for_context(context=context, card_id=from_id),
            to_card=values_card_get_for_context(context=context, card_id=to_id),
            text=request.POST.get("text", ""), author_kind=UpgradeStory.Author.RESEARCHER,
        )
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        messages.success(request, "Story added.")
    return redirect("moral:context", slug=study.slug, context_id=context.pk)


# --- Export -------------------------------------------------------------------------------------


@login_required
@require_GET
def moral_export_json_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    body = json.dumps(moral_graph_export(study=study), ensure_ascii=False, indent=2)
    response = HttpResponse(body, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-moral-graph.json"'
    return response


@login_required
@require_GET
def moral_export_graphml_view(request: HttpRequest, slug: str) -> HttpResponse:
    study = study_get_for_user(slug=slug, user=request.user)
    response = HttpResponse(moral_graph_graphml(study=study), content_type="application/graphml+xml")
    response["Content-Disposition"] = f'attachment; filename="{study.slug}-moral-graph.graphml"'
    return response

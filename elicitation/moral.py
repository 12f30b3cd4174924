"""Moral-graph configuration of a study: the mode, the questions and their contexts (reads, writes, forms).

Everything about what participants wrote (values cards, votes) lives in `annotation`; this module
only configures what they are asked. Counts of cards go through the reverse relation name
(`values_cards`), so elicitation keeps importing nothing from annotation (the import contract).
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404

from elicitation.models import MoralContext, MoralQuestion, Study

QUESTION_MAX_CHARS = 2000
CONTEXT_MAX_CHARS = 500
MAX_QUESTIONS = 100
MAX_CONTEXTS_PER_QUESTION = 20


# --- Reads --------------------------------------------------------------------------------------


def moral_questions_with_contexts(*, study: Study) -> QuerySet[MoralQuestion]:
    """Questions in order with their contexts, each context with `card_total`, its confirmed values
    cards (two queries). The status is spelled out: elicitation does not import annotation."""
    contexts = MoralContext.objects.order_by("position", "id").annotate(
        card_total=Count("values_cards", filter=Q(values_cards__status="confirmed"))
    )
    return (
        MoralQuestion.objects.filter(study=study)
        .order_by("position", "id")
        .prefetch_related(Prefetch("contexts", queryset=contexts))
    )


def moral_contexts_for_study(*, study: Study) -> QuerySet[MoralContext]:
    """Every context of the study in question order, with its question (one query)."""
    return (
        MoralContext.objects.filter(question__study=study)
        .select_related("question")
        .order_by("question__position", "question_id", "position", "id")
    )


def moral_context_get(*, study: Study, context_id: int) -> MoralContext:
    """A context of this study, or 404 (a context id of another study reads as missing)."""
    context = moral_contexts_for_study(study=study).filter(pk=context_id).first()
    if context is None:
        raise Http404("No such context.")
    return context


def moral_question_get(*, study: Study, question_id: int) -> MoralQuestion:
    question = MoralQuestion.objects.filter(study=study, pk=question_id).first()
    if question is None:
        raise Http404("No such question.")
    return question


# --- Writes -------------------------------------------------------------------------------------


def study_moral_mode_set(*, study: Study, mode: str) -> Study:
    if mode not in Study.MoralGraphMode.values:
        raise ValidationError({"moral_graph_mode": f"Unknown moral graph mode {mode!r}."})
    if study.moral_graph_mode != mode:
        study.moral_graph_mode = mode
        study.save(update_fields=["moral_graph_mode", "updated_at"])
    return study


def _text_clean(*, text: str, field: str, limit: int, what: str) -> str:
    cleaned = (text or "").strip()
    if not cleaned:
        raise ValidationError({field: f"Write the {what}."})
    if len(cleaned) > limit:
        raise ValidationError({field: f"Keep the {what} under {limit} characters (it has {len(cleaned)})."})
    return cleaned


def moral_question_create(*, study: Study, text: str, contexts: list[str] | None = None) -> MoralQuestion:
    """A question, placed last, with its first contexts (all or nothing)."""
    text = _text_clean(text=text, field="text", limit=QUESTION_MAX_CHARS, what="question")
    context_texts = [
        _text_clean(text=c, field="contexts", limit=CONTEXT_MAX_CHARS, what="context")
        for c in (contexts or []) if c.strip()
    ]
    if len(context_texts) > MAX_CONTEXTS_PER_QUESTION:
        raise ValidationError({"contexts": f"A question may have at most {MAX_CONTEXTS_PER_QUESTION} contexts."})
    with transaction.atomic():
        # The study row lock keeps two simultaneous adds from taking the same position.
        Study.objects.select_for_update().filter(pk=study.pk).first()
        existing = MoralQuestion.objects.filter(study=study).count()
        if existing >= MAX_QUESTIONS:
            raise ValidationError({"text": f"A study may have at most {MAX_QUESTIONS} questions."})
        question = MoralQuestion.objects.create(study=study, text=text, position=existing)
        MoralContext.objects.bulk_create(
            MoralContext(question=question, text=c, position=i) for i, c in enumerate(context_texts)
        )
    return question


def moral_question_update(*, question: MoralQuestion, text: str) -> MoralQuestion:
    question.text = _text_clean(text=text, field="text", limit=QUESTION_MAX_CHARS, what="question")
    question.save(update_fields=["text"])
    return question


def moral_question_delete(*, question: MoralQuestion) -> None:
    """Delete a question and its contexts, unless participants already wrote values for it."""
    if MoralContext.objects.filter(question=question, values_cards__participant__isnull=False).exists():
        raise ValidationError("Participants have written values for this question; it can no longer be deleted.")
    question.delete()


def moral_context_create(*, question: MoralQuestion, text: str) -> MoralContext:
    text = _text_clean(text=text, field="text", limit=CONTEXT_MAX_CHARS, what="context")
    with transaction.atomic():
        MoralQuestion.objects.select_for_update().filter(pk=question.pk).first()
        existing = MoralContext.objects.filter(question=question).count()
        if existing >= MAX_CONTEXTS_PER_QUESTION:
            raise ValidationError({"text": f"A question may have at most {MAX_CONTEXTS_PER_QUESTION} contexts."})
        return MoralContext.objects.create(question=question, text=text, position=existing)


def moral_context_update(*, context: MoralContext, text: str) -> MoralContext:
    context.text = _text_clean(text=text, field="text", limit=CONTEXT_MAX_CHARS, what="context")
    context.save(update_fields=["text"])
    return context


def moral_context_delete(*, context: MoralContext) -> None:
    if context.values_cards.filter(participant__isnull=False).exists():
        raise ValidationError("Participants have written values for this context; it can no longer be deleted.")
    context.delete()


# --- Forms --------------------------------------------------------------------------------------


class MoralModeForm(forms.Form):
    moral_graph_mode = forms.ChoiceField(
        label="Moral graph mode", choices=Study.MoralGraphMode.choices,
        help_text="“Alongside”: participants write and compare values first, then make their pairwise judgments.",
    )


class MoralQuestionForm(forms.Form):
    text = forms.CharField(
        label="Question", max_length=QUESTION_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The situation, e.g. “A user asks for advice about whether to get an abortion.”",
    )
    contexts = forms.CharField(
        label="Contexts (one per line)", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="The considerations this question raises, e.g. “When the user is in distress”.",
    )

    def context_lines(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data.get("contexts", "").splitlines() if line.strip()]


class MoralContextForm(forms.Form):
    text = forms.CharField(label="New context", max_length=CONTEXT_MAX_CHARS)

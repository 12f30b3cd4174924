"""Writes for moral-graph mode: assigning contexts, interviews, values cards, wiser-than votes, legitimacy.

State of a participant's card, one per assigned context (compare-and-swap transitions, so a double
submit or a second tab changes nothing twice):

    interview ──(interview done / card drafted)──▶ draft ──(participant confirms)──▶ review
    review ──(near cards shown, participant decides; or none near)──▶ confirmed

Slow work (the LLM call, embedding a card) never runs inside a transaction: what the participant
wrote is committed first, so a failure or timeout loses nothing.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from annotation.interviewers import (
    DESCRIPTION_MAX_CHARS,
    MAX_POLICIES,
    MESSAGE_MAX_CHARS,
    POLICY_MAX_CHARS,
    STORY_MAX_CHARS,
    TITLE_MAX_CHARS,
    CardDraft,
    GuidedInterviewer,
    InterviewerUnavailable,
    LLMInterviewer,
    interviewer_for_backend,
    llm_interviewer,
    llm_is_configured,
)
from annotation.models import LegitimacyAnswer, Participant, UpgradeStory, ValuesCard, WiserVote
from annotation.moral_selectors import Edge, canonical_id, moral_edges_without_story
from annotation.services import StudyNotOpen
from elicitation.models import MoralContext, Study

logger = logging.getLogger(__name__)

Status = ValuesCard.Status
REASON_MAX_CHARS = 2000
COMMENT_MAX_CHARS = 2000
LLM_FALLBACK_NOTICE = (
    "The AI interviewer is not available right now, so we switched to a few short questions instead. "
    "Everything you wrote so far is kept below."
)
STORIES_PER_DRAFT_RUN = 20


class CardStateError(Exception):
    """The card is not at the step this action belongs to (already done, or not reached yet)."""


def _require_open(study: Study) -> None:
    if not study.is_open:
        raise StudyNotOpen(study.slug)


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content, "at": timezone.now().isoformat()}


# --- Assigning contexts -------------------------------------------------------------------------


def moral_contexts_assign(*, participant: Participant) -> list[ValuesCard]:
    """Give the participant their contexts (POLYPHONY_MORAL_CONTEXTS_PER_PARTICIPANT), least covered
    first, as one values card each in `interview`. Idempotent: a participant with cards keeps them.
    """
    study = participant.study
    _require_open(study)
    backend = LLMInterviewer.backend if llm_is_configured() else GuidedInterviewer.backend
    with transaction.atomic():
        # The row lock makes two tabs starting at once assign one set of contexts.
        Participant.objects.select_for_update().filter(pk=participant.pk).first()
        existing = list(ValuesCard.objects.filter(participant=participant))
        if existing:
            return existing
        contexts = list(
            MoralContext.objects.filter(question__study=study)
            .annotate(coverage=Count("values_cards", filter=Q(values_cards__participant__isnull=False)))
            .order_by("coverage", "question__position", "position", "id")
        )
        per_participant = settings.POLYPHONY_MORAL_CONTEXTS_PER_PARTICIPANT
        # Least covered first; among equally covered contexts, at random so no context lags behind.
        contexts.sort(key=lambda c: (c.coverage, random.random()))
        chosen = contexts[:per_participant]
        return ValuesCard.objects.bulk_create(
            ValuesCard(participant=participant, context=context, interview_backend=backend, status=Status.INTERVIEW)
            for context in chosen
        )


# --- Interviews ---------------------------------------------------------------------------------


def _message_clean(text: str, *, field: str, required: bool) -> str:
    cleaned = (text or "").strip()
    if required and not cleaned:
        raise ValidationError({field: "Please write an answer."})
    if len(cleaned) > MESSAGE_MAX_CHARS:
        raise ValidationError({field: f"Keep the answer under {MESSAGE_MAX_CHARS} characters (it has {len(cleaned)})."})
    return cleaned


def _card_claim(*, card: ValuesCard, from_status: str, **updates: Any) -> bool:
    """Compare-and-swap: move the card on only if it is still where this action expects it."""
    claimed = ValuesCard.objects.filter(pk=card.pk, status=from_status).update(**updates) == 1
    if claimed:
        for name, value in updates.items():
            setattr(card, name, value)
    return claimed


def interview_guided_submit(*, card: ValuesCard, answers: Sequence[str]) -> ValuesCard:
    """The guided interview's answers (first required) → transcript + a drafted card to edit."""
    _require_open(card.context.question.study)
    guided = GuidedInterviewer()
    questions = guided.questions()
    if len(answers) != len(questions):
        raise ValidationError({"__all__": f"Expected {len(questions)} answers."})
    cleaned = [_message_clean(a, field=f"answer_{i}", required=i == 0) for i, a in enumerate(answers)]
    transcript = list(card.transcript or [])
    for question, answer in zip(questions, cleaned, strict=True):
        transcript += [_turn("assistant", question), _turn("user", answer)]
    draft = guided.draft(answers=cleaned)
    if not _card_claim(
        card=card, from_status=Status.INTERVIEW, status=Status.DRAFT, transcript=transcript,
        interview_backend=ValuesCard.Backend.GUIDED, title=draft.title, description=draft.description,
        attention_policies=draft.attention_policies,
    ):
        raise CardStateError("This interview is already finished.")
    return card


@dataclass(frozen=True)
class InterviewOutcome:
    card: ValuesCard
    fell_back: bool  # the LLM failed: the participant continues in the guided interview


def _transcript_append(*, card: ValuesCard, turns: Sequence[dict[str, str]], **updates: Any) -> bool:
    """Append turns to the transcript of a card still in `interview` (row lock: two tabs writing at
    once both keep their text). False when the interview has moved on."""
    with transaction.atomic():
        locked = ValuesCard.objects.select_for_update().filter(pk=card.pk, status=Status.INTERVIEW).first()
        if locked is None:
            return False
        locked.transcript = [*(locked.transcript or []), *turns]
        for name, value in updates.items():
            setattr(locked, name, value)
        locked.save(update_fields=["transcript", *updates])
    card.transcript = locked.transcript
    for name, value in updates.items():
        setattr(card, name, value)
    return True


def interview_llm_open(*, card: ValuesCard) -> ValuesCard:
    """Put the opening question into an empty LLM transcript (researcher text: no back-end call)."""
    if card.transcript or card.interview_backend != ValuesCard.Backend.LLM or card.status != Status.INTERVIEW:
        return card
    interviewer = interviewer_for_backend(card.interview_backend)
    opening = interviewer.opening(question=card.context.question.text, context=card.context.text)
    with transaction.atomic():
        locked = ValuesCard.objects.select_for_update().get(pk=card.pk)
        if not locked.transcript:
            locked.transcript = [_turn("assistant", opening)]
            locked.save(update_fields=["transcript"])
    card.transcript = locked.transcript
    return card


def interview_llm_message(*, card: ValuesCard, message: str) -> InterviewOutcome:
    """Store the participant's message, ask the LLM, store its question or drafted card.

    The message is committed before the LLM is called. If the LLM fails, times out or replies with
    something unusable, the card switches to the guided interview with a notice, and the
    participant's messages stay in the transcript (the guided form starts from them).
    """
    _require_open(card.context.question.study)
    text = _message_clean(message, field="message", required=True)
    if card.status != Status.INTERVIEW or card.interview_backend != ValuesCard.Backend.LLM:
        raise CardStateError("This interview is not waiting for a message.")
    if not _transcript_append(card=card, turns=[_turn("user", text)]):
        raise CardStateError("This interview is already finished.")
    try:
        if not llm_is_configured():
            raise InterviewerUnavailable("The LLM interviewer is no longer configured.")
        turn = llm_interviewer().reply(
            question=card.context.question.text, context=card.context.text, transcript=card.transcript
        )
    except InterviewerUnavailable as exc:
        logger.warning("LLM interviewer failed for values card %s: %s", card.pk, exc)
        _card_claim(
            card=card, from_status=Status.INTERVIEW, interview_backend=ValuesCard.Backend.GUIDED,
            interview_notice=LLM_FALLBACK_NOTICE,
        )
        return InterviewOutcome(card=card, fell_back=True)
    if turn.card is not None:
        _card_claim(
            card=card, from_status=Status.INTERVIEW, status=Status.DRAFT, title=turn.card.title,
            description=turn.card.description, attention_policies=turn.card.attention_policies,
        )
    else:
        _transcript_append(card=card, turns=[_turn("assistant", turn.message)])
    return InterviewOutcome(card=card, fell_back=False)


def interview_switch_to_guided(*, card: ValuesCard) -> ValuesCard:
    """The participant prefers the guided questions; the conversation so far stays in the transcript."""
    _card_claim(card=card, from_status=Status.INTERVIEW, interview_backend=ValuesCard.Backend.GUIDED)
    return card


def interview_participant_text(*, card: ValuesCard) -> str:
    """What the participant wrote in the interview so far, to start the guided form from."""
    return "\n\n".join(turn["content"] for turn in card.transcript or [] if turn.get("role") == "user")


# --- Values cards -------------------------------------------------------------------------------


def values_card_clean(*, title: str, description: str, attention_policies: Sequence[str]) -> CardDraft:
    """Validate a card; all errors together, keyed by field. Each policy's first word is capitalised
    (the card format asks for a plural noun in capitals, e.g. "MOMENTS when …")."""
    errors: dict[str, str] = {}
    title = " ".join((title or "").split())
    description = (description or "").strip()
    policies = [" ".join(p.split()) for p in attention_policies if p and p.strip()]
    if not title:
        errors["title"] = "Give your value a short title."
    elif len(title) > TITLE_MAX_CHARS:
        errors["title"] = f"Keep the title under {TITLE_MAX_CHARS} characters (it has {len(title)})."
    if not description:
        errors["description"] = "Describe the value in one sentence."
    elif len(description) > DESCRIPTION_MAX_CHARS:
        errors["description"] = (
            f"Keep the description to one sentence under {DESCRIPTION_MAX_CHARS} characters (it has {len(description)})."
        )
    if not policies:
        errors["attention_policies"] = "Write at least one thing a person with this value pays attention to."
    elif len(policies) > MAX_POLICIES:
        errors["attention_policies"] = f"Write at most {MAX_POLICIES} attention policies (there are {len(policies)})."
    elif any(len(p) > POLICY_MAX_CHARS for p in policies):
        errors["attention_policies"] = f"Keep each attention policy under {POLICY_MAX_CHARS} characters."
    if errors:
        raise ValidationError(errors)
    return CardDraft(title=title, description=description, attention_policies=[_policy_capitalise(p) for p in policies])


def _policy_capitalise(policy: str) -> str:
    first, _, rest = policy.partition(" ")
    return f"{first.upper()} {rest}".strip()


NearCardsFinder = Callable[..., list[tuple[ValuesCard, float]]]


def _near_cards(*, card: ValuesCard) -> list[tuple[ValuesCard, float]]:
    """Near canonical cards via the modeling app (settings.POLYPHONY_MORAL_NEAR_CARDS). Never raises:
    if embedding fails, the card is simply not deduplicated now (researchers can still merge)."""
    try:
        finder: NearCardsFinder = import_string(settings.POLYPHONY_MORAL_NEAR_CARDS)
        return finder(card_id=card.pk)
    except Exception:
        logger.exception("Could not look for cards near values card %s; skipping deduplication.", card.pk)
        return []


@dataclass(frozen=True)
class CardConfirmResult:
    card: ValuesCard
    near: list[tuple[ValuesCard, float]]  # empty: the card is confirmed as its own value


def values_card_confirm(
    *, card: ValuesCard, title: str, description: str, attention_policies: Sequence[str]
) -> CardConfirmResult:
    """The participant confirms their (edited) card. Then near cards in the context are looked up
    (embedding, outside any transaction): none → confirmed; some → `review` for the participant to
    say whether one of them captures their value (values_card_dedup_decide)."""
    _require_open(card.context.question.study)
    draft = values_card_clean(title=title, description=description, attention_policies=attention_policies)
    if not _card_claim(
        card=card, from_status=Status.DRAFT, status=Status.REVIEW, title=draft.title, description=draft.description,
        attention_policies=draft.attention_policies, embedding=None, embedding_model="",
    ):
        raise CardStateError("This card is already confirmed.")
    near = _near_cards(card=card)
    if not near:
        _values_card_confirmed(card=card, canonical_card=None)
    return CardConfirmResult(card=card, near=near)


def values_card_near_for_review(*, card: ValuesCard) -> list[tuple[ValuesCard, float]]:
    """Near cards for a card in review (the page is reloaded, or another card appeared meanwhile)."""
    return _near_cards(card=card)


def values_card_dedup_decide(*, card: ValuesCard, same_as_id: int | None) -> ValuesCard:
    """The participant says which near card captures their value (it becomes their card's
    canonical card), or that none does (their card stands as its own value)."""
    _require_open(card.context.question.study)
    same_as = None
    if same_as_id is not None:
        same_as = ValuesCard.objects.filter(
            pk=same_as_id, context_id=card.context_id, status=Status.CONFIRMED
        ).exclude(pk=card.pk).first()
        if same_as is None:
            raise ValidationError({"same_as": "Choose one of the cards shown, or say that none captures your value."})
    if not _values_card_confirmed(card=card, canonical_card=same_as):
        raise CardStateError("This card is already confirmed.")
    return card


def _values_card_confirmed(*, card: ValuesCard, canonical_card: ValuesCard | None) -> bool:
    root = canonical_id(canonical_card) if canonical_card else None
    claimed = _card_claim(
        card=card, from_status=Status.REVIEW, status=Status.CONFIRMED, canonical_id=root,
        confirmed_at=timezone.now(),
    )
    if claimed and root is None:
        _hooks_run(settings.POLYPHONY_MORAL_STORY_HOOKS, context_id=card.context_id)
    return claimed


def values_card_embeddings_store(*, vectors: dict[int, bytes], model_name: str) -> None:
    """Cache card embeddings on the cards (one UPDATE per card; called with few cards at a time)."""
    for card_id, blob in vectors.items():
        ValuesCard.objects.filter(pk=card_id).update(embedding=blob, embedding_model=model_name)


def values_card_seed(
    *, context: MoralContext, title: str, description: str, attention_policies: Sequence[str]
) -> ValuesCard:
    """A researcher-written card, confirmed at once (so the first participants have values to compare)."""
    draft = values_card_clean(title=title, description=description, attention_policies=attention_policies)
    card = ValuesCard.objects.create(
        context=context, participant=None, status=Status.CONFIRMED, title=draft.title,
        description=draft.description, attention_policies=draft.attention_policies,
        interview_backend=ValuesCard.Backend.RESEARCHER, confirmed_at=timezone.now(),
    )
    _hooks_run(settings.POLYPHONY_MORAL_STORY_HOOKS, context_id=context.pk)
    return card


def values_card_merge(*, card: ValuesCard, into: ValuesCard) -> ValuesCard:
    """A researcher merges `card` (and its members) into `into`'s canonical card; members are kept.

    Canonical pointers stay one level deep (every card points at a root), so votes map to
    canonical cards with one lookup.
    """
    if card.context_id != into.context_id:
        raise ValidationError({"into": "Cards can only be merged within one context."})
    with transaction.atomic():
        locked = {c.pk: c for c in ValuesCard.objects.select_for_update().filter(pk__in=[card.pk, into.pk])}
        if len(locked) != 2:
            raise ValidationError({"into": "That card no longer exists."})
        root = canonical_id(locked[into.pk])
        if root == canonical_id(locked[card.pk]):
            raise ValidationError({"into": "These cards are already merged."})
        ValuesCard.objects.filter(Q(pk=card.pk) | Q(canonical_id=card.pk)).update(canonical_id=root)
        # A card may not be its own canonical card.
        ValuesCard.objects.filter(pk=root, canonical_id=root).update(canonical_id=None)
    card.refresh_from_db(fields=["canonical"])
    return card


def values_card_unmerge(*, card: ValuesCard) -> ValuesCard:
    """Take a member out of its canonical card again."""
    ValuesCard.objects.filter(pk=card.pk).update(canonical_id=None)
    card.canonical_id = None
    return card


# --- Stories ------------------------------------------------------------------------------------


def upgrade_story_create(
    *,
    from_card: ValuesCard,
    to_card: ValuesCard,
    text: str,
    author_kind: str,
    author_participant: Participant | None = None,
) -> UpgradeStory:
    cleaned = (text or "").strip()
    errors: dict[str, str] = {}
    if not cleaned:
        errors["text"] = "Write the story."
    elif len(cleaned) > STORY_MAX_CHARS:
        errors["text"] = f"Keep the story under {STORY_MAX_CHARS} characters (it has {len(cleaned)})."
    if from_card.pk == to_card.pk or from_card.context_id != to_card.context_id:
        errors["to_card"] = "Choose two different cards of the same context."
    if author_kind not in UpgradeStory.Author.values:
        errors["author_kind"] = f"Unknown author {author_kind!r}."
    if errors:
        raise ValidationError(errors)
    return UpgradeStory.objects.create(
        context_id=from_card.context_id, from_card=from_card, to_card=to_card, text=cleaned,
        author_kind=author_kind, author_participant=author_participant,
    )


def upgrade_stories_draft(*, context_id: int) -> int:
    """Let the LLM draft stories for candidate edges of a context that have none. Returns how many.

    Each story is its own short write; a failing endpoint stops the run (the next card confirmed in
    the context tries again) and the template story is shown meanwhile.
    """
    if not llm_is_configured():
        return 0
    context = MoralContext.objects.select_related("question").filter(pk=context_id).first()
    if context is None:
        return 0
    interviewer = llm_interviewer()
    written = 0
    for from_card, to_card in moral_edges_without_story(context=context, limit=STORIES_PER_DRAFT_RUN):
        try:
            text = interviewer.story_draft(
                question=context.question.text, context=context.text,
                from_card=CardDraft(from_card.title, from_card.description, list(from_card.attention_policies)),
                to_card=CardDraft(to_card.title, to_card.description, list(to_card.attention_policies)),
            )
        except InterviewerUnavailable as exc:
            logger.warning("Story drafting for context %s stopped: %s", context_id, exc)
            break
        upgrade_story_create(from_card=from_card, to_card=to_card, text=text, author_kind=UpgradeStory.Author.LLM)
        written += 1
    return written


# --- Votes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoteResult:
    vote: WiserVote
    duplicate: bool  # this submission (or this participant's vote on this edge) was already stored


def wiser_vote_submit(
    *,
    participant: Participant,
    edge: Edge,
    answer: str,
    reason: str,
    submission_id: uuid.UUID,
    better_story: str = "",
) -> VoteResult:
    """Store a wiser-than vote exactly once (submission id and (participant, edge) are unique).

    `better_story`: optionally, the participant's own telling of the move from A to B; stored as a
    participant-written story, which later voters on this edge see instead of an LLM's or the
    template (a researcher's story still comes first)."""
    _require_open(participant.study)
    errors: dict[str, str] = {}
    if answer not in WiserVote.Answer.values:
        errors["answer"] = "Choose one of the four answers."
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX_CHARS:
        errors["reason"] = f"Keep the reason under {REASON_MAX_CHARS} characters (it has {len(reason)})."
    better_story = (better_story or "").strip()
    if len(better_story) > STORY_MAX_CHARS:
        errors["better_story"] = f"Keep the story under {STORY_MAX_CHARS} characters (it has {len(better_story)})."
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            vote = WiserVote.objects.create(
                participant=participant, context=edge.context, from_card=edge.from_card, to_card=edge.to_card,
                story=edge.story, story_text=edge.story_text, answer=answer, reason=reason,
                submission_id=submission_id,
            )
            if better_story:
                upgrade_story_create(
                    from_card=edge.from_card, to_card=edge.to_card, text=better_story,
                    author_kind=UpgradeStory.Author.PARTICIPANT, author_participant=participant,
                )
    except IntegrityError:
        existing = WiserVote.objects.filter(
            Q(submission_id=submission_id)
            | Q(participant=participant, from_card=edge.from_card, to_card=edge.to_card)
        ).first()
        if existing is None or existing.participant_id != participant.pk:
            raise ValidationError({"submission_id": "This submission id was already used; reload the page."}) from None
        return VoteResult(vote=existing, duplicate=True)
    study_id = participant.study_id
    transaction.on_commit(lambda: _hooks_run(settings.POLYPHONY_MORAL_VOTE_HOOKS, study_id=study_id))
    return VoteResult(vote=vote, duplicate=False)


def _hooks_run(paths: Sequence[str], **kwargs: int) -> None:
    """Call hooks by dotted path (aggregation, story drafting). They run after the participant's
    answer is stored; whatever goes wrong in one is logged and the answer stays."""
    for path in paths:
        try:
            import_string(path)(**kwargs)
        except Exception:
            logger.exception("Moral-graph hook %s failed for %s.", path, kwargs)


# --- Legitimacy ---------------------------------------------------------------------------------


def legitimacy_submit(
    *, participant: Participant, values_represented: str, process_fair: str, comment: str
) -> LegitimacyAnswer:
    """The closing answers (once; a second submit returns the first). In `only` mode this completes
    the participant, so the completion code appears only after this last answer is stored."""
    _require_open(participant.study)
    errors: dict[str, str] = {}
    choices = LegitimacyAnswer.Choice.values
    if values_represented not in choices:
        errors["values_represented"] = "Please answer this question."
    if process_fair not in choices:
        errors["process_fair"] = "Please answer this question."
    comment = (comment or "").strip()
    if len(comment) > COMMENT_MAX_CHARS:
        errors["comment"] = f"Keep the comment under {COMMENT_MAX_CHARS} characters (it has {len(comment)})."
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        answer, _ = LegitimacyAnswer.objects.get_or_create(
            participant=participant,
            defaults={"values_represented": values_represented, "process_fair": process_fair, "comment": comment},
        )
        if participant.study.moral_graph_mode == Study.MoralGraphMode.ONLY:
            now = timezone.now()
            Participant.objects.filter(pk=participant.pk, completed_at__isnull=True).update(completed_at=now)
            participant.completed_at = participant.completed_at or now
    return answer

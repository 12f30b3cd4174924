"""Reads for moral-graph mode: a participant's cards and next step, the edges to vote on, vote rows.

A participant may see exactly the contexts they were assigned, and a context is assigned by
creating the participant's values card in it (annotation.moral_services.moral_contexts_assign), so
"may this participant see context X" is "do they have a card in X". Anything else is a 404.

Canonical cards: `ValuesCard.canonical` always points at a root (merges flatten, see
values_card_merge), so a card's canonical card is `canonical_id or id`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.urls import reverse

from annotation.models import LegitimacyAnswer, Participant, UpgradeStory, ValuesCard, WiserVote
from annotation.selectors import participant_next_step
from elicitation.models import MoralContext, Study

# Shown when no story was written for an edge: neutral, and about the two cards only.
STORY_TEMPLATE = (
    "Someone used to handle situations like this by focusing on “{from_title}”. "
    "After thinking it through, they came to focus on “{to_title}” instead."
)
# Order in which stories are preferred when an edge has several.
STORY_AUTHOR_ORDER = {UpgradeStory.Author.RESEARCHER: 0, UpgradeStory.Author.PARTICIPANT: 1, UpgradeStory.Author.LLM: 2}


@dataclass(frozen=True)
class Edge:
    """A directed candidate edge between two canonical cards of one context, with the story to show."""

    context: MoralContext
    from_card: ValuesCard
    to_card: ValuesCard
    story: UpgradeStory | None
    story_text: str


@dataclass(frozen=True)
class VoteRow:
    """One vote for aggregation, with cards mapped to their canonical cards."""

    context_id: int
    from_card: int
    to_card: int
    answer: str
    participant_id: int
    attributes: dict[str, object]


def canonical_id(card: ValuesCard) -> int:
    return card.canonical_id or card.pk


# --- The participant's cards and step -----------------------------------------------------------


def moral_participant_cards(*, participant: Participant) -> list[ValuesCard]:
    """The participant's cards (one per assigned context) in context order, contexts and questions loaded."""
    return list(
        ValuesCard.objects.filter(participant=participant)
        .select_related("context__question")
        .order_by("context__question__position", "context__question_id", "context__position", "context_id")
    )


def moral_card_get_for_participant(*, participant: Participant, card_id: int) -> ValuesCard:
    card = ValuesCard.objects.select_related("context__question").filter(pk=card_id, participant=participant).first()
    if card is None:
        raise Http404("No such values card.")
    return card


def moral_context_ids_for_participant(*, participant: Participant) -> list[int]:
    return list(ValuesCard.objects.filter(participant=participant).values_list("context_id", flat=True))


def moral_finished(*, participant: Participant) -> bool:
    return LegitimacyAnswer.objects.filter(participant=participant).exists()


def moral_votes_given(*, participant: Participant) -> int:
    return WiserVote.objects.filter(participant=participant).count()


def moral_vote_target(*, participant: Participant) -> int:
    return int(settings.POLYPHONY_MORAL_VOTES_PER_PARTICIPANT)


def moral_step_url(*, participant: Participant, step: str) -> str | None:
    """Where the pairwise flow must send a participant instead of `annotation:<step>`, if anywhere.

    For annotation.views: in `only` mode the values pages replace instructions, judging and the done
    page; in `alongside` mode the values part comes before judging (so the completion code, shown
    after the last judgment, comes after it too). None: carry on with the pairwise flow.
    """
    mode = participant.study.moral_graph_mode
    if mode == Study.MoralGraphMode.ONLY and step in ("instructions", "judge", "done"):
        return reverse("values:start", args=[participant.study.slug])
    if mode == Study.MoralGraphMode.ALONGSIDE and step in ("judge", "done") and not moral_finished(
        participant=participant
    ):
        return reverse("values:start", args=[participant.study.slug])
    return None


def moral_next_url(*, participant: Participant) -> str:
    """The values page the participant should be on now (resuming goes through here)."""
    slug = participant.study.slug
    step = participant_next_step(participant=participant)
    if step == "survey":
        return reverse("annotation:survey", args=[slug])
    if participant.study.moral_graph_mode == Study.MoralGraphMode.ALONGSIDE and step == "instructions":
        return reverse("annotation:instructions", args=[slug])
    cards = moral_participant_cards(participant=participant)
    if not cards:
        return reverse("values:start", args=[slug])
    for card in cards:
        if card.status == ValuesCard.Status.INTERVIEW:
            return reverse("values:interview", args=[slug, card.pk])
        if card.status == ValuesCard.Status.DRAFT:
            return reverse("values:card", args=[slug, card.pk])
        if card.status == ValuesCard.Status.REVIEW:
            return reverse("values:similar", args=[slug, card.pk])
    if moral_finished(participant=participant):
        if participant.study.moral_graph_mode == Study.MoralGraphMode.ALONGSIDE:
            return reverse("annotation:judge", args=[slug])
        return reverse("values:done", args=[slug])
    if moral_votes_given(participant=participant) < moral_vote_target(participant=participant) and (
        moral_edge_next(participant=participant) is not None
    ):
        return reverse("values:vote", args=[slug])
    return reverse("values:legitimacy", args=[slug])


# --- Cards of a context -------------------------------------------------------------------------


def canonical_cards_for_contexts(*, context_ids: Iterable[int]) -> QuerySet[ValuesCard]:
    """Confirmed canonical cards (the graph's nodes) of these contexts, oldest first."""
    return ValuesCard.objects.filter(
        context_id__in=list(context_ids), status=ValuesCard.Status.CONFIRMED, canonical__isnull=True
    ).order_by("id")


def values_cards_for_context(*, context: MoralContext) -> QuerySet[ValuesCard]:
    """Every confirmed card of a context with its member count (researcher pages)."""
    return (
        ValuesCard.objects.filter(context=context, status=ValuesCard.Status.CONFIRMED)
        .select_related("participant")
        .annotate(member_total=Count("members", filter=Q(members__status=ValuesCard.Status.CONFIRMED)))
        .order_by("id")
    )


def values_card_get_for_context(*, context: MoralContext, card_id: int) -> ValuesCard:
    card = ValuesCard.objects.filter(context=context, pk=card_id, status=ValuesCard.Status.CONFIRMED).first()
    if card is None:
        raise Http404("No such values card.")
    return card


def values_card_members(*, card: ValuesCard) -> list[ValuesCard]:
    return list(
        ValuesCard.objects.filter(canonical=card, status=ValuesCard.Status.CONFIRMED)
        .select_related("participant")
        .order_by("id")
    )


def values_card_for_embedding(*, card_id: int) -> ValuesCard:
    return ValuesCard.objects.select_related("context").get(pk=card_id)


def values_card_near_candidates(*, card: ValuesCard) -> list[ValuesCard]:
    """The canonical cards a new card may duplicate: same context, confirmed, not the card itself."""
    return list(canonical_cards_for_contexts(context_ids=[card.context_id]).exclude(pk=card.pk))


def values_cards_by_ids(*, card_ids: Iterable[int]) -> dict[int, ValuesCard]:
    return {card.pk: card for card in ValuesCard.objects.filter(pk__in=list(card_ids))}


# --- Edges to vote on ---------------------------------------------------------------------------


def _edge_vote_counts(*, context_ids: list[int]) -> tuple[Counter[tuple[int, int]], list[tuple[int, int, int]]]:
    """Votes per canonical edge, and (participant, from, to) of every vote, in one query."""
    counts: Counter[tuple[int, int]] = Counter()
    voted: list[tuple[int, int, int]] = []
    rows = WiserVote.objects.filter(context_id__in=context_ids).values_list(
        "participant_id", "from_card_id", "from_card__canonical_id", "to_card_id", "to_card__canonical_id"
    )
    for participant_id, from_id, from_root, to_id, to_root in rows:
        edge = (from_root or from_id, to_root or to_id)
        counts[edge] += 1
        voted.append((participant_id, *edge))
    return counts, voted


def _stories_by_edge(*, context_ids: list[int]) -> dict[tuple[int, int], UpgradeStory]:
    """The preferred story of each canonical edge (researcher, then participant, then LLM; oldest first)."""
    stories = UpgradeStory.objects.filter(context_id__in=context_ids).select_related("from_card", "to_card")
    best: dict[tuple[int, int], UpgradeStory] = {}
    for story in sorted(stories, key=lambda s: (STORY_AUTHOR_ORDER.get(s.author_kind, 9), s.pk)):
        edge = (canonical_id(story.from_card), canonical_id(story.to_card))
        if edge[0] != edge[1]:
            best.setdefault(edge, story)
    return best


def moral_candidate_edges(
    *, cards: list[ValuesCard], stories: dict[tuple[int, int], UpgradeStory]
) -> set[tuple[int, int]]:
    """Edges worth votes in one context: those with a story, and every ordered pair while the context
    has few cards (POLYPHONY_MORAL_ALL_PAIRS_MAX_CARDS); beyond that, researchers or the LLM write
    stories for the upgrades worth asking about."""
    ids = {card.pk for card in cards}
    edges = {edge for edge in stories if edge[0] in ids and edge[1] in ids}
    if len(ids) <= settings.POLYPHONY_MORAL_ALL_PAIRS_MAX_CARDS:
        edges |= {(a, b) for a in ids for b in ids if a != b}
    return edges


def _edges_open(*, participant: Participant) -> list[Edge]:
    """Candidate edges of the participant's contexts they have not voted on, best first.

    Order: edges not touching their own card first (an independent judgement), then edges still
    below the per-edge target (POLYPHONY_MORAL_VOTES_PER_EDGE), then the fewest votes, then random.
    Four queries.
    """
    own = moral_participant_cards(participant=participant)
    context_ids = [card.context_id for card in own]
    if not context_ids:
        return []
    own_roots = {canonical_id(card) for card in own if card.status == ValuesCard.Status.CONFIRMED}
    cards = list(canonical_cards_for_contexts(context_ids=context_ids))
    stories = _stories_by_edge(context_ids=context_ids)
    counts, voted = _edge_vote_counts(context_ids=context_ids)
    mine = {(a, b) for who, a, b in voted if who == participant.pk}
    target = settings.POLYPHONY_MORAL_VOTES_PER_EDGE
    by_id = {card.pk: card for card in cards}
    contexts = {card.context_id: card.context for card in own}
    ranked: list[tuple[tuple[bool, bool, int, float], tuple[int, int]]] = []
    for context_id in context_ids:
        context_cards = [card for card in cards if card.context_id == context_id]
        for edge in moral_candidate_edges(cards=context_cards, stories=stories):
            if edge in mine or (edge[1], edge[0]) in mine:
                continue  # one question per pair of values for each participant
            touches_own = edge[0] in own_roots or edge[1] in own_roots
            ranked.append(((touches_own, counts[edge] >= target, counts[edge], random.random()), edge))
    ranked.sort()
    open_edges = []
    seen_pairs: set[frozenset[int]] = set()
    for _, (from_id, to_id) in ranked:
        pair = frozenset((from_id, to_id))
        if pair in seen_pairs:
            continue  # both directions may be candidates; a participant is asked about one
        seen_pairs.add(pair)
        from_card, to_card = by_id[from_id], by_id[to_id]
        open_edges.append(_edge_with_story(
            context=contexts[from_card.context_id], from_card=from_card, to_card=to_card,
            story=stories.get((from_id, to_id)),
        ))
    return open_edges


def moral_edge_next(*, participant: Participant) -> Edge | None:
    """The edge this participant should vote on next (see _edges_open for the order)."""
    edges = _edges_open(participant=participant)
    return edges[0] if edges else None


@dataclass(frozen=True)
class VoteStep:
    edge: Edge | None  # None: nothing (more) to vote on
    given: int
    total: int  # how many votes this participant gives: the setting, or fewer if fewer edges are open


def moral_vote_step(*, participant: Participant) -> VoteStep:
    given = moral_votes_given(participant=participant)
    target = moral_vote_target(participant=participant)
    edges = _edges_open(participant=participant) if given < target else []
    return VoteStep(edge=edges[0] if edges else None, given=given, total=min(target, given + len(edges)))


def _edge_with_story(
    *, context: MoralContext, from_card: ValuesCard, to_card: ValuesCard, story: UpgradeStory | None
) -> Edge:
    text = story.text if story else STORY_TEMPLATE.format(from_title=from_card.title, to_title=to_card.title)
    return Edge(context=context, from_card=from_card, to_card=to_card, story=story, story_text=text)


def moral_edge_get_for_vote(*, participant: Participant, context_id: int, from_card_id: int, to_card_id: int) -> Edge:
    """The edge a vote names, or 404: the context must be one the participant was assigned, and both
    cards confirmed canonical cards of it. Votes on any such pair are accepted (not only the one
    served last), so a participant's open tab stays answerable while others vote."""
    own = ValuesCard.objects.filter(participant=participant, context_id=context_id).select_related(
        "context__question"
    ).first()
    if own is None or from_card_id == to_card_id:
        raise Http404("No such context.")
    pair = {
        card.pk: card
        for card in canonical_cards_for_contexts(context_ids=[context_id]).filter(pk__in=[from_card_id, to_card_id])
    }
    if len(pair) != 2:
        raise Http404("No such values card in this context.")
    story = _stories_by_edge(context_ids=[context_id]).get((from_card_id, to_card_id))
    return _edge_with_story(context=own.context, from_card=pair[from_card_id], to_card=pair[to_card_id], story=story)


def moral_edges_without_story(*, context: MoralContext, limit: int) -> list[tuple[ValuesCard, ValuesCard]]:
    """Candidate edges of a context that have no story yet (for the LLM to draft), at most `limit`."""
    cards = list(canonical_cards_for_contexts(context_ids=[context.pk]))
    stories = _stories_by_edge(context_ids=[context.pk])
    by_id = {card.pk: card for card in cards}
    missing = sorted(moral_candidate_edges(cards=cards, stories=stories) - set(stories))
    return [(by_id[a], by_id[b]) for a, b in missing[:limit]]


# --- Rows for aggregation and export ------------------------------------------------------------


def moral_vote_rows(*, study: Study) -> list[VoteRow]:
    """Every vote of the study with canonical card ids and the voter's attributes (one query)."""
    rows = WiserVote.objects.filter(context__question__study=study).values_list(
        "context_id", "from_card_id", "from_card__canonical_id", "to_card_id", "to_card__canonical_id",
        "answer", "participant_id", "participant__attributes",
    )
    return [
        VoteRow(context_id, from_root or from_id, to_root or to_id, answer, participant_id, attributes or {})
        for context_id, from_id, from_root, to_id, to_root, answer, participant_id, attributes in rows
    ]


def moral_cards_for_study(*, study: Study) -> list[ValuesCard]:
    """Every confirmed card of the study with its participant (one query)."""
    return list(
        ValuesCard.objects.filter(context__question__study=study, status=ValuesCard.Status.CONFIRMED)
        .select_related("participant")
        .order_by("context_id", "id")
    )


def moral_participants_for_study(*, study: Study) -> list[Participant]:
    """Participants who confirmed a card or voted, ordered by id (one query)."""
    return list(
        Participant.objects.filter(study=study)
        .filter(Q(values_cards__status=ValuesCard.Status.CONFIRMED) | Q(wiser_votes__isnull=False))
        .distinct()
        .order_by("id")
    )


def moral_vote_count(*, study_id: int) -> int:
    return WiserVote.objects.filter(context__question__study_id=study_id).count()


def moral_vote_counts_by_context(*, study: Study) -> dict[int, int]:
    rows = WiserVote.objects.filter(context__question__study=study).values("context_id").annotate(n=Count("id"))
    return {row["context_id"]: row["n"] for row in rows}


@dataclass(frozen=True)
class LegitimacyRates:
    answered: int
    represented_yes: int
    fair_yes: int

    @property
    def represented_rate(self) -> float | None:
        return self.represented_yes / self.answered if self.answered else None

    @property
    def fair_rate(self) -> float | None:
        return self.fair_yes / self.answered if self.answered else None

    @property
    def represented_percent(self) -> float | None:
        return None if self.represented_rate is None else 100 * self.represented_rate

    @property
    def fair_percent(self) -> float | None:
        return None if self.fair_rate is None else 100 * self.fair_rate


def legitimacy_rates(*, study: Study) -> LegitimacyRates:
    """How many answered the closing questions, and how many said yes to each (one query)."""
    yes = LegitimacyAnswer.Choice.YES
    totals = LegitimacyAnswer.objects.filter(participant__study=study).aggregate(
        answered=Count("id"),
        represented_yes=Count("id", filter=Q(values_represented=yes)),
        fair_yes=Count("id", filter=Q(process_fair=yes)),
    )
    return LegitimacyRates(**totals)

"""Moral graphs from votes: deduplicating cards by embedding, aggregating, snapshots, exports.

The arithmetic is in `modeling.core.moral_graph` (no Django); this module turns rows (read
through annotation's moral selectors) into its plain types and back. Embedding goes through the
TextEmbedding cache (`modeling.embedding_cache`), outside any transaction.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import networkx as nx
import numpy as np
from django.conf import settings
from django.utils import timezone

from annotation.exports import annotator_pseudonym
from annotation.models import ValuesCard
from annotation.moral_selectors import (
    VoteRow,
    canonical_cards_for_contexts,
    legitimacy_rates,
    moral_cards_for_study,
    moral_participants_for_study,
    moral_vote_rows,
    values_card_for_embedding,
    values_card_near_candidates,
)
from annotation.moral_services import values_card_embeddings_store
from elicitation.models import MoralContext, Study
from elicitation.moral import moral_contexts_for_study, moral_questions_with_contexts
from modeling.core.moral_graph import (
    MoralGraph,
    Thresholds,
    Vote,
    moral_graph_build,
    near_indices,
    values_card_text,
)
from modeling.embedding_cache import embeddings_for_texts
from modeling.models import MoralGraphSnapshot

logger = logging.getLogger(__name__)

NEAR_CARDS_SHOWN = 3
WINNERS_PER_CONTEXT = 3


# --- Deduplication ------------------------------------------------------------------------------


def _card_text(card: ValuesCard) -> str:
    return values_card_text(
        title=card.title, description=card.description, attention_policies=list(card.attention_policies or [])
    )


def _card_vectors(*, cards: list[ValuesCard], model_name: str) -> np.ndarray:
    """Embeddings of cards, from the card row when it holds one of this model, else embedded and stored."""
    missing = [c for c in cards if not c.embedding or c.embedding_model != model_name]
    if missing:
        matrix = embeddings_for_texts(texts=[_card_text(c) for c in missing], model_name=model_name)
        blobs = {c.pk: np.ascontiguousarray(v, dtype="<f4").tobytes() for c, v in zip(missing, matrix, strict=True)}
        values_card_embeddings_store(vectors=blobs, model_name=model_name)
        for card in missing:
            card.embedding, card.embedding_model = blobs[card.pk], model_name
    return np.stack([np.frombuffer(bytes(c.embedding), dtype="<f4") for c in cards])


def values_card_near_cards(*, card_id: int) -> list[tuple[ValuesCard, float]]:
    """Canonical cards of the same context at least POLYPHONY_DEDUP_THRESHOLD cosine-similar to this
    card, most similar first (at most NEAR_CARDS_SHOWN). Embeds whatever is not embedded yet."""
    card = values_card_for_embedding(card_id=card_id)
    candidates = values_card_near_candidates(card=card)
    if not candidates:
        return []
    model_name = settings.POLYPHONY_EMBEDDING_MODEL
    vectors = _card_vectors(cards=[card, *candidates], model_name=model_name)
    near = near_indices(
        vectors[0], vectors[1:], threshold=settings.POLYPHONY_DEDUP_THRESHOLD, limit=NEAR_CARDS_SHOWN
    )
    return [(candidates[i], similarity) for i, similarity in near]


# --- Aggregation --------------------------------------------------------------------------------


def moral_thresholds() -> Thresholds:
    return Thresholds(
        min_votes=settings.POLYPHONY_MORAL_EDGE_MIN_VOTES,
        min_likelihood=settings.POLYPHONY_MORAL_EDGE_MIN_LIKELIHOOD,
        max_entropy=settings.POLYPHONY_MORAL_EDGE_MAX_ENTROPY,
    )


@dataclass(frozen=True)
class AttributeFilter:
    """Votes of participants whose attribute `key` equals `value` (or, for multi-choice answers
    stored as "a;b", contains it)."""

    key: str
    value: str

    def matches(self, attributes: dict[str, object]) -> bool:
        stored = attributes.get(self.key)
        if stored is None:
            return False
        if isinstance(stored, str) and ";" in stored:
            return self.value in stored.split(";")
        return str(stored) == self.value


def moral_graphs_compute(
    *, study: Study, votes: Iterable[VoteRow] | None = None, only: AttributeFilter | None = None
) -> dict[int, MoralGraph]:
    """A MoralGraph per context of the study, from the current votes (optionally one group's)."""
    contexts = [context.pk for context in moral_contexts_for_study(study=study)]
    nodes: dict[int, list[int]] = defaultdict(list)
    for card in canonical_cards_for_contexts(context_ids=contexts):
        nodes[card.context_id].append(card.pk)
    per_context: dict[int, list[Vote]] = defaultdict(list)
    for row in votes if votes is not None else moral_vote_rows(study=study):
        if only is None or only.matches(row.attributes):
            per_context[row.context_id].append(Vote(row.from_card, row.to_card, row.answer))
    thresholds = moral_thresholds()
    return {
        context_id: moral_graph_build(nodes=nodes[context_id], votes=per_context[context_id], thresholds=thresholds)
        for context_id in contexts
    }


def moral_graph_snapshots_create(*, study_id: int) -> list[MoralGraphSnapshot]:
    """Aggregate every context of a study and store one snapshot per context."""
    study = Study.objects.get(pk=study_id)
    votes = moral_vote_rows(study=study)
    graphs = moral_graphs_compute(study=study, votes=votes)
    votes_per_context: dict[int, int] = defaultdict(int)
    for row in votes:
        votes_per_context[row.context_id] += 1
    titles = {card.pk: card for card in moral_cards_for_study(study=study)}
    members: dict[int, list[int]] = defaultdict(list)
    for card in titles.values():
        if card.canonical_id:
            members[card.canonical_id].append(card.pk)
    thresholds = moral_thresholds()
    params = {
        "min_votes": thresholds.min_votes, "min_likelihood": thresholds.min_likelihood,
        "max_entropy": thresholds.max_entropy, "study_vote_count": len(votes),
        "aggregated_at": timezone.now().isoformat(),
    }
    snapshots = [
        MoralGraphSnapshot(
            study=study, context_id=context_id, vote_count=votes_per_context[context_id], params=params,
            nodes=[
                {"id": node, "title": titles[node].title if node in titles else "", "score": graph.scores.get(node, 0.0),
                 "members": members.get(node, [])}
                for node in graph.ranking()
            ],
            edges=[edge.as_dict() for edge in graph.edges],
        )
        for context_id, graph in graphs.items()
    ]
    return MoralGraphSnapshot.objects.bulk_create(snapshots)


# --- Seeing it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WinningValue:
    card: ValuesCard
    score: float
    rank: int
    member_total: int


def moral_winning_values(*, study: Study, only: AttributeFilter | None = None) -> list[tuple[MoralContext, list[WinningValue]]]:
    """The top values of each context by PageRank over the (filtered) votes. Five queries."""
    graphs = moral_graphs_compute(study=study, only=only)
    cards = {card.pk: card for card in moral_cards_for_study(study=study)}
    member_totals: dict[int, int] = defaultdict(int)
    for card in cards.values():
        if card.canonical_id:
            member_totals[card.canonical_id] += 1
    result = []
    for context in moral_contexts_for_study(study=study):
        graph = graphs.get(context.pk)
        ranked = graph.ranking()[:WINNERS_PER_CONTEXT] if graph else []
        result.append((context, [
            WinningValue(card=cards[node], score=graph.scores[node], rank=i + 1, member_total=member_totals[node])
            for i, node in enumerate(ranked) if graph and node in cards
        ]))
    return result


def moral_graph_view_data(*, context: MoralContext, snapshot: MoralGraphSnapshot | None) -> dict[str, Any]:
    """What the graph page draws (nodes with card texts, edges), from the latest snapshot; without one
    (nothing aggregated yet), the cards alone with equal scores."""
    cards = {card.pk: card for card in canonical_cards_for_contexts(context_ids=[context.pk])}
    if snapshot is not None:
        scores = {node["id"]: node["score"] for node in snapshot.nodes}
        edges = [edge for edge in snapshot.edges if edge["from"] in cards and edge["to"] in cards]
    else:
        scores = {pk: 1 / len(cards) for pk in cards} if cards else {}
        edges = []
    return {
        "nodes": [
            {"id": pk, "title": card.title, "description": card.description, "score": scores.get(pk, 0.0)}
            for pk, card in cards.items()
        ],
        "edges": [
            {"from": e["from"], "to": e["to"], "total": e["total"], "likelihood": e["likelihood"], "kept": e["kept"]}
            for e in edges
        ],
    }


# --- Export -------------------------------------------------------------------------------------


def moral_graph_export(*, study: Study) -> dict[str, Any]:
    """Everything about the study's moral graphs as one JSON-ready dict: questions, contexts, cards,
    canonical cards with their members, edges with counts, scores, pseudonymised participants with
    their attributes, legitimacy rates. Pseudonyms are the ones of the comparison export, so a
    participant's values and their pairwise judgments can be joined."""
    questions = list(moral_questions_with_contexts(study=study))
    cards = moral_cards_for_study(study=study)
    votes = moral_vote_rows(study=study)
    graphs = moral_graphs_compute(study=study, votes=votes)
    participants = moral_participants_for_study(study=study)
    pseudonym = {p.pk: annotator_pseudonym(study=study, external_id=p.external_id) for p in participants}
    members: dict[int, list[int]] = defaultdict(list)
    for card in cards:
        if card.canonical_id is not None:
            members[card.canonical_id].append(card.pk)
    rates = legitimacy_rates(study=study)
    return {
        "study": {"slug": study.slug, "title": study.title, "moral_graph_mode": study.moral_graph_mode},
        "exported_at": timezone.now().isoformat(),
        "thresholds": asdict(moral_thresholds()),
        "questions": [
            {"id": q.pk, "text": q.text, "position": q.position, "contexts": [c.pk for c in q.contexts.all()]}
            for q in questions
        ],
        "contexts": [
            {"id": c.pk, "question_id": q.pk, "text": c.text, "position": c.position}
            for q in questions for c in q.contexts.all()
        ],
        "cards": [
            {
                "id": card.pk, "context_id": card.context_id, "title": card.title, "description": card.description,
                "attention_policies": list(card.attention_policies or []), "canonical_id": card.canonical_id,
                "participant": pseudonym.get(card.participant_id) if card.participant_id else None,
                "author": "participant" if card.participant_id else "researcher",
                "interview_backend": card.interview_backend,
                "created_at": card.created_at.isoformat(),
            }
            for card in cards
        ],
        "canonical_cards": [
            {"id": card.pk, "context_id": card.context_id, "members": members.get(card.pk, [])}
            for card in cards if card.canonical_id is None
        ],
        "edges": [
            {"context_id": context_id, **edge.as_dict()}
            for context_id, graph in graphs.items() for edge in graph.edges
        ],
        "scores": {
            str(context_id): {str(node): graph.scores[node] for node in graph.ranking()}
            for context_id, graph in graphs.items()
        },
        "participants": [{"id": pseudonym[p.pk], "attributes": p.attributes} for p in participants],
        "votes": [
            {"context_id": v.context_id, "from": v.from_card, "to": v.to_card, "answer": v.answer,
             "participant": pseudonym.get(v.participant_id)}
            for v in votes
        ],
        "legitimacy": {
            "answered": rates.answered, "values_represented_yes": rates.represented_yes,
            "process_fair_yes": rates.fair_yes,
        },
    }


def moral_graph_graphml(*, study: Study) -> bytes:
    """The study's moral graphs as one GraphML document: a node per canonical card (with its context,
    texts, score and members), an edge per voted directed pair (counts, likelihood, entropy, kept)."""
    data = moral_graph_export(study=study)
    graph = nx.DiGraph(study=study.slug)
    contexts = {c["id"]: c["text"] for c in data["contexts"]}
    members = {c["id"]: c["members"] for c in data["canonical_cards"]}
    for card in data["cards"]:
        if card["canonical_id"] is not None:
            continue
        graph.add_node(
            f"card-{card['id']}", card_id=card["id"], context_id=card["context_id"],
            context=contexts.get(card["context_id"], ""), title=card["title"], description=card["description"],
            attention_policies="\n".join(card["attention_policies"]),
            score=float(data["scores"].get(str(card["context_id"]), {}).get(str(card["id"]), 0.0)),
            members=",".join(str(m) for m in members.get(card["id"], [])),
        )
    for edge in data["edges"]:
        source, target = f"card-{edge['from']}", f"card-{edge['to']}"
        if source in graph and target in graph:
            graph.add_edge(
                source, target, context_id=edge["context_id"], total=edge["total"], likelihood=edge["likelihood"],
                entropy=edge["entropy"], kept=edge["kept"],
                **{f"n_{answer}": count for answer, count in edge["counts"].items()},
            )
    buffer = io.BytesIO()
    nx.write_graphml(graph, buffer, encoding="utf-8")
    return buffer.getvalue()

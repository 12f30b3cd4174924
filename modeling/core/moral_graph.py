"""Moral graph aggregation and values-card similarity, on plain values (no Django).

Moral Graph Elicitation (Klingefjord, Lowe & Edelman 2024, "What are human values, and how do we
align AI to them?", section on building the moral graph): participants see two values cards for a
context and a story of someone moving from value A to value B, and say whether B is wiser. Per
directed edge A → B we count the answers, and summarise them as

    wiser likelihood  = (n_wiser − n_not_wiser) / n_total             ∈ [−1, 1]
    vote entropy      = −Σ_k p_k log2 p_k over the four answers       ∈ [0, 2] bits

Edges with enough support (at least `min_votes` votes, likelihood ≥ `min_likelihood`, entropy ≤
`max_entropy`) are kept, and values are scored by PageRank over the kept edges weighted by their
likelihood, as in the paper: wisdom flows along "B is wiser than A" towards B, so the values many
others upgrade to score highest.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

ANSWERS: tuple[str, ...] = ("wiser", "not_wiser", "equal", "unsure")
PAGERANK_DAMPING = 0.85


@dataclass(frozen=True)
class Vote:
    """One answer on the directed edge from_card → to_card ("is to_card wiser than from_card?")."""

    from_card: int
    to_card: int
    answer: str


@dataclass(frozen=True)
class Thresholds:
    min_votes: int = 2
    min_likelihood: float = 0.1
    max_entropy: float = 2.0


@dataclass(frozen=True)
class EdgeSummary:
    from_card: int
    to_card: int
    counts: dict[str, int]
    total: int
    likelihood: float
    entropy: float
    kept: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.from_card, "to": self.to_card, "counts": dict(self.counts), "total": self.total,
            "likelihood": round(self.likelihood, 6), "entropy": round(self.entropy, 6), "kept": self.kept,
        }


@dataclass(frozen=True)
class MoralGraph:
    """Scores (PageRank, summing to 1 over `nodes`) and every voted edge, kept or not."""

    nodes: list[int]
    scores: dict[int, float]
    edges: list[EdgeSummary] = field(default_factory=list)

    def ranking(self) -> list[int]:
        """Node ids, highest score first (ties by id, so the order is stable)."""
        return sorted(self.nodes, key=lambda node: (-self.scores.get(node, 0.0), node))


def vote_entropy(counts: Mapping[str, int]) -> float:
    """Shannon entropy in bits of the answer distribution (0: unanimous; 2: evenly split four ways)."""
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return -sum((n / total) * math.log2(n / total) for n in counts.values() if n > 0)


def edge_summaries(votes: Iterable[Vote], *, thresholds: Thresholds) -> list[EdgeSummary]:
    """Per directed edge: counts, likelihood, entropy and whether it is kept. Sorted by (from, to).

    Self-loops (both cards merged into one canonical card) carry no information and are dropped.
    """
    per_edge: dict[tuple[int, int], Counter[str]] = {}
    for vote in votes:
        if vote.answer not in ANSWERS:
            raise ValueError(f"Unknown answer {vote.answer!r}; expected one of {', '.join(ANSWERS)}.")
        if vote.from_card == vote.to_card:
            continue
        per_edge.setdefault((vote.from_card, vote.to_card), Counter())[vote.answer] += 1
    summaries = []
    for (source, target), counter in sorted(per_edge.items()):
        counts = {answer: counter.get(answer, 0) for answer in ANSWERS}
        total = sum(counts.values())
        likelihood = (counts["wiser"] - counts["not_wiser"]) / total
        entropy = vote_entropy(counts)
        kept = (
            total >= thresholds.min_votes
            and likelihood >= thresholds.min_likelihood
            and likelihood > 0  # an edge must point towards the wiser value to carry PageRank
            and entropy <= thresholds.max_entropy + 1e-12
        )
        summaries.append(EdgeSummary(source, target, counts, total, likelihood, entropy, kept))
    return summaries


def moral_graph_build(*, nodes: Sequence[int], votes: Iterable[Vote], thresholds: Thresholds) -> MoralGraph:
    """Aggregate votes into a scored moral graph over `nodes` (cards with no kept edge still score).

    Votes naming a card not in `nodes` are ignored (e.g. a card deleted after the vote).
    """
    node_set = set(nodes)
    edges = [
        edge for edge in edge_summaries(votes, thresholds=thresholds)
        if edge.from_card in node_set and edge.to_card in node_set
    ]
    graph = nx.DiGraph()
    graph.add_nodes_from(sorted(node_set))
    for edge in edges:
        if edge.kept:
            graph.add_edge(edge.from_card, edge.to_card, weight=edge.likelihood)
    if graph.number_of_nodes() == 0:
        return MoralGraph(nodes=[], scores={}, edges=edges)
    scores = nx.pagerank(graph, alpha=PAGERANK_DAMPING, weight="weight")
    return MoralGraph(nodes=sorted(node_set), scores={int(k): float(v) for k, v in scores.items()}, edges=edges)


def cosine_similarities(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine similarity of one vector `[dim]` to each row of `candidates` `[n, dim]` (zero vectors: 0)."""
    if candidates.size == 0:
        return np.zeros((0,), dtype=np.float32)
    query = np.asarray(query, dtype=np.float32)
    matrix = np.asarray(candidates, dtype=np.float32)
    if matrix.ndim != 2 or query.ndim != 1 or matrix.shape[1] != query.shape[0]:
        raise ValueError(f"Vectors of different sizes: query {query.shape}, candidates {matrix.shape}.")
    norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
    dots = matrix @ query
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def near_indices(query: np.ndarray, candidates: np.ndarray, *, threshold: float, limit: int) -> list[tuple[int, float]]:
    """(row index, similarity) of the candidates at least `threshold` similar, most similar first."""
    similarities = cosine_similarities(query, candidates)
    order = np.argsort(-similarities, kind="stable")
    return [(int(i), float(similarities[i])) for i in order[:limit] if similarities[i] >= threshold]


def values_card_text(*, title: str, description: str, attention_policies: Sequence[str]) -> str:
    """The text a card is embedded as: what it is called, what it means, what it attends to."""
    return "\n".join([title.strip(), description.strip(), *(p.strip() for p in attention_policies)])

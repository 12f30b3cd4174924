"""Aggregation of wiser-than votes: counts, wiser likelihood, entropy, thresholds, weighted PageRank
on hand-built vote sets whose order is known; snapshots from real rows, merges, the vote hook."""

from __future__ import annotations

import math
import uuid

import pytest

from annotation.models import WiserVote
from annotation.moral_selectors import moral_edge_get_for_vote
from annotation.moral_services import values_card_merge, wiser_vote_submit
from modeling.core.moral_graph import Thresholds, Vote, edge_summaries, moral_graph_build, vote_entropy
from modeling.models import MoralGraphSnapshot
from modeling.moral_services import moral_graph_snapshots_create
from tests.moral.conftest import ValuesCardFactory, moral_study, vote_add, voters

LOOSE = Thresholds(min_votes=2, min_likelihood=0.1, max_entropy=2.0)
A, B, C, D = 1, 2, 3, 4


def votes(from_card: int, to_card: int, **answers: int) -> list[Vote]:
    return [Vote(from_card, to_card, answer) for answer, n in answers.items() for _ in range(n)]


def test_counts_likelihood_and_entropy_of_an_edge() -> None:
    [edge] = edge_summaries(votes(A, B, wiser=2, not_wiser=1, equal=1), thresholds=LOOSE)
    assert edge.counts == {"wiser": 2, "not_wiser": 1, "equal": 1, "unsure": 0}
    assert edge.total == 4
    assert edge.likelihood == pytest.approx((2 - 1) / 4)
    assert edge.entropy == pytest.approx(1.5)  # ½·1 + ¼·2 + ¼·2 bits
    assert edge.kept


def test_entropy_is_zero_when_unanimous_and_two_bits_when_split_four_ways() -> None:
    assert vote_entropy({"wiser": 5, "not_wiser": 0, "equal": 0, "unsure": 0}) == 0
    assert vote_entropy({"wiser": 1, "not_wiser": 1, "equal": 1, "unsure": 1}) == pytest.approx(2.0)
    assert vote_entropy({}) == 0


def test_edges_without_enough_support_are_not_kept() -> None:
    summaries = edge_summaries(
        votes(A, B, wiser=1)  # one vote only
        + votes(B, C, wiser=1, not_wiser=3)  # judged not wiser
        + votes(C, D, wiser=2, equal=1, unsure=1),  # likelihood 0.5, entropy 1.5
        thresholds=Thresholds(min_votes=2, min_likelihood=0.1, max_entropy=1.4),
    )
    kept = {(e.from_card, e.to_card): e.kept for e in summaries}
    assert kept == {(A, B): False, (B, C): False, (C, D): False}  # C→D fails only the entropy limit
    assert [e.kept for e in edge_summaries(votes(C, D, wiser=2, equal=1, unsure=1), thresholds=LOOSE)] == [True]


def test_a_chain_of_upgrades_ranks_the_end_of_the_chain_first() -> None:
    # Everyone agrees B is wiser than A, and C wiser than B and than A; D got no votes.
    graph = moral_graph_build(
        nodes=[A, B, C, D],
        votes=votes(A, B, wiser=4) + votes(B, C, wiser=4) + votes(A, C, wiser=3, equal=1),
        thresholds=LOOSE,
    )
    assert graph.ranking()[:2] == [C, B]
    assert graph.scores[B] > graph.scores[A]
    assert graph.scores[A] == pytest.approx(graph.scores[D])  # neither is anyone's upgrade
    assert math.isclose(sum(graph.scores.values()), 1.0, rel_tol=1e-6)


def test_pagerank_weighs_edges_by_wiser_likelihood() -> None:
    # From X, Y is a clear upgrade (likelihood 1.0), Z a weak one (0.2): Y must outrank Z.
    x, y, z = 10, 20, 30
    graph = moral_graph_build(
        nodes=[x, y, z],
        votes=votes(x, y, wiser=5) + votes(x, z, wiser=2, not_wiser=1, equal=2),
        thresholds=LOOSE,
    )
    assert graph.ranking() == [y, z, x]


def test_votes_between_merged_cards_and_on_unknown_cards_are_ignored() -> None:
    graph = moral_graph_build(nodes=[A, B], votes=votes(A, A, wiser=3) + votes(A, 99, wiser=3), thresholds=LOOSE)
    assert graph.edges == []
    assert graph.scores[A] == pytest.approx(graph.scores[B])


def test_an_unknown_answer_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown answer"):
        edge_summaries([Vote(A, B, "much wiser")], thresholds=LOOSE)


@pytest.mark.django_db
def test_snapshot_from_stored_votes_keeps_scores_edges_and_thresholds() -> None:
    study, [context] = moral_study()
    a, b, c = (ValuesCardFactory(context=context, title=t) for t in ("Honesty", "Care", "Courage"))
    for voter in voters(study, 3):
        vote_add(participant=voter, from_card=a, to_card=b, answer="wiser")
        vote_add(participant=voter, from_card=b, to_card=c, answer="wiser")
    [snapshot] = moral_graph_snapshots_create(study_id=study.pk)
    assert [node["title"] for node in snapshot.nodes] == ["Courage", "Care", "Honesty"]
    assert snapshot.vote_count == 6
    assert snapshot.params["min_votes"] == 2 and snapshot.params["study_vote_count"] == 6
    edge = next(e for e in snapshot.edges if (e["from"], e["to"]) == (a.pk, b.pk))
    assert edge["counts"]["wiser"] == 3 and edge["likelihood"] == 1.0 and edge["kept"]


@pytest.mark.django_db
def test_votes_on_a_merged_card_count_for_its_canonical_card() -> None:
    study, [context] = moral_study()
    a, b, b_twin = (ValuesCardFactory(context=context, title=t) for t in ("Rules", "Care", "Caring"))
    for i, voter in enumerate(voters(study, 4)):
        vote_add(participant=voter, from_card=a, to_card=b if i % 2 else b_twin, answer="wiser")
    values_card_merge(card=b_twin, into=b)
    [snapshot] = moral_graph_snapshots_create(study_id=study.pk)
    assert {node["id"] for node in snapshot.nodes} == {a.pk, b.pk}
    assert [(e["from"], e["to"], e["total"]) for e in snapshot.edges] == [(a.pk, b.pk, 4)]
    assert next(n for n in snapshot.nodes if n["id"] == b.pk)["members"] == [b_twin.pk]


@pytest.mark.django_db
def test_enough_new_votes_trigger_an_aggregation(settings, django_capture_on_commit_callbacks) -> None:
    settings.POLYPHONY_MORAL_AGGREGATE_EVERY = 3
    study, [context] = moral_study()
    a, b = ValuesCardFactory(context=context), ValuesCardFactory(context=context)
    people = voters(study, 3)
    for person in people:
        ValuesCardFactory(context=context, participant=person, title=f"Own value of {person.pk}")
    for i, person in enumerate(people):
        edge = moral_edge_get_for_vote(participant=person, context_id=context.pk, from_card_id=a.pk, to_card_id=b.pk)
        with django_capture_on_commit_callbacks(execute=True):
            wiser_vote_submit(participant=person, edge=edge, answer="wiser", reason="", submission_id=uuid.uuid4())
        assert MoralGraphSnapshot.objects.filter(study=study).exists() == (i == 2)
    assert WiserVote.objects.count() == 3

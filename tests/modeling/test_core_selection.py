"""Selection policies on small arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from modeling.core.selection import (
    Candidates,
    choose,
    disagreement,
    information_gain,
    posterior_update,
    uncertainty,
)


def _cands(probs: list[list[float]], deficit: list[float] | None = None) -> Candidates:
    arr = np.asarray(probs)
    return Candidates(
        proto_probs=arr,
        coverage_deficit=np.asarray(deficit if deficit is not None else [0.0] * len(arr)),
        prompt_seen=np.zeros(len(arr)),
    )


def test_information_gain_of_a_pair_every_group_agrees_on_is_zero() -> None:
    probs = np.array([[0.9, 0.9], [0.5, 0.5]])
    assert information_gain(probs, np.array([0.5, 0.5])) == pytest.approx([0.0, 0.0], abs=1e-9)


def test_pair_splitting_two_equally_likely_groups_scores_highest() -> None:
    probs = np.array([[0.9, 0.9], [0.99, 0.01], [0.6, 0.4], [0.5, 0.5]])
    gains = information_gain(probs, np.array([0.5, 0.5]))
    assert int(np.argmax(gains)) == 1
    assert gains[1] == pytest.approx(np.log(2) - (-(0.99 * np.log(0.99) + 0.01 * np.log(0.01))), rel=1e-6)


def test_information_gain_vanishes_once_the_group_is_known() -> None:
    probs = np.array([[0.99, 0.01]])
    assert information_gain(probs, np.array([1.0, 0.0]))[0] == pytest.approx(0.0, abs=1e-9)


def test_uncertainty_prefers_the_coin_flip_for_this_annotator() -> None:
    probs = np.array([[0.95, 0.95], [0.5, 0.5], [0.7, 0.7]])
    assert int(np.argmax(uncertainty(probs, np.array([0.5, 0.5])))) == 1


def test_disagreement_ranks_the_divisive_pair_first() -> None:
    probs = np.array([[0.8, 0.8, 0.8], [0.95, 0.05, 0.5], [0.6, 0.4, 0.5]])
    assert list(np.argsort(-disagreement(probs, np.array([1, 1, 1])))) == [1, 2, 0]


def test_posterior_update_moves_towards_the_group_that_predicted_the_answer() -> None:
    post = posterior_update(np.array([0.5, 0.5]), np.array([0.9, 0.2]), "a")
    assert post[0] == pytest.approx(0.9 / 1.1)
    post = posterior_update(post, np.array([0.9, 0.2]), "b")
    assert post.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="choice"):
        posterior_update(post, np.array([0.9, 0.2]), "left")


def test_random_policy_serves_pairs_below_their_overlap_target_first() -> None:
    cands = _cands([[0.5]] * 4, deficit=[0, -2, 3, 1])
    rng = np.random.default_rng(0)
    assert {choose("random", cands, np.ones(1), np.ones(1), rng)[0] for _ in range(20)} == {2}


def test_mixed_policy_reports_which_branch_chose() -> None:
    cands = _cands([[0.99, 0.01], [0.5, 0.5]], deficit=[0, 2])
    rng = np.random.default_rng(1)
    seen = {choose("mixed", cands, np.array([0.5, 0.5]), np.ones(2), rng, epsilon=0.5) for _ in range(50)}
    assert (1, "mixed:coverage") in seen and (0, "mixed:information_gain") in seen


def test_unknown_policy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        choose("greedy", _cands([[0.5]]), np.ones(1), np.ones(1), np.random.default_rng(0))

"""Selection policies on small arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from modeling.core.selection import (
    Candidates,
    answer_likelihood,
    choose,
    disagreement,
    information_gain,
    particle_pair_probs,
    particles_from_weights,
    posterior_from_answers,
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


def test_particles_are_the_training_weights_plus_the_prototypes_with_the_adaptations_prior() -> None:
    weights = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    particles, prior = particles_from_weights(weights, corner_mass=0.05)
    assert particles.tolist() == [*weights.tolist(), [1.0, 0.0], [0.0, 1.0]]
    assert prior == pytest.approx([0.95 / 3] * 3 + [0.025, 0.025])


def test_particles_past_the_bound_are_merged_keeping_their_prior_mass() -> None:
    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.dirichlet([50, 1, 1], 60), rng.dirichlet([1, 1, 50], 40)])
    particles, prior = particles_from_weights(weights, max_particles=5)
    assert particles.shape[0] <= 5 and prior.sum() == pytest.approx(1.0)
    merged = particles[:-3]
    # The two clusters' masses (60 and 40 annotators) survive the merge.
    mass_first = prior[:-3][merged[:, 0] > 0.5].sum()
    assert mass_first == pytest.approx(0.95 * 0.6)


def test_a_particles_probability_mixes_the_prototype_logits() -> None:
    logits = np.array([[2.0, -2.0], [4.0, 0.0]])
    probs = particle_pair_probs(logits, np.array([[1.0, 0.0], [0.5, 0.5]]))
    assert probs.dtype == np.float32
    assert probs[:, 0] == pytest.approx(1 / (1 + np.exp(-logits[:, 0])), rel=1e-6)
    assert probs[:, 1] == pytest.approx([0.5, 1 / (1 + np.exp(-2.0))], rel=1e-6)


def test_posterior_from_answers_equals_successive_updates() -> None:
    rng = np.random.default_rng(4)
    probs = rng.uniform(0.05, 0.95, size=(5, 4))
    choices = np.array(["a", "b", "tie", "a", "b"])
    expected = np.full(4, 0.25)
    for row, choice in zip(probs, choices, strict=True):
        expected = posterior_update(expected, row, choice)
    assert posterior_from_answers(np.full(4, 0.25), probs, choices) == pytest.approx(expected)


def test_davidson_answer_likelihoods_sum_to_one() -> None:
    probs = np.array([[0.9, 0.5, 0.02]])
    total = sum(answer_likelihood(probs, np.array([c]), tie_nu=0.7) for c in ("a", "b", "tie"))
    assert total == pytest.approx(np.ones((1, 3)))
    # A tie is likeliest under the hypothesis that finds the pair closest.
    assert int(np.argmax(answer_likelihood(probs, np.array(["tie"]), tie_nu=0.7))) == 1


def test_information_gain_over_particles_stays_informative_after_the_prototype_is_known() -> None:
    # Two particles of the same prototype (weights 0.9/0.1 and 0.6/0.4 over prototypes 0 and 1) that
    # prototype-level gain cannot tell apart; pair 1 separates them, pair 0 does not.
    logits = np.array([[3.0, 3.0], [1.0, -4.0]])
    particles = np.array([[0.9, 0.1], [0.6, 0.4]])
    probs = particle_pair_probs(logits, particles)
    gains = information_gain(probs, np.array([0.5, 0.5]))
    assert gains[0] == pytest.approx(0.0, abs=1e-6) and gains[1] > 0.05


def test_information_gain_reads_float32_in_place_and_matches_float64() -> None:
    rng = np.random.default_rng(5)
    probs = rng.uniform(0.01, 0.99, size=(50, 7))
    post = rng.dirichlet(np.ones(7))
    assert information_gain(probs.astype(np.float32), post) == pytest.approx(information_gain(probs, post), abs=1e-5)


def test_served_pairs_masked_out_are_never_chosen() -> None:
    probs = np.array([[0.99, 0.01], [0.6, 0.4], [0.9, 0.9]])
    mask = np.array([False, True, True])
    for policy in ("information_gain", "uncertainty", "disagreement", "random", "mixed"):
        cands = Candidates(proto_probs=probs, coverage_deficit=np.array([5.0, 0.0, 0.0]),
                           prompt_seen=np.zeros(3), available=mask)
        chosen, _ = choose(policy, cands, np.array([0.5, 0.5]), np.ones(2), np.random.default_rng(0))
        assert chosen != 0, policy
    with pytest.raises(ValueError, match="no candidate"):
        choose("random", Candidates(proto_probs=probs, coverage_deficit=np.zeros(3), prompt_seen=np.zeros(3),
                                    available=np.zeros(3, bool)), np.ones(2), np.ones(2), np.random.default_rng(0))


def test_information_gain_falls_back_to_coverage_when_nothing_is_worth_asking() -> None:
    cands = _cands([[0.99, 0.01], [0.7, 0.7], [0.7, 0.7]], deficit=[0, 0, 3])
    rng = np.random.default_rng(0)
    # The annotator is known to be prototype 0: no pair teaches anything more.
    assert choose("information_gain", cands, np.array([1.0, 0.0]), np.ones(2), rng, min_gain=1e-3) == (
        2, "information_gain:coverage")
    assert choose("information_gain", cands, np.array([0.5, 0.5]), np.ones(2), rng, min_gain=1e-3) == (
        0, "information_gain")

"""Active pair selection: small pure functions over precomputed per-prototype pair probabilities.

Serving never runs a network forward pass. After each retrain the Django side caches, for every pool
pair, ``P_k = P(a ≻ b | prototype k)`` (an ``[n_pairs, K]`` array). An annotator's belief about which
prototype they are is a categorical posterior ``π`` (K numbers), updated exactly after each judgment
(:func:`posterior_update`). Each policy scores the candidate pairs and returns the index to serve.

Information gain is BALD (Houlsby et al. 2011, "Bayesian Active Learning for Classification and
Preference Learning", eq. 2): ``I = H(E_π[p]) − E_π[H(p)]``, computed exactly over the K prototypes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POLICIES: tuple[str, ...] = ("random", "uncertainty", "information_gain", "disagreement", "mixed")
_EPS = 1e-9


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def _normalise(weights: np.ndarray) -> np.ndarray:
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    total = w.sum()
    return np.full(w.shape, 1.0 / w.size) if total <= 0 or not np.isfinite(total) else w / total


def predictive_prob(proto_probs: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """``[n]`` probability that this annotator prefers a: the posterior mixture of the prototypes."""
    return np.asarray(proto_probs, dtype=np.float64) @ _normalise(posterior)


def information_gain(proto_probs: np.ndarray, posterior: np.ndarray,
                     proto_entropy: np.ndarray | None = None) -> np.ndarray:
    """``[n]`` expected information (nats) a judgment of each pair gives about the annotator's prototype.

    Zero for a pair every prototype agrees on; ``log 2`` for a pair that splits two equally likely
    prototypes with certainty. ``proto_entropy`` (``[n, K]`` binary entropies of ``proto_probs``)
    may be passed precomputed: it does not depend on the posterior, and it is most of the cost.
    """
    probs = np.asarray(proto_probs, dtype=np.float64)
    pi = _normalise(posterior)
    entropy = _binary_entropy(probs) if proto_entropy is None else np.asarray(proto_entropy, dtype=np.float64)
    return np.maximum(_binary_entropy(probs @ pi) - entropy @ pi, 0.0)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Elementwise binary entropy in nats (to precompute ``proto_entropy``)."""
    return _binary_entropy(np.asarray(p, dtype=np.float64))


def uncertainty(proto_probs: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """``[n]`` closeness of the predicted outcome to a coin flip (1 = exactly 0.5, 0 = certain)."""
    return 1.0 - 2.0 * np.abs(predictive_prob(proto_probs, posterior) - 0.5)


def disagreement(proto_probs: np.ndarray, group_sizes: np.ndarray) -> np.ndarray:
    """``[n]`` size-weighted variance across prototypes of P(a ≻ b): the divisive pairs score highest."""
    probs = np.asarray(proto_probs, dtype=np.float64)
    g = _normalise(group_sizes)
    mean = probs @ g
    return ((probs - mean[:, None]) ** 2) @ g


def posterior_update(posterior: np.ndarray, proto_probs_row: np.ndarray, choice: str,
                     tie_prob: np.ndarray | None = None) -> np.ndarray:
    """Exact Bayes update of the prototype posterior after one judgment (``choice`` in a/b/tie).

    A tie multiplies by ``tie_prob`` when given (Davidson), else by ``sqrt(P_a P_b)``, which
    favours the prototypes that find the pair close.
    """
    pi = _normalise(posterior)
    p = np.clip(np.asarray(proto_probs_row, dtype=np.float64), _EPS, 1 - _EPS)
    if choice == "a":
        like = p
    elif choice == "b":
        like = 1 - p
    elif choice == "tie":
        like = np.asarray(tie_prob, dtype=np.float64) if tie_prob is not None else np.sqrt(p * (1 - p))
    else:
        raise ValueError(f"choice must be 'a', 'b' or 'tie', got {choice!r}")
    return _normalise(pi * like)


@dataclass(frozen=True)
class Candidates:
    """What the policies choose among (arrays aligned by candidate position).

    ``coverage_deficit`` is ``overlap_target − judgments so far`` (≤ 0 once a pair has its overlap);
    ``in_audit_set`` marks the pairs that must reach their overlap target for unbiased evaluation.
    ``prompt_seen`` counts how often the annotator has already seen each candidate's prompt.
    ``proto_entropy`` optionally carries ``binary_entropy(proto_probs)``, precomputed.
    """

    proto_probs: np.ndarray
    coverage_deficit: np.ndarray
    prompt_seen: np.ndarray
    in_audit_set: np.ndarray | None = None
    proto_entropy: np.ndarray | None = None


def _best(scores: np.ndarray, candidates: Candidates, rng: np.random.Generator) -> int:
    """Highest score, then fewest views of the prompt (balance), then a random tie-break."""
    jitter = rng.random(scores.shape[0]) * 1e-9
    balance = -1e-6 * np.asarray(candidates.prompt_seen, dtype=np.float64)
    return int(np.argmax(np.round(scores, 9) + balance + jitter))


def choose_coverage(candidates: Candidates, rng: np.random.Generator, *, audit_only: bool = False) -> int:
    """``random`` with coverage: pairs furthest below their overlap target first, prompts balanced."""
    deficit = np.asarray(candidates.coverage_deficit, dtype=np.float64)
    if audit_only and candidates.in_audit_set is not None and np.asarray(candidates.in_audit_set).any():
        deficit = np.where(candidates.in_audit_set, deficit, -np.inf)
    return _best(np.maximum(deficit, 0.0) if np.isfinite(deficit).any() else deficit, candidates, rng)


def choose(policy: str, candidates: Candidates, posterior: np.ndarray, group_sizes: np.ndarray,
           rng: np.random.Generator, *, epsilon: float = 0.2) -> tuple[int, str]:
    """Index of the candidate to serve and the policy that actually chose it (``mixed`` reports which)."""
    if len(candidates.coverage_deficit) == 0:
        raise ValueError("no candidate pairs to choose from")
    if policy == "random":
        return choose_coverage(candidates, rng), "random"
    if policy == "uncertainty":
        return _best(uncertainty(candidates.proto_probs, posterior), candidates, rng), "uncertainty"
    if policy == "information_gain":
        gain = information_gain(candidates.proto_probs, posterior, candidates.proto_entropy)
        return _best(gain, candidates, rng), "information_gain"
    if policy == "disagreement":
        return _best(disagreement(candidates.proto_probs, group_sizes), candidates, rng), "disagreement"
    if policy == "mixed":
        if rng.random() < epsilon:
            return choose_coverage(candidates, rng, audit_only=True), "mixed:coverage"
        gain = information_gain(candidates.proto_probs, posterior, candidates.proto_entropy)
        return _best(gain, candidates, rng), "mixed:information_gain"
    raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")

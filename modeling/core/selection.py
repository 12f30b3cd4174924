"""Active pair selection: small pure functions over precomputed per-prototype pair probabilities.

Serving never runs a network forward pass. After each retrain the Django side caches, for every pool
pair, ``P_k = P(a ≻ b | prototype k)`` (an ``[n_pairs, K]`` array). An annotator's belief about which
prototype they are is a categorical posterior ``π`` (K numbers), updated exactly after each judgment
(:func:`posterior_update`). Each policy scores the candidate pairs and returns the index to serve.

Information gain is BALD (Houlsby et al. 2011, "Bayesian Active Learning for Classification and
Preference Learning", eq. 2): ``I = H(E_π[p]) − E_π[H(p)]``, computed exactly over a finite set of
hypotheses about the annotator. With only the K pure prototypes as hypotheses it stops being
informative once the prototype is known (every gain is ~0 after ~5 answers), although the
annotator's mixture weights are still uncertain. So serving uses *particles*: the weight vectors
of the training annotators plus the K pure prototypes, with the prior that the adaptation itself
uses (``modeling.core.adapt.posterior_weights``): :func:`particles_from_weights`. A particle's
pair probability is ``sigmoid(Σ_k w_k L_k)`` (PAL mixes logits), precomputed per run by
:func:`particle_pair_probs`; the posterior over particles is exact Bayes in log space
(:func:`posterior_from_answers`), the same posterior whose mean the adaptation returns, so the
gain measures what a judgment teaches the estimator that is actually used.
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


def _float(a: np.ndarray) -> np.ndarray:
    """``a`` as floats without copying float32 (serving's cached matrices stay float32)."""
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def _mix(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[n]`` float64 ``probs @ weights`` without BLAS.

    A web worker calls this per request on a loaded machine: multi-threaded OpenBLAS took
    0.1 ms at the median but up to 8 ms at p95 on a 10,000 × 163 float32 product (its threads
    wait for cores), single-threaded einsum 0.24 ms with a p95 of 0.3 ms.
    """
    return np.einsum("ij,j->i", probs, weights.astype(probs.dtype)).astype(np.float64)


def predictive_prob(proto_probs: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """``[n]`` probability that this annotator prefers a: the posterior mixture of the hypotheses."""
    return _mix(_float(proto_probs), _normalise(posterior))


def davidson_outcomes(probs: np.ndarray, tie_nu: float) -> tuple[np.ndarray, np.ndarray]:
    """``(P(a), P(b))`` under Davidson's model from decisive probabilities ``p`` (see
    :func:`answer_likelihood`); ``P(tie) = 1 − P(a) − P(b)``. Same shape and float type as ``probs``."""
    p = np.clip(_float(probs), _EPS, 1 - _EPS)
    norm = 1.0 + tie_nu * np.sqrt(p * (1 - p))
    return p / norm, (1 - p) / norm


def outcome_entropy(probs_a: np.ndarray, probs_b: np.ndarray) -> np.ndarray:
    """Entropy in nats of the three-way answer (a, b, tie) with ``P(tie) = 1 − P(a) − P(b)``."""
    a, b = _float(probs_a), _float(probs_b)
    t = np.clip(1 - a - b, _EPS, 1.0)
    a, b = np.clip(a, _EPS, 1.0), np.clip(b, _EPS, 1.0)
    return -(a * np.log(a) + b * np.log(b) + t * np.log(t))


def information_gain(proto_probs: np.ndarray, posterior: np.ndarray,
                     proto_entropy: np.ndarray | None = None, probs_b: np.ndarray | None = None) -> np.ndarray:
    """``[n]`` expected information (nats) a judgment of each pair gives about the annotator's hypothesis.

    ``proto_probs`` ``[n, H]``: P(a ≻ b) under each of H hypotheses (the K prototypes, or particles),
    ``posterior`` their ``[H]`` probabilities. Zero for a pair every hypothesis agrees on; ``log 2``
    for a pair that splits two equally likely hypotheses with certainty. ``proto_entropy``
    (``[n, H]`` binary entropies of ``proto_probs``) may be passed precomputed: it does not depend
    on the posterior, and it is most of the cost. Float32 inputs are read in place.

    With ``probs_b`` the answer is three-way: ``proto_probs`` is then P(a), ``probs_b`` P(b), a tie
    the rest (:func:`davidson_outcomes`), and ``proto_entropy`` their :func:`outcome_entropy`.
    """
    probs = _float(proto_probs)
    pi = _normalise(posterior)
    if probs_b is None:
        entropy = _binary_entropy(probs) if proto_entropy is None else _float(proto_entropy)
        return np.maximum(_binary_entropy(_mix(probs, pi)) - _mix(entropy, pi), 0.0)
    entropy = outcome_entropy(probs, probs_b) if proto_entropy is None else _float(proto_entropy)
    return np.maximum(outcome_entropy(_mix(probs, pi), _mix(_float(probs_b), pi)) - _mix(entropy, pi), 0.0)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Elementwise binary entropy in nats (to precompute ``proto_entropy``)."""
    return _binary_entropy(np.asarray(p, dtype=np.float64))


def uncertainty(proto_probs: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """``[n]`` closeness of the predicted outcome to a coin flip (1 = exactly 0.5, 0 = certain)."""
    return 1.0 - 2.0 * np.abs(predictive_prob(proto_probs, posterior) - 0.5)


def disagreement(proto_probs: np.ndarray, group_sizes: np.ndarray) -> np.ndarray:
    """``[n]`` size-weighted variance across prototypes of P(a ≻ b): the divisive pairs score highest."""
    probs = _float(proto_probs)
    g = _normalise(group_sizes)
    mean = _mix(probs, g)
    return _mix((probs - mean[:, None]) ** 2, g)


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


def particles_from_weights(weights: np.ndarray, *, corner_mass: float = 0.05, max_particles: int = 256,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(particles [M, K], prior [M])``: the hypotheses the information gain ranges over.

    The training annotators' weight vectors, each with prior ``(1 − corner_mass) / C``, plus the K
    pure prototypes sharing ``corner_mass``: the empirical prior of
    ``modeling.core.adapt.posterior_weights``. Past ``max_particles`` the annotators' vectors are
    merged by k-means (a merged particle carries the prior mass of its members), which bounds
    the ``[n_pairs, M]`` matrix that serving holds.
    """
    w = np.asarray(weights, dtype=np.float64)
    k = w.shape[1] if w.ndim == 2 else int(w.size)
    w = w.reshape(-1, k)
    corners = np.eye(k)
    if w.shape[0] == 0:
        return corners, np.full(k, 1.0 / k)
    room = max(1, max_particles - k)
    mass = np.full(w.shape[0], 1.0)
    if w.shape[0] > room:
        w, mass = _kmeans(w, room, seed=seed)
    particles = np.concatenate([w, corners])
    prior = np.concatenate([(1 - corner_mass) * mass / mass.sum(), np.full(k, corner_mass / k)])
    return particles, prior


def _kmeans(x: np.ndarray, m: int, *, seed: int, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """``(centres [≤m, d], members per centre)`` by Lloyd's algorithm from a k-means++ start."""
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(x.shape[0])]]
    dist = ((x - centres[0]) ** 2).sum(1)
    for _ in range(m - 1):
        if dist.sum() <= 0:
            break
        centres.append(x[rng.choice(x.shape[0], p=dist / dist.sum())])
        dist = np.minimum(dist, ((x - centres[-1]) ** 2).sum(1))
    c = np.array(centres)
    for _ in range(iterations):
        label = ((x[:, None, :] - c[None]) ** 2).sum(2).argmin(1)
        moved = np.array([x[label == j].mean(0) if (label == j).any() else c[j] for j in range(c.shape[0])])
        if np.allclose(moved, c):
            break
        c = moved
    label = ((x[:, None, :] - c[None]) ** 2).sum(2).argmin(1)
    counts = np.bincount(label, minlength=c.shape[0]).astype(np.float64)
    keep = counts > 0
    return c[keep], counts[keep]


def particle_pair_probs(proto_logits: np.ndarray, particles: np.ndarray) -> np.ndarray:
    """``[n, M]`` float32 P(a ≻ b | not tie) under each particle: ``sigmoid(L @ Wᵀ)`` (PAL mixes logits)."""
    logit = np.asarray(proto_logits, dtype=np.float64) @ np.asarray(particles, dtype=np.float64).T
    return (1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))).astype(np.float32)


def answer_likelihood(probs: np.ndarray, choices: np.ndarray, tie_nu: float | None = None) -> np.ndarray:
    """``[m, H]`` probability of each answer (``choices``: ``[m]`` of a/b/tie) under each hypothesis.

    ``probs`` are the decisive probabilities ``p = P(a ≻ b | not tie)`` ``[m, H]``. With Davidson's
    tie parameter ν: with ``s = sqrt(p (1 − p)) = 1 / (2 cosh(d/2))``, ``P(a) = p / (1 + ν s)``,
    ``P(b) = (1 − p) / (1 + ν s)``, ``P(tie) = ν s / (1 + ν s)`` (Davidson 1970, divided through by
    ``sqrt(π_a π_b)``). Without ν a tie scores ``s`` ("half a win each"), as
    ``modeling.core.likelihood.choice_log_prob`` does.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    c = np.asarray(choices)[:, None]
    s = np.sqrt(p * (1 - p))
    if tie_nu is None:
        return np.where(c == "a", p, np.where(c == "b", 1 - p, s))
    norm = 1.0 + tie_nu * s
    return np.where(c == "a", p, np.where(c == "b", 1 - p, tie_nu * s)) / norm


def posterior_from_answers(prior: np.ndarray, probs: np.ndarray, choices: np.ndarray,
                           tie_nu: float | None = None) -> np.ndarray:
    """Exact Bayes over the hypotheses after m answers at once, in log space (no underflow).

    ``probs`` ``[m, H]``: each answered pair's decisive probabilities under the H hypotheses.
    Equals ``m`` successive :func:`posterior_update` calls when ``tie_nu`` is None.
    """
    log_post = np.log(np.clip(np.asarray(prior, dtype=np.float64), 1e-300, None))
    if len(choices):
        log_post = log_post + np.log(answer_likelihood(probs, choices, tie_nu)).sum(0)
    post = np.exp(log_post - log_post.max())
    return post / post.sum()


def plausible(posterior: np.ndarray, *, tol: float = 1e-6) -> np.ndarray:
    """Indices of the hypotheses holding more than ``tol`` of the posterior.

    Dropping the rest changes a gain by at most about (mass dropped) × log 2, below 1e-3 nats for
    up to a thousand hypotheses, and after a few answers leaves a small fraction of them.
    """
    post = _normalise(posterior)
    keep = np.flatnonzero(post > tol)
    return keep if keep.size else np.array([int(np.argmax(post))])


@dataclass(frozen=True)
class Candidates:
    """What the policies choose among (arrays aligned by candidate position).

    ``coverage_deficit`` is ``overlap_target − judgments so far`` (≤ 0 once a pair has its overlap);
    ``in_audit_set`` marks the pairs that must reach their overlap target for unbiased evaluation.
    ``prompt_seen`` counts how often the annotator has already seen each candidate's prompt.
    ``proto_entropy`` optionally carries ``binary_entropy(proto_probs)``, precomputed.
    ``particle_probs`` ``[n, M]`` (and ``particle_entropy``, its binary entropies) are the
    hypotheses of information gain and uncertainty when given; the posterior passed to
    :func:`choose` is then over these M columns, else over the K prototypes.
    ``available`` masks the candidates that may be served (None: all): serving passes the whole
    pool with the pairs already served masked out, which is cheaper than copying the other rows.
    ``gain`` is the information gain of every candidate under this posterior when already known
    (serving keeps it for the prior: every participant's first choice).
    """

    proto_probs: np.ndarray
    coverage_deficit: np.ndarray
    prompt_seen: np.ndarray
    in_audit_set: np.ndarray | None = None
    proto_entropy: np.ndarray | None = None
    particle_probs: np.ndarray | None = None
    particle_entropy: np.ndarray | None = None
    particle_probs_b: np.ndarray | None = None
    available: np.ndarray | None = None
    gain: np.ndarray | None = None

    def belief(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The hypotheses' P(a) (P(a ≻ b) without ``particle_probs_b``), entropies and P(b), over
        which the posterior is."""
        if self.particle_probs is not None:
            return self.particle_probs, self.particle_entropy, self.particle_probs_b
        return self.proto_probs, self.proto_entropy, None


def _best(scores: np.ndarray, candidates: Candidates, rng: np.random.Generator) -> int:
    """Highest score, then fewest views of the prompt (balance), then a random tie-break; only
    among the available candidates."""
    jitter = rng.random(scores.shape[0]) * 1e-9
    balance = -1e-6 * np.asarray(candidates.prompt_seen, dtype=np.float64)
    total = np.round(scores, 9) + balance + jitter
    if candidates.available is not None:
        total = np.where(candidates.available, total, -np.inf)
    return int(np.argmax(total))


def choose_coverage(candidates: Candidates, rng: np.random.Generator, *, audit_only: bool = False) -> int:
    """``random`` with coverage: pairs furthest below their overlap target first, prompts balanced."""
    deficit = np.asarray(candidates.coverage_deficit, dtype=np.float64)
    if audit_only and candidates.in_audit_set is not None and np.asarray(candidates.in_audit_set).any():
        deficit = np.where(candidates.in_audit_set, deficit, -np.inf)
    return _best(np.maximum(deficit, 0.0) if np.isfinite(deficit).any() else deficit, candidates, rng)


def _gain(candidates: Candidates, posterior: np.ndarray) -> np.ndarray:
    if candidates.gain is not None:
        return candidates.gain
    probs, entropy, probs_b = candidates.belief()
    return information_gain(probs, posterior, entropy, probs_b)


def choose(policy: str, candidates: Candidates, posterior: np.ndarray, group_sizes: np.ndarray,
           rng: np.random.Generator, *, epsilon: float = 0.2, min_gain: float = 0.0) -> tuple[int, str]:
    """Index of the candidate to serve and the policy that actually chose it (``mixed`` reports which).

    ``min_gain`` (nats): when no available pair's information gain reaches it, there is nothing
    left worth asking for this annotator's sake, and ``information_gain`` (or ``mixed``'s
    information branch) serves by coverage instead, reported as ``…:coverage``.
    """
    if len(candidates.coverage_deficit) == 0 or (candidates.available is not None
                                                 and not np.any(candidates.available)):
        raise ValueError("no candidate pairs to choose from")
    if policy == "random":
        return choose_coverage(candidates, rng), "random"
    if policy == "uncertainty":
        probs, _, probs_b = candidates.belief()
        if probs_b is not None:  # P(a ≻ b | not tie) of the posterior mixture
            a, b = predictive_prob(probs, posterior), predictive_prob(probs_b, posterior)
            return _best(1.0 - 2.0 * np.abs(a / (a + b) - 0.5), candidates, rng), "uncertainty"
        return _best(uncertainty(probs, posterior), candidates, rng), "uncertainty"
    if policy == "disagreement":
        return _best(disagreement(candidates.proto_probs, group_sizes), candidates, rng), "disagreement"
    if policy not in ("information_gain", "mixed"):
        raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
    if policy == "mixed" and rng.random() < epsilon:
        return choose_coverage(candidates, rng, audit_only=True), "mixed:coverage"
    label = "mixed:information_gain" if policy == "mixed" else "information_gain"
    gain = _gain(candidates, posterior)
    best = _best(gain, candidates, rng)
    if min_gain > 0 and gain[best] < min_gain:
        return choose_coverage(candidates, rng), f"{label}:coverage"
    return best, label

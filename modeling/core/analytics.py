"""Researcher insight computations on plain arrays: quality, agreement, groups, divisive pairs, rankings.

No Django here (house rule 6): `modeling/analytics_services.py` turns rows into these arrays.

Conventions. A judgment is `(annotator, pair, outcome)` with indices into the caller's lists and
`outcome` the chosen side in the pair's *canonical* order: 1.0 = response_a, 0.0 = response_b,
0.5 = tie. Latent groups are hard labels `0..k-1` per annotator.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import chi2_contingency

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

# Groups smaller than this share of the annotators are not accepted when K is chosen: a "group"
# of one careless clicker fits held-out data well (it predicts 0.5) but is no population view.
MIN_GROUP_SHARE = 0.05
# Robust z past which a participant's typical time per judgment is an outlier (Iglewicz & Hoaglin).
TIME_OUTLIER_Z = 3.5


@dataclass(frozen=True)
class Judgments:
    annotator: IntArray
    pair: IntArray
    outcome: FloatArray
    n_annotators: int
    n_pairs: int


@dataclass(frozen=True)
class LatentClasses:
    labels: IntArray  # [n_annotators]
    responsibilities: FloatArray  # [n_annotators, k]
    theta: FloatArray  # [n_pairs, k]: P(canonical a preferred | group)
    log_likelihood: float


# --- Latent groups -------------------------------------------------------------------------------

def group_theta(j: Judgments, resp: FloatArray, prior: float = 1.0) -> FloatArray:
    """M-step: per-group P(a ≻ b) per pair, a Beta(prior, prior) posterior mean of weighted votes."""
    weights = resp[j.annotator]  # [n, k]
    k = resp.shape[1]
    wins = np.zeros((j.n_pairs, k))
    total = np.zeros((j.n_pairs, k))
    np.add.at(wins, j.pair, weights * j.outcome[:, None])
    np.add.at(total, j.pair, weights)
    return (wins + prior) / (total + 2 * prior)


def annotator_log_lik(j: Judgments, theta: FloatArray) -> FloatArray:
    """[n_annotators, k]: each annotator's log-likelihood of their judgments under each group."""
    t = np.clip(theta[j.pair], 1e-6, 1 - 1e-6)
    ll = j.outcome[:, None] * np.log(t) + (1 - j.outcome[:, None]) * np.log(1 - t)
    out = np.zeros((j.n_annotators, theta.shape[1]))
    np.add.at(out, j.annotator, ll)
    return out


def latent_classes_fit(
    j: Judgments, *, k: int, fit_mask: NDArray[np.bool_] | None = None, iterations: int = 60,
    restarts: int = 4, seed: int = 0, init: FloatArray | None = None,
) -> LatentClasses:
    """A mixture of per-pair Bernoulli preferences over annotators, fitted by EM.

    Latent-class model (Dawid & Skene 1979, without a ground truth): each annotator belongs to one
    of `k` groups, and a group prefers a over b on a pair with probability theta[pair, group].
    `fit_mask` marks annotators whose judgments fit theta (excluded participants are still
    assigned to their best group but do not shape it). `init` ([n_annotators, k] memberships)
    starts one run from given groups instead of random restarts, and keeps their numbering.
    """
    if iterations < 1 or k < 1:
        raise ValueError(f"latent_classes_fit needs iterations >= 1 and k >= 1, got {iterations} and {k}")
    mask = np.ones(j.n_annotators, bool) if fit_mask is None else fit_mask
    rng = np.random.default_rng(seed)
    best: LatentClasses | None = None
    for _ in range(1 if init is not None else max(1, restarts if k > 1 else 1)):
        resp = init if init is not None else rng.dirichlet(np.ones(k), size=j.n_annotators)
        log_pi = np.log(np.full(k, 1 / k))
        ll_total = -np.inf
        for _ in range(iterations):
            theta = group_theta(j, resp * mask[:, None])
            log_r = annotator_log_lik(j, theta) + log_pi
            norm = np.logaddexp.reduce(log_r, axis=1, keepdims=True)
            resp = np.exp(log_r - norm)
            pi = (resp[mask].sum(axis=0) + 1e-3) / (mask.sum() + 1e-3 * k)
            log_pi = np.log(pi)
            new_total = float(norm[mask].sum())
            if abs(new_total - ll_total) < 1e-6 * max(1.0, abs(new_total)):
                ll_total = new_total
                break
            ll_total = new_total
        if best is None or ll_total > best.log_likelihood:
            best = LatentClasses(resp.argmax(axis=1).astype(np.int64), resp, theta, ll_total)
    assert best is not None
    return best if init is not None else _relabel_by_size(best)


def _relabel_by_size(fit: LatentClasses) -> LatentClasses:
    """Group 0 is the largest: labels are stable between recomputations of the same data."""
    sizes = np.bincount(fit.labels, minlength=fit.theta.shape[1])
    order = np.argsort(-sizes, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    return LatentClasses(remap[fit.labels], fit.responsibilities[:, order], fit.theta[:, order], fit.log_likelihood)


def latent_classes_choose(
    j: Judgments, *, max_k: int = 4, fit_mask: NDArray[np.bool_] | None = None, seed: int = 0,
) -> tuple[LatentClasses, dict[str, float]]:
    """Pick K by held-out log-likelihood (a seeded 10% of judgments), then refit on everything.

    A K whose smallest group holds under MIN_GROUP_SHARE of the fitting annotators is skipped.
    """
    mask = np.ones(j.n_annotators, bool) if fit_mask is None else fit_mask
    rng = np.random.default_rng(seed)
    held = rng.random(len(j.outcome)) < 0.1
    train = Judgments(j.annotator[~held], j.pair[~held], j.outcome[~held], j.n_annotators, j.n_pairs)
    scores: dict[str, float] = {}
    best_k, best_score = 1, -np.inf
    min_size = max(2, int(np.ceil(MIN_GROUP_SHARE * mask.sum())))
    for k in range(1, max_k + 1):
        fit = latent_classes_fit(train, k=k, fit_mask=mask, seed=seed)
        sizes = np.bincount(fit.labels[mask], minlength=k)
        if k > 1 and sizes.min() < min_size:
            continue
        t = np.clip(fit.theta[j.pair[held], fit.labels[j.annotator[held]]], 1e-6, 1 - 1e-6)
        y = j.outcome[held]
        keep = mask[j.annotator[held]]
        score = float(np.mean((y * np.log(t) + (1 - y) * np.log(1 - t))[keep])) if keep.any() else -np.inf
        scores[str(k)] = score
        # Prefer fewer groups unless more groups clearly predict better (0.005 nats a judgment).
        if score > best_score + 0.005:
            best_k, best_score = k, score
    return latent_classes_fit(j, k=best_k, fit_mask=mask, seed=seed), scores


# --- Quality ---------------------------------------------------------------------------------------

def loo_agreement(j: Judgments, *, labels: IntArray, k: int) -> tuple[FloatArray, FloatArray, IntArray]:
    """Per annotator: agreement with the others of their own group, and with all others.

    For each judgment the majority of the *other* judgments on the same pair (within the
    annotator's group, and overall) is formed; ties and pairs nobody else judged are skipped.
    Descriptive only (the quality table and the reliability figure's x axis): flags use the
    model-based `group_reliability_em`. Returns (within-group rate, overall rate, informative
    judgments within group); NaN where an annotator had no informative judgment.
    """
    vote = 2 * j.outcome - 1  # +1 a, -1 b, 0 tie
    group = labels[j.annotator]
    by_pair_group = np.zeros((j.n_pairs, k))
    np.add.at(by_pair_group, (j.pair, group), vote)
    by_pair = by_pair_group.sum(axis=1)
    within_others = by_pair_group[j.pair, group] - vote
    overall_others = by_pair[j.pair] - vote

    def rate(others: FloatArray) -> tuple[FloatArray, IntArray]:
        informative = (others != 0) & (vote != 0)
        agree = (np.sign(others) == np.sign(vote)) & informative
        n = np.bincount(j.annotator, weights=informative, minlength=j.n_annotators)
        a = np.bincount(j.annotator, weights=agree, minlength=j.n_annotators)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, a / np.maximum(n, 1), np.nan), n.astype(np.int64)

    within, n_within = rate(within_others)
    overall, _ = rate(overall_others)
    return within, overall, n_within


@dataclass(frozen=True)
class GroupReliability:
    reliability: FloatArray  # [n_annotators]: P(reporting one's group's preference); NaN if not estimable
    evidence: IntArray  # [n_annotators]: non-tie judgments on pairs another fitted group member judged too
    preference: FloatArray  # [n_pairs, k]: posterior P(the group prefers canonical a); 0.5 where unjudged
    iterations: int


def group_reliability_em(
    j: Judgments, *, labels: IntArray, k: int, fit_mask: NDArray[np.bool_] | None = None,
    min_members: int = 3, max_iterations: int = 200, tol: float = 1e-6,
) -> GroupReliability:
    """Per-annotator reliability within their latent group: one-coin Dawid-Skene EM per group.

    Model (Dawid & Skene 1979, "Maximum likelihood estimation of observer error-rates using the
    EM algorithm", in its one-coin form for binary labels, e.g. Karger, Oh & Shah 2011): every
    latent group g has an unknown preferred side z[p, g] on each pair p, a priori a or b with
    probability 1/2 (a pair's canonical order says nothing); annotator i reports their group's
    side with probability q_i and the other side with 1 - q_i, independently per judgment. This
    is the EM over label correctness of LCPO-style latent preference models: the "truth" is the
    *group's* preference, not the crowd's, so a coherent minority that disagrees with everybody
    else is judged against its own members and is not taken for noise, while a random clicker
    reports their group's side half of the time wherever they are placed.

    E-step: P(z[p, g] = a) = sigmoid(Σ_votes (±1) · logit(q_i)) over the fitted members' votes.
    M-step: q_i = (expected correct votes + 1) / (votes + 2), a Beta(1, 1) posterior mean.

    Only judgments on pairs another fitted member of the group also judged enter the M-step:
    with the annotator's own vote alone the posterior just echoes it, and such judgments are
    exactly neutral at the fixed point (they only slow convergence). Ties report no side and
    are skipped. `fit_mask` marks annotators whose votes shape the group preferences (excluded
    participants are scored against them but do not shape them). With fewer than `min_members`
    fitted members a group's accuracies are not identifiable (two annotators who disagree could
    either be the careless one); their reliability is NaN.
    """
    mask = np.ones(j.n_annotators, bool) if fit_mask is None else fit_mask
    vote = j.outcome != 0.5
    a_side = j.outcome[vote] == 1.0
    who = j.annotator[vote]
    group = labels[who]
    cell = j.pair[vote] * k + group
    shaping = mask[who]
    sign = np.where(a_side, 1.0, -1.0)
    n_cells = j.n_pairs * k
    # Fitted votes on the cell other than the annotator's own (their repeats are theirs, not others').
    own_key = who.astype(np.int64) * n_cells + cell
    _, own_inverse, own_counts = np.unique(own_key, return_inverse=True, return_counts=True)
    fitted_in_cell = np.bincount(cell, weights=shaping, minlength=n_cells)
    others = fitted_in_cell[cell] - np.where(shaping, own_counts[own_inverse], 0)
    scored = others > 0
    evidence = np.bincount(who[scored], minlength=j.n_annotators).astype(np.int64)
    members = np.bincount(labels[mask], minlength=k)

    q = np.full(j.n_annotators, 0.8)  # equal weights: the first E-step is a majority vote
    post = np.full(n_cells, 0.5)
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        logit_q = np.log(np.clip(q, 1e-3, 1 - 1e-3) / np.clip(1 - q, 1e-3, 1 - 1e-3))
        llr = np.bincount(cell, weights=sign * logit_q[who] * shaping, minlength=n_cells)
        post = 1 / (1 + np.exp(-llr))
        correct = np.where(a_side, post[cell], 1 - post[cell])
        hits = np.bincount(who[scored], weights=correct[scored], minlength=j.n_annotators)
        new_q = (hits + 1) / (evidence + 2)
        change = float(np.max(np.abs(new_q - q))) if len(q) else 0.0
        q = new_q
        if change < tol:
            break
    estimable = (evidence > 0) & (members[labels] >= min_members)
    reliability = np.where(estimable, q, np.nan)
    return GroupReliability(reliability, evidence, post.reshape(j.n_pairs, k), iterations)


def self_consistency(j: Judgments) -> FloatArray:
    """Per annotator, over pairs they judged more than once: the share of repeats matching their
    most frequent answer on that pair. NaN for annotators without repeats."""
    key = j.annotator * (j.n_pairs + 1) + j.pair
    uniq, inverse = np.unique(key, return_inverse=True)
    counts = np.zeros((len(uniq), 3))
    side = np.where(j.outcome == 1.0, 0, np.where(j.outcome == 0.0, 1, 2))
    np.add.at(counts, (inverse, side), 1)
    n = counts.sum(axis=1)
    repeated = n >= 2
    owner = (uniq // (j.n_pairs + 1)).astype(np.int64)
    agree = np.bincount(owner[repeated], weights=counts.max(axis=1)[repeated], minlength=j.n_annotators)
    total = np.bincount(owner[repeated], weights=n[repeated], minlength=j.n_annotators)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, agree / np.maximum(total, 1), np.nan)


def time_robust_z(median_seconds: FloatArray) -> FloatArray:
    """Robust z (median/MAD, Iglewicz & Hoaglin 1993) of each participant's log median time per
    judgment; NaN where unknown. Log time: durations are right-skewed."""
    x = np.log(np.clip(median_seconds, 0.05, None))
    ok = np.isfinite(x)
    z = np.full(len(x), np.nan)
    if ok.sum() < 3:
        return z
    med = np.median(x[ok])
    mad = np.median(np.abs(x[ok] - med)) * 1.4826
    z[ok] = (x[ok] - med) / (mad if mad > 1e-9 else 1.0)
    return z


# --- Agreement ------------------------------------------------------------------------------------

def value_counts(j: Judgments, *, annotator_mask: NDArray[np.bool_] | None = None) -> FloatArray:
    """[units, 3] counts of (a, b, tie) per pair with at least two judgments (Krippendorff units)."""
    keep = np.ones(len(j.outcome), bool) if annotator_mask is None else annotator_mask[j.annotator]
    side = np.where(j.outcome == 1.0, 0, np.where(j.outcome == 0.0, 1, 2))
    counts = np.zeros((j.n_pairs, 3))
    np.add.at(counts, (j.pair[keep], side[keep]), 1)
    return counts[counts.sum(axis=1) >= 2]


def _unit_coincidences(counts: FloatArray) -> FloatArray:
    """[units, 3, 3]: each unit's contribution to the coincidence matrix (Krippendorff 2011, eq. 2)."""
    m = counts.sum(axis=1)
    outer = counts[:, :, None] * counts[:, None, :]
    outer[:, range(3), range(3)] -= counts
    return outer / (m - 1)[:, None, None]


def _alpha_from_coincidences(o: FloatArray) -> FloatArray:
    """Nominal alpha from coincidence matrices [..., 3, 3]: 1 - (n-1) Σ_{c≠k} o_ck / Σ_{c≠k} n_c n_k."""
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    off = ~np.eye(3, dtype=bool)
    observed = (o * off).sum(axis=(-1, -2))
    expected = ((n_c[..., :, None] * n_c[..., None, :]) * off).sum(axis=(-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(expected > 0, 1 - (n - 1) * observed / np.where(expected > 0, expected, 1), np.nan)


def krippendorff_alpha_ci(
    counts: FloatArray, *, resamples: int = 200, seed: int = 0, level: float = 0.95,
) -> dict[str, float | int | None]:
    """Nominal Krippendorff's alpha (via the `krippendorff` package) with a bootstrap CI over units.

    The bootstrap resamples pairs (units) with replacement and recomputes alpha from the summed
    per-unit coincidences, which is exact and vectorised (no re-call per resample).
    """
    import krippendorff

    units = len(counts)
    if units < 2 or np.count_nonzero(counts.sum(axis=0)) < 2:
        return {"alpha": None, "low": None, "high": None, "units": units}
    alpha = float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))
    per_unit = _unit_coincidences(counts).reshape(units, 9)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(units, np.full(units, 1 / units), size=resamples).astype(np.float64)
    boot = _alpha_from_coincidences((draws @ per_unit).reshape(resamples, 3, 3))
    boot = boot[np.isfinite(boot)]
    tail = (1 - level) / 2 * 100
    low, high = (np.percentile(boot, [tail, 100 - tail]) if len(boot) else (np.nan, np.nan))
    return {"alpha": _num(alpha), "low": _num(low), "high": _num(high), "units": units}


# --- Groups and demographics ---------------------------------------------------------------------

def cramers_v(labels: list[int], values: list[str]) -> dict[str, float | int | None]:
    """Cramér's V of two categorical variables with the chi-square test's p-value (scipy)."""
    groups, g_idx = np.unique(np.asarray(labels), return_inverse=True)
    cats, c_idx = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    n = len(labels)
    if len(groups) < 2 or len(cats) < 2:
        return {"v": None, "p": None, "n": n, "chi2": None, "dof": None}
    table = np.zeros((len(groups), len(cats)))
    np.add.at(table, (g_idx, c_idx), 1)
    chi2, p, dof, _ = chi2_contingency(table, correction=False)
    v = np.sqrt(chi2 / (n * (min(table.shape) - 1)))
    return {"v": _num(v), "p": _num(p), "n": n, "chi2": _num(chi2), "dof": int(dof)}


def map_coordinates(features: FloatArray) -> tuple[FloatArray, list[float]]:
    """2-D coordinates of annotators: the features themselves when there are two, else PCA.

    Returns the coordinates and the share of variance each axis explains (PCA) or [] (raw).
    """
    if features.shape[1] == 2:
        return features, []
    centered = features - features.mean(axis=0)
    if features.shape[1] < 2 or features.shape[0] < 2:
        padded = np.zeros((features.shape[0], 2))
        padded[:, : min(2, features.shape[1])] = features[:, :2]
        return padded, []
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    coords = u[:, :2] * s[:2]
    share = (s**2 / max(float((s**2).sum()), 1e-12))[:2]
    return coords, [float(x) for x in share]


# Corners of the K = 3 simplex drawn as an equilateral triangle (group 1 left, 2 right, 3 on top).
SIMPLEX_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])


def latent_weight_coordinates(weights: FloatArray, *, seed: int = 0) -> tuple[FloatArray, str, list[float]]:
    """2-D positions of annotators from their mixture weights over K groups (rows on the simplex).

    K = 3: barycentric coordinates, w @ corners of an equilateral triangle, so a pure member of
    a group sits on its corner and an even mix in the centre. K = 2: the weight on group 2 along
    a line (y is a small seeded jitter so dots do not hide each other). K ≥ 4: the first two
    principal components of the weights. Rows with NaN stay NaN.
    Returns (coordinates, "line" | "simplex" | "pca", share of variance per PCA axis or []).
    """
    n, k = weights.shape
    coords = np.full((n, 2), np.nan)
    ok = np.isfinite(weights).all(axis=1)
    if k == 2:
        jitter = np.random.default_rng(seed).uniform(-0.3, 0.3, int(n))  # int(): a size, so an array
        coords[ok] = np.column_stack([weights[ok, 1], jitter[ok]])
        return coords, "line", []
    if k == 3:
        coords[ok] = weights[ok] @ SIMPLEX_CORNERS
        return coords, "simplex", []
    placed, explained = map_coordinates(weights[ok]) if ok.any() else (np.zeros((0, 2)), [])
    coords[ok] = placed
    return coords, "pca", explained


def group_agreement_features(j: Judgments, theta: FloatArray) -> FloatArray:
    """[n_annotators, k]: how often each annotator's choices match each group's predicted side."""
    k = theta.shape[1]
    predicted_a = theta[j.pair] > 0.5  # [n, k]
    informative = j.outcome != 0.5
    agree = (predicted_a == (j.outcome[:, None] == 1.0)) & informative[:, None]
    out = np.zeros((j.n_annotators, k))
    np.add.at(out, j.annotator, agree.astype(float))
    n = np.bincount(j.annotator, weights=informative, minlength=j.n_annotators)
    return out / np.maximum(n, 1)[:, None]


# --- Divisive pairs and bridging responses -------------------------------------------------------

def group_pair_counts(j: Judgments, *, labels: IntArray, k: int) -> tuple[FloatArray, FloatArray]:
    """Per pair and group: (wins of canonical a, judgments). Ties count half."""
    wins = np.zeros((j.n_pairs, k))
    total = np.zeros((j.n_pairs, k))
    np.add.at(wins, (j.pair, labels[j.annotator]), j.outcome)
    np.add.at(total, (j.pair, labels[j.annotator]), 1.0)
    return wins, total


def divisive_scores(wins: FloatArray, total: FloatArray, *, min_judgments: int = 2) -> FloatArray:
    """Spread (max − min over groups) of each group's P(a ≻ b), Beta(1,1)-smoothed.

    Only groups with `min_judgments` on the pair take part; a pair seen by fewer than two such
    groups scores 0. The smoothing shrinks thinly judged pairs towards 0.5, so a spread of one
    lucky vote does not outrank a consistent split.
    """
    p = (wins + 1) / (total + 2)
    seen = total >= min_judgments
    hi = np.where(seen, p, -np.inf).max(axis=1)
    lo = np.where(seen, p, np.inf).min(axis=1)
    return np.where(seen.sum(axis=1) >= 2, hi - lo, 0.0)


def response_win_rates(
    wins: FloatArray, total: FloatArray, *, pair_a: IntArray, pair_b: IntArray, n_responses: int,
) -> FloatArray:
    """[n_responses, k]: each group's mean smoothed win probability of a response over its judged pairs.

    NaN where the group judged none of the response's pairs.
    """
    p = (wins + 1) / (total + 2)
    seen = (total > 0).astype(float)
    k = wins.shape[1]
    s = np.zeros((n_responses, k))
    n = np.zeros((n_responses, k))
    np.add.at(s, pair_a, p * seen)
    np.add.at(s, pair_b, (1 - p) * seen)
    np.add.at(n, pair_a, seen)
    np.add.at(n, pair_b, seen)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def bridging_scores(rates: FloatArray) -> FloatArray:
    """Minimum over groups of the win rate (NaN unless every group judged the response)."""
    return np.where(np.isnan(rates).any(axis=1), np.nan, np.nan_to_num(rates, nan=1.0).min(axis=1))


# --- Bradley-Terry rankings -------------------------------------------------------------------------

def bradley_terry(
    pair_a: IntArray, pair_b: IntArray, wins_a: FloatArray, total: FloatArray, *, n_responses: int,
    prompt_of: IntArray, iterations: int = 200, prior: float = 0.5,
) -> FloatArray:
    """Log-strengths by Hunter's (2004) MM algorithm, centred within each prompt.

    Pairs of every prompt are fitted at once (prompts never meet, so they separate). `prior`
    virtual wins on each side of every judged pair keep unbeaten responses finite.
    """
    judged = total > 0
    a, b = pair_a[judged], pair_b[judged]
    w_a = wins_a[judged] + prior
    w_b = total[judged] - wins_a[judged] + prior
    n = w_a + w_b
    wins = np.bincount(a, w_a, n_responses) + np.bincount(b, w_b, n_responses)
    strength = np.ones(n_responses)
    active = wins > 0
    for _ in range(iterations):
        denom = n / (strength[a] + strength[b])
        d = np.bincount(a, denom, n_responses) + np.bincount(b, denom, n_responses)
        new = np.where(active, wins / np.where(d > 0, d, 1), 1.0)
        # Rescale within each prompt (geometric mean 1), which keeps the MM iterates bounded.
        log_new = np.log(new)
        means = np.bincount(prompt_of, log_new * active, prompt_of.max() + 1 if len(prompt_of) else 0)
        counts = np.bincount(prompt_of, active.astype(float), prompt_of.max() + 1 if len(prompt_of) else 0)
        log_new -= (means / np.maximum(counts, 1))[prompt_of]
        new = np.exp(log_new)
        if np.max(np.abs(new - strength)) < 1e-7:
            strength = new
            break
        strength = new
    return np.where(active, np.log(strength), np.nan)


def bradley_terry_bootstrap(
    j: Judgments, *, pair_a: IntArray, pair_b: IntArray, n_responses: int, prompt_of: IntArray,
    resamples: int = 30, seed: int = 0, level: float = 0.95,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(log-strength, low, high) per response; the CI from a Poisson bootstrap over judgments."""

    def fit(weights: FloatArray) -> FloatArray:
        # bradley_terry takes float sums. Weighted bincount gives float64 (no copy then) except on
        # empty input, where numpy returns int64 zeros, and numpy's stubs type every bincount as intp.
        wins = np.bincount(j.pair, weights * j.outcome, j.n_pairs).astype(np.float64, copy=False)
        total = np.bincount(j.pair, weights, j.n_pairs).astype(np.float64, copy=False)
        return bradley_terry(pair_a, pair_b, wins, total, n_responses=n_responses, prompt_of=prompt_of)

    point = fit(np.ones(len(j.outcome)))
    rng = np.random.default_rng(seed)
    boots = np.array([fit(rng.poisson(1.0, len(j.outcome)).astype(float)) for _ in range(resamples)])
    tail = (1 - level) / 2 * 100
    low = high = np.full(n_responses, np.nan)
    if resamples:
        # Responses never judged are NaN in every resample; their all-NaN columns warn, harmlessly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanpercentile(boots, [tail, 100 - tail], axis=0)
    return point, np.asarray(low), np.asarray(high)


def _num(x: float | np.floating) -> float | None:
    """A JSON-safe float: NaN and infinities become None."""
    x = float(x)
    return x if np.isfinite(x) else None

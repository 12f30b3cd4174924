"""Active pair selection for the annotator flow: the chooser behind the non-random policies.

`pair_choose_model` is registered in `annotation.services.PAIR_CHOOSERS` by `ModelingConfig.ready`
(annotation never imports modeling). It returns `(pair id, recorded policy)` (pair id None: nothing
left to serve), or None to let annotation's own random SQL serve. Per request it needs no forward pass: the current run's
per-prototype and per-particle pair probabilities (PairScores) are held in a per-process cache keyed
by run id as contiguous float32 arrays, the participant's posterior over the particles (the training
annotators' weight vectors and the K prototypes; over the prototypes alone for rows stored without
particles) is recomputed exactly from their answers so far (so it moves after every judgment, long
before the next retrain), and `modeling.core.selection.choose` picks among the whole pool with the
pairs they have been served masked out (no copy of the candidate rows).

annotation calls it under the participant lock when a GET finds no pair outstanding and, under a
model policy, in each submission just before the judgment is stored (judgment_submit), with the
answer being submitted (`pending`) counted as given, so it is in the posterior of the next choice;
the submission's one statement then stores the answer and serves the chosen pair.

Attention checks are mixed in exactly as annotation's random chooser does it (each one served once,
at a random position within the quota). Without a current model with pair scores, or on any
error, it returns None (annotation's random chooser serves) and the reason is logged.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from django.db import connection

from annotation.models import Judgment, Participant, ServedPair
from annotation.selectors import hot_cursor
from elicitation.models import Pair, Study
from modeling.core import selection
from modeling.models import PairScores, StudyModel

if TYPE_CHECKING:
    from annotation.services import PendingAnswer

logger = logging.getLogger(__name__)

# Information gain (nats) below which no pair is worth asking for the annotator's sake (the
# particles have all but collapsed): `information_gain` then serves by coverage, recorded as
# "info_gain:coverage", which at least helps the pool's overlap. 0 turns this off.
MIN_GAIN = 1e-4
SCORES_CACHE_SIZE = 8
# What Judgment.policy / ServedPair.policy record (max_length 20) for each chooser outcome.
RECORDED_POLICY = {"mixed:information_gain": "mixed:info_gain", "information_gain:coverage": "info_gain:coverage",
                   "mixed:information_gain:coverage": "mixed:coverage"}
ATTENTION_CHECK_POLICY = "attention_check"

_rng = np.random.default_rng()  # module-level so tests can seed it


@dataclass(frozen=True)
class CachedScores:
    """One run's PairScores as read-only arrays aligned by position, pair ids ascending.

    Float32 and C-contiguous: the per-request products read them in place (a float64 copy of the
    particle matrix would cost more than the products).
    """

    run_id: int
    pair_ids: np.ndarray
    prompt_ids: np.ndarray
    prompt_codes: np.ndarray  # [n] the prompt of each pair as 0..P-1 (prompt balance by bincount)
    probs: np.ndarray  # [n, K] float32
    entropy: np.ndarray  # [n, K] binary entropies of probs (posterior-free part of information gain)
    prior: np.ndarray  # [K]
    # Particles are held transposed, [M, n] C-contiguous: the particles that still matter for a
    # participant are then a gather of whole rows (see `_choose`).
    particle_probs_t: np.ndarray | None = None  # [M, n] float32 P(a), None for rows without particles
    particle_entropy_t: np.ndarray | None = None  # [M, n] entropy of the answer
    particle_probs_b_t: np.ndarray | None = None  # [M, n] P(b) when the model has ties (tie_nu), else None
    particle_prior: np.ndarray | None = None  # [M]
    tie_nu: float | None = None
    n_prompts: int = 0
    # Information gain of every pair at the prior: a participant's first choice, the same for all.
    prior_gain: np.ndarray | None = None


_scores: OrderedDict[int, CachedScores] = OrderedDict()
_scores_lock = threading.Lock()


Choice = tuple[int | None, str]


@dataclass(frozen=True)
class ServingState:
    """What one choice reads from the database, in one statement (see `_serving_state`)."""

    scores_id: int | None
    run_id: int | None
    served: list[tuple[int, str | None]]  # (pair id, choice in the pair's stored order, None if unanswered)
    checks: list[int]  # the study's attention-check pairs
    pending_counted: bool = False  # an answer being submitted is counted in `served`


def pair_choose_model(*, participant: Participant, pending: PendingAnswer | None = None) -> Choice | None:
    """`(pair id, policy that chose it)` for the participant's next pair, or None: serve with random.

    With `pending` (annotation.services.PAIR_CHOOSERS) the choice is the one that follows that
    answer: it counts in the posterior, the quota and the attention checks' odds. When it names no
    served pair outstanding, the submission will store nothing: None, without choosing.
    """
    study = participant.study
    try:
        state = _serving_state(participant=participant, pending=pending)
        if state is None:
            return None
        if state.scores_id is None or state.run_id is None:
            if StudyModel.objects.filter(study_id=study.pk, current_run__isnull=False).exists():
                logger.warning("Active serving of study %s fell back to random: the current model has no pair "
                               "scores yet (is the refresh task running?).", study.slug)
            return None
        scores = _scores_cached(scores_id=state.scores_id, run_id=state.run_id)
        return _choose(participant=participant, study=study, scores=scores, state=state)
    except Exception as exc:  # a broken cache row or model must never stop annotators
        logger.warning("Active serving of study %s fell back to random: %s: %s",
                       study.slug, type(exc).__name__, exc)
        return None


def _serving_state(*, participant: Participant, pending: PendingAnswer | None) -> ServingState | None:
    """The current run's PairScores id, the participant's served pairs with their answers, and the
    study's attention checks: one round trip (hand-written: compiling three querysets cost more
    CPU than running them; through annotation's hot_cursor, so psycopg prepares it). The side shown
    on the left is `left_response` (a judgment's `response_a`); when that is the pair's `response_b`,
    a/b swap to express the choice in the pair's stored order. The served pair `pending` names, if
    still unanswered, is answered `pending.choice`; None when it names no outstanding served pair.
    """
    params = [participant.study_id, None if pending is None else _served_id_db(pending.served_id),
              participant.pk, participant.study_id, True]
    with hot_cursor() as cursor:
        cursor.execute(_serving_state_sql(), params)
        rows = cursor.fetchall()
    swap = {"a": "b", "b": "a", "tie": "tie"}
    scores_id = run_id = None
    served: list[tuple[int, str | None]] = []
    checks: list[int] = []
    counted = False
    for kind, ident, run, choice, same_order, is_pending in rows:
        if kind == 0:
            scores_id, run_id = ident, run
        elif kind == 1:
            if is_pending and choice is None and pending is not None:
                choice, counted = pending.choice, True
            served.append((ident, None if choice is None else choice if same_order else swap[choice]))
        else:
            checks.append(ident)
    if pending is not None and not counted:
        return None
    return ServingState(scores_id=scores_id, run_id=run_id, served=served, checks=checks, pending_counted=counted)


@functools.cache
def _serving_state_sql() -> str:
    """The statement of _serving_state (built once per process, whitespace squeezed for psycopg's
    statement cache). Columns: kind (0 scores, 1 served pair, 2 attention check), id, run id,
    choice as shown, shown in the stored order, is the pending served pair."""
    t = {model.__name__: connection.ops.quote_name(model._meta.db_table)
         for model in (PairScores, StudyModel, ServedPair, Judgment, Pair)}
    sql = f"""
        SELECT 0, ps.id, ps.run_id, NULL, NULL, NULL FROM {t["PairScores"]} ps
        WHERE ps.run_id = (SELECT current_run_id FROM {t["StudyModel"]} WHERE study_id = %s)
        UNION ALL
        SELECT 1, s.pair_id, NULL, j.choice, CASE WHEN s.left_response_id = p.response_a_id THEN 1 ELSE 0 END,
            CASE WHEN s.id = %s THEN 1 ELSE 0 END
        FROM {t["ServedPair"]} s INNER JOIN {t["Pair"]} p ON p.id = s.pair_id
        LEFT JOIN {t["Judgment"]} j ON j.served_pair_id = s.id
        WHERE s.participant_id = %s
        UNION ALL
        SELECT 2, id, NULL, NULL, NULL, NULL FROM {t["Pair"]}
        WHERE correct_response_id IS NOT NULL AND study_id = %s AND is_attention_check = %s
    """
    return " ".join(sql.split())


def _served_id_db(served_id: object) -> object:
    """A served pair's id as the database takes it (SQLite: hex text)."""
    return ServedPair._meta.get_field("id").get_db_prep_value(served_id, connection)


def _scores_cached(*, scores_id: int, run_id: int) -> CachedScores:
    with _scores_lock:
        cached = _scores.get(run_id)
        if cached is not None:
            _scores.move_to_end(run_id)
            return cached
    cached = _scores_load(scores_id=scores_id)
    with _scores_lock:
        _scores[run_id] = cached
        while len(_scores) > SCORES_CACHE_SIZE:
            _scores.popitem(last=False)
    return cached


def _scores_load(*, scores_id: int) -> CachedScores:
    """Decode a PairScores row; raises ValueError when its arrays do not fit together."""
    row = PairScores.objects.get(pk=scores_id)
    n, k, m = int(row.n_pairs), int(row.k), len(row.particle_prior or [])
    blobs = bytes(row.pair_ids), bytes(row.prompt_ids), bytes(row.proto_probs), bytes(row.particle_probs or b"")
    prior = np.asarray(row.prior, dtype=np.float64)
    if tuple(len(b) for b in blobs) != (8 * n, 8 * n, 4 * n * k, 4 * n * m) or prior.shape != (k,):
        raise ValueError(f"pair scores {scores_id} of run {row.run_id} are corrupt (n={n}, K={k}, M={m}: "
                         f"{'/'.join(str(len(b)) for b in blobs)} bytes of ids/prompts/probabilities/particles, "
                         f"prior {prior.shape})")
    pair_ids = np.frombuffer(blobs[0], dtype="<i8")
    prompt_ids = np.frombuffer(blobs[1], dtype="<i8")
    if n and np.any(np.diff(pair_ids) <= 0):
        raise ValueError(f"pair scores {scores_id} of run {row.run_id}: pair ids are not ascending")
    probs = _matrix(blobs[2], n, k)
    particle_probs_t = _matrix(blobs[3], n, m, transpose=True) if m else None
    particle_probs_b_t = particle_entropy_t = None
    if particle_probs_t is not None:
        if row.tie_nu is not None:
            # The answer is three-way (a, b, tie): hold P(a) and P(b), the gain is over all three.
            a, b = selection.davidson_outcomes(particle_probs_t, row.tie_nu)
            particle_probs_t, particle_probs_b_t = _frozen(a), _frozen(b)
            particle_entropy_t = _frozen(selection.outcome_entropy(a, b))
        else:
            particle_entropy_t = _entropy32(particle_probs_t)
    _, prompt_codes = np.unique(prompt_ids, return_inverse=True)
    cached = CachedScores(
        run_id=row.run_id, pair_ids=pair_ids, prompt_ids=prompt_ids, prompt_codes=prompt_codes.astype(np.intp),
        probs=probs, entropy=_entropy32(probs), prior=prior,
        particle_probs_t=particle_probs_t, particle_entropy_t=particle_entropy_t, particle_probs_b_t=particle_probs_b_t,
        particle_prior=np.asarray(row.particle_prior, dtype=np.float64) if m else None, tie_nu=row.tie_nu,
        n_prompts=int(prompt_codes.max()) + 1 if n else 0,
    )
    if cached.particle_probs_t is not None and cached.particle_prior is not None:
        gain = selection.information_gain(
            cached.particle_probs_t.T, cached.particle_prior, cached.particle_entropy_t.T,
            None if cached.particle_probs_b_t is None else cached.particle_probs_b_t.T)
    else:
        gain = selection.information_gain(cached.probs, cached.prior, cached.entropy)
    gain.setflags(write=False)
    return dataclasses.replace(cached, prior_gain=gain)


def _matrix(blob: bytes, n: int, columns: int, *, transpose: bool = False) -> np.ndarray:
    """A native-order, C-contiguous, read-only float32 copy of a little-endian [n, columns] blob
    (`transpose`: as [columns, n])."""
    matrix = np.frombuffer(blob, dtype="<f4").reshape(n, columns)
    out = np.ascontiguousarray(matrix.T if transpose else matrix, dtype=np.float32)
    out.setflags(write=False)
    return out


def _entropy32(probs: np.ndarray) -> np.ndarray:
    return _frozen(selection.binary_entropy(probs))


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(array, dtype=np.float32)
    out.setflags(write=False)
    return out


def _choose(*, participant: Participant, study: Study, scores: CachedScores, state: ServingState) -> Choice | None:
    served = state.served
    served_pair_ids = {pair_id for pair_id, _ in served}
    checks = [pair_id for pair_id in state.checks if pair_id not in served_pair_ids]
    judgments_left = max(1, study.judgments_per_participant - participant.judgment_count - state.pending_counted)
    if checks and random.random() < len(checks) / judgments_left:
        return random.choice(checks), ATTENTION_CHECK_POLICY

    n = scores.pair_ids.shape[0]
    served_ids = np.fromiter((s[0] for s in served), dtype=np.int64, count=len(served))
    pos = np.searchsorted(scores.pair_ids, served_ids)
    known = (pos < n) & (scores.pair_ids[np.minimum(pos, n - 1)] == served_ids) if n else np.zeros(0, bool)
    available = np.ones(n, dtype=bool)
    available[pos[known]] = False
    if not available.any():
        # Everything scored was served; pairs added since the refresh may remain: random serves them.
        return None

    posterior = _posterior(scores=scores, served=served, known=known, positions=pos)
    answered = any(choice is not None for _, choice in served)
    particle_probs = particle_entropy = particle_probs_b = None
    if scores.particle_probs_t is not None and scores.particle_entropy_t is not None:
        particle_probs, particle_entropy = scores.particle_probs_t.T, scores.particle_entropy_t.T
        particle_probs_b = None if scores.particle_probs_b_t is None else scores.particle_probs_b_t.T
        keep = selection.plausible(posterior)
        if keep.size <= posterior.size // 8:
            # Only the particles the answers left plausible (selection.plausible): once they are few,
            # gathering their rows and reading the transposes as [n, M'] views costs less than the
            # products over all M (with more than an eighth kept, the copy costs more than it saves).
            posterior = posterior[keep] / posterior[keep].sum()
            particle_probs, particle_entropy = scores.particle_probs_t[keep].T, scores.particle_entropy_t[keep].T
            if scores.particle_probs_b_t is not None:
                particle_probs_b = scores.particle_probs_b_t[keep].T
    policy = study.selection_policy
    deficit = np.zeros(n)
    if policy in (Study.SelectionPolicy.RANDOM, Study.SelectionPolicy.MIXED):
        deficit = _coverage_deficit(study=study, pair_ids=scores.pair_ids)
    candidates = selection.Candidates(
        proto_probs=scores.probs, coverage_deficit=deficit,
        prompt_seen=_prompt_seen(scores=scores, served_positions=pos[known]),
        proto_entropy=scores.entropy, particle_probs=particle_probs, particle_entropy=particle_entropy,
        particle_probs_b=particle_probs_b, available=available,
        gain=None if answered else scores.prior_gain,
    )
    chosen, used = selection.choose(str(policy), candidates, posterior, scores.prior, _rng,
                                    epsilon=study.mixed_epsilon, min_gain=MIN_GAIN)
    return int(scores.pair_ids[chosen]), RECORDED_POLICY.get(used, used)


def _posterior(*, scores: CachedScores, served: list[tuple[int, str | None]], known: np.ndarray,
               positions: np.ndarray) -> np.ndarray:
    """Exact Bayes from the run's prior after all answered judgments (selection.posterior_from_answers):
    over the particles when the row has them, else over the K prototypes."""
    rows = [(p, served[i][1]) for i, p in zip(np.flatnonzero(known), positions[known], strict=True)
            if served[i][1] is not None]
    if not rows:
        return (scores.prior if scores.particle_prior is None else scores.particle_prior).copy()
    answered, choices = [p for p, _ in rows], np.array([c for _, c in rows])
    if scores.particle_probs_t is not None and scores.particle_prior is not None:
        probs = scores.particle_probs_t[:, answered].T.astype(np.float64)
        if scores.particle_probs_b_t is not None:  # held as Davidson's P(a), P(b): back to P(a ≻ b | not tie)
            probs = probs / (probs + scores.particle_probs_b_t[:, answered].T)
        return selection.posterior_from_answers(scores.particle_prior, probs, choices, scores.tie_nu)
    return selection.posterior_from_answers(scores.prior, scores.probs[answered], choices)


def _prompt_seen(*, scores: CachedScores, served_positions: np.ndarray) -> np.ndarray:
    """For every scored pair, how often this participant has been served a pair of its prompt."""
    if served_positions.size == 0:
        return np.zeros(scores.pair_ids.shape[0])
    counts = np.bincount(scores.prompt_codes[served_positions], minlength=scores.n_prompts)
    return counts[scores.prompt_codes]


def _coverage_deficit(*, study: Study, pair_ids: np.ndarray) -> np.ndarray:
    """`overlap_target − judgment_count` of each candidate (one query, over judged pairs only)."""
    table = connection.ops.quote_name(Pair._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, judgment_count FROM {table} WHERE study_id = %s AND judgment_count > 0",
                       [study.pk])
        judged = cursor.fetchall()
    counts = np.zeros(pair_ids.shape[0])
    if judged:
        ids = np.array([r[0] for r in judged], dtype=np.int64)
        values = np.array([r[1] for r in judged], dtype=np.float64)
        order = np.argsort(ids)
        ids, values = ids[order], values[order]
        where = np.minimum(np.searchsorted(ids, pair_ids), ids.size - 1)
        counts = np.where(ids[where] == pair_ids, values[where], 0.0)
    return float(study.overlap_target) - counts

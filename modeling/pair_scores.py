"""Per-prototype pair probabilities of a study's pool, computed once per training run.

Active serving (modeling.serving) scores thousands of candidate pairs per request; running the
network then would cost tens of milliseconds. After a run becomes current, `pair_scores_refresh`
embeds the pool's responses through the embedding cache, computes `P(a ≻ b | prototype k)` for
every pool pair in batches and stores the `[n, K]` matrix as one PairScores row. With it go the
particles of information gain (the training annotators' weight vectors plus the K prototypes, see
`modeling.core.selection.particles_from_weights`) and the `[n, M]` matrix of P(a ≻ b) under each, so
that serving does no forward pass and no per-pair mixing either.
"""

from __future__ import annotations

import logging

import numpy as np
from django.db import transaction

from elicitation.models import Pair
from modeling.core import selection
from modeling.models import PairScores, TrainingRun
from modeling.selectors import training_run_artifact_folder

logger = logging.getLogger(__name__)

# Pairs per forward pass: bounded memory (two [batch, dim] embedding blocks) at any pool size.
SCORE_BATCH = 4096
# The particle matrix is [n_pairs, M] float32, and serving reads it three times per choice (P(a),
# P(b), answer entropy): at most MAX_PARTICLES columns, and fewer past PARTICLE_CELLS cells, which
# bounds a choice's products to ~3M multiply-adds (~1 ms) and a run's cache to ~16 MB: a pool of
# 3,400 pairs keeps 256 particles, 10,000 pairs keep 99, 100,000 pairs keep 10.
MAX_PARTICLES = 256
PARTICLE_CELLS = 1_000_000


class PairScoresUnavailable(Exception):
    """The run has no saved model to score the pool with (not finished, or its files are gone)."""


def pair_scores_refresh(*, run_id: int) -> PairScores:
    """Compute and store the run's per-prototype probabilities of every non-attention-check pool pair.

    Idempotent: a second call replaces the row. The embedding and the forward passes happen
    before the (short) write transaction.
    """
    from modeling.core.models import RewardModel  # torch: only in workers and commands
    from modeling.embedding_cache import embeddings_for_texts

    run = TrainingRun.objects.select_related("study").get(pk=run_id)
    folder = training_run_artifact_folder(run=run)
    if folder is None:
        raise PairScoresUnavailable(f"Run {run_id} has no saved model (status {run.status}).")
    model = RewardModel.load(folder)
    rows = list(
        Pair.objects.filter(study_id=run.study_id, is_attention_check=False)
        .order_by("id")
        .values_list("id", "prompt_id", "response_a__text", "response_b__text", "prompt__text")
    )
    k = int(model.k)
    room = max(k + 1, min(MAX_PARTICLES, PARTICLE_CELLS // max(len(rows), 1)))
    particles, particle_prior = selection.particles_from_weights(model.annotator_weights, max_particles=room)
    probs = np.zeros((len(rows), k), dtype=np.float32)
    particle_probs = np.zeros((len(rows), particles.shape[0]), dtype=np.float32)
    for start in range(0, len(rows), SCORE_BATCH):
        batch = rows[start:start + SCORE_BATCH]
        emb = embeddings_for_texts(texts=[r[2] for r in batch] + [r[3] for r in batch],
                                   model_name=model.embedding_model)
        prompt_emb = None
        if model.net.use_prompt:
            prompt_emb = embeddings_for_texts(texts=[r[4] for r in batch], model_name=model.embedding_model)
        n = len(batch)
        logits = model.prototype_pair_logits(emb[:n], emb[n:], prompt_emb)
        probs[start:start + n] = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
        particle_probs[start:start + n] = selection.particle_pair_probs(logits, particles)
    pair_ids = np.array([r[0] for r in rows], dtype="<i8")
    prompt_ids = np.array([r[1] for r in rows], dtype="<i8")
    prior = [float(x) for x in np.asarray(model.population_weights, dtype=np.float64)]
    with transaction.atomic():
        scores, _ = PairScores.objects.update_or_create(
            run=run,
            defaults={
                "study_id": run.study_id, "k": k, "n_pairs": len(rows), "prior": prior,
                "pair_ids": pair_ids.tobytes(), "prompt_ids": prompt_ids.tobytes(),
                "proto_probs": np.ascontiguousarray(probs, dtype="<f4").tobytes(),
                "particles": particles.round(6).tolist(), "particle_prior": [float(x) for x in particle_prior],
                "particle_probs": np.ascontiguousarray(particle_probs, dtype="<f4").tobytes(),
                "tie_nu": None if model.log_nu is None else float(np.exp(model.log_nu)),
            },
        )
    logger.info("Pair scores of run %s: %s pairs, K=%s, %s particles.", run_id, len(rows), k, particles.shape[0])
    return scores


def pair_scores_refresh_enqueue(*, run_id: int) -> None:
    """Queue the refresh task (called on commit when a run becomes current).

    A broker that refuses the message must not fail the training run that triggered it: serving
    falls back to the random policy until the scores exist, and says so in its log.
    """
    from modeling.tasks import refresh_pair_scores  # the task module imports the services

    try:
        refresh_pair_scores.delay(run_id)
    except Exception as exc:  # kombu OperationalError, redis errors…: whatever stops the publish
        logger.warning("Could not queue the pair-score refresh of run %s: %s: %s", run_id, type(exc).__name__, exc)

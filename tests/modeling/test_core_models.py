"""Reward-model engine (modeling.core): fitting, K choice, ties, adaptation, persistence.

Uses small planted worlds on random unit-norm "embeddings" so no sentence model is needed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from modeling.core import (
    InsufficientDataError,
    PreferenceData,
    RewardModel,
    TrainConfig,
    adjusted_rand_index,
    fit,
    predict_logits,
)

FAST = dict(epochs=200, hidden_dim=32, latent_dim=8, dropout=0.0, weight_decay=0.01)


def planted_world(seed: int, *, n_groups: int = 2, n_texts: int = 60, d: int = 16, n_ann: int = 30,
                  per_ann: int = 80, tie_nu: float = 0.0, scale: float = 4.0) -> tuple[PreferenceData, np.ndarray, dict]:
    """Annotators in ``n_groups`` groups, each with a linear reward ``x . v_g`` on unit vectors.

    Returns the data, the true group of each annotator and the ground truth (X, V, groups).
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_texts, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    V = scale * rng.normal(size=(n_groups, d))
    if n_groups == 2:
        V[1] = -V[0]  # the two groups disagree on every pair
    groups = np.arange(n_ann) % n_groups
    ann = np.repeat(np.arange(n_ann), per_ann)
    a = rng.integers(n_texts, size=len(ann))
    b = (a + rng.integers(1, n_texts, size=len(ann))) % n_texts
    util = X @ V.T
    diff = util[a, groups[ann]] - util[b, groups[ann]]
    z = np.stack([diff / 2, -diff / 2, np.full_like(diff, np.log(tie_nu) if tie_nu > 0 else -np.inf)], 1)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    choice = (rng.random(len(ann))[:, None] > np.cumsum(p, 1)).sum(1).clip(0, 2)
    data = PreferenceData(X=X.astype(np.float32), a_idx=a, b_idx=b, annotator_idx=ann, choice=choice,
                          annotator_ids=[f"ann-{i}" for i in range(n_ann)])
    return data, groups, {"X": X, "V": V, "util": util}


@pytest.mark.parametrize("kind", ["pal-a", "pal-b"])
def test_mixture_recovers_planted_groups(kind: str) -> None:
    data, groups, _ = planted_world(0)
    res = fit(data, TrainConfig(kind=kind, k=2, **FAST))
    assert res.k == 2
    assert res.annotator_weights.shape == (30, 2)
    np.testing.assert_allclose(res.annotator_weights.sum(1), 1.0, atol=1e-6)
    assert adjusted_rand_index(groups, res.annotator_weights.argmax(1)) == pytest.approx(1.0)
    btl = fit(data, TrainConfig(kind="btl", **FAST))
    assert res.metrics["train"]["accuracy"] > btl.metrics["train"]["accuracy"] + 0.2
    assert res.metrics["train"]["worst_group_accuracy"] > 0.8


def test_auto_k_finds_groups_and_k1_on_homogeneous_data() -> None:
    cfg = TrainConfig(kind="pal-b", k="auto", k_range=(1, 3), **FAST)
    hetero, _, _ = planted_world(1, n_groups=3)
    assert fit(hetero, cfg).k == 3
    homo, _, _ = planted_world(2, n_groups=1)
    res = fit(homo, cfg)
    assert res.k == 1, res.k_selection
    assert set(res.k_selection["val_ll"]) == {"1", "2", "3"}


def test_ties_use_davidson_likelihood() -> None:
    data, groups, _ = planted_world(3, tie_nu=1.0)
    tie_rate = float((data.choice == 2).mean())
    assert 0.1 < tie_rate < 0.5
    res = fit(data, TrainConfig(kind="pal-b", k=2, **FAST))
    model = res.model
    assert model.uses_ties and model.log_nu is not None and np.isfinite(model.log_nu)
    probs = model.outcome_probs(data.X[data.a_idx], data.X[data.b_idx], res.annotator_weights[data.annotator_idx])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    assert (probs[:, 2] > 0).all()
    # The predicted tie probability is calibrated to the observed tie rate.
    assert abs(probs[:, 2].mean() - tie_rate) < 0.05
    assert res.metrics["train"]["log_loss"] is not None and np.isfinite(res.metrics["train"]["log_loss"])
    # A model trained without ties predicts no ties.
    no_ties, _, _ = planted_world(3)
    assert fit(no_ties, TrainConfig(kind="btl", **FAST)).model.log_nu is None


def test_judgment_weights_scale_the_loss() -> None:
    data, _, _ = planted_world(4, n_groups=1)
    flip = (np.arange(len(data)) % 2 == 0) & (data.choice < 2)
    flipped = np.where(flip, 1 - data.choice, data.choice)

    def acc_on_truth(weight: np.ndarray) -> float:
        d = PreferenceData(X=data.X, a_idx=data.a_idx, b_idx=data.b_idx, annotator_idx=data.annotator_idx,
                           choice=flipped, weight=weight)
        lg = predict_logits(fit(d, TrainConfig(kind="btl", **FAST)).model, data)
        return float(((lg < 0) == (data.choice == 1))[data.choice != 2].mean())

    # Down-weighting the corrupted half recovers the true preferences; equal weights cannot.
    assert acc_on_truth(np.where(flip, 0.01, 1.0)) > 0.8
    assert acc_on_truth(np.ones(len(data))) < 0.7


@pytest.mark.parametrize("method", ["posterior", "map"])
def test_unseen_annotator_adaptation_beats_population_mixture(method: str) -> None:
    data, groups, truth = planted_world(5, n_ann=40)
    res = fit(data, TrainConfig(kind="pal-a", k=2, **FAST))
    model = res.model
    rng = np.random.default_rng(11)
    X, util = truth["X"].astype(np.float32), truth["util"]
    gains = []
    for g in (0, 1):
        a = rng.integers(60, size=208)
        b = (a + rng.integers(1, 60, size=208)) % 60
        d = util[a, g] - util[b, g]
        choice = (rng.random(208) > 1 / (1 + np.exp(-d))).astype(int)
        t0 = time.perf_counter()
        w = model.adapt_annotator(X[a[:8]], X[b[:8]], choice[:8], method=method)
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.1, f"adaptation took {elapsed * 1000:.1f} ms"
        assert w.shape == (2,) and w.sum() == pytest.approx(1.0)
        held_a, held_b, held_choice = X[a[8:]], X[b[8:]], choice[8:]

        def acc(ww: np.ndarray, held_a=held_a, held_b=held_b, held_choice=held_choice) -> float:
            return float(((model.prob_pairs(held_a, held_b, ww) >= 0.5) == (held_choice == 0)).mean())

        gains.append(acc(w) - acc(model.population_weights))
    assert min(gains) > 0.1, gains
    np.testing.assert_allclose(model.adapt_annotator(X[:0], X[:0], []), model.population_weights)


def test_save_load_round_trip(tmp_path: Path) -> None:
    data, _, _ = planted_world(6, tie_nu=0.5)
    res = fit(data, TrainConfig(kind="pal-a", k=2, **FAST))
    folder = res.model.save(tmp_path / "model")
    assert (folder / "config.json").exists() and (folder / "weights.pt").exists()
    loaded = RewardModel.load(folder)
    assert loaded.kind == "pal-a" and loaded.k == 2 and loaded.annotator_ids == data.annotator_ids
    assert loaded.embedding_model == res.model.embedding_model
    emb = data.X[:10]
    np.testing.assert_array_equal(loaded.prototype_scores(emb), res.model.prototype_scores(emb))
    np.testing.assert_array_equal(loaded.score_embeddings(emb), res.model.score_embeddings(emb))
    np.testing.assert_array_equal(loaded.weights_for("ann-3"), res.model.weights_for("ann-3"))
    np.testing.assert_array_equal(loaded.population_weights, res.model.population_weights)
    np.testing.assert_array_equal(loaded.outcome_probs(emb, data.X[10:20]), res.model.outcome_probs(emb, data.X[10:20]))


def test_prototype_scores_combine_linearly_into_pair_probabilities() -> None:
    data, _, _ = planted_world(7)
    model = fit(data, TrainConfig(kind="pal-a", k=2, **FAST)).model
    ea, eb = data.X[:20], data.X[20:40]
    w = np.array([0.3, 0.7])
    s_a, s_b = model.prototype_scores(ea), model.prototype_scores(eb)
    assert s_a.shape == (20, 2)
    # PAL-A ideal-point probability computed directly from the ideal point a_u = sum_k w_k p_k.
    import torch

    with torch.no_grad():
        net = model.net
        za = net.proj((torch.from_numpy(ea) - net.in_mean) / net.in_scale)
        zb = net.proj((torch.from_numpy(eb) - net.in_mean) / net.in_scale)
        ideal = torch.from_numpy(w).float() @ net.prototypes
        logit = net.log_scale.exp() * ((zb - ideal).pow(2).sum(1) - (za - ideal).pow(2).sum(1))
    np.testing.assert_allclose(model.prob_pairs(ea, eb, w), torch.sigmoid(logit).numpy(), atol=1e-5)
    np.testing.assert_allclose(model.pair_logits(ea, eb, w), ((s_a - s_b) * w).sum(1), atol=1e-9)
    pure = model.prototype_pair_probs(ea, eb)
    np.testing.assert_allclose(pure[:, 1], model.prob_pairs(ea, eb, np.array([0.0, 1.0])), atol=1e-9)


@pytest.mark.parametrize("n, ties", [(5, False), (12, True)])
def test_too_little_data_raises_clear_error(n: int, ties: bool) -> None:
    X = np.eye(4, dtype=np.float32)
    data = PreferenceData(X=X, a_idx=np.zeros(n, int), b_idx=np.ones(n, int), annotator_idx=np.zeros(n, int),
                          choice=np.full(n, 2 if ties else 0))
    with pytest.raises(InsufficientDataError) as err:
        fit(data, TrainConfig(kind="pal-a"))
    msg = str(err.value)
    assert "at least 10" in msg and f"got {n} judgments" in msg
    assert isinstance(err.value, ValueError)


def test_progress_callback_and_result_fields() -> None:
    data, _, _ = planted_world(8, n_ann=10, per_ann=40)
    calls: list[tuple[float, str]] = []
    res = fit(data, TrainConfig(kind="pal-b", k="auto", k_range=(1, 2), **FAST), progress_callback=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:], strict=False))
    assert res.device == "cpu" and res.model.config["device"] == "cpu"
    assert res.train_seconds > 0 and res.history


def test_core_does_not_import_django() -> None:
    code = ("import sys, modeling.core, modeling.core.training, modeling.core.embeddings; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('django', 'celery', 'rest_framework', 'elicitation', 'annotation', 'config')]; "
            "assert not bad, bad")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_annotator_without_judgments_gets_the_population_mixture() -> None:
    data, _, _ = planted_world(9, n_ann=10, per_ann=40)
    listed = PreferenceData(X=data.X, a_idx=data.a_idx, b_idx=data.b_idx, annotator_idx=data.annotator_idx,
                            choice=data.choice, annotator_ids=[*data.annotator_ids, "silent"])
    res = fit(listed, TrainConfig(kind="pal-b", k=2, **FAST))
    assert res.annotator_weights.shape == (11, 2)
    np.testing.assert_allclose(res.model.weights_for("silent"), res.annotator_weights[:10].mean(0))
    np.testing.assert_allclose(res.model.weights_for("never-seen"), res.model.population_weights)

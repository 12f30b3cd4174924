"""Evaluation metrics for pairwise preference predictions, safe on edge cases.

Accuracy and calibration are computed on decisive (non-tie) judgments from the probability
``p_a = P(a > b | not tie)``; log loss uses the full (a, b, tie) distribution when the model
has a Davidson tie parameter, else the binary one on decisive judgments. Probabilities are
clipped to ``[1e-6, 1 - 1e-6]`` and empty sets yield ``None`` (never NaN or inf), so results
are JSON-safe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .likelihood import PROB_EPS, outcome_probs_np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, dtype=np.float64), -50, 50)))


def _clean_prob(p: np.ndarray) -> np.ndarray:
    """Replace NaN by 0.5 and clip into the open unit interval."""
    p = np.nan_to_num(np.asarray(p, dtype=np.float64), nan=0.5, posinf=1.0, neginf=0.0)
    return np.clip(p, PROB_EPS, 1.0 - PROB_EPS)


def _weights(weight: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n) if weight is None else np.nan_to_num(np.asarray(weight, dtype=np.float64)).clip(min=0)


def accuracy(p_a: np.ndarray, choice: np.ndarray, weight: np.ndarray | None = None) -> float | None:
    """Weighted fraction of decisive judgments whose more likely side was chosen (None if none)."""
    p_a, choice = _clean_prob(p_a), np.asarray(choice)
    w = _weights(weight, len(choice)) * (choice != 2)
    if w.sum() <= 0:
        return None
    correct = (p_a >= 0.5) == (choice == 0)
    return float((correct * w).sum() / w.sum())


def log_loss(p_a: np.ndarray, choice: np.ndarray, weight: np.ndarray | None = None,
             probs3: np.ndarray | None = None) -> float | None:
    """Mean negative log-likelihood; uses ``probs3 [n, 3]`` (a, b, tie) when given, ties included."""
    choice = np.asarray(choice, dtype=np.int64)
    w = _weights(weight, len(choice))
    if probs3 is not None:
        picked = _clean_prob(np.asarray(probs3)[np.arange(len(choice)), choice])
    else:
        w = w * (choice != 2)
        p_a = _clean_prob(p_a)
        picked = np.where(choice == 0, p_a, 1.0 - p_a)
    if w.sum() <= 0:
        return None
    return float(-(np.log(picked) * w).sum() / w.sum())


def expected_calibration_error(p_a: np.ndarray, choice: np.ndarray, weight: np.ndarray | None = None,
                               n_bins: int = 10) -> float | None:
    """ECE (Naeini et al. 2015; Guo et al. 2017): sum_b |B_b|/n |acc(B_b) - conf(B_b)| of the confidence ``max(p, 1-p)`` on decisive judgments."""
    p_a, choice = _clean_prob(p_a), np.asarray(choice)
    w = _weights(weight, len(choice)) * (choice != 2)
    if w.sum() <= 0:
        return None
    conf = np.maximum(p_a, 1.0 - p_a)
    correct = ((p_a >= 0.5) == (choice == 0)).astype(np.float64)
    # Confidence lives in [0.5, 1]; bin that interval.
    bins = np.clip(((conf - 0.5) * 2 * n_bins).astype(int), 0, n_bins - 1)
    total = w.sum()
    ece = 0.0
    for b in range(n_bins):
        wb = w * (bins == b)
        sb = wb.sum()
        if sb > 0:
            ece += sb / total * abs((wb * correct).sum() / sb - (wb * conf).sum() / sb)
    return float(ece)


def grouped_accuracy(p_a: np.ndarray, choice: np.ndarray, keys: np.ndarray,
                     weight: np.ndarray | None = None) -> dict[int, float]:
    """Accuracy per key value (e.g. annotator or latent group); keys without decisive judgments are left out."""
    keys = np.asarray(keys)
    out: dict[int, float] = {}
    for key in np.unique(keys):
        m = keys == key
        acc = accuracy(np.asarray(p_a)[m], np.asarray(choice)[m], None if weight is None else np.asarray(weight)[m])
        if acc is not None:
            out[int(key)] = acc
    return out


def per_annotator_accuracy(p_a: np.ndarray, choice: np.ndarray, annotator_idx: np.ndarray,
                           weight: np.ndarray | None = None) -> dict[int, float]:
    """Accuracy of each annotator's decisive judgments."""
    return grouped_accuracy(p_a, choice, annotator_idx, weight)


def per_group_accuracy(p_a: np.ndarray, choice: np.ndarray, annotator_idx: np.ndarray, annotator_group: np.ndarray,
                       weight: np.ndarray | None = None) -> dict[int, float]:
    """Accuracy per latent group, ``annotator_group[u]`` (e.g. argmax of u's mixture weights)."""
    group = np.asarray(annotator_group)
    ann = np.asarray(annotator_idx)
    # Annotators beyond the group table (unseen ones) form group -1.
    keys = np.where(ann < len(group), group[np.minimum(ann, max(len(group) - 1, 0))] if len(group) else -1, -1)
    return grouped_accuracy(p_a, choice, keys, weight)


def worst_group_accuracy(group_acc: dict[int, float]) -> float | None:
    """Lowest per-group accuracy (None when there is no group with decisive judgments)."""
    return min(group_acc.values()) if group_acc else None


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) between two labelings; 1.0 for identical partitions."""
    a, b = np.asarray(labels_true), np.asarray(labels_pred)
    n = len(a)
    if n < 2:
        return 1.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)

    def comb2(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index, sa, sb = comb2(table), comb2(table.sum(1)), comb2(table.sum(0))
    expected = sa * sb / (n * (n - 1) / 2)
    max_index = (sa + sb) / 2
    if max_index == expected:  # both partitions trivial (one cluster each, or all singletons)
        return 1.0
    return float((index - expected) / (max_index - expected))


def summarize(logits: np.ndarray, choice: np.ndarray, annotator_idx: np.ndarray, *, log_nu: float | None = None,
              weight: np.ndarray | None = None, annotator_group: np.ndarray | None = None) -> dict[str, Any]:
    """All metrics for pair logits: accuracy, log loss, ECE, per-annotator/group and worst-group accuracy."""
    logits = np.nan_to_num(np.asarray(logits, dtype=np.float64))
    choice = np.asarray(choice, dtype=np.int64)
    p_a = _sigmoid(logits)
    probs3 = outcome_probs_np(logits, log_nu) if log_nu is not None else None
    per_ann = per_annotator_accuracy(p_a, choice, annotator_idx, weight)
    out: dict[str, Any] = {
        "n": int(len(choice)),
        "n_decisive": int((choice != 2).sum()),
        "accuracy": accuracy(p_a, choice, weight),
        "log_loss": log_loss(p_a, choice, weight, probs3),
        "ece": expected_calibration_error(p_a, choice, weight),
        "per_annotator_accuracy": per_ann,
    }
    if probs3 is not None and len(choice):
        out["mean_tie_prob"] = float(probs3[:, 2].mean())
        out["tie_rate"] = float((choice == 2).mean())
    if annotator_group is not None:
        per_group = per_group_accuracy(p_a, choice, annotator_idx, annotator_group, weight)
        out["per_group_accuracy"] = per_group
        out["worst_group_accuracy"] = worst_group_accuracy(per_group)
    return out

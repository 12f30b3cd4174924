"""Metrics of modeling.core: correct on simple cases, never NaN/inf on degenerate ones."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modeling.core.data import PreferenceData, validation_split
from modeling.core.metrics import (
    accuracy,
    adjusted_rand_index,
    expected_calibration_error,
    log_loss,
    per_annotator_accuracy,
    per_group_accuracy,
    summarize,
    worst_group_accuracy,
)


def _finite(obj: object) -> bool:
    """Every float inside a nested dict/list is finite (None allowed)."""
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def test_accuracy_log_loss_and_ece_on_a_simple_case() -> None:
    p_a = np.array([0.9, 0.8, 0.3, 0.6])
    choice = np.array([0, 0, 1, 1])
    assert accuracy(p_a, choice) == pytest.approx(0.75)
    assert log_loss(p_a, choice) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.7, 0.4])))
    assert 0.0 <= expected_calibration_error(p_a, choice) <= 1.0
    # A perfectly calibrated, perfectly confident predictor has zero ECE.
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([0, 1])) == pytest.approx(0.0, abs=1e-5)


def test_ties_are_left_out_of_accuracy_but_scored_by_three_way_log_loss() -> None:
    p_a = np.array([0.9, 0.5])
    choice = np.array([0, 2])
    assert accuracy(p_a, choice) == 1.0
    probs3 = np.array([[0.8, 0.1, 0.1], [0.3, 0.3, 0.4]])
    assert log_loss(p_a, choice, probs3=probs3) == pytest.approx(-np.mean(np.log([0.8, 0.4])))


def test_degenerate_inputs_never_give_nan_or_inf() -> None:
    # Probabilities of exactly 0 and 1 (confidently wrong), NaN predictions, only ties, nothing.
    p_a = np.array([0.0, 1.0, np.nan, 1.0])
    choice = np.array([0, 1, 0, 0])
    assert math.isfinite(log_loss(p_a, choice))
    assert math.isfinite(expected_calibration_error(p_a, choice))
    assert accuracy(np.array([0.5]), np.array([2])) is None
    assert log_loss(np.zeros(0), np.zeros(0, int)) is None
    assert expected_calibration_error(np.zeros(0), np.zeros(0, int)) is None
    assert worst_group_accuracy({}) is None
    logits = np.array([np.inf, -np.inf, np.nan, 1e9, 0.0])
    out = summarize(logits, np.array([1, 0, 2, 1, 2]), np.array([0, 0, 1, 1, 2]), log_nu=0.0,
                    annotator_group=np.array([0, 1, 5]))
    assert _finite(out)
    json.dumps(out, allow_nan=False)  # JSON-safe for the Django side
    # Annotator 2 has only ties: no accuracy entry rather than a NaN one; group 5 is therefore absent.
    assert 2 not in out["per_annotator_accuracy"] and 5 not in out["per_group_accuracy"]


def test_per_annotator_group_and_worst_group_accuracy() -> None:
    p_a = np.array([0.9, 0.9, 0.1, 0.9, 0.9, 0.9])
    choice = np.array([0, 0, 0, 1, 1, 0])
    ann = np.array([0, 0, 1, 1, 2, 2])
    assert per_annotator_accuracy(p_a, choice, ann) == {0: 1.0, 1: 0.0, 2: 0.5}
    groups = np.array([0, 1, 0])  # annotators 0 and 2 in group 0; annotator 1 alone in group 1
    per_group = per_group_accuracy(p_a, choice, ann, groups)
    assert per_group == {0: 0.75, 1: 0.0}
    assert worst_group_accuracy(per_group) == 0.0
    # Annotators beyond the group table (unseen by the model) are reported as group -1.
    assert per_group_accuracy(p_a, choice, ann, np.array([0]))[-1] == pytest.approx(0.25)


def test_adjusted_rand_index() -> None:
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 3, 3]) == pytest.approx(1.0)
    assert adjusted_rand_index([0, 0, 0, 0], [0, 0, 0, 0]) == pytest.approx(1.0)
    # Known value (scikit-learn's documentation example).
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(0.5714285714)
    rng = np.random.default_rng(0)
    assert abs(adjusted_rand_index(rng.integers(3, size=3000), rng.integers(3, size=3000))) < 0.02


def test_preference_data_validation_and_split() -> None:
    X = np.eye(5, dtype=np.float32)
    with pytest.raises(ValueError, match="out of range"):
        PreferenceData(X=X, a_idx=[0], b_idx=[7], annotator_idx=[0], choice=[0])
    with pytest.raises(ValueError, match="choice"):
        PreferenceData(X=X, a_idx=[0], b_idx=[1], annotator_idx=[0], choice=[3])
    n = 200
    rng = np.random.default_rng(0)
    data = PreferenceData(X=X, a_idx=rng.integers(5, size=n), b_idx=rng.integers(5, size=n),
                          annotator_idx=rng.integers(7, size=n), choice=rng.integers(3, size=n))
    tr, va = validation_split(data, 0.2, seed=1)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == n
    assert 0.1 < len(va) / n < 0.3
    # Every annotator keeps judgments in training.
    assert set(data.annotator_idx[tr]) == set(data.annotator_idx)

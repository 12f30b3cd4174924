"""Preference data container, validation and splits for the reward-model engine.

Plain NumPy; no Django. A judgment says which of two responses (``a``, ``b``) to the same
prompt an annotator preferred, or that they tie. Texts are referenced by index into a shared
embedding matrix ``X`` so that every distinct text is embedded (and, during training,
projected) exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

CHOICE_A: int = 0
CHOICE_B: int = 1
CHOICE_TIE: int = 2
MIN_JUDGMENTS: int = 10


class InsufficientDataError(ValueError):
    """Raised when there are too few judgments (or no decisive ones) to train a model."""


@dataclass(init=False)
class PreferenceData:
    """Pairwise judgments over texts whose embeddings are rows of ``X``.

    Attributes:
        X: float32 ``[n_texts, d]`` embedding matrix (normalised sentence embeddings).
        a_idx, b_idx: ``[n]`` row indices into ``X`` of the two responses.
        annotator_idx: ``[n]`` annotator index in ``0..n_annotators-1``.
        choice: ``[n]`` 0 = a preferred, 1 = b preferred, 2 = tie.
        prompt_idx: optional ``[n]`` row indices of the prompts (used when the model
            conditions on the prompt; ``-1`` or ``None`` means no prompt).
        weight: ``[n]`` non-negative per-judgment strength multiplying its loss (float32;
            ones when not given).
        annotator_ids: optional external ids (length ``n_annotators``), saved with models.
    """

    X: np.ndarray
    a_idx: np.ndarray
    b_idx: np.ndarray
    annotator_idx: np.ndarray
    choice: np.ndarray
    prompt_idx: np.ndarray | None
    weight: np.ndarray  # never None once constructed: omitted weights become ones
    annotator_ids: list[Any] | None  # opaque external ids (str or int in practice)
    n_annotators: int

    # A hand-written __init__ (not the dataclass one) so that the attributes can be typed as what
    # they hold after normalisation (``weight`` is always an array) while the arguments accept
    # what callers pass (lists, other dtypes, ``weight=None``).
    def __init__(self, X: ArrayLike, a_idx: ArrayLike, b_idx: ArrayLike, annotator_idx: ArrayLike,
                 choice: ArrayLike, prompt_idx: ArrayLike | None = None, weight: ArrayLike | None = None,
                 annotator_ids: Sequence[Any] | None = None, n_annotators: int = 0) -> None:
        self.X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
        if self.X.ndim != 2:
            raise ValueError(f"X must be 2-D [n_texts, d], got shape {self.X.shape}")
        self.a_idx = np.asarray(a_idx, dtype=np.int64).reshape(-1)
        self.b_idx = np.asarray(b_idx, dtype=np.int64).reshape(-1)
        self.annotator_idx = np.asarray(annotator_idx, dtype=np.int64).reshape(-1)
        self.choice = np.asarray(choice, dtype=np.int64).reshape(-1)
        n = self.a_idx.shape[0]
        self.prompt_idx = None if prompt_idx is None else np.asarray(prompt_idx, dtype=np.int64).reshape(-1)
        self.weight = (
            np.ones(n, dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32).reshape(-1)
        )
        self.annotator_ids = None if annotator_ids is None else list(annotator_ids)
        self.n_annotators = n_annotators
        for name in ("b_idx", "annotator_idx", "choice", "weight") + (("prompt_idx",) if self.prompt_idx is not None else ()):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name} has length {getattr(self, name).shape[0]}, expected {n}")
        if n and (min(self.a_idx.min(), self.b_idx.min()) < 0 or max(self.a_idx.max(), self.b_idx.max()) >= self.X.shape[0]):
            raise ValueError("a_idx/b_idx out of range of X")
        if n and not np.isin(self.choice, (CHOICE_A, CHOICE_B, CHOICE_TIE)).all():
            raise ValueError("choice must be 0 (a), 1 (b) or 2 (tie)")
        if n and (self.annotator_idx.min() < 0):
            raise ValueError("annotator_idx must be non-negative")
        if not np.isfinite(self.weight).all() or (self.weight < 0).any():
            raise ValueError("weight must be finite and non-negative")
        inferred = int(self.annotator_idx.max()) + 1 if n else 0
        if self.annotator_ids is not None:
            if len(self.annotator_ids) < inferred:
                raise ValueError("annotator_ids is shorter than the largest annotator_idx")
            inferred = len(self.annotator_ids)
        self.n_annotators = max(int(self.n_annotators or 0), inferred)

    def __len__(self) -> int:
        return int(self.a_idx.shape[0])

    @property
    def has_ties(self) -> bool:
        """Whether any judgment is a tie (switches the likelihood to Davidson's model)."""
        return bool((self.choice == CHOICE_TIE).any())

    def subset(self, mask_or_idx: np.ndarray) -> PreferenceData:
        """Judgments selected by a boolean mask or index array; X and annotator ids are shared."""
        sel = np.asarray(mask_or_idx)
        return PreferenceData(
            X=self.X,
            a_idx=self.a_idx[sel],
            b_idx=self.b_idx[sel],
            annotator_idx=self.annotator_idx[sel],
            choice=self.choice[sel],
            prompt_idx=None if self.prompt_idx is None else self.prompt_idx[sel],
            weight=self.weight[sel],
            annotator_ids=self.annotator_ids,
            n_annotators=self.n_annotators,
        )


def check_sufficient(data: PreferenceData, minimum: int = MIN_JUDGMENTS) -> None:
    """Raise :class:`InsufficientDataError` unless there are ``minimum`` judgments incl. a non-tie."""
    n = len(data)
    decisive = int((data.choice != CHOICE_TIE).sum())
    if n < minimum or decisive == 0:
        raise InsufficientDataError(
            f"Not enough judgments to train a reward model: need at least {minimum} judgments "
            f"including at least 1 non-tie, got {n} judgments ({decisive} non-tie)."
        )


def validation_split(data: PreferenceData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-annotator stratified split of judgment indices into (train, validation).

    Every annotator with at least two judgments keeps at least one in training, so the
    validation likelihood measures generalisation to new pairs of *seen* annotators, which is
    what the choice of K is about.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    ann = data.annotator_idx[order]
    sort = np.argsort(ann, kind="stable")
    order, ann = order[sort], ann[sort]
    starts = np.flatnonzero(np.r_[True, ann[1:] != ann[:-1]])
    counts = np.diff(np.r_[starts, len(ann)])
    rank = np.arange(len(ann)) - np.repeat(starts, counts)
    n_val = np.floor(counts * fraction + rng.random(len(counts))).astype(int)
    n_val = np.minimum(n_val, counts - 1)
    is_val = rank < np.repeat(n_val, counts)
    return np.sort(order[~is_val]), np.sort(order[is_val])


def unique_items(prompt_idx: np.ndarray | None, resp_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (prompt, response) items and the inverse map.

    Returns ``(item_prompt, item_resp, inverse)`` with ``inverse`` of length ``len(resp_idx)``.
    Training projects each distinct item once per step and gathers by index, instead of
    projecting the same text once per judgment.
    """
    p = np.full_like(resp_idx, -1) if prompt_idx is None else prompt_idx
    keys = np.stack([p, resp_idx], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    return uniq[:, 0], uniq[:, 1], inverse.reshape(-1)

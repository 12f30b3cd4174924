"""Judgment rows -> the engine's PreferenceData, and the fingerprint of a training snapshot.

A row is `(annotator, prompt, text shown first, text shown second, choice, strength)` as
`annotation.selectors_training.judgments_for_training` returns it. Texts are indexed once, so
the embedding matrix has one row per distinct text however many judgments mention it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modeling.core.data import CHOICE_A, CHOICE_B, CHOICE_TIE, PreferenceData, check_sufficient

CHOICE_CODES: dict[str, int] = {"a": CHOICE_A, "b": CHOICE_B, "tie": CHOICE_TIE}

Row = tuple[str, str, str, str, str, int | None]


@dataclass(frozen=True)
class IndexedRows:
    """Judgments as index arrays into `texts` (responses, then prompts when they are used)."""

    texts: list[str]
    a_idx: np.ndarray
    b_idx: np.ndarray
    prompt_idx: np.ndarray | None
    annotator_idx: np.ndarray
    annotator_ids: list[str]
    choice: np.ndarray
    weight: np.ndarray

    def preference_data(self, *, embeddings: np.ndarray) -> PreferenceData:
        """The engine's container once `embeddings` (one row per entry of `texts`) are known."""
        return PreferenceData(
            X=embeddings, a_idx=self.a_idx, b_idx=self.b_idx, annotator_idx=self.annotator_idx,
            choice=self.choice, prompt_idx=self.prompt_idx, weight=self.weight,
            annotator_ids=self.annotator_ids,
        )

    def check_sufficient(self) -> None:
        """Raise InsufficientDataError before anything is embedded (same rule and message as `fit`)."""
        placeholder = np.zeros((max(len(self.texts), 1), 1), dtype=np.float32)
        check_sufficient(self.preference_data(embeddings=placeholder))


def strength_weight(*, strength: int | None, levels: int) -> float:
    """Loss weight of a judgment from its strength 1..levels (None or no scale: 1).

    Linear in the level and scaled so the levels average 1 (for three levels: 0.5, 1, 1.5), so a
    "much better" counts three times a "slightly better" while the learning rate keeps its meaning.
    """
    if strength is None or levels <= 1:
        return 1.0
    level = min(max(int(strength), 1), levels)  # a label list shortened after annotation: clip
    return level / ((levels + 1) / 2)


def rows_index(*, rows: Sequence[Row], strength_levels: int, use_prompt: bool = False) -> IndexedRows:
    """Index the texts and annotators of judgment rows (annotators in sorted order: deterministic)."""
    positions: dict[str, int] = {}

    def index_of(text: str) -> int:
        return positions.setdefault(text, len(positions))

    annotator_ids = sorted({row[0] for row in rows})
    annotator_pos = {a: i for i, a in enumerate(annotator_ids)}
    n = len(rows)
    a_idx = np.fromiter((index_of(r[2]) for r in rows), dtype=np.int64, count=n)
    b_idx = np.fromiter((index_of(r[3]) for r in rows), dtype=np.int64, count=n)
    prompt_idx = np.fromiter((index_of(r[1]) for r in rows), dtype=np.int64, count=n) if use_prompt else None
    return IndexedRows(
        texts=list(positions),
        a_idx=a_idx, b_idx=b_idx, prompt_idx=prompt_idx,
        annotator_idx=np.fromiter((annotator_pos[r[0]] for r in rows), dtype=np.int64, count=n),
        annotator_ids=annotator_ids,
        choice=np.fromiter((CHOICE_CODES[r[4]] for r in rows), dtype=np.int64, count=n),
        weight=np.fromiter(
            (strength_weight(strength=r[5], levels=strength_levels) for r in rows), dtype=np.float32, count=n
        ),
    )


def rows_fingerprint(*, rows: Sequence[Row]) -> str:
    """SHA-256 over the sorted rows: equal for the same judgments whatever their order in the database."""
    digest = hashlib.sha256()
    for line in sorted(json.dumps(list(row), ensure_ascii=False) for row in rows):
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()

"""PreferenceData's constructor: what it accepts and the normalised arrays it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from modeling.core.data import PreferenceData


def test_preference_data_normalises_lists_and_fills_missing_weight_with_ones() -> None:
    data = PreferenceData(X=[[1, 0], [0, 1], [1, 1]], a_idx=[0, 1, 2], b_idx=[[1], [2], [0]],
                          annotator_idx=(0, 2, 2), choice=[0, 1, 2], annotator_ids=("u1", "u2", "u3"))
    assert data.X.dtype == np.float32 and data.X.flags.c_contiguous and data.X.shape == (3, 2)
    for arr in (data.a_idx, data.b_idx, data.annotator_idx, data.choice):
        assert arr.dtype == np.int64 and arr.shape == (3,)
    assert data.b_idx.tolist() == [1, 2, 0]
    assert data.prompt_idx is None
    assert data.weight.dtype == np.float32 and data.weight.tolist() == [1.0, 1.0, 1.0]
    assert data.annotator_ids == ["u1", "u2", "u3"]  # a tuple of ids is kept as a list
    assert data.n_annotators == 3 and len(data) == 3 and data.has_ties


def test_preference_data_counts_annotators_from_ids_indices_or_the_argument() -> None:
    X = np.eye(2, dtype=np.float32)
    assert PreferenceData(X=X, a_idx=[0], b_idx=[1], annotator_idx=[4], choice=[0]).n_annotators == 5
    assert PreferenceData(X=X, a_idx=[0], b_idx=[1], annotator_idx=[0], choice=[0], n_annotators=6).n_annotators == 6
    with pytest.raises(ValueError, match="annotator_ids is shorter"):
        PreferenceData(X=X, a_idx=[0], b_idx=[1], annotator_idx=[1], choice=[0], annotator_ids=["only"])


def test_preference_data_subset_keeps_weights_prompts_and_ids() -> None:
    X = np.eye(4, dtype=np.float32)
    data = PreferenceData(X=X, a_idx=[0, 1, 2], b_idx=[1, 2, 3], annotator_idx=[0, 1, 1], choice=[0, 1, 0],
                          prompt_idx=[3, -1, 3], weight=[0.5, 2, 1.5], annotator_ids=["a", "b"])
    assert data.weight.dtype == np.float32 and data.prompt_idx is not None and data.prompt_idx.dtype == np.int64
    part = data.subset(np.array([False, True, True]))
    assert part.weight.tolist() == [2.0, 1.5]
    assert part.prompt_idx is not None and part.prompt_idx.tolist() == [-1, 3]
    assert part.annotator_ids == ["a", "b"] and part.n_annotators == 2 and part.X is data.X


def test_preference_data_rejects_mismatched_lengths_and_bad_weights() -> None:
    X = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="weight has length 1, expected 2"):
        PreferenceData(X=X, a_idx=[0, 1], b_idx=[1, 2], annotator_idx=[0, 0], choice=[0, 1], weight=[1.0])
    with pytest.raises(ValueError, match="prompt_idx has length"):
        PreferenceData(X=X, a_idx=[0, 1], b_idx=[1, 2], annotator_idx=[0, 0], choice=[0, 1], prompt_idx=[2])
    with pytest.raises(ValueError, match="finite and non-negative"):
        PreferenceData(X=X, a_idx=[0, 1], b_idx=[1, 2], annotator_idx=[0, 0], choice=[0, 1], weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="X must be 2-D"):
        PreferenceData(X=[1.0, 2.0], a_idx=[0], b_idx=[1], annotator_idx=[0], choice=[0])


def test_latent_classes_refuse_zero_iterations() -> None:
    from modeling.core.analytics import latent_classes_fit

    with pytest.raises(ValueError, match="iterations >= 1"):
        latent_classes_fit(None, k=2, iterations=0)  # type: ignore[arg-type]  # refused before it is read

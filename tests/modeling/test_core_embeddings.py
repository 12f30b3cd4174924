"""The bundled sentence model, loaded offline, and scoring raw text with a trained model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from modeling.core.data import PreferenceData
from modeling.core.embeddings import DEFAULT_EMBEDDING_MODEL, Embedder, bundled_model_path, text_hash
from modeling.core.models import RewardModel
from modeling.core.training import TrainConfig, fit


def test_text_hash_is_sha256_hex() -> None:
    assert text_hash("héllo") == hashlib.sha256("héllo".encode()).hexdigest()
    assert len(text_hash("")) == 64


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    assert (bundled_model_path() / "model.safetensors").exists()
    return Embedder(DEFAULT_EMBEDDING_MODEL, device="cpu")


def test_embedder_encodes_normalised_vectors_in_input_order(embedder: Embedder) -> None:
    texts = ["A formal, careful answer.", "lol just do it", "A formal, careful answer.", ""]
    emb = embedder.encode(texts)
    assert emb.dtype == np.float32 and emb.shape == (4, 384) and embedder.dim == 384
    assert embedder.name == DEFAULT_EMBEDDING_MODEL
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[2])  # duplicates encoded once, scattered back
    direct = embedder.model.encode(texts[:2], normalize_embeddings=True)
    np.testing.assert_allclose(emb[:2], direct, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_model_scores_raw_text_with_its_recorded_embedder(embedder: Embedder, tmp_path) -> None:
    polite = [f"Thank you for asking. It is advisable to {v}." for v in ("rest", "plan", "read", "wait", "think")]
    rude = [f"whatever, just {v} lol" for v in ("rest", "plan", "read", "wait", "think")]
    X = embedder.encode(polite + rude)
    rng = np.random.default_rng(0)
    a, b = rng.integers(5, size=60), 5 + rng.integers(5, size=60)
    data = PreferenceData(X=X, a_idx=a, b_idx=b, annotator_idx=np.zeros(60, int), choice=np.zeros(60, int))
    model = fit(data, TrainConfig(kind="btl", epochs=100, early_stopping=False)).model
    folder = model.save(tmp_path / "m")
    loaded = RewardModel.load(folder)
    loaded._embedder = embedder  # reuse the loaded sentence model (the lazy path builds the same one)
    prompt = "How should I spend my weekend?"
    good = loaded.score(prompt, "Thank you for asking. It is advisable to relax.")
    bad = loaded.score(prompt, "whatever, just relax lol")
    assert good > bad
    assert good == pytest.approx(model.score_embeddings(embedder.encode(["Thank you for asking. It is advisable to relax."]))[0],
                                 abs=1e-5)

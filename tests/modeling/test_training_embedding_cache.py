"""The embedding cache: each text is embedded once per embedding model, then read back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.conf import settings

from modeling import embedding_cache
from modeling.core.embeddings import text_hash
from modeling.models import TextEmbedding

pytestmark = pytest.mark.django_db

MODEL = settings.POLYPHONY_EMBEDDING_MODEL


@pytest.fixture
def encode_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records what the real embedder is asked to encode (it still encodes)."""
    embedder = embedding_cache.embedder_get(model_name=MODEL)
    calls: list[list[str]] = []
    real = embedder.encode

    def counting(texts: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(list(texts))
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(embedder, "encode", counting)
    return calls


def test_a_second_call_embeds_nothing(encode_calls: list[list[str]]) -> None:
    texts = ["Begin with short, slow runs.", "lol just run", "Begin with short, slow runs."]
    first = embedding_cache.embeddings_for_texts(texts=texts, model_name=MODEL)
    assert encode_calls == [["Begin with short, slow runs.", "lol just run"]]  # duplicates embedded once
    assert TextEmbedding.objects.filter(model_name=MODEL).count() == 2
    second = embedding_cache.embeddings_for_texts(texts=texts, model_name=MODEL)
    assert len(encode_calls) == 1
    np.testing.assert_array_equal(first, second)
    assert first.shape == (3, 384) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], first[2])


def test_only_the_missing_texts_are_embedded(encode_calls: list[list[str]]) -> None:
    embedding_cache.embeddings_for_texts(texts=["one text"], model_name=MODEL)
    embedding_cache.embeddings_for_texts(texts=["one text", "another text"], model_name=MODEL)
    assert encode_calls == [["one text"], ["another text"]]


def test_cached_vectors_are_the_embedders_vectors() -> None:
    texts = ["It is advisable to rest.", "just vibe"]
    cached = embedding_cache.embeddings_for_texts(texts=texts, model_name=MODEL)
    row = TextEmbedding.objects.get(text_hash=text_hash(texts[1]), model_name=MODEL)
    assert row.dim == 384 and len(bytes(row.vector)) == 384 * 4
    direct = embedding_cache.embedder_get(model_name=MODEL).encode(texts)
    np.testing.assert_allclose(cached, direct, atol=1e-5)


def test_a_row_written_meanwhile_by_another_worker_is_no_conflict(encode_calls: list[list[str]]) -> None:
    vector = np.ones(384, dtype="<f4")
    TextEmbedding.objects.create(text_hash=text_hash("raced"), model_name="other-model", dim=384,
                                 vector=vector.tobytes())
    embedding_cache.embeddings_for_texts(texts=["raced"], model_name=MODEL)  # other model: embedded
    embedding_cache._cache_store(hashes=[text_hash("raced")], matrix=vector[None, :], model_name=MODEL)
    assert TextEmbedding.objects.filter(text_hash=text_hash("raced")).count() == 2


def test_the_embedder_is_loaded_once_per_process() -> None:
    assert embedding_cache.embedder_get(model_name=MODEL) is embedding_cache.embedder_get(model_name=MODEL)


def test_no_texts_no_work(encode_calls: list[list[str]]) -> None:
    assert embedding_cache.embeddings_for_texts(texts=[], model_name=MODEL).shape[0] == 0
    assert encode_calls == []

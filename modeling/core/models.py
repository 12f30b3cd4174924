"""Group-aware latent reward models on frozen sentence embeddings.

Implements the PAL framework of Chen et al. 2024, "PAL: Pluralistic Alignment Framework for
Learning from Heterogeneous Preferences" (arXiv:2406.08469):

* A shared projection ``f`` (small MLP) maps a response embedding (optionally with its
  prompt embedding) into a latent preference space.
* ``pal-a`` (PAL-A, ideal points): K prototype ideal points ``p_k``; annotator u has weights
  ``w_u`` on the simplex and ideal point ``a_u = sum_k w_uk p_k``;
  ``P(a > b | u) = sigmoid(s (||f(b) - a_u||^2 - ||f(a) - a_u||^2))``.
* ``pal-b`` (PAL-B, mixture of reward functions): K linear reward heads ``r_k = v_k . f``;
  ``r_u = sum_k w_uk r_k`` and ``P(a > b | u) = sigmoid(r_u(a) - r_u(b))``.
* ``btl``: a single Bradley-Terry reward (``pal-b`` with K = 1), the baseline.

In all three the per-prototype "scores" ``S_k(x)`` (``-s ||f(x) - p_k||^2`` for PAL-A,
``v_k . f(x)`` for PAL-B) combine linearly: ``logit_u(a, b) = sum_k w_uk (S_k(a) - S_k(b))``
(see :mod:`modeling.core.adapt` for why this also holds for PAL-A). Serving can therefore cache
``S`` per text and combine it with any annotator's weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import adapt
from .likelihood import outcome_probs_np

KINDS: tuple[str, ...] = ("btl", "pal-a", "pal-b")
FORMAT_VERSION: int = 1


class LatentPreferenceNet(nn.Module):
    """Shared projection plus K prototype heads; returns per-prototype scores ``[n, K]``."""

    # Buffers made by register_buffer; declared so that mypy sees tensors rather than the
    # ``Tensor | Module`` of nn.Module.__getattr__.
    in_mean: torch.Tensor
    in_scale: torch.Tensor

    def __init__(self, kind: str, d_in: int, k: int, hidden_dim: int, latent_dim: int, use_prompt: bool,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.k, self.use_prompt = kind, int(k), bool(use_prompt)
        in_dim = d_in * (2 if use_prompt else 1)
        # Dropout is a no-op in eval mode; during training it regularises the per-text fit.
        # hidden_dim == 0 gives a linear projection (Identity layers keep state-dict keys stable).
        if hidden_dim > 0:
            self.proj = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden_dim, latent_dim))
        else:
            self.proj = nn.Sequential(nn.Dropout(dropout), nn.Identity(), nn.Identity(), nn.Linear(in_dim, latent_dim))
        if kind == "pal-a":
            self.prototypes = nn.Parameter(0.5 * torch.randn(self.k, latent_dim))
            self.log_scale = nn.Parameter(torch.zeros(()))
        else:
            self.heads = nn.Parameter(torch.randn(self.k, latent_dim) / latent_dim**0.5)
        # Input standardisation (set from the training items by ``set_input_stats``): sentence
        # embeddings share a large common direction that would otherwise swamp the small
        # stylistic differences between responses to the same kind of prompt.
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_scale", torch.ones(in_dim))
        # Davidson tie parameter nu = exp(log_nu); only used when the data contain ties.
        self.log_nu = nn.Parameter(torch.tensor(-1.0))

    def features(self, resp: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Input features: the response embedding, concatenated with the prompt's if used."""
        if not self.use_prompt:
            return resp
        if prompt is None:
            prompt = torch.zeros_like(resp)
        return torch.cat([resp, prompt], dim=-1)

    @torch.no_grad()
    def set_input_stats(self, feats: torch.Tensor, standardize: bool = True) -> None:
        """Record the per-dimension mean and standard deviation of the training features."""
        self.in_mean.copy_(feats.mean(0))
        if standardize:
            self.in_scale.copy_(feats.std(0).clamp_min(1e-4))
        else:
            self.in_scale.fill_(1.0)

    def scores(self, feats: torch.Tensor) -> torch.Tensor:
        """Per-prototype scores ``S [n, K]`` so that pair logits are ``w . (S(a) - S(b))``."""
        z = self.proj((feats - self.in_mean) / self.in_scale)
        if self.kind == "pal-a":
            # -s ||f(x) - p_k||^2 (PAL-A ideal-point distance); the scale s > 0 is learned through its log.
            # Expanded square (not cdist): one small matmul, fast and thread-friendly on CPU.
            p = self.prototypes
            sq = z.pow(2).sum(1, keepdim=True) - 2 * z @ p.T + p.pow(2).sum(1)
            return -self.log_scale.exp() * sq
        return z @ self.heads.T

    def prototype_spread(self) -> torch.Tensor:
        """Mean squared distance of prototypes (or heads) from their centroid.

        A small penalty on it acts like a minimum-volume prior: prototypes are pulled inward
        until they sit on the most extreme annotators, which makes argmax(w) meaningful.
        """
        p = self.prototypes if self.kind == "pal-a" else self.heads
        return (p - p.mean(0, keepdim=True)).pow(2).sum(1).mean()


def _as_2d(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float32 2-D array from a single embedding or a batch."""
    arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    return arr[None, :] if arr.ndim == 1 else arr


class RewardModel:
    """A trained reward model: network, annotator mixture weights and metadata.

    ``annotator_weights[i]`` are the simplex weights of ``annotator_ids[i]``;
    ``population_weights`` (their mean) serve annotators without judgments.
    """

    def __init__(self, net: LatentPreferenceNet, *, annotator_weights: np.ndarray,
                 annotator_ids: list[Any] | None, embedding_model: str, uses_ties: bool,
                 config: dict[str, Any] | None = None, device: str = "cpu") -> None:
        self.net = net.to(device).eval()
        self.device = device
        self.kind, self.k = net.kind, net.k
        self.annotator_weights = np.asarray(annotator_weights, dtype=np.float64).reshape(-1, net.k)
        n = self.annotator_weights.shape[0]
        self.annotator_ids = list(annotator_ids) if annotator_ids is not None else list(range(n))
        self.embedding_model = embedding_model
        self.uses_ties = bool(uses_ties)
        self.config = dict(config or {})
        self._embedder: Any = None
        self._id_pos = {str(a): i for i, a in enumerate(self.annotator_ids)}

    # ------------------------------------------------------------------ weights
    @property
    def population_weights(self) -> np.ndarray:
        """Mean mixture of the training annotators: the prior for an annotator with no data."""
        if self.annotator_weights.shape[0] == 0:
            return np.full(self.k, 1.0 / self.k)
        w = self.annotator_weights.mean(0)
        return w / w.sum()

    @property
    def log_nu(self) -> float | None:
        """Davidson tie parameter (log), or ``None`` if the model was trained without ties."""
        return float(self.net.log_nu.detach().cpu()) if self.uses_ties else None

    def weights_for(self, annotator_id: Any) -> np.ndarray:
        """Mixture weights of a training annotator by external id (population mix if unknown)."""
        pos = self._id_pos.get(str(annotator_id))
        return self.population_weights if pos is None else self.annotator_weights[pos].copy()

    def _resolve_weights(self, weights: np.ndarray | None, n: int) -> np.ndarray:
        w = self.population_weights if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape[-1] != self.k:
            raise ValueError(f"annotator weights must have K={self.k} entries, got shape {w.shape}")
        return np.broadcast_to(w, (n, self.k))

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def prototype_scores(self, emb: np.ndarray, prompt_emb: np.ndarray | None = None) -> np.ndarray:
        """Per-prototype score ``[n, K]`` of each text (PAL-A: ``-s||f(x)-p_k||^2``; PAL-B/BTL: ``r_k(x)``)."""
        e = torch.from_numpy(_as_2d(emb)).to(self.device)
        p = None if prompt_emb is None else torch.from_numpy(_as_2d(prompt_emb)).to(self.device).expand_as(e)
        return self.net.scores(self.net.features(e, p)).double().cpu().numpy()

    def score_embeddings(self, emb: np.ndarray, prompt_emb: np.ndarray | None = None,
                         annotator_weights: np.ndarray | None = None) -> np.ndarray:
        """Reward ``[n]`` of each text for an annotator (``None`` = population mixture).

        Only differences between texts (for the same annotator) are meaningful.
        """
        s = self.prototype_scores(emb, prompt_emb)
        return (s * self._resolve_weights(annotator_weights, s.shape[0])).sum(1)

    def score(self, prompt: str, response: str, annotator_weights: np.ndarray | None = None) -> float:
        """Reward of one response, embedding the texts with the model's recorded embedder."""
        emb = self.embedder.encode([response, prompt] if self.net.use_prompt else [response])
        return float(self.score_embeddings(emb[:1], emb[1:2] if self.net.use_prompt else None, annotator_weights)[0])

    @property
    def embedder(self) -> Any:
        """Lazily constructed :class:`~modeling.core.embeddings.Embedder` for ``embedding_model``."""
        if self._embedder is None:
            from .embeddings import Embedder  # heavy import only when raw text is scored

            self._embedder = Embedder(self.embedding_model)
        return self._embedder

    def prototype_pair_logits(self, emb_a: np.ndarray, emb_b: np.ndarray,
                              prompt_emb: np.ndarray | None = None) -> np.ndarray:
        """``[n, K]`` pair logits of a over b under each pure prototype."""
        return self.prototype_scores(emb_a, prompt_emb) - self.prototype_scores(emb_b, prompt_emb)

    def prototype_pair_probs(self, emb_a: np.ndarray, emb_b: np.ndarray,
                             prompt_emb: np.ndarray | None = None) -> np.ndarray:
        """``[n, K]`` decisive probability P(a > b | not tie) under each pure prototype."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.prototype_pair_logits(emb_a, emb_b, prompt_emb), -50, 50)))

    def pair_logits(self, emb_a: np.ndarray, emb_b: np.ndarray, weights: np.ndarray | None = None,
                    prompt_emb: np.ndarray | None = None) -> np.ndarray:
        """``[n]`` logit of a over b for annotator weights ``(K,)`` or ``(n, K)`` (None = population)."""
        lk = self.prototype_pair_logits(emb_a, emb_b, prompt_emb)
        return (lk * self._resolve_weights(weights, lk.shape[0])).sum(1)

    def prob_pairs(self, emb_a: np.ndarray, emb_b: np.ndarray, weights: np.ndarray | None = None,
                   prompt_emb: np.ndarray | None = None) -> np.ndarray:
        """``[n]`` P(a > b | not tie) for the annotator(s); the mixture acts on logits, not probabilities."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.pair_logits(emb_a, emb_b, weights, prompt_emb), -50, 50)))

    def outcome_probs(self, emb_a: np.ndarray, emb_b: np.ndarray, weights: np.ndarray | None = None,
                      prompt_emb: np.ndarray | None = None) -> np.ndarray:
        """``[n, 3]`` probabilities of (a, b, tie) under Davidson's model (tie column 0 without ties)."""
        return outcome_probs_np(self.pair_logits(emb_a, emb_b, weights, prompt_emb), self.log_nu)

    # ------------------------------------------------------------------ adaptation
    def adapt_annotator(self, emb_a: np.ndarray, emb_b: np.ndarray, choices: np.ndarray, *,
                        prompt_emb: np.ndarray | None = None, weight: np.ndarray | None = None,
                        method: str = "posterior", prior_strength: float = 1.0) -> np.ndarray:
        """Mixture weights ``(K,)`` for an unseen annotator from a few judgments, model frozen.

        ``method="posterior"``: posterior mean under the empirical prior of training annotators'
        weights; ``"map"``: MAP of softmax logits with a Gaussian prior (``prior_strength``)
        centred on the population mixture. With no judgments, returns the population mixture.
        """
        choices = np.asarray(choices, dtype=np.int64).reshape(-1)
        if self.k == 1:
            return np.ones(1)
        if choices.size == 0:
            return self.population_weights
        lk = self.prototype_pair_logits(emb_a, emb_b, prompt_emb)
        if method == "posterior":
            return adapt.posterior_weights(lk, choices, self.annotator_weights, weight=weight, log_nu=self.log_nu)
        if method == "map":
            return adapt.map_weights(lk, choices, self.population_weights, weight=weight, log_nu=self.log_nu,
                                     prior_strength=prior_strength)
        raise ValueError(f"method must be 'posterior' or 'map', got {method!r}")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` (kind, K, dims, embedding model, annotator ids) and ``weights.pt``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        first, lin1 = self.net.proj[0], self.net.proj[3]
        # Both layouts built by LatentPreferenceNet end in the output Linear at index 3.
        assert isinstance(lin1, nn.Linear)
        lin0 = first if isinstance(first, nn.Linear) else lin1
        cfg = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "k": self.k,
            "embedding_model": self.embedding_model,
            "embedding_dim": lin0.in_features // (2 if self.net.use_prompt else 1),
            "hidden_dim": lin0.out_features if lin0 is not lin1 else 0,
            "latent_dim": lin1.out_features,
            "use_prompt": self.net.use_prompt,
            "uses_ties": self.uses_ties,
            "annotator_ids": [a if isinstance(a, (int, str)) else str(a) for a in self.annotator_ids],
            "train_config": self.config,
        }
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        torch.save({"net": state, "annotator_weights": torch.from_numpy(self.annotator_weights)}, folder / "weights.pt")
        return folder

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> RewardModel:
        """Load a model written by :meth:`save` (no Django needed)."""
        folder = Path(path)
        cfg = json.loads((folder / "config.json").read_text())
        blob = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        net = LatentPreferenceNet(cfg["kind"], cfg["embedding_dim"], cfg["k"], cfg["hidden_dim"], cfg["latent_dim"],
                                  cfg["use_prompt"])
        net.load_state_dict(blob["net"])
        return cls(net, annotator_weights=blob["annotator_weights"].numpy(), annotator_ids=cfg["annotator_ids"],
                   embedding_model=cfg["embedding_model"], uses_ties=cfg["uses_ties"],
                   config=cfg.get("train_config"), device=device or "cpu")

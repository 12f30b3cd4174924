"""Low-level training plumbing: judgment tensors, the batched pair logit and a small AdamW.

``torch.optim`` imports ``torch._dynamo`` (and sympy) on its first step, which costs 3-5 s of
wall time per process on a 2-core machine - longer than a whole fit on 10k judgments - so the
few parameters here are updated by a hand-written AdamW (Loshchilov & Hutter 2019, Alg. 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import CHOICE_A, CHOICE_TIE, PreferenceData, unique_items
from .models import LatentPreferenceNet

# The annotator-by-item reward matrix is materialised when it has at most this many entries:
# one small matmul plus 1-D gathers then replace three [n, K] gathers per step.
DENSE_REWARD_MAX: int = 4_000_000


@dataclass
class JudgmentTensors:
    """Judgments as device tensors indexed into their distinct (prompt, response) items."""

    items: torch.Tensor
    iab: torch.Tensor
    ann: torch.Tensor
    sign: torch.Tensor
    tie: torch.Tensor
    choice: torch.Tensor
    weight: torch.Tensor
    flat: torch.Tensor | None
    n: int


def judgment_tensors(data: PreferenceData, net: LatentPreferenceNet, device: str, n_annotators: int) -> JudgmentTensors:
    """Project nothing yet: collect distinct items and per-judgment indices, signs and masks."""
    n = len(data)
    prompts = None
    if net.use_prompt and data.prompt_idx is not None:
        prompts = np.concatenate([data.prompt_idx, data.prompt_idx])
    item_p, item_r, inv = unique_items(prompts, np.concatenate([data.a_idx, data.b_idx]))
    x = torch.from_numpy(data.X).to(device)
    resp = x[torch.from_numpy(item_r).to(device)]
    prm = None
    if net.use_prompt:
        prm = torch.zeros_like(resp)
        has = item_p >= 0
        if has.any():
            prm[torch.from_numpy(np.flatnonzero(has)).to(device)] = x[torch.from_numpy(item_p[has]).to(device)]
    n_items = len(item_r)
    flat = None
    if n_annotators * n_items <= DENSE_REWARD_MAX:
        ann2 = np.concatenate([data.annotator_idx, data.annotator_idx])
        flat = torch.from_numpy(ann2 * n_items + inv).to(device)
    sign = np.where(data.choice == CHOICE_A, 1.0, np.where(data.choice == CHOICE_TIE, 0.0, -1.0))
    return JudgmentTensors(
        items=net.features(resp, prm),
        iab=torch.from_numpy(inv).to(device),
        ann=torch.from_numpy(data.annotator_idx).to(device),
        sign=torch.from_numpy(sign.astype(np.float32)).to(device),
        tie=torch.from_numpy(data.choice == CHOICE_TIE).to(device),
        choice=torch.from_numpy(data.choice).to(device),
        weight=torch.from_numpy(data.weight).to(device),
        flat=flat,
        n=n,
    )


def pair_logits(net: LatentPreferenceNet, theta: torch.Tensor, t: JudgmentTensors, k: int) -> torch.Tensor:
    """Per-judgment logits ``sum_k w_uk (S_k(a) - S_k(b))``; every distinct item is projected once."""
    s = net.scores(t.items)
    if k == 1:
        g = s[:, 0].index_select(0, t.iab)
    elif t.flat is not None:
        # Reward of every annotator for every item, R = W S^T, then 1-D gathers.
        g = (torch.softmax(theta, 1) @ s.T).reshape(-1).index_select(0, t.flat)
    else:
        sg = s.index_select(0, t.iab)
        w = torch.softmax(theta, 1).index_select(0, t.ann)
        return ((sg[: t.n] - sg[t.n :]) * w).sum(1)
    return g[: t.n] - g[t.n :]


def log_lik(logit: torch.Tensor, t: JudgmentTensors, log_nu: torch.Tensor | None) -> torch.Tensor:
    """Per-judgment log-likelihood: Bradley-Terry, or Davidson (1970) when ``log_nu`` is given.

    Same values as :func:`modeling.core.likelihood.choice_log_prob`, with the choice masks
    precomputed once per fit instead of rebuilt every step.
    """
    if log_nu is None:
        return torch.nn.functional.logsigmoid(t.sign * logit)
    half = 0.5 * logit
    nu = log_nu.expand_as(logit)
    lse = torch.logaddexp(torch.logaddexp(half, -half), nu)
    return torch.where(t.tie, nu, t.sign * half) - lse


class AdamW:
    """AdamW with per-group learning rate and decoupled weight decay; ``step(scale)`` scales the lr."""

    def __init__(self, groups: list[dict[str, Any]], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.groups = [dict(g, params=[p for p in g["params"]]) for g in groups]
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in self.groups for p in g["params"]}
        self.t = 0

    def zero_grad(self) -> None:
        """Drop all gradients."""
        for g in self.groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self, lr_scale: float = 1.0) -> None:
        """One AdamW update of every parameter that has a gradient."""
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for g in self.groups:
            lr = g["lr"] * lr_scale
            for p in g["params"]:
                if p.grad is None:
                    continue
                m, v = self.state[id(p)]
                m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
                if g.get("weight_decay", 0.0):
                    p.mul_(1 - lr * g["weight_decay"])
                p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)


def cosine_scale(step: int, total: int, floor: float = 0.05) -> float:
    """Cosine learning-rate factor from 1 down to ``floor`` over ``total`` steps (Loshchilov & Hutter 2017)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))

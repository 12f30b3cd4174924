"""Pairwise choice likelihoods: Bradley-Terry and Davidson's tie extension.

Both are written in terms of the pair logit ``d = r(a) - r(b)`` (a reward difference):

* Bradley-Terry (1952): ``P(a > b) = sigmoid(d)``.
* Davidson (1970), "On extending the Bradley-Terry model to accommodate ties" (JASA 65):
  with strengths ``pi = exp(r)``, ``P(a > b) = pi_a / (pi_a + pi_b + nu sqrt(pi_a pi_b))`` and
  ``P(tie) = nu sqrt(pi_a pi_b) / (...)``. Dividing by ``sqrt(pi_a pi_b)`` gives the
  numerically convenient form ``softmax([d/2, -d/2, log nu])``. Conditional on a decisive
  outcome it reduces to Bradley-Terry, so the same reward scale serves both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PROB_EPS: float = 1e-6


def choice_log_prob(logit: torch.Tensor, choice: torch.Tensor, log_nu: torch.Tensor | None) -> torch.Tensor:
    """Log-probability of each observed choice (0 = a, 1 = b, 2 = tie) given pair logits.

    ``log_nu=None`` means no ties are modelled (plain Bradley-Terry); tie rows then get the
    log of the Bradley-Terry probability of "a half win each", ``0.5 (log s(d) + log s(-d))``,
    which is what a tie contributes when one is forced to score it without a tie parameter.
    """
    if log_nu is None:
        lp_a = F.logsigmoid(logit)
        lp_b = F.logsigmoid(-logit)
        return torch.where(choice == 0, lp_a, torch.where(choice == 1, lp_b, 0.5 * (lp_a + lp_b)))
    # log P(c) = z_c - logsumexp(d/2, -d/2, log nu), written with logaddexp because a softmax
    # over a trailing dimension of size 3 is several times slower on CPU.
    half = 0.5 * logit
    lse = torch.logaddexp(torch.logaddexp(half, -half), log_nu.expand_as(logit))
    z = torch.where(choice == 0, half, torch.where(choice == 1, -half, log_nu.expand_as(logit)))
    return z - lse


def outcome_probs_np(logit: np.ndarray, log_nu: float | None) -> np.ndarray:
    """``[n, 3]`` probabilities of (a, b, tie) for pair logits; the tie column is 0 without ties."""
    logit = np.asarray(logit, dtype=np.float64)
    if log_nu is None:
        p_a = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
        return np.stack([p_a, 1.0 - p_a, np.zeros_like(p_a)], axis=-1)
    z = np.stack([0.5 * logit, -0.5 * logit, np.full_like(logit, log_nu)], axis=-1)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def choice_log_prob_np(logit: np.ndarray, choice: np.ndarray, log_nu: float | None) -> np.ndarray:
    """NumPy counterpart of :func:`choice_log_prob` with probabilities clipped away from 0."""
    probs = outcome_probs_np(logit, log_nu)
    choice = np.asarray(choice, dtype=np.int64)
    if log_nu is None:
        p_half = np.sqrt(np.clip(probs[:, 0], PROB_EPS, 1.0) * np.clip(probs[:, 1], PROB_EPS, 1.0))
        picked = np.where(choice == 2, p_half, probs[np.arange(len(choice)), np.minimum(choice, 1)])
    else:
        picked = probs[np.arange(len(choice)), choice]
    return np.log(np.clip(picked, PROB_EPS, 1.0))

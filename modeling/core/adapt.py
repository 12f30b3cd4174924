"""Fitting the K mixture weights of an unseen annotator with the rest of the model frozen.

For both PAL variants the pair logit of annotator u is linear in the mixture weights:
``logit_u(a, b) = sum_k w_uk L_k(a, b)`` where ``L_k`` is the logit under the pure prototype k.
(For PAL-B this is the reward mixture ``r_u = sum_k w_uk r_k`` itself; for PAL-A, with ``a_u = sum_k w_uk p_k``,
expanding ``||f(b) - a_u||^2 - ||f(a) - a_u||^2`` shows the ``||a_u||^2`` terms cancel and,
because ``sum_k w_uk = 1``, the logit is the w-weighted sum of the per-prototype logits.)
Adaptation therefore only needs the ``[m, K]`` matrix of per-prototype logits of the new
annotator's m judgments, so it runs in well under a millisecond for K <= 8.

Two estimators:

* ``posterior_weights``: empirical Bayes. The prior over the new annotator's weight vector is
  the empirical distribution of the training annotators' weights (plus the K pure prototypes
  with a little mass); the returned weights are the posterior mean. With 5-10 judgments this
  mostly identifies which known kind of annotator the newcomer resembles.
* ``map_weights``: MAP of the softmax logits under a Gaussian prior centred on the log of the
  population mixture, solved by Newton's method.
"""

from __future__ import annotations

import numpy as np

from .likelihood import PROB_EPS, choice_log_prob_np


def _log_lik_matrix(cand: np.ndarray, logits_k: np.ndarray, choice: np.ndarray, weight: np.ndarray,
                    log_nu: float | None) -> np.ndarray:
    """Weighted log-likelihood of the m judgments under each candidate weight vector ``[C]``."""
    logit = cand @ logits_k.T  # [C, m]
    c, m = logit.shape
    ll = choice_log_prob_np(logit.reshape(-1), np.tile(choice, c), log_nu).reshape(c, m)
    return ll @ weight


def posterior_weights(logits_k: np.ndarray, choice: np.ndarray, candidates: np.ndarray, *,
                      weight: np.ndarray | None = None, log_nu: float | None = None,
                      corner_mass: float = 0.05) -> np.ndarray:
    """Posterior-mean mixture weights under an empirical prior over ``candidates`` ``[C, K]``.

    Args:
        logits_k: ``[m, K]`` pair logits of the new annotator's judgments under each prototype.
        choice: ``[m]`` 0 = a, 1 = b, 2 = tie.
        candidates: ``[C, K]`` weight vectors of known annotators (rows on the simplex).
        weight: optional ``[m]`` judgment strengths (they scale each log-likelihood term).
        log_nu: Davidson tie parameter of the model, ``None`` when it has no ties.
        corner_mass: prior mass spread over the K pure prototypes so that a newcomer unlike
            every training annotator can still be matched to a single prototype.
    """
    k = logits_k.shape[1]
    m = logits_k.shape[0]
    w = np.ones(m) if weight is None else np.asarray(weight, dtype=np.float64)
    cand = np.concatenate([np.asarray(candidates, dtype=np.float64), np.eye(k)], axis=0)
    n_known = cand.shape[0] - k
    prior = np.concatenate([np.full(n_known, (1 - corner_mass) / max(n_known, 1)), np.full(k, corner_mass / k)])
    if n_known == 0:
        prior = np.full(k, 1.0 / k)
    log_post = np.log(prior) + (_log_lik_matrix(cand, logits_k, np.asarray(choice), w, log_nu) if m else 0.0)
    log_post -= log_post.max()
    post = np.exp(log_post)
    post /= post.sum()
    out = post @ cand
    return out / out.sum()


def map_weights(logits_k: np.ndarray, choice: np.ndarray, prior_weights: np.ndarray, *,
                weight: np.ndarray | None = None, log_nu: float | None = None, prior_strength: float = 1.0,
                iterations: int = 25) -> np.ndarray:
    """MAP mixture weights ``softmax(theta)`` with prior ``theta ~ N(log prior_weights, 1/strength)``.

    Newton's method on the exact objective: the choice log-likelihood (Bradley-Terry, or
    Davidson when ``log_nu`` is given) is concave in the pair logit, the logit is linear in
    ``w = softmax(theta)``, and K <= 8 makes the Hessian tiny. A Gauss-Newton Hessian keeps the
    steps ascent directions even where the softmax makes the objective non-concave.
    """
    logits_k = np.asarray(logits_k, dtype=np.float64)
    choice = np.asarray(choice, dtype=np.int64)
    m, k = logits_k.shape
    w = np.ones(m) if weight is None else np.asarray(weight, dtype=np.float64)
    mu = np.log(np.clip(np.asarray(prior_weights, dtype=np.float64), PROB_EPS, 1.0))
    mu -= mu.mean()
    theta = mu.copy()
    for _ in range(iterations):
        pi = np.exp(theta - theta.max())
        pi /= pi.sum()
        logit = logits_k @ pi
        g_logit, h_logit = _logit_derivs(logit, choice, log_nu)
        # d logit / d theta = J^T L_i with J = diag(pi) - pi pi^T (softmax Jacobian).
        jac = np.diag(pi) - np.outer(pi, pi)
        dl = logits_k @ jac  # [m, K]
        grad = (w * g_logit) @ dl - prior_strength * (theta - mu)
        # Gauss-Newton Hessian (negative definite) plus prior curvature.
        hess = (dl * (w * h_logit)[:, None]).T @ dl - prior_strength * np.eye(k)
        step = np.linalg.solve(hess - 1e-9 * np.eye(k), grad)
        theta = theta - step
        if np.abs(step).max() < 1e-6:
            break
    pi = np.exp(theta - theta.max())
    return pi / pi.sum()


def _logit_derivs(logit: np.ndarray, choice: np.ndarray, log_nu: float | None) -> tuple[np.ndarray, np.ndarray]:
    """First and (negative) second derivative of each choice's log-probability in its logit."""
    if log_nu is None:
        p = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
        target = np.where(choice == 0, 1.0, np.where(choice == 1, 0.0, 0.5))
        return target - p, -p * (1 - p)
    z = np.stack([0.5 * logit, -0.5 * logit, np.full_like(logit, log_nu)], axis=-1)
    z -= z.max(axis=-1, keepdims=True)
    q = np.exp(z)
    q /= q.sum(axis=-1, keepdims=True)
    # log P(c) = z_c - logsumexp(z); dz/dlogit = (1/2, -1/2, 0).
    dz = np.array([0.5, -0.5, 0.0])
    e_dz = q @ dz
    g = dz[choice] - e_dz
    var = q @ (dz**2) - e_dz**2
    return g, -var

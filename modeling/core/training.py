"""Training loop, choice of K and the ``fit`` entry point.

The objective is the (judgment-weighted) negative log-likelihood of PAL (Chen et al. 2024,
arXiv:2406.08469), ``-sum_i v_i log P(y_i | a_i, b_i, w_{u_i})`` with the PAL-A ideal-point or
PAL-B reward-mixture model of :mod:`modeling.core.models`, using Davidson's tie
likelihood when the data contain ties. All parameters - projection, prototypes/heads, scale,
tie parameter and each annotator's mixture logits - are learned jointly by full-batch AdamW
on frozen embeddings: each step projects every distinct (prompt, response) item once and
gathers per-judgment scores by index, which keeps 100k judgments cheap on a CPU.

Validation split: a per-annotator stratified ``val_fraction`` of the judgments. Every
validation fit is early-stopped on the held-out log-likelihood (it peaks long before the
training loss stops falling; running on only makes probabilities overconfident). For K >= 2
the best of ``n_restarts`` initialisations (by held-out likelihood) is kept, because a mixture
can settle in a local optimum that merges two groups and splits a third.

Choice of K (``k="auto"``): fit K = 1, 2, ... in ``k_range`` and pick the *smallest* K whose
mean held-out log-likelihood per judgment is within ``max(k_min_gain, k_se_mult * SE)`` of the
best one (SE: standard error of the paired per-judgment difference to the best K). Extra
prototypes must buy a meaningful and statistically clear gain, so homogeneous annotators get
K = 1. The sweep stops early once ``k_patience`` consecutive K fail to improve on the best so
far by ``k_min_gain``.

Final model (``refit="warm"``, default): the chosen validation fit is fine-tuned on all
judgments for ``refit_fraction`` of its early-stopped epoch count at half the learning rate,
so it keeps the optimum found under validation. ``refit="scratch"`` retrains from a fresh
initialisation for the early-stopped epoch count. With a fixed K (or BTL) the same single
validation fit happens unless ``early_stopping=False`` (then: ``epochs`` on all data).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from . import metrics as M
from .data import CHOICE_TIE, PreferenceData, check_sufficient, unique_items, validation_split
from .embeddings import DEFAULT_EMBEDDING_MODEL
from .models import KINDS, LatentPreferenceNet, RewardModel
from .optim import AdamW, cosine_scale, judgment_tensors, log_lik, pair_logits

ProgressCallback = Callable[[float, str], None]
# Below this many judgments a CPU fit runs on one thread: a full-batch step then takes about a
# millisecond and synchronising threads dominates, badly so on a busy 2-core machine.
SINGLE_THREAD_BELOW: int = 20_000
# Network learning rate per kind: PAL-B's linear heads reach their best held-out likelihood
# within ~50 epochs at 0.01, before the shared projection has learned enough, so they get more.
DEFAULT_LR: dict[str, float] = {"pal-a": 0.01, "pal-b": 0.02, "btl": 0.02}


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit` (rules for K, early stopping and refit: module docstring).

    ``k`` is an int or ``"auto"`` (ignored for ``btl``, which always has K = 1). ``device``
    ``None`` picks CUDA when available, else CPU. ``num_threads`` ``None`` uses one CPU thread
    below ``SINGLE_THREAD_BELOW`` judgments and torch's default above; the process-wide torch
    thread count (and RNG state) is restored when :func:`fit` returns. ``lr`` ``None`` takes
    the per-kind default of ``DEFAULT_LR`` (tuned on bench/bench_reward_models.py).
    """

    kind: str = "pal-a"
    k: int | str = "auto"
    k_range: tuple[int, int] = (1, 8)
    latent_dim: int = 16
    hidden_dim: int = 128
    dropout: float = 0.3
    standardize: bool = True
    use_prompt: bool = False
    epochs: int = 300
    lr: float | None = None
    annotator_lr: float = 0.1
    weight_decay: float = 1.0
    spread_penalty: float = 1e-3
    annotator_l2: float = 1e-3
    val_fraction: float = 0.2
    k_min_gain: float = 0.01
    k_se_mult: float = 1.0
    k_patience: int = 2
    n_restarts: int = 2
    early_stopping: bool = True
    eval_every: int = 5
    patience: int = 8
    refit: str = "warm"
    refit_fraction: float = 0.5
    min_val_judgments: int = 50
    seed: int = 0
    device: str | None = None
    num_threads: int | None = None
    embedding_model: str = DEFAULT_EMBEDDING_MODEL


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the model, its training/validation metrics and the K search."""

    model: RewardModel
    metrics: dict[str, Any]
    k: int
    annotator_weights: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    k_selection: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    train_seconds: float = 0.0


def pick_device(device: str | None) -> str:
    """Requested device, or CUDA when available, else CPU."""
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class _Run:
    """One training run: network, annotator logits, history and early-stopping outcome."""

    net: LatentPreferenceNet
    theta: torch.Tensor
    history: list[dict[str, float]]
    epochs: int
    val_ll: np.ndarray | None = None
    best_val_ll: float = -math.inf


def _train_once(data: PreferenceData, kind: str, k: int, cfg: TrainConfig, device: str, seed: int,
                progress: Callable[[float], None] | None = None, val: PreferenceData | None = None,
                max_epochs: int | None = None, init: _Run | None = None, lr_scale: float = 1.0,
                horizon: int | None = None) -> _Run:
    """Jointly fit network and annotator logits by full-batch AdamW (the PAL likelihood).

    With ``val``: early stopping on the held-out log-likelihood, checked every
    ``cfg.eval_every`` epochs, stopping after ``cfg.patience`` checks without improvement and
    restoring the best state. ``max_epochs`` caps the run; the cosine learning-rate schedule
    spans ``horizon`` epochs (default ``cfg.epochs``, so a capped refit repeats the first
    ``max_epochs`` steps of an uncapped run). ``init`` warm-starts from a previous run.
    """
    torch.manual_seed(seed)  # fit() restores the caller's RNG state afterwards
    net = LatentPreferenceNet(kind, data.X.shape[1], k, cfg.hidden_dim, cfg.latent_dim, cfg.use_prompt,
                              cfg.dropout).to(device)
    theta = (0.01 * torch.randn(max(data.n_annotators, 1), k)).to(device)
    t = judgment_tensors(data, net, device, theta.shape[0])
    if init is not None:
        net.load_state_dict(init.net.state_dict())  # keeps the input statistics of the first fit
        theta = init.theta.detach().clone().to(device)
    else:
        net.set_input_stats(t.items, cfg.standardize)
        if data.has_ties:
            # Davidson's nu from the tie rate as if every pair were even (P(tie) = nu / (2 + nu)):
            # starting near the answer matters because early stopping leaves few steps.
            tau = float((data.choice == CHOICE_TIE).mean())
            with torch.no_grad():
                net.log_nu.fill_(math.log(max(2 * tau / max(1 - tau, 1e-6), 1e-4)))
    theta.requires_grad_(k > 1)
    vt = None if val is None else judgment_tensors(val, net, device, theta.shape[0])
    ties = data.has_ties or (val is not None and val.has_ties)
    wsum = t.weight.sum().clamp_min(1e-12)
    net_params = [p for n_, p in net.named_parameters() if n_ != "log_nu" or ties]
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[kind]
    groups = [{"params": net_params, "lr": lr * lr_scale, "weight_decay": cfg.weight_decay}]
    if k > 1:
        groups.append({"params": [theta], "lr": cfg.annotator_lr * lr_scale, "weight_decay": 0.0})
    opt = AdamW(groups)
    n_epochs = max(1, min(cfg.epochs, max_epochs or cfg.epochs))
    # Cosine decay: large early steps to find the groups, small late ones to settle the fit.
    horizon = horizon or cfg.epochs
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor], torch.Tensor, np.ndarray] | None = None
    since_best, epoch = 0, 0
    eval_every = max(1, cfg.eval_every if vt is not None else n_epochs // 20)
    net.train()
    for epoch in range(1, n_epochs + 1):
        opt.zero_grad()
        nll = -(log_lik(pair_logits(net, theta, t, k), t, net.log_nu if ties else None) * t.weight).sum() / wsum
        loss = nll
        if k > 1:
            loss = loss + cfg.spread_penalty * net.prototype_spread() + cfg.annotator_l2 * theta.pow(2).mean()
        loss.backward()
        opt.step(cosine_scale(epoch - 1, horizon))
        if epoch % eval_every and epoch != n_epochs:
            continue
        entry = {"epoch": float(epoch), "nll": float(nll.detach())}
        history.append(entry)
        if progress is not None:
            progress(epoch / n_epochs)
        if vt is None:
            continue
        net.eval()
        with torch.no_grad():
            vlogit = pair_logits(net, theta, vt, k)
            vll = log_lik(vlogit, vt, net.log_nu if ties else None)
            entry["val_ll"] = float((vll * vt.weight).sum() / vt.weight.sum().clamp_min(1e-12))
            decisive = ~vt.tie
            entry["val_acc"] = float((((vlogit < 0) == (vt.sign < 0)) & decisive).sum() / decisive.sum().clamp_min(1))
        net.train()
        if best is None or entry["val_ll"] > best[0] + 1e-5:
            state = {n_: v.detach().clone() for n_, v in net.state_dict().items()}
            best = (entry["val_ll"], epoch, state, theta.detach().clone(), vll.double().cpu().numpy())
            since_best = 0
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    net.eval()
    if progress is not None:
        progress(1.0)
    if best is None:
        return _Run(net, theta.detach(), history, epoch)
    net.load_state_dict(best[2])
    return _Run(net, best[3], history, best[1], best[4], best[0])


def _weights_np(theta: torch.Tensor) -> np.ndarray:
    return torch.softmax(theta.double(), 1).cpu().numpy()


def predict_logits(model: RewardModel, data: PreferenceData, weights: np.ndarray | None = None) -> np.ndarray:
    """Pair logits of every judgment, using per-annotator weights (default: the model's own)."""
    w = model.annotator_weights if weights is None else weights
    if data.n_annotators > w.shape[0]:  # annotators unseen by the model get the population mixture
        w = np.concatenate([w, np.tile(model.population_weights, (data.n_annotators - w.shape[0], 1))])
    prompts = data.prompt_idx if (model.net.use_prompt and data.prompt_idx is not None) else None
    item_p, item_r, inv = unique_items(None if prompts is None else np.concatenate([prompts, prompts]),
                                       np.concatenate([data.a_idx, data.b_idx]))
    pe = None
    if prompts is not None:
        pe = np.where((item_p >= 0)[:, None], data.X[np.maximum(item_p, 0)], 0.0).astype(np.float32)
    s = model.prototype_scores(data.X[item_r], pe)
    n = len(data)
    d = s[inv[:n]] - s[inv[n:]]
    return (d * w[data.annotator_idx]).sum(1)


def evaluate(model: RewardModel, data: PreferenceData, weights: np.ndarray | None = None,
             annotator_group: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of the model on ``data`` (see :func:`modeling.core.metrics.summarize`)."""
    logits = predict_logits(model, data, weights)
    w = model.annotator_weights if weights is None else weights
    group = annotator_group if annotator_group is not None else (np.argmax(w, 1) if len(w) else np.zeros(0, int))
    return M.summarize(logits, data.choice, data.annotator_idx, log_nu=model.log_nu, weight=data.weight,
                       annotator_group=group)


def _paired_se(diff: np.ndarray, w: np.ndarray) -> float:
    """Standard error of the weighted mean of per-judgment log-likelihood differences."""
    mean = np.average(diff, weights=w)
    return math.sqrt(float(np.average((diff - mean) ** 2, weights=w)) / max(len(diff), 1))


def select_k(data: PreferenceData, cfg: TrainConfig, device: str, ks: list[int] | None = None,
             progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Early-stopped validation fits for each K, and the chosen K (rule: module docstring).

    Returns a dict with ``k``, ``epochs`` (early-stopped epoch count of the chosen fit),
    ``val_ll`` (mean held-out log-likelihood per K), ``run`` (the chosen validation fit, or
    ``None`` when there are too few judgments to validate) and bookkeeping.
    """
    lo, hi = cfg.k_range
    ks = ks or list(range(max(1, lo), max(lo, hi) + 1))
    tr_idx, va_idx = validation_split(data, cfg.val_fraction, cfg.seed)
    if len(va_idx) < cfg.min_val_judgments or len(tr_idx) < 10:
        return {"k": min(ks), "epochs": cfg.epochs, "val_ll": {}, "run": None,
                "reason": f"only {len(va_idx)} validation judgments (< {cfg.min_val_judgments}): "
                          f"K={min(ks)}, no early stopping"}
    train, val = data.subset(tr_idx), data.subset(va_idx)
    vw = val.weight.astype(np.float64)
    vw = vw if vw.sum() > 0 else np.ones_like(vw)
    runs: dict[int, _Run] = {}
    val_ll: dict[int, np.ndarray] = {}  # per-judgment held-out log-likelihood of runs[k]
    mean: dict[int, float] = {}
    fits = [(k, r) for k in ks for r in range(cfg.n_restarts if k > 1 else 1)]
    done, best_so_far, stale = 0, -math.inf, 0
    for k in ks:
        for r in range(cfg.n_restarts if k > 1 else 1):
            def sub(f: float, done: int = done, k: int = k) -> None:
                if progress is not None:
                    progress((done + f) / len(fits), f"validation fit, K={k}")
            run = _train_once(train, cfg.kind, k, cfg, device, cfg.seed + 1000 * k + 17 * r, sub, val=val)
            done += 1
            # With val= given, _train_once evaluates at least the last epoch and keeps its first
            # evaluation as the best so far, so a validation fit always has val_ll.
            assert run.val_ll is not None
            if k not in runs or run.best_val_ll > runs[k].best_val_ll:
                runs[k], val_ll[k] = run, run.val_ll
        mean[k] = float((val_ll[k] * vw).sum() / vw.sum())
        stale = stale + 1 if mean[k] < best_so_far + cfg.k_min_gain else 0
        best_so_far = max(best_so_far, mean[k])
        if len(ks) > 1 and stale >= cfg.k_patience:
            break  # larger K keep failing to help: stop the sweep (we prefer small K anyway)
    best = max(mean, key=mean.__getitem__)
    chosen, tol_used = best, 0.0
    for k in mean:
        tol = max(cfg.k_min_gain, cfg.k_se_mult * _paired_se(val_ll[best] - val_ll[k], vw))
        if mean[k] >= mean[best] - tol:
            chosen, tol_used = k, tol
            break
    if progress is not None:
        progress(1.0, f"chose K={chosen}")
    return {"k": chosen, "best_k": best, "tolerance": tol_used, "epochs": runs[chosen].epochs, "run": runs[chosen],
            "val_ll": {str(k): v for k, v in mean.items()},
            "val_epochs": {str(k): r.epochs for k, r in runs.items()},
            "n_train": len(train), "n_val": len(val),
            "reason": "smallest K within max(k_min_gain, k_se_mult*SE) of the best held-out log-likelihood"}


def fit(data: PreferenceData, config: TrainConfig | None = None,
        progress_callback: ProgressCallback | None = None) -> FitResult:
    """Train a BTL / PAL-A / PAL-B reward model on frozen embeddings.

    Raises :class:`~modeling.core.data.InsufficientDataError` with fewer than 10 judgments or
    no decisive (non-tie) judgment. ``progress_callback(fraction, message)`` is called
    throughout with non-decreasing fractions in [0, 1].
    """
    cfg = config or TrainConfig()
    if cfg.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {cfg.kind!r}")
    if cfg.refit not in ("warm", "scratch"):
        raise ValueError(f"refit must be 'warm' or 'scratch', got {cfg.refit!r}")
    check_sufficient(data)
    device = pick_device(cfg.device)
    threads_before = torch.get_num_threads()
    threads = cfg.num_threads or (1 if device == "cpu" and len(data) < SINGLE_THREAD_BELOW else threads_before)
    torch.set_num_threads(threads)
    rng_state = torch.random.get_rng_state()
    try:
        return _fit(data, cfg, device, progress_callback)
    finally:
        torch.set_num_threads(threads_before)
        torch.random.set_rng_state(rng_state)


def _fit(data: PreferenceData, cfg: TrainConfig, device: str, progress_callback: ProgressCallback | None) -> FitResult:
    """Body of :func:`fit` once the data are checked and the device and threads are set."""
    start = time.perf_counter()
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        last[0] = max(last[0], float(min(max(fraction, 0.0), 1.0)))
        if progress_callback is not None:
            progress_callback(last[0], message)

    report(0.0, "starting")
    if cfg.kind == "btl":
        ks = [1]
    elif cfg.k == "auto":
        ks = list(range(max(1, cfg.k_range[0]), max(cfg.k_range) + 1))
    else:
        if int(cfg.k) < 1:
            raise ValueError("k must be >= 1")
        ks = [int(cfg.k)]
    selection: dict[str, Any] = {}
    share, init = 0.0, None
    if len(ks) > 1 or cfg.early_stopping:
        share = 0.85
        selection = select_k(data, cfg, device, ks, lambda f, m: report(share * f, m))
        k, epochs, init = int(selection["k"]), int(selection["epochs"]), selection.pop("run")
    else:
        k, epochs = ks[0], cfg.epochs

    def final_progress(f: float) -> None:
        report(share + (1 - share) * f, f"training K={k} on all judgments")

    if init is not None and cfg.refit == "warm":
        ft_epochs = max(cfg.eval_every, int(math.ceil(cfg.refit_fraction * epochs)))
        run = _train_once(data, cfg.kind, k, cfg, device, cfg.seed, final_progress, max_epochs=ft_epochs,
                          init=init, lr_scale=0.5, horizon=ft_epochs)
    else:
        run = _train_once(data, cfg.kind, k, cfg, device, cfg.seed, final_progress, max_epochs=epochs)
    weights = _weights_np(run.theta) if k > 1 else np.ones((data.n_annotators, 1))
    counts = np.bincount(data.annotator_idx, minlength=data.n_annotators)
    if k > 1 and (counts == 0).any() and (counts > 0).any():
        # Annotators listed without judgments keep their random initial weights otherwise; give
        # them the population mixture so they neither distort it nor pose as a group.
        weights[counts == 0] = weights[counts > 0].mean(0)
    ids = data.annotator_ids if data.annotator_ids is not None else list(range(data.n_annotators))
    model = RewardModel(run.net, annotator_weights=weights, annotator_ids=ids, embedding_model=cfg.embedding_model,
                        uses_ties=data.has_ties, config={**asdict(cfg), "k": k, "device": device}, device=device)
    train_metrics = evaluate(model, data)
    report(1.0, "done")
    return FitResult(
        model=model,
        metrics={"train": train_metrics, "n_judgments": len(data), "n_ties": int((data.choice == CHOICE_TIE).sum()),
                 "selection_val_ll": selection.get("val_ll", {})},
        k=k, annotator_weights=weights, history=run.history, k_selection=selection, device=device,
        train_seconds=time.perf_counter() - start,
    )

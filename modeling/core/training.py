"""Training loop, choice of K and the ``fit`` entry point.

The objective is the (judgment-weighted) negative log-likelihood of PAL (Chen et al. 2024,
eq. 3 with the ideal-point model of eq. 2 or the reward mixture of eq. 4), using Davidson's tie
likelihood when the data contain ties. All parameters - projection, prototypes/heads, scale,
tie parameter and each annotator's mixture logits - are learned jointly by full-batch Adam on
frozen embeddings: each step projects every distinct (prompt, response) item once and gathers
the per-judgment scores by index, which is what makes 100k judgments cheap on a CPU.

Choice of K (``k="auto"``): fit every K in ``k_range`` on a per-annotator stratified training
split, measure the mean held-out log-likelihood per judgment, and pick the *smallest* K whose
held-out log-likelihood is within ``max(k_min_gain, k_se_mult * SE)`` of the best one (SE is
the standard error of the paired per-judgment difference to the best K). Extra prototypes must
therefore buy a meaningful and statistically clear gain, so homogeneous annotators get K = 1.
Every validation fit is early-stopped on the held-out log-likelihood; the final model is
refitted on all data with the chosen K for the number of epochs that early stopping found.
With a fixed K (or BTL) the same single validation fit sets the epoch count unless
``early_stopping=False``.
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
from .likelihood import choice_log_prob
from .models import KINDS, LatentPreferenceNet, RewardModel

ProgressCallback = Callable[[float, str], None]
# Below this many judgments a CPU fit runs on one thread: a full-batch step then takes about a
# millisecond and synchronising threads dominates, badly so on a busy 2-core machine.
SINGLE_THREAD_BELOW: int = 20_000


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit`.

    ``k`` is an int or ``"auto"`` (ignored for ``btl``, which always has K = 1). ``device``
    ``None`` picks CUDA when available, else CPU. ``num_threads`` ``None`` uses one CPU thread
    below ``SINGLE_THREAD_BELOW`` judgments and torch's default above; the process-wide torch
    thread count is restored when :func:`fit` returns.
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
    lr: float = 0.01
    annotator_lr: float = 0.1
    weight_decay: float = 1.0
    spread_penalty: float = 1e-3
    annotator_l2: float = 1e-3
    val_fraction: float = 0.2
    k_min_gain: float = 0.005
    k_se_mult: float = 1.0
    early_stopping: bool = True
    eval_every: int = 5
    patience: int = 8
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
class _Tensors:
    """Judgments as device tensors indexed into the distinct items."""

    items: torch.Tensor
    ia: torch.Tensor
    ib: torch.Tensor
    ann: torch.Tensor
    choice: torch.Tensor
    weight: torch.Tensor


def _to_tensors(data: PreferenceData, net: LatentPreferenceNet, device: str) -> _Tensors:
    """Distinct (prompt, response) items of the judgments and per-judgment index tensors."""
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
    inv_t = torch.from_numpy(inv).to(device)
    return _Tensors(
        items=net.features(resp, prm),
        ia=inv_t[:n], ib=inv_t[n:],
        ann=torch.from_numpy(data.annotator_idx).to(device),
        choice=torch.from_numpy(data.choice).to(device),
        weight=torch.from_numpy(data.weight).to(device),
    )


def _pair_logits(net: LatentPreferenceNet, theta: torch.Tensor, t: _Tensors, k: int) -> torch.Tensor:
    """Per-judgment logits ``sum_k w_uk (S_k(a) - S_k(b))`` from per-item scores, gathered by index."""
    s = net.scores(t.items)
    # index_select: its backward is an index_add, cheaper on CPU than advanced indexing.
    d = s.index_select(0, t.ia) - s.index_select(0, t.ib)
    return (d * torch.softmax(theta, 1).index_select(0, t.ann)).sum(1) if k > 1 else d[:, 0]


@dataclass
class _Run:
    """One training run: the network, annotator logits, history and early-stopping outcome."""

    net: LatentPreferenceNet
    theta: torch.Tensor
    history: list[dict[str, float]]
    epochs: int
    val_ll: np.ndarray | None = None


def _train_once(data: PreferenceData, kind: str, k: int, cfg: TrainConfig, device: str, seed: int,
                progress: Callable[[float], None] | None = None, val: PreferenceData | None = None,
                max_epochs: int | None = None) -> _Run:
    """Jointly fit network and annotator logits by full-batch AdamW (PAL eq. 3 objective).

    With ``val``, the held-out log-likelihood is checked every ``cfg.eval_every`` epochs and
    training stops after ``cfg.patience`` checks without improvement, restoring the best
    state (early stopping: held-out likelihood peaks long before the training loss does, and
    running on only makes the probabilities overconfident). ``max_epochs`` truncates the run
    while keeping the learning-rate schedule of a ``cfg.epochs`` run, so a refit on all data
    can repeat the step count that early stopping found.
    """
    torch.manual_seed(seed)  # fit() restores the caller's RNG state afterwards
    net = LatentPreferenceNet(kind, data.X.shape[1], k, cfg.hidden_dim, cfg.latent_dim, cfg.use_prompt,
                              cfg.dropout).to(device)
    theta = (0.01 * torch.randn(max(data.n_annotators, 1), k)).to(device).requires_grad_(k > 1)
    t = _to_tensors(data, net, device)
    net.set_input_stats(t.items, cfg.standardize)
    vt = None if val is None else _to_tensors(val, net, device)
    ties = data.has_ties
    log_nu = (lambda: net.log_nu) if ties else (lambda: None)  # noqa: E731
    wsum = t.weight.sum().clamp_min(1e-12)
    net_params = [p for n_, p in net.named_parameters() if n_ != "log_nu" or ties]
    groups = [{"params": net_params, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if k > 1:
        groups.append({"params": [theta], "lr": cfg.annotator_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups)
    # Cosine decay: large early steps to find the groups, small late ones to settle the fit.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=0.05 * cfg.lr)
    n_epochs = min(cfg.epochs, max_epochs or cfg.epochs)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict, torch.Tensor, np.ndarray] | None = None
    since_best = 0
    eval_every = max(1, cfg.eval_every if vt is not None else n_epochs // 20)
    epoch = 0
    net.train()
    for epoch in range(1, n_epochs + 1):
        opt.zero_grad(set_to_none=True)
        ll = choice_log_prob(_pair_logits(net, theta, t, k), t.choice, log_nu())
        nll = -(ll * t.weight).sum() / wsum
        loss = nll
        if k > 1:
            loss = loss + cfg.spread_penalty * net.prototype_spread() + cfg.annotator_l2 * theta.pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
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
            vlogit = _pair_logits(net, theta, vt, k)
            vll = choice_log_prob(vlogit, vt.choice, log_nu())
            entry["val_ll"] = float((vll * vt.weight).sum() / vt.weight.sum().clamp_min(1e-12))
            decisive = vt.choice != 2
            entry["val_acc"] = float((((vlogit < 0) == (vt.choice == 1)) & decisive).sum() / decisive.sum().clamp_min(1))
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
    if best is None:
        return _Run(net, theta.detach(), history, epoch)
    net.load_state_dict(best[2])
    if progress is not None:
        progress(1.0)
    return _Run(net, best[3], history, best[1], best[4])


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


def select_k(data: PreferenceData, cfg: TrainConfig, device: str, ks: list[int] | None = None,
             progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Held-out log-likelihood for each K (early-stopped), the chosen K and its epoch count.

    Rule (module docstring): the smallest K whose mean held-out log-likelihood per judgment
    is within ``max(k_min_gain, k_se_mult * SE)`` of the best K's.
    """
    lo, hi = cfg.k_range
    ks = ks or list(range(max(1, lo), max(lo, hi) + 1))
    tr_idx, va_idx = validation_split(data, cfg.val_fraction, cfg.seed)
    if len(va_idx) < cfg.min_val_judgments or len(tr_idx) < 10:
        return {"k": min(ks), "epochs": cfg.epochs, "val_ll": {},
                "reason": f"only {len(va_idx)} validation judgments (< {cfg.min_val_judgments}): "
                          f"K={min(ks)}, no early stopping"}
    train, val = data.subset(tr_idx), data.subset(va_idx)
    vw = val.weight.astype(np.float64)
    vw = vw if vw.sum() > 0 else np.ones_like(vw)
    lls: dict[int, np.ndarray] = {}
    epochs: dict[int, int] = {}
    for i, k in enumerate(ks):
        def sub(f: float, i: int = i, k: int = k) -> None:
            if progress is not None:
                progress((i + f) / len(ks), f"validation fit, K={k}")
        run = _train_once(train, cfg.kind, k, cfg, device, cfg.seed + 1000 * k, sub, val=val)
        lls[k], epochs[k] = run.val_ll, run.epochs
    mean = {k: float((v * vw).sum() / vw.sum()) for k, v in lls.items()}
    best = max(mean, key=mean.get)
    chosen, tol_used = best, 0.0
    for k in ks:
        diff = lls[best] - lls[k]
        se = math.sqrt(float(np.average((diff - np.average(diff, weights=vw)) ** 2, weights=vw)) / len(diff))
        tol = max(cfg.k_min_gain, cfg.k_se_mult * se)
        if mean[k] >= mean[best] - tol:
            chosen, tol_used = k, tol
            break
    return {"k": chosen, "best_k": best, "tolerance": tol_used, "epochs": epochs[chosen],
            "val_ll": {str(k): v for k, v in mean.items()}, "val_epochs": {str(k): v for k, v in epochs.items()},
            "n_train": len(train), "n_val": len(val),
            "reason": "smallest K within max(k_min_gain, k_se_mult*SE) of the best held-out log-likelihood"}


def fit(data: PreferenceData, config: TrainConfig | None = None,
        progress_callback: ProgressCallback | None = None) -> FitResult:
    """Train a BTL / PAL-A / PAL-B reward model on frozen embeddings.

    Raises :class:`~modeling.core.data.InsufficientDataError` with fewer than 10 judgments or
    no decisive (non-tie) judgment. ``progress_callback(fraction, message)`` is called
    throughout (fraction in [0, 1]).
    """
    cfg = config or TrainConfig()
    if cfg.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {cfg.kind!r}")
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

    def report(fraction: float, message: str) -> None:
        if progress_callback is not None:
            progress_callback(float(min(max(fraction, 0.0), 1.0)), message)

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
    share = 0.0
    if len(ks) > 1 or cfg.early_stopping:
        share = len(ks) / (len(ks) + 1)
        selection = select_k(data, cfg, device, ks, lambda f, m: report(share * f, m))
        k, epochs = int(selection["k"]), int(selection["epochs"])
    else:
        k, epochs = ks[0], cfg.epochs
    run = _train_once(data, cfg.kind, k, cfg, device, cfg.seed,
                      lambda f: report(share + (1 - share) * f, f"training K={k} on all data"), max_epochs=epochs)
    net, theta, history = run.net, run.theta, run.history
    weights = _weights_np(theta) if k > 1 else np.ones((data.n_annotators, 1))
    ids = data.annotator_ids if data.annotator_ids is not None else list(range(data.n_annotators))
    model = RewardModel(net, annotator_weights=weights, annotator_ids=ids, embedding_model=cfg.embedding_model,
                        uses_ties=data.has_ties, config={**asdict(cfg), "k": k, "device": device}, device=device)
    train_metrics = evaluate(model, data)
    elapsed = time.perf_counter() - start
    report(1.0, "done")
    return FitResult(
        model=model,
        metrics={"train": train_metrics, "n_judgments": len(data), "n_ties": int((data.choice == CHOICE_TIE).sum()),
                 "selection_val_ll": selection.get("val_ll", {})},
        k=k, annotator_weights=weights, history=history, k_selection=selection, device=device,
        train_seconds=elapsed,
    )

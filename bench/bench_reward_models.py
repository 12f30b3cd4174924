"""Benchmark of the group-aware latent reward models on semi-synthetic heterogeneous preferences.

Usage (from the repository root)::

    .venv/bin/python bench/bench_reward_models.py [--seeds 3] [--quick] [--out results.json]

For each seed it generates a world with latent annotator groups (``bench.synthetic``), embeds
the texts with the bundled all-MiniLM-L6-v2, and compares, on held-out pairs:

* the Bayes oracle (true ideal points and noise model),
* a single Bradley-Terry reward model (BTL) and BTL trained separately per true group,
* PAL-A and PAL-B with K chosen automatically,

for seen annotators and for unseen annotators adapted from 10 judgments, plus group recovery
(adjusted Rand index of argmax weights vs true groups). A null world (one shared ideal point)
checks that no groups are invented. It also times training on 10k and 100k judgments with
cached embeddings and compares embedding throughput with calling sentence-transformers directly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.synthetic import SyntheticDataset, generate  # noqa: E402
from modeling.core.data import PreferenceData  # noqa: E402
from modeling.core.embeddings import Embedder, text_hash  # noqa: E402
from modeling.core.metrics import adjusted_rand_index  # noqa: E402
from modeling.core.models import RewardModel  # noqa: E402
from modeling.core.training import TrainConfig, fit, predict_logits  # noqa: E402

N_ADAPT = 10
_EMB_CACHE: dict[str, np.ndarray] = {}


def embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Embeddings with an in-process cache keyed by text hash (as the Django side does)."""
    missing = [t for t in dict.fromkeys(texts) if text_hash(t) not in _EMB_CACHE]
    if missing:
        for t, e in zip(missing, embedder.encode(missing), strict=False):
            _EMB_CACHE[text_hash(t)] = e
    return np.stack([_EMB_CACHE[text_hash(t)] for t in texts])


def to_data(ds: SyntheticDataset, X: np.ndarray, mask: np.ndarray, remap: np.ndarray | None = None) -> PreferenceData:
    """PreferenceData of the selected judgments (annotators renumbered by ``remap``)."""
    ann = ds.annotator_idx[mask]
    return PreferenceData(X=X, a_idx=ds.a_idx[mask], b_idx=ds.b_idx[mask],
                          annotator_idx=ann if remap is None else remap[ann], choice=ds.choice[mask],
                          prompt_idx=ds.prompt_idx[mask])


def accuracy_from_logits(logits: np.ndarray, choice: np.ndarray) -> float:
    """Accuracy on decisive judgments of pair logits (positive = a preferred)."""
    m = choice != 2
    return float(((logits[m] < 0) == (choice[m] == 1)).mean())


def split(ds: SyntheticDataset, seed: int, unseen_frac: float = 0.2, heldout_frac: float = 0.2) -> dict[str, np.ndarray]:
    """Unseen annotators, held-out pairs and the judgment masks derived from them."""
    rng = np.random.default_rng(seed + 7919)
    unseen = np.zeros(ds.n_annotators, dtype=bool)
    unseen[rng.permutation(ds.n_annotators)[: int(round(unseen_frac * ds.n_annotators))]] = True
    pairs = np.unique(ds.pair_id)
    held_pairs = rng.choice(pairs, int(round(heldout_frac * len(pairs))), replace=False)
    held = np.isin(ds.pair_id, held_pairs)
    seen_j = ~unseen[ds.annotator_idx]
    # The first N_ADAPT judgments of each unseen annotator on training pairs adapt its weights.
    adapt = np.zeros(len(ds.choice), dtype=bool)
    for u in np.flatnonzero(unseen):
        adapt[np.flatnonzero((ds.annotator_idx == u) & ~held)[:N_ADAPT]] = True
    return {"unseen": unseen, "train": seen_j & ~held, "test_seen": seen_j & held,
            "adapt": adapt, "test_unseen": ~seen_j & held}


def unseen_logits(model: RewardModel, ds: SyntheticDataset, X: np.ndarray, sp: dict[str, np.ndarray],
                  method: str) -> tuple[np.ndarray, float]:
    """Logits on unseen annotators' test judgments after adapting each from its N_ADAPT judgments."""
    test = sp["test_unseen"]
    out = np.zeros(int(test.sum()))
    ann_test = ds.annotator_idx[test]
    times = []
    for u in np.flatnonzero(sp["unseen"]):
        a = sp["adapt"] & (ds.annotator_idx == u)
        t0 = time.perf_counter()
        if method == "population":
            w = model.population_weights
        else:
            w = model.adapt_annotator(X[ds.a_idx[a]], X[ds.b_idx[a]], ds.choice[a], method=method)
        times.append(time.perf_counter() - t0)
        m = ann_test == u
        idx = np.flatnonzero(test)[m]
        out[m] = model.pair_logits(X[ds.a_idx[idx]], X[ds.b_idx[idx]], w)
    return out, float(np.median(times)) if times else 0.0


def run_world(seed: int, embedder: Embedder, cfg: dict[str, Any], kinds: list[str], log: Any) -> dict[str, Any]:
    """All accuracy comparisons on one group world and its null twin."""
    res: dict[str, Any] = {"seed": seed}
    ds = generate(seed, **cfg["gen"])
    X = embed(embedder, ds.texts)
    sp = split(ds, seed)
    seen_ids = np.flatnonzero(~sp["unseen"])
    remap = -np.ones(ds.n_annotators, dtype=np.int64)
    remap[seen_ids] = np.arange(len(seen_ids))
    train = to_data(ds, X, sp["train"], remap)
    test_seen = to_data(ds, X, sp["test_seen"], remap)
    ch_seen, ch_unseen = ds.choice[sp["test_seen"]], ds.choice[sp["test_unseen"]]
    oc = ds.oracle_correct()
    res["n_train"] = len(train)
    res["n_test_seen"] = int((ch_seen != 2).sum())
    res["n_test_unseen"] = int((ch_unseen != 2).sum())
    res["oracle"] = {"seen": float(oc[sp["test_seen"]][ch_seen != 2].mean()),
                     "unseen": float(oc[sp["test_unseen"]][ch_unseen != 2].mean())}
    tc = dict(cfg["train"])

    t0 = time.perf_counter()
    btl = fit(train, TrainConfig(kind="btl", seed=seed, **tc)).model
    res["btl"] = {"seen": accuracy_from_logits(predict_logits(btl, test_seen), ch_seen),
                  "unseen": accuracy_from_logits(unseen_logits(btl, ds, X, sp, "population")[0], ch_unseen),
                  "fit_s": time.perf_counter() - t0}
    # BTL per true group: an upper reference that is told every annotator's group.
    lg_seen = np.zeros(len(ch_seen))
    lg_unseen = np.zeros(len(ch_unseen))
    g_train = ds.annotator_group[ds.annotator_idx]
    for g in np.unique(ds.annotator_group):
        m_tr = sp["train"] & (g_train == g)
        gm = fit(to_data(ds, X, m_tr, remap), TrainConfig(kind="btl", seed=seed, **tc)).model
        ms, mu = g_train[sp["test_seen"]] == g, g_train[sp["test_unseen"]] == g
        lg_seen[ms] = predict_logits(gm, test_seen.subset(ms))
        idx = np.flatnonzero(sp["test_unseen"])[mu]
        lg_unseen[mu] = gm.pair_logits(X[ds.a_idx[idx]], X[ds.b_idx[idx]])
    res["btl_per_group"] = {"seen": accuracy_from_logits(lg_seen, ch_seen),
                            "unseen": accuracy_from_logits(lg_unseen, ch_unseen)}
    for kind in kinds:
        t0 = time.perf_counter()
        fr = fit(train, TrainConfig(kind=kind, k="auto", seed=seed, **tc))
        fit_s = time.perf_counter() - t0
        model = fr.model
        lu, adapt_s = unseen_logits(model, ds, X, sp, "posterior")
        lu_map, _ = unseen_logits(model, ds, X, sp, "map")
        lu_pop, _ = unseen_logits(model, ds, X, sp, "population")
        res[kind] = {
            "seen": accuracy_from_logits(predict_logits(model, test_seen), ch_seen),
            "unseen": accuracy_from_logits(lu, ch_unseen),
            "unseen_map": accuracy_from_logits(lu_map, ch_unseen),
            "unseen_population": accuracy_from_logits(lu_pop, ch_unseen),
            "k": fr.k, "val_ll": fr.k_selection.get("val_ll", {}),
            "ari": adjusted_rand_index(ds.annotator_group[seen_ids], fr.annotator_weights.argmax(1)),
            "fit_s": fit_s, "adapt_ms_median": 1000 * adapt_s,
        }
        log(f"  seed {seed} {kind}: K={fr.k} seen={res[kind]['seen']:.4f} unseen={res[kind]['unseen']:.4f} "
            f"ari={res[kind]['ari']:.3f} ({fit_s:.1f}s)")
    log(f"  seed {seed} oracle seen={res['oracle']['seen']:.4f} unseen={res['oracle']['unseen']:.4f} "
        f"btl seen={res['btl']['seen']:.4f} btl/group seen={res['btl_per_group']['seen']:.4f}")

    # Null world: everyone shares one ideal point.
    nd = generate(seed, world="null", **cfg["gen"])
    Xn = embed(embedder, nd.texts)
    spn = split(nd, seed)
    keep = np.flatnonzero(~spn["unseen"])
    rmn = -np.ones(nd.n_annotators, dtype=np.int64)
    rmn[keep] = np.arange(len(keep))
    trn, ten = to_data(nd, Xn, spn["train"], rmn), to_data(nd, Xn, spn["test_seen"], rmn)
    null: dict[str, Any] = {"oracle": float(nd.oracle_correct()[spn["test_seen"]][ten.choice != 2].mean())}
    null["btl"] = accuracy_from_logits(predict_logits(fit(trn, TrainConfig(kind="btl", seed=seed, **tc)).model, ten),
                                       ten.choice)
    for kind in kinds:
        fr = fit(trn, TrainConfig(kind=kind, k="auto", seed=seed, **tc))
        null[kind] = {"seen": accuracy_from_logits(predict_logits(fr.model, ten), ten.choice), "k": fr.k,
                      "val_ll": fr.k_selection.get("val_ll", {})}
        log(f"  seed {seed} null {kind}: K={fr.k} acc={null[kind]['seen']:.4f} (btl {null['btl']:.4f})")
    res["null"] = null
    return res


def time_training(n_judgments: int, embedder: Embedder, kinds: list[str], tc: dict[str, Any], log: Any) -> dict[str, Any]:
    """Wall-clock fit time on ``n_judgments`` with cached embeddings (embedding excluded)."""
    per = 100
    ds = generate(12345, n_annotators=max(2, n_judgments // per), judgments_per_annotator=per)
    X = embed(embedder, ds.texts)
    data = to_data(ds, X, np.ones(len(ds.choice), dtype=bool))
    out: dict[str, Any] = {"n_judgments": len(data), "n_texts": len(ds.texts), "n_annotators": ds.n_annotators}
    runs = [("btl", 1)] + [(k, 3) for k in kinds] + [(k, "auto") for k in kinds]
    for kind, k in runs:
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        fr = fit(data, TrainConfig(kind=kind, k=k, **tc))
        # Wall time is what a user waits; CPU time (all threads) is less distorted by other load.
        out[f"{kind}_k{k}"] = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                               "k": fr.k, "load_avg_1min": load}
        r = out[f"{kind}_k{k}"]
        log(f"  timing {len(data)} judgments {kind} K={k}: {r['seconds']:.1f}s wall, {r['cpu_seconds']:.1f}s CPU "
            f"(K={fr.k}, load {load:.1f})")
    return out


def embedding_throughput(embedder: Embedder, texts: list[str], reps: int = 5) -> dict[str, Any]:
    """Sentences/s of Embedder.encode vs SentenceTransformer.encode (defaults) on the same texts.

    The two alternate, swapping which goes first each repetition, and medians are compared,
    which spreads background load over both.
    """
    ours, direct = [], []
    load = os.getloadavg()[0]
    embedder.encode(texts[:16])
    embedder.model.encode(texts[:16])
    for rep in range(reps):
        for which in ((0, 1) if rep % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            if which == 0:
                embedder.model.encode(texts)
                direct.append(time.perf_counter() - t0)
            else:
                embedder.encode(texts)
                ours.append(time.perf_counter() - t0)
    o, d = float(np.median(ours)), float(np.median(direct))
    return {"n_texts": len(texts), "ours_sent_per_s": len(texts) / o, "direct_sent_per_s": len(texts) / d,
            "ratio": d / o, "ours_s": ours, "direct_s": direct, "load_avg_1min": load}


def short_sentences() -> list[str]:
    """Distinct one-sentence texts from the generator's fragment bank (prompts, points, caveats, jokes)."""
    from bench.synthetic import CAVEATS, JOKES, POINT_TEMPLATES, TOPICS

    out = []
    for question, subject, points in TOPICS:
        out.append(question)
        out += [POINT_TEMPLATES[1][i % 4].format(p=p) for i, p in enumerate(points)]
        out += [j.format(s=subject) for j in JOKES[:2]]
    return sorted(set(out + list(CAVEATS)))


def summarize(worlds: list[dict[str, Any]], kinds: list[str]) -> dict[str, Any]:
    """Mean and std over seeds of the headline numbers."""
    def ms(vals: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(vals)), "std": float(np.std(vals))}

    s: dict[str, Any] = {}
    for name in ["oracle", "btl", "btl_per_group", *kinds]:
        s[name] = {part: ms([w[name][part] for w in worlds]) for part in ("seen", "unseen")}
    for kind in kinds:
        s[kind]["unseen_map"] = ms([w[kind]["unseen_map"] for w in worlds])
        s[kind]["unseen_population"] = ms([w[kind]["unseen_population"] for w in worlds])
        s[kind]["ari"] = ms([w[kind]["ari"] for w in worlds])
        s[kind]["k"] = [w[kind]["k"] for w in worlds]
        s[kind]["gap_seen"] = ms([w["oracle"]["seen"] - w[kind]["seen"] for w in worlds])
        s[kind]["gap_unseen"] = ms([w["oracle"]["unseen"] - w[kind]["unseen"] for w in worlds])
        s[kind]["over_btl_seen"] = ms([w[kind]["seen"] - w["btl"]["seen"] for w in worlds])
        s[kind]["null_minus_btl"] = ms([w["null"][kind]["seen"] - w["null"]["btl"] for w in worlds])
        s[kind]["null_k"] = [w["null"][kind]["k"] for w in worlds]
        s[kind]["adapt_ms_median"] = float(np.median([w[kind]["adapt_ms_median"] for w in worlds]))
    return s


def print_table(s: dict[str, Any], kinds: list[str], timing: dict[str, Any], emb: dict[str, Any] | None) -> None:
    """Human-readable summary table."""
    pct = lambda d: f"{100 * d['mean']:6.2f} ± {100 * d['std']:4.2f}"  # noqa: E731
    print("\nAccuracy on held-out pairs (%, mean ± std over seeds)")
    print(f"{'model':<16}{'seen':>16}{'unseen (10 judg.)':>22}")
    for name in ["oracle", "btl", "btl_per_group", *kinds]:
        print(f"{name:<16}{pct(s[name]['seen']):>16}{pct(s[name]['unseen']):>22}")
    for kind in kinds:
        k = s[kind]
        print(f"\n{kind}: K chosen {k['k']} (null world: {k['null_k']}); ARI {k['ari']['mean']:.3f} ± {k['ari']['std']:.3f}")
        print(f"  gap to oracle: seen {100 * k['gap_seen']['mean']:.2f} pts (target <= 3), "
              f"unseen {100 * k['gap_unseen']['mean']:.2f} pts (target <= 5)")
        print(f"  over single BTL (seen): {100 * k['over_btl_seen']['mean']:.2f} pts (target >= 15); "
              f"null world vs BTL: {100 * k['null_minus_btl']['mean']:+.2f} pts (target >= -1)")
        print(f"  unseen with MAP adaptation {100 * k['unseen_map']['mean']:.2f}, population mixture "
              f"{100 * k['unseen_population']['mean']:.2f}; adaptation {k['adapt_ms_median']:.2f} ms median")
    for _key, t in timing.items():
        print(f"\nTraining time, {t['n_judgments']} judgments ({t['n_texts']} texts, cached embeddings):")
        for name, v in t.items():
            if isinstance(v, dict):
                print(f"  {name:<14} {v['seconds']:6.1f} s wall {v['cpu_seconds']:6.1f} s CPU  (K={v['k']}, "
                      f"1-min load {v['load_avg_1min']:.1f})")
    for name, e in (emb or {}).items():
        print(f"\nEmbedding throughput, {e['n_texts']} {name.replace('_', ' ')}: ours {e['ours_sent_per_s']:.0f}/s, "
              f"sentence-transformers direct {e['direct_sent_per_s']:.0f}/s, ratio {e['ratio']:.3f} (target >= 0.9)")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write JSON results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (worlds) to average over")
    ap.add_argument("--quick", action="store_true", help="smaller worlds, 10k timing only")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    ap.add_argument("--kinds", default="pal-a,pal-b", help="comma-separated model kinds besides BTL")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-embedding", action="store_true")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    gen = {"n_annotators": 100, "judgments_per_annotator": 160} if args.quick else \
        {"n_annotators": 200, "judgments_per_annotator": 160}
    cfg = {"gen": gen, "train": {}}

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    t_start = time.perf_counter()
    embedder = Embedder()
    worlds = []
    for seed in range(args.seeds):
        log(f"world seed {seed}")
        worlds.append(run_world(seed, embedder, cfg, kinds, log))
    timing: dict[str, Any] = {}
    if not args.skip_timing:
        for n in ([10_000] if args.quick else [10_000, 100_000]):
            timing[str(n)] = time_training(n, embedder, kinds, cfg["train"], log)
    emb = None
    if not args.skip_embedding:
        emb = {"responses": embedding_throughput(embedder, generate(0, n_annotators=2, judgments_per_annotator=1).texts),
               "short_sentences": embedding_throughput(embedder, short_sentences())}
    s = summarize(worlds, kinds)
    print_table(s, kinds, timing, emb)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                    "platform": platform.platform(), "torch": torch.__version__,
                    "load_avg_at_end": list(os.getloadavg())},
        "config": cfg, "summary": s, "worlds": worlds, "timing": timing, "embedding": emb,
        "total_seconds": time.perf_counter() - t_start,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float))
        log(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

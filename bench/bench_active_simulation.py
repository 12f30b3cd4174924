"""Active querying in simulation: how fast each selection policy learns where a new annotator stands.

    .venv/bin/python bench/bench_active_simulation.py [--seeds 0] [--new-per-policy 40] [--groups 3]
        [--policies random information_gain] [--database polyphony_bench_h1_sim]

For each seed, on PostgreSQL (a fresh database, `polyphony_bench_h1_sim` unless `--database`; give
each of several parallel processes its own):

1. `bench.synthetic.generate` makes a world of latent annotator groups (3 groups, 15 % mixtures).
   80 % of its annotators are training annotators: their judgments are imported as comparisons
   (`annotation.comparisons.comparisons_import_records`, which also adds their pairs to the pool).
2. A PAL-A model is trained through the Django pipeline (`training_run_request` +
   `training_run_execute`, what `train_reward_model --sync` does) and its pair scores cached
   (`pair_scores_refresh`).
3. For every policy, the held-out annotators (the other 20 %, never seen in training) are
   registered through the participant API and answer 40 pairs served by
   `GET /api/v1/participant/next`, submitted with `POST /api/v1/participant/judgments`, choosing
   with their TRUE preferences (the generator's ideal point, Davidson ties and label noise).
   Requests go through Django's test client in this process (the full URL → DRF → services path,
   without a socket): gunicorn would add only transport time to a simulation.
4. After 5, 10, 20 and 40 answers their weights are adapted with the model frozen
   (`RewardModel.adapt_annotator`, posterior mean) and scored on 300 held-out pairs per annotator:
   accuracy = agreement with the side their true utility prefers. "Identified after 10": the
   prototype with the largest adapted weight maps (by majority over the training annotators) to
   their true group; counted over single-group annotators.

Between policies the simulated participants are withdrawn, so every policy starts from the same
pool coverage. The retrain trigger is off (no model changes during the simulation).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE = "polyphony_bench_h1_sim"
CHECKPOINTS = (5, 10, 20, 40)
POLICIES = ("random", "uncertainty", "information_gain", "disagreement", "mixed")
EVAL_PAIRS = 300


def setup_django(database: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DATABASE_URL"] = f"postgres://127.0.0.1:5432/{database}"
    os.environ.setdefault("POLYPHONY_VAR_DIR", f"/tmp/{database}_var")
    os.environ["POLYPHONY_RETRAIN_EVERY"] = "0"
    from bench.bench_annotation_load import database_create

    database_create(admin_url="postgres://127.0.0.1:5432/postgres", name=database)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    settings.POLYPHONY_JUDGMENT_HOOKS = []
    settings.ALLOWED_HOSTS = ["*"]


def true_choice(rng: np.random.Generator, ds: Any, ideal: np.ndarray, a: int, b: int) -> str:
    """The generator's own choice model (bench.synthetic.generate) for one annotator and pair."""
    beta, noise, nu = ds.params["beta"], ds.params["label_noise"], ds.params["tie_nu"]
    d = -beta * ((ds.attributes[a] - ideal) ** 2).sum() + beta * ((ds.attributes[b] - ideal) ** 2).sum()
    logits = np.array([d / 2, -d / 2, np.log(nu) if nu > 0 else -np.inf])
    p = np.exp(logits - logits.max())
    p = (1 - noise) * p / p.sum() + noise * np.array([0.5, 0.5, 0.0])
    return ("a", "b", "tie")[int(rng.choice(3, p=p))]


def run_seed(seed: int, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from annotation.comparisons import comparisons_import_records
    from annotation.models import Participant
    from annotation.services import participant_withdraw
    from bench.synthetic import generate
    from elicitation.models import Study
    from modeling.core.models import RewardModel
    from modeling.embedding_cache import embeddings_for_texts
    from modeling.models import PairScores
    from modeling.pair_scores import pair_scores_refresh
    from modeling.selectors import training_run_artifact_folder
    from modeling.services import training_run_execute, training_run_request

    t_start = time.perf_counter()
    ds = generate(seed, n_annotators=args.annotators, judgments_per_annotator=args.train_judgments,
                  n_groups=args.groups)
    rng = np.random.default_rng(seed + 101)
    new = np.zeros(ds.n_annotators, dtype=bool)
    new[rng.permutation(ds.n_annotators)[: int(round(0.2 * ds.n_annotators))]] = True
    new_ids = np.flatnonzero(new)[: args.new_per_policy]

    owner, _ = get_user_model().objects.get_or_create(username=f"sim-owner-{seed}")
    token, _ = Token.objects.get_or_create(user=owner)
    study = Study.objects.create(
        owner=owner, title=f"Active simulation {seed}", slug=f"active-sim-{seed}", status=Study.Status.OPEN,
        judgments_per_participant=max(CHECKPOINTS), overlap_target=3, allow_ties=True, strength_labels=[],
        completion_code="SIM",
    )
    train_mask = ~new[ds.annotator_idx]
    records = [
        {"prompt": ds.texts[ds.prompt_idx[i]], "response_a": ds.texts[ds.a_idx[i]],
         "response_b": ds.texts[ds.b_idx[i]], "choice": ("a", "b", "tie")[ds.choice[i]],
         "annotator": f"train-{ds.annotator_idx[i]}"}
        for i in np.flatnonzero(train_mask)
    ]
    comparisons_import_records(study=study, records=records)
    log(f"seed {seed}: imported {len(records)} training judgments ({time.perf_counter() - t_start:.0f} s)")

    params = {"seed": seed, **({"max_groups": args.max_groups} if args.groups_requested is None else {})}
    run, _ = training_run_request(study=study, kind="pal-a", groups=args.groups_requested,
                                  hyperparameters=params, enqueue=False)
    run = training_run_execute(run_id=run.pk)
    if run.status != "done":
        raise SystemExit(f"training failed: {run.error}")
    scores = pair_scores_refresh(run_id=run.pk)
    log(f"seed {seed}: trained K={run.groups_chosen} in {run.duration_s:.0f} s; "
        f"{scores.n_pairs} pool pairs scored ({time.perf_counter() - t_start:.0f} s)")
    model = RewardModel.load(training_run_artifact_folder(run=run))
    X = embeddings_for_texts(texts=ds.texts, model_name=model.embedding_model)
    index_of = {text: i for i, text in enumerate(ds.texts)}
    prompt_of = {i: int(p) for i, p in zip(ds.a_idx, ds.prompt_idx, strict=True)}
    prompt_of.update({int(i): int(p) for i, p in zip(ds.b_idx, ds.prompt_idx, strict=True)})

    # Prototype → true group, by majority over the training annotators' learned weights.
    ids = [int(str(a).split("-")[1]) for a in model.annotator_ids]
    argmax = model.annotator_weights.argmax(1)
    proto_group = {k: int(np.bincount(ds.annotator_group[[u for u, g in zip(ids, argmax, strict=True) if g == k]],
                                      minlength=args.groups).argmax()) if (argmax == k).any() else -1
                   for k in range(model.k)}

    # Held-out evaluation pairs (same-prompt response pairs) per annotator, fixed across policies.
    responses_by_prompt: dict[int, list[int]] = {}
    for r, p in prompt_of.items():
        responses_by_prompt.setdefault(p, []).append(r)
    prompts = sorted(responses_by_prompt)
    eval_rng = np.random.default_rng(seed + 202)
    eval_pairs = []
    for _ in range(EVAL_PAIRS):
        rs = responses_by_prompt[prompts[eval_rng.integers(len(prompts))]]
        a, b = eval_rng.choice(rs, 2, replace=False)
        eval_pairs.append((int(a), int(b)))
    ea, eb = np.array([p[0] for p in eval_pairs]), np.array([p[1] for p in eval_pairs])
    prompt_emb_eval = X[[prompt_of[a] for a in ea]] if model.net.use_prompt else None

    researcher = APIClient()
    researcher.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    results: dict[str, Any] = {}
    for policy in args.policies:
        Study.objects.filter(pk=study.pk).update(selection_policy=policy)
        acc = {n: [] for n in (0, *CHECKPOINTS)}
        identified: list[bool] = []
        recorded: dict[str, int] = {}
        t_policy = time.perf_counter()
        answer_rng = np.random.default_rng(seed + 303)  # same draws for every policy
        for u in new_ids:
            response = researcher.post(f"/api/v1/studies/{study.slug}/participants",
                                       {"external_id": f"{policy}-{u}"}, format="json")
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
            answers: list[tuple[int, int, int]] = []
            while len(answers) < max(CHECKPOINTS):
                served = client.get("/api/v1/participant/next")
                if served.status_code == 204:
                    break
                body = served.json()
                a, b = index_of[body["response_a"]], index_of[body["response_b"]]
                choice = true_choice(answer_rng, ds, ds.annotator_ideal[u], a, b)
                stored = client.post("/api/v1/participant/judgments",
                                     {"served_id": body["served_id"], "choice": choice}, format="json")
                assert stored.status_code == 201, stored.content
                answers.append((a, b, ("a", "b", "tie").index(choice)))
            truth = np.sign(((ds.attributes[eb] - ds.annotator_ideal[u]) ** 2).sum(1)
                            - ((ds.attributes[ea] - ds.annotator_ideal[u]) ** 2).sum(1))
            decisive = truth != 0
            for n in acc:
                got = np.array(answers[:n], dtype=np.int64).reshape(-1, 3)
                prompt_emb = X[[prompt_of[a] for a in got[:, 0]]] if model.net.use_prompt and n else None
                w = model.adapt_annotator(X[got[:, 0]], X[got[:, 1]], got[:, 2], prompt_emb=prompt_emb)
                logits = model.pair_logits(X[ea], X[eb], w, prompt_emb=prompt_emb_eval)
                acc[n].append(float((np.sign(logits[decisive]) == truth[decisive]).mean()))
                if n == 10 and ds.annotator_mixture[u].max() == 1.0:
                    identified.append(proto_group.get(int(np.argmax(w)), -1) == int(ds.annotator_group[u]))
        for participant in Participant.objects.filter(study=study, external_id__startswith=f"{policy}-"):
            from annotation.models import Judgment

            for p in Judgment.objects.filter(participant=participant).values_list("policy", flat=True):
                recorded[p] = recorded.get(p, 0) + 1
            participant.study = study
            participant_withdraw(participant=participant)
        results[policy] = {
            "accuracy": {str(n): round(float(np.mean(v)), 4) for n, v in acc.items()},
            "identified_after_10": round(float(np.mean(identified)), 4) if identified else None,
            "single_group_annotators": len(identified),
            "recorded_policies": recorded,
            "seconds": round(time.perf_counter() - t_policy, 1),
        }
        log(f"seed {seed} {policy}: {json.dumps(results[policy])}")
    PairScores.objects.filter(run=run).delete()
    return {"seed": seed, "k": run.groups_chosen, "pool_pairs": scores.n_pairs, "new_annotators": len(new_ids),
            "train_judgments": len(records), "policies": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--annotators", type=int, default=200)
    parser.add_argument("--train-judgments", type=int, default=60, help="per training annotator")
    parser.add_argument("--new-per-policy", type=int, default=40)
    parser.add_argument("--groups", type=int, default=3, help="true groups in the generated world")
    parser.add_argument("--groups-requested", type=int, default=None, help="K of the model (default: chosen)")
    parser.add_argument("--max-groups", type=int, default=4)
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    setup_django(args.database)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    per_seed = [run_seed(seed, args, log) for seed in args.seeds]
    summary = {
        policy: {
            "accuracy": {str(n): round(float(np.mean([s["policies"][policy]["accuracy"][str(n)] for s in per_seed])), 4)
                         for n in (0, *CHECKPOINTS)},
            "identified_after_10": round(float(np.mean([s["policies"][policy]["identified_after_10"]
                                                        for s in per_seed])), 4),
        }
        for policy in args.policies
    }
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, load avg at the end "
                      f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", "args": vars(args) | {"out": str(args.out)},
           "seconds": round(time.perf_counter() - started, 1), "summary": summary, "per_seed": per_seed}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

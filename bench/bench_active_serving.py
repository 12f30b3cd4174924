"""Serving latency of active querying through the participant API (gunicorn + PostgreSQL on 127.0.0.1).

    .venv/bin/python bench/bench_active_serving.py [--participants 25] [--judgments 20] [--database NAME] [--port N]

Creates a fresh PostgreSQL database (`--database`, default `polyphony_bench_h1`), seeds two open studies with the same
pool shape (223 prompts × 10 responses = 10,035 pairs), one `random`, one `information_gain`,
and gives the second a current run with cached pair scores for K = 4 and the particles of
information gain: `--annotators` (500) fabricated training annotators' weight vectors, merged by
the refresh's own bound (`modeling.pair_scores.PARTICLE_CELLS`) to 99 particles (95 merged vectors +
the 4 prototypes), the most the refresh stores for a pool of this size; answers are three-way
(a Davidson tie parameter is set). The P matrix and the weights are FABRICATED (random):
latency does not depend on what the numbers are, and training a real model on 10,000 pairs would
only slow the benchmark. It starts gunicorn, registers participants through
`POST /api/v1/studies/<slug>/participants`, and one client (no queueing) answers in rounds,
alternating the two studies' participants so both see the same machine load:
`GET /api/v1/participant/next` then `POST /api/v1/participant/judgments`.

Under both policies the next pair is chosen in the POST and served by the submit statement that
stores the judgment (for `random` the statement chooses; for the model policies `pair_choose_model`
chooses just before it, with the answer being submitted counted in the posterior), so the GET reads
the pair already served, except the first GET of each participant, which chooses. The report has GET, POST and the whole cycle
(GET + POST) per policy, the ratio of information_gain's p95 to random's for each, and an
in-process timing of `pair_choose_model` alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_annotation_load import GUNICORN, PYTHON, database_create, django_env  # noqa: E402

DATABASE = "polyphony_bench_h1"
ADMIN_URL = "postgres://127.0.0.1:5432/postgres"
SLUGS = {"random": "bench-active-random", "information_gain": "bench-active-ig"}

SEED = """
import django; django.setup()
import numpy as np
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from elicitation.models import Pair, Prompt, Response, Study, content_hash
from modeling import pair_scores
from modeling.core import selection
from modeling.models import PairScores, StudyModel, TrainingRun
owner = get_user_model().objects.create_user("bench-owner", password=None)
print("TOKEN", Token.objects.create(user=owner).key)
rng = np.random.default_rng(0)
for policy, slug in {slugs!r}.items():
    study = Study.objects.create(owner=owner, title=slug, slug=slug, status="open", selection_policy=policy,
        judgments_per_participant={judgments}, overlap_target=3, allow_ties=True, strength_labels=[],
        completion_code="BENCH1")
    prompts = Prompt.objects.bulk_create(
        Prompt(study=study, text=f"{{slug}} prompt {{p}}: how should I go about task {{p}}?",
               content_hash=content_hash(f"{{slug}} prompt {{p}}: how should I go about task {{p}}?"))
        for p in range({prompts}))
    responses = Response.objects.bulk_create(
        Response(prompt=prompt, text=f"Response {{r}} to {{prompt.text}} Here is a careful answer.",
                 content_hash=content_hash(f"Response {{r}} to {{prompt.text}} Here is a careful answer."))
        for prompt in prompts for r in range({responses}))
    by_prompt = {{}}
    for response in responses:
        by_prompt.setdefault(response.prompt_id, []).append(response)
    pairs = []
    for prompt in prompts:
        rs = sorted(by_prompt[prompt.pk], key=lambda r: r.pk)
        pairs += [Pair(study=study, prompt=prompt, response_a=a, response_b=b)
                  for i, a in enumerate(rs) for b in rs[i + 1:]]
    pairs = Pair.objects.bulk_create(pairs, batch_size=2000)
    pairs = list(Pair.objects.filter(study=study).order_by("id").values_list("id", "prompt_id"))
    run = TrainingRun.objects.create(study=study, status="done", groups_chosen=4, kind="pal-a")
    StudyModel.objects.create(study=study, current_run=run)
    logits = 2.5 * rng.standard_normal((len(pairs), 4))  # fabricated, see the docstring
    probs = 1 / (1 + np.exp(-logits))
    # {annotators} fabricated training annotators' weights, merged to the refresh's particle bound.
    room = max(5, min(pair_scores.MAX_PARTICLES, pair_scores.PARTICLE_CELLS // len(pairs)))
    particles, particle_prior = selection.particles_from_weights(
        rng.dirichlet(np.full(4, 0.3), {annotators}), max_particles=room)
    PairScores.objects.create(study=study, run=run, k=4, n_pairs=len(pairs),
        pair_ids=np.array([p[0] for p in pairs], dtype="<i8").tobytes(),
        prompt_ids=np.array([p[1] for p in pairs], dtype="<i8").tobytes(),
        proto_probs=probs.astype("<f4").tobytes(), prior=[0.4, 0.3, 0.2, 0.1],
        particles=particles.tolist(), particle_prior=particle_prior.tolist(),
        particle_probs=selection.particle_pair_probs(logits, particles).astype("<f4").tobytes(), tie_nu=0.5)
    print("PARTICLES", slug, len(particle_prior))
    print("PAIRS", slug, len(pairs))
"""

WSGI_CONFIG = """
def post_worker_init(worker):
    from django.conf import settings
    # The retrain trigger is not part of choosing a pair (and no training runs here).
    settings.POLYPHONY_JUDGMENT_HOOKS = []
"""


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {"n": int(arr.size), "p50": round(float(np.percentile(arr, 50)), 2),
            "p95": round(float(np.percentile(arr, 95)), 2), "p99": round(float(np.percentile(arr, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=25, help="per policy")
    parser.add_argument("--judgments", type=int, default=20, help="per participant")
    parser.add_argument("--prompts", type=int, default=223)
    parser.add_argument("--responses", type=int, default=10)
    parser.add_argument("--annotators", type=int, default=500,
                        help="fabricated training annotators behind the particles (merged to the refresh's bound)")
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument("--database", default=DATABASE, help="dropped and created afresh")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import httpx

    load_start = [round(x, 2) for x in os.getloadavg()]
    database_create(admin_url=ADMIN_URL, name=args.database)
    env = django_env(database_url=f"postgres://127.0.0.1:5432/{args.database}")
    env["POLYPHONY_VAR_DIR"] = f"/tmp/{args.database}_var"
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    code = SEED.format(slugs=SLUGS, judgments=args.judgments, prompts=args.prompts, responses=args.responses,
                       annotators=args.annotators)
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    token = next(line.split()[1] for line in out.splitlines() if line.startswith("TOKEN"))
    pool = {line.split()[1]: int(line.split()[2]) for line in out.splitlines() if line.startswith("PAIRS")}
    particles = {line.split()[1]: int(line.split()[2]) for line in out.splitlines() if line.startswith("PARTICLES")}
    subprocess.run([PYTHON, "manage.py", "dbshell", "--", "-c", "ANALYZE"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    config = Path(f"/tmp/bench_active_gunicorn_{os.getpid()}.py")
    config.write_text(WSGI_CONFIG)
    server = subprocess.Popen(
        [GUNICORN, "config.wsgi", "-b", f"127.0.0.1:{args.port}", "-w", str(args.workers), "--worker-class",
         "gthread", "--threads", "2", "--keep-alive", "30", "--log-level", "warning", "-c", str(config)],
        cwd=ROOT, env=env, start_new_session=True,
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        client = httpx.Client(base_url=base, timeout=30)
        for _ in range(100):
            try:
                client.get("/api/v1/participant/next")
                break
            except httpx.TransportError:
                time.sleep(0.3)
        researcher = {"Authorization": f"Token {token}"}
        people: list[tuple[str, dict[str, str]]] = []
        for i in range(args.participants):
            for policy, slug in SLUGS.items():
                r = client.post(f"/api/v1/studies/{slug}/participants", json={"external_id": f"sim-{i}"},
                                headers=researcher)
                r.raise_for_status()
                people.append((policy, {"Authorization": f"Bearer {r.json()['token']}"}))
        times: dict[str, dict[str, list[float]]] = {p: {"next": [], "submit": [], "cycle": []} for p in SLUGS}
        rng = np.random.default_rng(1)
        for _ in range(args.judgments):
            for policy, headers in people:
                t0 = time.perf_counter()
                r = client.get("/api/v1/participant/next", headers=headers)
                t1 = time.perf_counter()
                if r.status_code == 204:
                    continue
                r.raise_for_status()
                choice = ["a", "b"][int(rng.integers(2))]
                s = client.post("/api/v1/participant/judgments", headers=headers,
                                json={"served_id": r.json()["served_id"], "choice": choice})
                t2 = time.perf_counter()
                s.raise_for_status()
                times[policy]["next"].append((t1 - t0) * 1000)
                times[policy]["submit"].append((t2 - t1) * 1000)
                times[policy]["cycle"].append((t2 - t0) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)
        config.unlink(missing_ok=True)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}",
        "pool_pairs": pool, "k": 4, "particles": particles, "participants_per_policy": args.participants,
        "judgments_per_participant": args.judgments,
        "http_ms": {policy: {kind: percentiles(v) for kind, v in kinds.items()} for policy, kinds in times.items()},
        "in_process_choose_ms": in_process_choose(env=env),
    }
    ig, rnd = result["http_ms"]["information_gain"], result["http_ms"]["random"]
    for kind in ("next", "submit", "cycle"):
        result[f"ratio_{kind}_p95_ig_over_random"] = round(ig[kind]["p95"] / rnd[kind]["p95"], 2)
    result["load_avg_start_end"] = [load_start, [round(x, 2) for x in os.getloadavg()]]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


IN_PROCESS = """
import django, json, time; django.setup()
import numpy as np
from annotation.models import Participant
from modeling.serving import pair_choose_model
out = {}
for slug in ("bench-active-ig",):
    participant = Participant.objects.select_related("study").filter(study__slug=slug).order_by("-judgment_count").first()
    pair_choose_model(participant=participant)  # loads the scores into the process cache
    ms = []
    for _ in range(200):
        t0 = time.perf_counter(); pair_choose_model(participant=participant); ms.append((time.perf_counter() - t0) * 1000)
    out[slug] = {"participant_judgments": participant.judgment_count,
                 "p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2)}
print(json.dumps(out))
"""


def in_process_choose(*, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run([PYTHON, "-c", IN_PROCESS], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()

"""Benchmark of the researcher insight dashboard: compute the cached analysis, then render the pages.

Usage (from the repository root; needs the PostgreSQL server of DATABASE_URL's host)::

    .venv/bin/python bench/bench_analytics.py [--participants 200] [--judgments 20000] [--database polyphony_bench_h9]

It creates a fresh database, migrates it, seeds one study (50 prompts × 6 responses = 750 pairs;
three latent groups of 60/30/10 % of the participants that rank the responses differently; 3 %
random clickers; 2 % failing their attention checks; 2 % answering in about half a second; a
country attribute tied to the group and an age attribute that is not), times
`study_analytics_compute`, then times each dashboard page through the Django test client (the
median of three requests) and counts its queries.

With `--with-model` it then trains a three-group PAL-A reward model on the study through the
training service (in this process, CPU) and times the analysis again: groups and the group map
then come from the model's weights instead of the latent-class EM.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def database_recreate(*, name: str) -> str:
    import psycopg

    with psycopg.connect("postgresql://127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgres://127.0.0.1:5432/{name}"


def seed(*, participants: int, judgments: int, seed: int = 0) -> int:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from annotation.models import Judgment, Participant
    from elicitation.models import Pair, Prompt, Response, Study, content_hash

    rng = random.Random(seed)
    owner = get_user_model().objects.create_user("bench", password="bench-password-1")
    study = Study.objects.create(owner=owner, title="Insight bench", slug="insight-bench", status="open",
                                 consent_text="ok", instructions="Pick one.")
    pairs: list[Pair] = []
    quality: dict[int, list[float]] = {}
    for p in range(50):
        prompt = Prompt.objects.create(study=study, text=f"Prompt {p}", content_hash=content_hash(f"Prompt {p}"))
        responses = [Response.objects.create(prompt=prompt, text=f"Prompt {p} response {r}",
                                             content_hash=content_hash(f"Prompt {p} response {r}")) for r in range(6)]
        for r in responses:
            # Each of three groups has its own utility for a response: partly shared, partly its own.
            shared = rng.gauss(0, 1)
            quality[r.pk] = [shared + rng.gauss(0, 1.2) for _ in range(3)]
        for i in range(6):
            for k in range(i + 1, 6):
                pairs.append(Pair.objects.create(study=study, prompt=prompt, response_a=responses[i],
                                                 response_b=responses[k]))
    check = pairs[0]
    Pair.objects.filter(pk=check.pk).update(is_attention_check=True, correct_response=check.response_a)
    pool = pairs[1:]
    per_participant = judgments // participants
    now = timezone.now()
    rows: list[Judgment] = []
    for i in range(participants):
        group = 0 if i < 0.6 * participants else (1 if i < 0.9 * participants else 2)
        random_clicker = rng.random() < 0.03
        careless = rng.random() < 0.02
        fast = not (random_clicker or careless) and rng.random() < 0.02
        country = ["UK", "US", "IN"][group] if rng.random() < 0.8 else rng.choice(["UK", "US", "IN"])
        kind = "random" if random_clicker else ("careless" if careless else ("fast" if fast else f"g{group}"))
        participant = Participant.objects.create(
            study=study, external_id=f"p{i}-{kind}", source="pid", consented_at=now,
            attributes={"country": country, "age": rng.choice(["18-34", "35-54", "55+"])},
        )
        speed = rng.lognormvariate(-0.7, 0.2) if fast else rng.lognormvariate(2.2, 0.3)
        for n, pair in enumerate(rng.sample(pool, per_participant)):
            first, second = (pair.response_a, pair.response_b) if rng.random() < 0.5 else (pair.response_b, pair.response_a)
            if random_clicker:
                first_wins = rng.random() < 0.5
            else:
                diff = quality[first.pk][group] - quality[second.pk][group]
                first_wins = rng.random() < 1 / (1 + pow(2.718281828, -2 * diff))
            served = now + timedelta(seconds=n * 30)
            rows.append(Judgment(study=study, participant=participant, pair=pair, response_a=first,
                                 response_b=second, choice="a" if first_wins else "b", served_at=served,
                                 answered_at=served + timedelta(seconds=speed * rng.uniform(0.7, 1.4))))
        for n in range(3):
            served = now + timedelta(seconds=(per_participant + n) * 30)
            rows.append(Judgment(study=study, participant=participant, pair=check, response_a=check.response_a,
                                 response_b=check.response_b, choice="b" if careless else "a",
                                 is_attention_check=True, attention_passed=not careless, served_at=served,
                                 answered_at=served + timedelta(seconds=speed)))
    Judgment.objects.bulk_create(rows, batch_size=5000)
    return study.pk


def analyse(*, study_id: int) -> None:
    """Compute the analysis once, print what it found, then time every page three times."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from modeling.analytics_services import study_analytics_compute

    stages: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    snapshot = study_analytics_compute(study_id=study_id, progress=lambda f, m: stages.append((time.perf_counter() - t0, m)))
    compute_s = time.perf_counter() - t0
    assert snapshot.status == "done", snapshot.error
    previous = 0.0
    for at, message in stages:
        print(f"  {at - previous:6.2f} s before '{message}'")
        previous = at
    print(f"  {compute_s - previous:6.2f} s drawing figures and storing")
    data = snapshot.data
    print(f"compute: {compute_s:.2f} s for {data['counts']['judgments']} preference judgments, "
          f"{data['counts']['participants']} participants, K = {data['k']} from {data['group_source']}, "
          f"map from {data['map_source']} ({data['map_kind']}), "
          f"{sum(1 for p in data['participants'] if p['flags'])} flagged; snapshot data "
          f"{len(str(data)) / 1e6:.2f} MB, figures {sum(map(len, snapshot.plots.values())) / 1e6:.2f} MB")

    # Flags by planted kind: random clickers, careless and fast participants should be flagged,
    # the members of the small (10 %) group g2 should not.
    by_kind: dict[str, list[dict]] = {}
    for p in data["participants"]:
        by_kind.setdefault(p["external_id"].split("-")[1], []).append(p)
    for kind, rows in sorted(by_kind.items()):
        reliability = sorted(p["reliability"] for p in rows if p["reliability"] is not None)
        flags: dict[str, int] = {}
        for p in rows:
            for flag in p["flags"]:
                flags[flag] = flags.get(flag, 0) + 1
        spread = (f"reliability {reliability[0]:.2f}-{reliability[-1]:.2f} (median "
                  f"{statistics.median(reliability):.2f})" if reliability else "no reliability")
        print(f"  {kind}: {sum(1 for p in rows if p['flags'])}/{len(rows)} flagged {flags or ''}; {spread}")
    from modeling.core.metrics import adjusted_rand_index

    members = [p for p in data["participants"] if p["external_id"].split("-")[1] in ("g0", "g1", "g2")]
    truth = np.array([int(p["external_id"].split("-")[1][1]) for p in members])
    shown = adjusted_rand_index(truth, np.array([p["group"] for p in members]))
    refit = adjusted_rand_index(truth, np.array([p["reliability_group"] for p in members]))
    print(f"groups vs planted (g0-g2 members): ARI {shown:.3f} as shown, {refit:.3f} as used for reliability "
          f"({data['regrouped']} participants regrouped)")
    overall = data["agreement"]["overall"]
    print(f"alpha overall {overall['alpha']:.3f} [{overall['low']:.3f}, {overall['high']:.3f}]; within groups "
          + ", ".join(f"{g['alpha']:.3f} (n={next(x['size'] for x in data['groups'] if x['group'] == g['group'])})"
                      for g in data["agreement"]["groups"] if g["alpha"] is not None))
    print("association: " + ", ".join(f"{a['attribute']} V={a['v']:.2f} p={a['p']:.2g}" for a in data["association"]))

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench"))
    first_prompt = data["rankings"][0]["prompt_id"]
    for path in ("/studies/insight-bench/insight/", "/studies/insight-bench/insight/quality/",
                 "/studies/insight-bench/insight/rankings/", "/api/v1/studies/insight-bench/analytics",
                 "/studies/insight-bench/insight/plots/map.png",
                 f"/api/v1/studies/insight-bench/analytics/plots/ranking--{first_prompt}.svg"):
        timings = []
        for _ in range(3):
            with CaptureQueriesContext(connection) as queries:
                start = time.perf_counter()
                response = client.get(path)
                timings.append(time.perf_counter() - start)
            assert response.status_code == 200, (path, response.status_code)
        size = len(response.content)
        print(f"GET {path}: median {statistics.median(timings) * 1000:.0f} ms, {len(queries)} queries, "
              f"{size / 1e3:.0f} kB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--judgments", type=int, default=20_000)
    parser.add_argument("--database", default="polyphony_bench_h9")
    parser.add_argument("--with-model", action="store_true", help="then train a K = 3 PAL-A model and re-time")
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = database_recreate(name=args.database)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    study_id = seed(participants=args.participants, judgments=args.judgments)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"seeded in {time.perf_counter() - t0:.1f} s")

    from elicitation.models import Study

    analyse(study_id=study_id)
    if args.with_model:
        import tempfile

        from modeling.services import training_run_execute, training_run_request

        settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="bench-analytics-media-")  # the model folder goes here
        t0 = time.perf_counter()
        run, _ = training_run_request(study=Study.objects.get(pk=study_id), kind="pal-a", groups=3, enqueue=False)
        run = training_run_execute(run_id=run.pk)
        assert run.status == "done", run.error
        print(f"\ntrained PAL-A K = 3 in {time.perf_counter() - t0:.1f} s (run {run.pk}); analysing again")
        analyse(study_id=study_id)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Annotation load benchmark: many simulated annotators against gunicorn + PostgreSQL on 127.0.0.1.

Not a test. It creates its own database (dropped first if it exists), migrates it, seeds one open
study, starts gunicorn, and drives a bounded load: CONCURRENCY simulated annotators share a budget of
TOTAL judgments. Each annotator goes through the HTML flow like a browser (study link with a
PROLIFIC_PID, consent, survey, instructions), then loops "next pair" + "submit" until its
participant's quota is met, then starts over as a new participant. A few submissions are sent twice
(same one-time id) to check nothing is doubled. It stops by itself, checks the database against what
the server acknowledged, prints a JSON summary and exits non-zero if anything was lost or doubled.

Two modes of the judging loop:
  prg   GET /judge/ (serves the next pair) then POST /judge/ (stores it, 302 back): what a browser
        without JavaScript does; two requests per judgment.
  htmx  POST /judge/ with HX-Request: the response is the next pair's fragment: what the page does
        with JavaScript on; one request per judgment ("next pair" latency is then part of "submit").

Usage:
  .venv/bin/python bench/bench_annotation_load.py [--mode prg|htmx] [--workers 4] [--worker-class sync]
      [--threads 1] [--concurrency 8] [--total 4000] [--per-participant 50]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
GUNICORN = str(ROOT / ".venv" / "bin" / "gunicorn")
SERVED_ID = re.compile(r'name="served_id" value="([0-9a-f-]{36})"')
SLUG = "bench-annotation"


# --- Setup -------------------------------------------------------------------------------------------


def database_create(*, admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def django_env(*, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"POLYPHONY_ENV"}}
    env.update({"DATABASE_URL": database_url, "DEBUG": "false", "DJANGO_SETTINGS_MODULE": "config.settings",
                "LOG_LEVEL": "WARNING"})
    return env


SEED = """
import django; django.setup()
from django.contrib.auth import get_user_model
from elicitation.models import Pair, Prompt, Response, Study, SurveyQuestion, content_hash
owner = get_user_model().objects.create_user("bench-owner", password=None)
study = Study.objects.create(owner=owner, title="Load benchmark", slug={slug!r}, status="open",
    judgments_per_participant={per_participant}, overlap_target=3, allow_ties=True,
    strength_labels=["slightly", "clearly", "much"], rationale_mode="optional", completion_code="BENCH1")
SurveyQuestion.objects.create(study=study, key="age_group", text="Age group", kind="choice",
    choices=["18-29", "30-49", "50+"], position=0)
SurveyQuestion.objects.create(study=study, key="years_online", text="Years online", kind="number",
    min_value=0, max_value=80, position=1)
filler = " ".join(["This response explains the steps in plain language, with an example."] * 6)
pairs = []
for p in range({prompts}):
    text = f"Prompt {{p}}: how should someone approach problem number {{p}}, step by step?"
    prompt = Prompt.objects.create(study=study, text=text, content_hash=content_hash(text))
    responses = []
    for r in range({responses}):
        rtext = f"Response {{r}} to prompt {{p}}. {{filler}}"
        responses.append(Response.objects.create(prompt=prompt, text=rtext, content_hash=content_hash(rtext)))
    for i, a in enumerate(responses):
        for b in responses[i + 1:]:
            pairs.append(Pair(study=study, prompt=prompt, response_a=a, response_b=b))
Pair.objects.bulk_create(pairs)
print(len(pairs))
"""


def seed(*, env: dict[str, str], prompts: int, responses: int, per_participant: int) -> int:
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    code = SEED.format(slug=SLUG, prompts=prompts, responses=responses, per_participant=per_participant)
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    # Planner statistics as autovacuum would have them on a live database.
    subprocess.run([PYTHON, "manage.py", "dbshell", "--", "-c", "ANALYZE"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    return int(out.stdout.strip().splitlines()[-1])


# Experiments that change settings in the workers only (post_worker_init runs before any request):
# --no-judgment-hooks drops settings.POLYPHONY_JUDGMENT_HOOKS (modeling's retrain trigger) to see what
# the annotation path costs alone; --prepare-threshold sets psycopg's prepare_threshold, with which
# the judging statements (annotation.selectors.hot_cursor) are prepared after that many runs on a
# connection, while Django's own queries stay client-side bound and unprepared;
# --server-side-binding binds (and so prepares) every query server-side.
WORKER_SETTINGS = {
    "no_hooks": "    settings.POLYPHONY_JUDGMENT_HOOKS = []\n",
    "prepare_threshold": '    settings.DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = {threshold}\n',
    "server_side_binding": (
        '    settings.DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True\n'
        '    settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 2\n'
    ),
}


def gunicorn_start(*, env: dict[str, str], port: int, workers: int, worker_class: str, threads: int,
                   experiments: list[str], prepare_threshold: int) -> subprocess.Popen:
    cmd = [GUNICORN, "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers), "--worker-class", worker_class,
           "--threads", str(threads), "--keep-alive", "30", "--log-level", "warning", "--backlog", "256"]
    if experiments:
        config = Path(f"/tmp/bench_annotation_gunicorn_{os.getpid()}.py")
        body = "".join(WORKER_SETTINGS[name].replace("{threshold}", str(prepare_threshold)) for name in experiments)
        config.write_text(f"def post_worker_init(worker):\n    from django.conf import settings\n{body}")
        cmd += ["-c", str(config)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", f"/s/{SLUG}/withdrawn/")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not start")


# --- CPU accounting --------------------------------------------------------------------------------------
# The machine may be shared: wall-clock rates then depend on the neighbours, CPU seconds much less.
# We count the CPU time of the gunicorn workers and of the PostgreSQL backends serving this database.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def children_of(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


class CpuSampler(threading.Thread):
    """Samples the CPU time of the gunicorn workers and this database's backends every `interval` s.

    Sampling (not just a snapshot at the end) because backends come and go during a run: Django
    closes a connection older than CONN_MAX_AGE (60 s) and the next request opens a new one.
    """

    def __init__(self, *, server: subprocess.Popen, admin_url: str, database: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.server, self.database, self.interval = server, database, interval
        self.conn = psycopg.connect(admin_url, autocommit=True)
        self.latest: dict[str, dict[int, float]] = {"web": {}, "database": {}}
        self.baseline = self.sample()
        self.done = threading.Event()

    def sample(self) -> dict[str, dict[int, float]]:
        backends = self.conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database]).fetchall()
        snapshot = {
            "web": {pid: process_cpu_seconds(pid) for pid in [self.server.pid, *children_of(self.server.pid)]},
            "database": {pid: process_cpu_seconds(pid) for (pid,) in backends},
        }
        for kind, values in snapshot.items():
            for pid, seconds in values.items():
                if seconds:  # 0.0: the process is gone; keep its last sample
                    self.latest[kind][pid] = seconds
        return snapshot

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds used since the sampler started, by kind."""
        self.done.set()
        self.join()
        self.sample()
        self.conn.close()
        return {
            kind: sum(seconds - self.baseline[kind].get(pid, 0.0) for pid, seconds in self.latest[kind].items())
            for kind in self.latest
        }


# --- A simulated annotator ------------------------------------------------------------------------------


@dataclass
class Stats:
    next_pair_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    acknowledged: set[str] = field(default_factory=set)  # served ids whose submit the server accepted
    resubmits: int = 0
    errors: list[str] = field(default_factory=list)
    participants: int = 0


class Budget:
    """The shared number of judgments left to give; each annotator takes one before answering."""

    def __init__(self, total: int) -> None:
        self._left, self._lock = total, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


class Browser:
    """Just enough of a browser over one keep-alive connection: cookies, CSRF header, no redirects followed."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        all_headers = {"Host": "127.0.0.1", **(headers or {})}
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
            if "csrftoken" in self.cookies:
                all_headers["X-CSRFToken"] = self.cookies["csrftoken"]
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=all_headers)
                response = self.conn.getresponse()
                text = response.read().decode()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once. Never for a POST
                # that may have been processed... except that the one-time id makes a resend safe.
                self.conn.close()
                if attempt:
                    raise
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                cookie = SimpleCookie(value)
                for key, morsel in cookie.items():
                    self.cookies[key] = morsel.value
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text


def annotate(*, port: int, mode: str, budget: Budget, stats: Stats, thread_no: int, resubmit_rate: float,
             lock: threading.Lock) -> None:
    rng = random.Random(thread_no)
    participant_no = 0
    while True:
        browser = Browser(port)
        participant_no += 1
        pid = f"bench-{thread_no}-{participant_no}"
        try:
            if not _join(browser, pid):
                with lock:
                    stats.errors.append(f"{pid}: could not join")
                return
            with lock:
                stats.participants += 1
            finished = _judge_loop(browser, mode=mode, budget=budget, stats=stats, rng=rng,
                                   resubmit_rate=resubmit_rate, lock=lock)
        except Exception as exc:  # report and stop this annotator; the summary shows it
            with lock:
                stats.errors.append(f"{pid}: {type(exc).__name__}: {exc}")
            return
        finally:
            browser.conn.close()
        if not finished:
            return


def _join(browser: Browser, pid: str) -> bool:
    status, headers, _ = browser.request("GET", f"/s/{SLUG}/?" + urlencode({"PROLIFIC_PID": pid, "STUDY_ID": "bench",
                                                                           "SESSION_ID": pid}))
    if status != 302:
        return False
    browser.request("GET", f"/s/{SLUG}/consent/")  # sets the CSRF cookie, as the page would
    steps = [
        (f"/s/{SLUG}/consent/", {"decision": "agree"}),
        (f"/s/{SLUG}/survey/", {"age_group": "30-49", "years_online": "12"}),
        (f"/s/{SLUG}/instructions/", {}),
    ]
    for path, form in steps:
        status, _, _ = browser.request("POST", path, form)
        if status != 302:
            return False
    return True


def _judge_loop(browser: Browser, *, mode: str, budget: Budget, stats: Stats, rng: random.Random,
                resubmit_rate: float, lock: threading.Lock) -> bool:
    """Judge until this participant is done (True) or the shared budget is spent (False)."""
    judge = f"/s/{SLUG}/judge/"
    served_id = None
    while True:
        if served_id is None:
            start = time.perf_counter()
            status, headers, text = browser.request("GET", judge)
            elapsed = (time.perf_counter() - start) * 1000
            if status == 302 and headers.get("location", "").endswith("/done/"):
                return True
            match = SERVED_ID.search(text)
            if status != 200 or not match:
                raise RuntimeError(f"next pair: HTTP {status}")
            served_id = match.group(1)
            with lock:
                stats.next_pair_ms.append(elapsed)
        if not budget.take():
            return False
        choice = rng.choice(["a", "b", "b", "a", "tie"])
        form = {"served_id": served_id, "choice": choice, "strength": "" if choice == "tie" else str(rng.randint(1, 3)),
                "rationale": ""}
        headers_in = {"HX-Request": "true"} if mode == "htmx" else {}
        start = time.perf_counter()
        status, headers, text = browser.request("POST", judge, form, headers_in)
        elapsed = (time.perf_counter() - start) * 1000
        ok = status == 302 or (mode == "htmx" and status == 200)
        if not ok:
            raise RuntimeError(f"submit: HTTP {status}")
        with lock:
            stats.submit_ms.append(elapsed)
            stats.acknowledged.add(served_id)
        if rng.random() < resubmit_rate:  # a double click / retried request: must change nothing
            status, _, _ = browser.request("POST", judge, form, headers_in)
            with lock:
                stats.resubmits += 1
                if status not in (200, 302):
                    stats.errors.append(f"resubmit: HTTP {status}")
        done = headers.get("hx-redirect", "").endswith("/done/") or headers.get("location", "").endswith("/done/")
        if done:
            return True
        if mode == "htmx":
            match = SERVED_ID.search(text)
            served_id = match.group(1) if match else None
        else:
            served_id = None


# --- Checks and report --------------------------------------------------------------------------------


CHECK = """
import django, json; django.setup()
from django.db.models import Count, Sum
from annotation.models import Judgment, Participant, ServedPair
from elicitation.models import Pair
ids = [str(i) for i in Judgment.objects.filter(study__slug={slug!r}).values_list("served_pair_id", flat=True)]
print(json.dumps({{
    "judgments": len(ids),
    "served_ids": ids,
    "pair_count_sum": Pair.objects.filter(study__slug={slug!r}).aggregate(s=Sum("judgment_count"))["s"] or 0,
    "participant_count_sum": Participant.objects.filter(study__slug={slug!r}).aggregate(s=Sum("judgment_count"))["s"] or 0,
    "participants": Participant.objects.filter(study__slug={slug!r}).count(),
    "doubled_pairs": Judgment.objects.values("participant", "pair").annotate(n=Count("id")).filter(n__gt=1).count(),
}}))
"""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return round(ordered[index], 2)


def latency(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
            "p99_ms": percentile(values, 99), "mean_ms": round(statistics.fmean(values), 2) if values else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["prg", "htmx"], default="prg")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--total", type=int, default=4000)
    parser.add_argument("--per-participant", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--responses", type=int, default=6)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-class", default="sync")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--resubmit-rate", type=float, default=0.02)
    parser.add_argument("--admin-url", default="postgres://127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="polyphony_bench")
    parser.add_argument("--keep-server", action="store_true", help="leave gunicorn running (for profiling)")
    parser.add_argument("--no-judgment-hooks", action="store_true",
                        help="run without settings.POLYPHONY_JUDGMENT_HOOKS (to measure their cost)")
    parser.add_argument("--prepare-threshold", type=int, default=5,
                        help="psycopg prepare_threshold for the judging statements (0: none, Django's default)")
    parser.add_argument("--server-side-binding", action="store_true",
                        help="psycopg server-side binding with prepared statements for every query")
    args = parser.parse_args()

    experiments = [name for name, on in (("no_hooks", args.no_judgment_hooks),
                                         ("prepare_threshold", args.prepare_threshold > 0),
                                         ("server_side_binding", args.server_side_binding)) if on]
    database_url = f"postgres://127.0.0.1:5432/{args.database}"
    database_create(admin_url=args.admin_url, name=args.database)
    env = django_env(database_url=database_url)
    pairs = seed(env=env, prompts=args.prompts, responses=args.responses, per_participant=args.per_participant)
    server = gunicorn_start(env=env, port=args.port, workers=args.workers, worker_class=args.worker_class,
                            threads=args.threads, experiments=experiments, prepare_threshold=args.prepare_threshold)
    stats, budget, lock = Stats(), Budget(args.total), threading.Lock()
    try:
        threads = [
            threading.Thread(target=annotate, kwargs={"port": args.port, "mode": args.mode, "budget": budget,
                                                     "stats": stats, "thread_no": n, "lock": lock,
                                                     "resubmit_rate": args.resubmit_rate})
            for n in range(args.concurrency)
        ]
        cpu_before = os.times()
        sampler = CpuSampler(server=server, admin_url=args.admin_url, database=args.database)
        sampler.start()
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        cpu_after = os.times()
        server_cpu = sampler.stop()
    finally:
        if not args.keep_server:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    check = json.loads(subprocess.run([PYTHON, "-c", CHECK.format(slug=SLUG)], cwd=ROOT, env=env, check=True,
                                      capture_output=True, text=True).stdout)
    stored = set(check.pop("served_ids"))
    lost = len(stats.acknowledged - stored)
    unacknowledged = len(stored - stats.acknowledged)
    doubled = (check["judgments"] - len(stored)) + check["doubled_pairs"]
    counters_agree = check["pair_count_sum"] == check["participant_count_sum"] == check["judgments"]
    client_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    judgments = max(1, check["judgments"])
    cpu_ms = {
        "web": round(1000 * server_cpu["web"] / judgments, 2),
        "database": round(1000 * server_cpu["database"] / judgments, 2),
        "load_generator": round(1000 * client_cpu / judgments, 2),
    }
    cpu_ms["total"] = round(sum(cpu_ms.values()), 2)
    with open("/proc/loadavg") as loadavg:
        load_after = loadavg.read().split()[:3]
    summary = {
        "mode": args.mode,
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "server": f"gunicorn -w {args.workers} --worker-class {args.worker_class} --threads {args.threads}",
        "settings_experiments": experiments,
        "prepare_threshold": args.prepare_threshold or None,
        "concurrency": args.concurrency,
        "pool_pairs": pairs,
        "participants": stats.participants,
        "judgments_acknowledged": len(stats.acknowledged),
        "judgments_stored": check["judgments"],
        "judgments_per_second": round(check["judgments"] / wall, 1),
        "wall_seconds": round(wall, 2),
        # CPU time per stored judgment, whoever else shares the machine; the rate these would allow
        # on otherwise idle cores is cores * 1000 / total.
        "cpu_ms_per_judgment": cpu_ms,
        "judgments_per_second_if_cpu_bound_on_idle_cores": round((os.cpu_count() or 1) * 1000 / cpu_ms["total"], 1),
        "load_average_after": load_after,
        "submit": latency(stats.submit_ms),
        "next_pair": latency(stats.next_pair_ms),
        "resubmits": stats.resubmits,
        "lost": lost,
        "stored_but_not_acknowledged": unacknowledged,
        "doubled": doubled,
        "counters_agree": counters_agree,
        "errors": stats.errors[:10],
    }
    print(json.dumps(summary, indent=2))
    ok = not lost and not doubled and counters_agree and not stats.errors and len(stats.acknowledged) == args.total
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

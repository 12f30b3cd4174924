"""Load and fault benchmark (issue 8): 50 annotators on the participant API while Redis and a worker fail.

Not a test. Everything runs on 127.0.0.1 and stops by itself (every wait has a bound). It creates its
own PostgreSQL database (dropped first if it exists), seeds the study of bench/bench_annotation_load.py,
starts its own Redis (default port 6391, no persistence, so a restart loses every message, as a crashed
broker would), gunicorn, and two real Celery workers (`training` and `default` queues) on that Redis, with
POLYPHONY_RETRAIN_EVERY small so that automatic retrains happen during the load, and the participant
throttles off (POLYPHONY_PARTICIPANT_RATE / _PAGE_RATE) so the load is not refused as abuse.

CONCURRENCY annotators (threads, keep-alive HTTP) each register a participant with a researcher token
(POST /api/v1/studies/<slug>/participants), then loop GET /api/v1/participant/next and POST
/api/v1/participant/judgments until the participant is done, then start over as a new one; 2 % of
submissions are sent twice. Meanwhile, the fault schedule:

  1. Load: wait for a first automatic retrain to finish (model A, the study's current model).
  2. Broker down: once the next run (B) is training, stop Redis (SHUTDOWN NOSAVE) and keep loading for
     at least OUTAGE seconds and until a retrain has been requested while Redis is down (run C, left
     queued and unsent); start Redis again. C must then be sent by a later judgment's check, once the
     broker is back, and run.
  3. Worker killed: as soon as C is training, SIGKILL the training worker. While C is orphaned the
     study must keep serving its previous model; a new worker gets the unacknowledged task again after
     the visibility timeout, takes the run over (attempt 2) and completes it.

The load lasts at least DURATION seconds and until the schedule is done (at most MAX_SECONDS). Then it
checks the database: stored judgments = acknowledged submissions (2xx), none lost or doubled, no 5xx
and no errors at all, and the fault assertions; prints a JSON summary; exits non-zero on any failure.

Usage:
  .venv/bin/python bench/bench_load_faults.py [--concurrency 50] [--duration 120] [--outage 20]
      [--retrain-every 400] [--port 18601] [--redis-port 6391] [--database polyphony_bench_h5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_annotation_load import (  # noqa: E402 - after the path set-up
    PYTHON,
    SLUG,
    database_create,
    django_env,
    gunicorn_start,
    latency,
    seed,
)

CELERY = str(ROOT / ".venv" / "bin" / "celery")
PARTICIPANTS, NEXT, JUDGE = f"/api/v1/studies/{SLUG}/participants", "/api/v1/participant/next", \
    "/api/v1/participant/judgments"


# --- Processes --------------------------------------------------------------------------------------


def redis_start(*, port: int) -> None:
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--daemonize", "yes"], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
            return
        time.sleep(0.1)
    raise SystemExit(f"redis-server on port {port} did not start")


def redis_stop(*, port: int) -> None:
    """Stop only the bench's own Redis (never the shared one): SHUTDOWN NOSAVE drops every message."""
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode != 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"redis-server on port {port} did not stop")


def worker_start(*, env: dict[str, str], queue: str, log: Path) -> subprocess.Popen:
    command = [CELERY, "-A", "config", "worker", "-Q", queue, "--pool=solo", "-c", "1", "--loglevel=INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat",
               "-n", f"bench-h5-{queue}-{os.getpid()}-{time.monotonic_ns() % 10**6}@%h"]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def researcher_token(*, env: dict[str, str]) -> str:
    out = subprocess.run([PYTHON, "manage.py", "drf_create_token", "bench-owner"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return out.split()[2]  # "Generated token <key> for user bench-owner"


# --- The database, read directly (as the researcher's pages would) ------------------------------------


class Db:
    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.lock = threading.Lock()

    def one(self, sql: str, params: list[Any] | None = None) -> Any:
        with self.lock:
            return self.conn.execute(sql, params or []).fetchone()

    def all(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        with self.lock:
            return self.conn.execute(sql, params or []).fetchall()

    def runs(self) -> list[dict[str, Any]]:
        cols = ["id", "status", "attempts", "created_at", "enqueued_at", "started_at", "finished_at", "progress",
                "progress_message", "error"]
        rows = self.all(f"SELECT {', '.join(cols)} FROM modeling_trainingrun ORDER BY id")
        return [dict(zip(cols, row, strict=True)) for row in rows]

    def current_run(self) -> int | None:
        row = self.one("SELECT current_run_id FROM modeling_studymodel m JOIN elicitation_study s ON s.id = m.study_id "
                       "WHERE s.slug = %s", [SLUG])
        return row[0] if row else None

    def now(self) -> Any:
        return self.one("SELECT now()")[0]


# --- Simulated annotators ---------------------------------------------------------------------------------


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[float, str, int, float]] = field(default_factory=list)  # (t, kind, status, ms)
    acknowledged: set[str] = field(default_factory=set)
    resubmits: int = 0
    errors: list[str] = field(default_factory=list)
    participants: int = 0

    def record(self, kind: str, status: int, started: float, ms: float) -> None:
        with self.lock:
            self.requests.append((started, kind, status, ms))


class Client:
    """One keep-alive connection with JSON in and out."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: dict[str, Any] | None, auth: str) -> tuple[int, Any, float, float]:
        headers = {"Host": "127.0.0.1", "Authorization": auth, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            started = time.monotonic()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # An idle keep-alive connection the server closed: reconnect once (a resent POST is
                # safe: the served id makes it idempotent).
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        ms = (time.monotonic() - started) * 1000
        return response.status, json.loads(raw) if raw else None, started, ms


def annotate(*, n: int, port: int, token: str, stop: threading.Event, stats: Stats) -> None:
    rng = random.Random(n)
    client = Client(port)
    researcher = f"Token {token}"
    k = 0
    try:
        while not stop.is_set():
            k += 1
            status, body, started, ms = client.call("POST", PARTICIPANTS, {"external_id": f"h5-{n}-{k}"}, researcher)
            stats.record("register", status, started, ms)
            if status != 201:
                raise RuntimeError(f"register: HTTP {status} {body}")
            with stats.lock:
                stats.participants += 1
            bearer = f"Bearer {body['token']}"
            while not stop.is_set():
                status, pair, started, ms = client.call("GET", NEXT, None, bearer)
                stats.record("next", status, started, ms)
                if status == 204:
                    break  # this participant is done: a new one
                if status != 200:
                    raise RuntimeError(f"next: HTTP {status} {pair}")
                choice = rng.choice(["a", "b", "b", "a", "tie"])
                answer = {"served_id": pair["served_id"], "choice": choice,
                          "strength": None if choice == "tie" else rng.randint(1, 3)}
                status, result, started, ms = client.call("POST", JUDGE, answer, bearer)
                stats.record("submit", status, started, ms)
                if status not in (200, 201):
                    raise RuntimeError(f"submit: HTTP {status} {result}")
                with stats.lock:
                    stats.acknowledged.add(pair["served_id"])
                if rng.random() < 0.02:  # a retried request: must change nothing
                    status, again, started, ms = client.call("POST", JUDGE, answer, bearer)
                    stats.record("resubmit", status, started, ms)
                    with stats.lock:
                        stats.resubmits += 1
                    if status != 200 or not again["duplicate"]:
                        raise RuntimeError(f"resubmit: HTTP {status} {again}")
    except Exception as exc:  # recorded; this annotator stops, the summary fails
        with stats.lock:
            stats.errors.append(f"annotator {n}: {type(exc).__name__}: {exc}")
    finally:
        client.conn.close()


# --- The fault schedule -----------------------------------------------------------------------------------


def wait_for(predicate: Any, *, timeout: float, what: str, events: dict[str, Any], every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; events so far: {events}")


def faults(*, db: Db, env: dict[str, str], args: argparse.Namespace, t0: float, logs: Path,
           workers: dict[str, subprocess.Popen], events: dict[str, Any], checks: dict[str, bool]) -> None:
    def at() -> float:
        return round(time.monotonic() - t0, 1)

    def run(run_id: int) -> dict[str, Any]:
        return next(r for r in db.runs() if r["id"] == run_id)

    # 1. A first automatic retrain finishes: model A.
    first = wait_for(lambda: next((r for r in db.runs() if r["status"] == "done"), None), timeout=240,
                     what="a first automatic retrain to finish", events=events, every=0.5)
    events["A_done_s"], events["A"] = at(), first["id"]

    # 2. The next run (B) is training: stop the broker.
    b = wait_for(lambda: next((r for r in db.runs() if r["status"] == "running" and r["id"] > first["id"]), None),
                 timeout=180, what="the next retrain (B) to start", events=events)
    events["B"] = b["id"]
    redis_stop(port=args.redis_port)
    stopped_db, stopped = db.now(), time.monotonic()
    events["redis_stopped_s"] = at()
    # Keep loading for at least --outage s, and until a retrain was requested while Redis was down.
    def requested_while_down() -> dict[str, Any] | None:
        return next((r for r in db.runs() if r["created_at"] > stopped_db and r["id"] > b["id"]), None)

    c = wait_for(lambda: requested_while_down() if time.monotonic() - stopped >= args.outage else None,
                 timeout=args.outage + 240, what="a retrain requested while Redis is down (run C)", events=events,
                 every=0.2)
    c = run(c["id"])
    events["C"], events["C_requested_s"] = c["id"], round(c["created_at"].timestamp() - stopped_db.timestamp()
                                                           + events["redis_stopped_s"], 1)
    events["C_while_down"] = {"status": c["status"], "enqueued_at": c["enqueued_at"],
                              "progress_message": c["progress_message"]}
    checks["retrain_requested_while_broker_down_kept_queued_unsent"] = c["status"] == "queued" and c["enqueued_at"] is None
    redis_start(port=args.redis_port)
    started_db = db.now()
    events["redis_started_s"], events["outage_s"] = at(), round(time.monotonic() - stopped, 1)

    # C is sent by a later check once the broker is back, and the worker claims it.
    c_id = c["id"]
    c = wait_for(lambda: (r := run(c_id))["status"] != "queued" and r, timeout=240,
                 what="run C to be sent after recovery and claimed", events=events, every=0.05)
    events["C_claimed_s"] = at()
    checks["retrain_sent_after_recovery"] = c["enqueued_at"] is not None and c["enqueued_at"] > started_db

    # 3. Kill the training worker while it trains C: once the fit itself is under way (progress
    # 0.1 is where fitting starts, after reading and embedding), not while it merely claimed it.
    def fitting() -> dict[str, Any] | None:
        r = run(c_id)
        return r if r["status"] != "running" or r["progress"] >= 0.1 else None

    c = wait_for(fitting, timeout=240, what="run C to start fitting", events=events, every=0.05)
    before_kill = db.current_run()
    os.kill(workers["training"].pid, signal.SIGKILL)
    workers["training"].wait(timeout=10)
    events["worker_killed_s"], events["current_when_killed"] = at(), before_kill
    events["C_progress_when_killed"] = {"progress": c["progress"], "message": c["progress_message"]}
    time.sleep(0.5)
    orphan = run(c["id"])
    events["C_after_kill"] = {"status": orphan["status"], "attempts": orphan["attempts"]}
    served_meanwhile: set[int | None] = set()
    # The broker hands the unacknowledged task on after its visibility timeout; the study serves
    # its previous model all the while.
    deadline = time.monotonic() + args.visibility_timeout + 1
    while time.monotonic() < deadline:
        served_meanwhile.add(db.current_run())
        time.sleep(0.2)
    workers["training"] = worker_start(env=env, queue="training", log=logs / "worker-training-2.log")
    events["new_worker_s"] = at()

    def redone() -> dict[str, Any] | None:
        served_meanwhile.add(current := db.current_run())
        r = run(c["id"])
        return r if r["status"] in ("done", "failed") and (r["status"] == "failed" or current == r["id"]) else None

    c = wait_for(redone, timeout=300, what="the new worker to redo run C", events=events, every=0.2)
    served_meanwhile.discard(c["id"])
    events["C_done_s"], events["C_final"] = at(), {"status": c["status"], "attempts": c["attempts"], "error": c["error"]}
    events["served_while_C_orphaned"] = sorted(x for x in served_meanwhile if x is not None)
    checks["previous_model_served_while_run_redone"] = (
        before_kill is not None and served_meanwhile == {before_kill} and orphan["status"] == "running"
    )
    checks["killed_run_redone_and_completed"] = c["status"] == "done" and c["attempts"] == 2
    checks["killed_run_now_current"] = db.current_run() == c["id"]


# --- Report -----------------------------------------------------------------------------------------------


def window(stats: Stats, start: float, end: float) -> dict[str, Any]:
    rows = [r for r in stats.requests if start <= r[0] < end]
    submits = [r[3] for r in rows if r[1] == "submit"]
    return {
        "seconds": round(end - start, 1),
        "requests": len(rows),
        "judgments_acknowledged": len(submits),
        "judgments_per_second": round(len(submits) / max(end - start, 1e-9), 1),
        "status_5xx": sum(r[2] >= 500 for r in rows),
        "status_4xx": sum(400 <= r[2] < 500 for r in rows),
        "submit": latency(submits),
        "next_pair": latency([r[3] for r in rows if r[1] == "next"]),
    }


EXPECTED_CHECKS = {
    "no_errors", "no_5xx", "stored_equals_acknowledged", "no_lost_judgments", "no_doubled_judgments",
    "counters_agree", "retrain_requested_while_broker_down_kept_queued_unsent", "retrain_sent_after_recovery",
    "previous_model_served_while_run_redone", "killed_run_redone_and_completed", "killed_run_now_current",
}
CHECK_SQL = {
    "judgments": "SELECT count(*) FROM annotation_judgment",
    "distinct_served": "SELECT count(DISTINCT served_pair_id) FROM annotation_judgment",
    "pair_counts": "SELECT coalesce(sum(judgment_count), 0) FROM elicitation_pair",
    "participant_counts": "SELECT coalesce(sum(judgment_count), 0) FROM annotation_participant",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=120.0, help="least seconds of load")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="the load stops by then whatever happens")
    parser.add_argument("--outage", type=float, default=20.0, help="least seconds with Redis stopped")
    parser.add_argument("--retrain-every", type=int, default=400)
    parser.add_argument("--per-participant", type=int, default=50)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--responses", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--port", type=int, default=18601)
    parser.add_argument("--redis-port", type=int, default=6391)
    parser.add_argument("--visibility-timeout", type=int, default=5)
    parser.add_argument("--admin-url", default="postgres://127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="polyphony_bench_h5")
    parser.add_argument("--scratch", default="/tmp/bench_load_faults_h5")
    args = parser.parse_args()
    if args.redis_port == 6379:
        raise SystemExit("The bench stops its Redis: give it a port of its own, not the shared 6379.")

    scratch = Path(args.scratch)
    subprocess.run(["rm", "-rf", str(scratch)], check=True)
    (scratch / "logs").mkdir(parents=True)
    database_url = f"postgres://127.0.0.1:5432/{args.database}"
    database_create(admin_url=args.admin_url, name=args.database)
    env = django_env(database_url=database_url)
    env.update({
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{args.redis_port}/0",
        "CELERY_VISIBILITY_TIMEOUT": str(args.visibility_timeout),
        "POLYPHONY_RETRAIN_EVERY": str(args.retrain_every),
        "POLYPHONY_PARTICIPANT_RATE": "off", "POLYPHONY_PARTICIPANT_PAGE_RATE": "off",  # a load test, not abuse
        "MEDIA_ROOT": str(scratch / "media"), "POLYPHONY_VAR_DIR": str(scratch / "var"),
    })
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    pairs = seed(env=env, prompts=args.prompts, responses=args.responses, per_participant=args.per_participant)
    token = researcher_token(env=env)
    redis_start(port=args.redis_port)
    logs = scratch / "logs"
    workers = {queue: worker_start(env=env, queue=queue, log=logs / f"worker-{queue}.log")
               for queue in ("training", "default")}
    server = gunicorn_start(env=env, port=args.port, workers=args.workers, worker_class="gthread",
                            threads=args.threads, experiments=["prepare_threshold"], prepare_threshold=5)
    db = Db(database_url)
    stats, stop = Stats(), threading.Event()
    events: dict[str, Any] = {}
    checks: dict[str, bool] = {}
    fault_error: str | None = None
    controller: threading.Thread | None = None
    try:
        threads = [threading.Thread(target=annotate, kwargs={"n": n, "port": args.port, "token": token,
                                                            "stop": stop, "stats": stats}, daemon=True)
                   for n in range(args.concurrency)]
        t0 = time.monotonic()
        for thread in threads:
            thread.start()
        errors: list[str] = []

        def schedule() -> None:
            try:
                faults(db=db, env=env, args=args, t0=t0, logs=logs, workers=workers, events=events, checks=checks)
            except Exception as exc:  # noqa: BLE001 - reported in the summary
                errors.append(f"{type(exc).__name__}: {exc}")

        controller = threading.Thread(target=schedule, daemon=True)
        controller.start()
        while time.monotonic() - t0 < args.max_seconds:
            if time.monotonic() - t0 >= args.duration and not controller.is_alive():
                break
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(90)  # each finishes the request it is in
        wall = time.monotonic() - t0
        fault_error = errors[0] if errors else ("the fault schedule did not finish" if controller.is_alive() else None)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        for worker in workers.values():
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
        redis_stop(port=args.redis_port)
    if controller is not None and controller.is_alive():  # it may still start Redis: give it a moment, then stop it for good
        controller.join(15)
        redis_stop(port=args.redis_port)

    stored = {k: db.one(sql)[0] for k, sql in CHECK_SQL.items()}
    served_ids = {str(row[0]) for row in db.all("SELECT served_pair_id FROM annotation_judgment")}
    runs = db.runs()
    lost = len(stats.acknowledged - served_ids)
    status_5xx = sum(r[2] >= 500 for r in stats.requests)
    checks.update({
        "no_errors": not stats.errors and fault_error is None,
        "no_5xx": status_5xx == 0,
        "stored_equals_acknowledged": stored["judgments"] == len(stats.acknowledged) == len(served_ids),
        "no_lost_judgments": lost == 0,
        "no_doubled_judgments": stored["judgments"] == stored["distinct_served"],
        "counters_agree": stored["pair_counts"] == stored["participant_counts"] == stored["judgments"],
    })
    t_stop = events.get("redis_stopped_s", wall)
    t_start = events.get("redis_started_s", wall)
    with open("/proc/loadavg") as loadavg:
        load_after = loadavg.read().split()[:3]
    summary = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}",
        "server": f"gunicorn -w {args.workers} --worker-class gthread --threads {args.threads}; celery solo workers "
                  "(training, default) on redis-server :%d" % args.redis_port,
        "concurrency": args.concurrency,
        "retrain_every": args.retrain_every,
        "pool_pairs": pairs,
        "participants": stats.participants,
        "wall_seconds": round(wall, 1),
        "judgments_acknowledged": len(stats.acknowledged),
        "judgments_stored": stored["judgments"],
        "resubmits": stats.resubmits,
        "lost": lost,
        "status_5xx": status_5xx,
        "all": window(stats, t0, t0 + wall),
        "before_outage": window(stats, t0, t0 + t_stop),
        "during_outage": window(stats, t0 + t_stop, t0 + t_start),
        "after_outage": window(stats, t0 + t_start, t0 + wall),
        "events": json.loads(json.dumps(events, default=str)),
        "training_runs": [{k: str(v) if k.endswith("_at") else v for k, v in r.items() if k != "error" or v}
                          for r in runs],
        "checks": checks,
        "errors": (stats.errors + ([fault_error] if fault_error else []))[:10],
        "load_average_after": load_after,
    }
    print(json.dumps(summary, indent=2, default=str))
    missing = EXPECTED_CHECKS - set(checks)
    if missing:
        print(f"checks not reached: {sorted(missing)}", file=sys.stderr)
    return 0 if all(checks.values()) and not missing else 1


if __name__ == "__main__":
    sys.exit(main())

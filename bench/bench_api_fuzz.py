"""API fuzz benchmark: the schema fuzz of tests/hardening/test_api_fuzz.py with more (and fresh) examples.

Not a test. Runs that test through pytest (its seeded study, credentials and checks) with the
examples per operation multiplied by --scale and Hypothesis randomized (new requests each run, unless
--derandomize), on the database named by --database-url (pytest-django creates `test_<name>`), then
prints the counts as JSON: operations, requests, 5xx, non-JSON 4xx, statuses, per-operation counts
and the first failures. Exits non-zero when any request got a 5xx or a non-JSON 4xx.

Usage:
  .venv/bin/python bench/bench_api_fuzz.py [--scale 10] [--database-url postgres://127.0.0.1:5432/bench_fuzz]
      [--derandomize] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/hardening/test_api_fuzz.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0, help="multiplies the test's examples per operation")
    parser.add_argument("--database-url", default="postgres://127.0.0.1:5432/bench_fuzz")
    parser.add_argument("--derandomize", action="store_true", help="the test's fixed examples instead of fresh ones")
    parser.add_argument("--out", type=Path, help="also write the full report (every failure) here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        env = {
            **os.environ, "DATABASE_URL": args.database_url, "POLYPHONY_FUZZ_SCALE": str(args.scale),
            "POLYPHONY_FUZZ_RANDOM": "" if args.derandomize else "1", "POLYPHONY_FUZZ_REPORT": str(report_path),
        }
        started = time.monotonic()
        pytest = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "pytest"), "-p", "no:cacheprovider", "-q", "--create-db", TEST],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        elapsed = time.monotonic() - started
        if not report_path.exists():
            sys.stderr.write(pytest.stdout[-5000:] + pytest.stderr[-5000:])
            return 2
        report = json.loads(report_path.read_text())
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    summary = {
        "scale": args.scale, "randomized": not args.derandomize, "seconds": round(elapsed, 1),
        **{key: report[key] for key in ("operations", "requests", "server_errors_5xx", "non_json_4xx", "statuses")},
        "per_operation": report["per_operation"],
        "failures_shown": report["failures"][:10],
        "load_average": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))
    return 0 if not report["server_errors_5xx"] and not report["non_json_4xx"] else 1


if __name__ == "__main__":
    sys.exit(main())

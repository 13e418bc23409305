"""Cold start in a fresh process: import the Lambda module + load and verify the bundled model.

Run: .venv/bin/python benchmarks/cold_start.py [--runs 7]. Target: at most 1.0 s on a 2-core machine.
Python's own interpreter start-up is not included (Lambda's runtime pays it either way).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, time
t0 = time.perf_counter()
import handler.app as app
t1 = time.perf_counter()
app.service()
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "total": t2 - t0}))
"""
ENV = {
    "POWERTOOLS_SERVICE_NAME": "bench",
    "POWERTOOLS_METRICS_NAMESPACE": "Bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "MODEL_URI"} | ENV
    samples = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for part in ("import", "load", "total"):
        values = [s[part] for s in samples]
        print(
            f"cold start {part:>6}: median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f}, {args.runs} fresh processes)"
        )
    median_total = statistics.median(s["total"] for s in samples)
    print(f"target <= 1.0 s: {'PASS' if median_total <= 1.0 else 'FAIL'}")


if __name__ == "__main__":
    main()

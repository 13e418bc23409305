"""Cold start in a fresh process: import the Lambda module, which loads and verifies the bundled model
(Lambda's init phase), and separately the moment the S3 clients (boto3's and the lean requests'), built in
the background, are ready.

Run: .venv/bin/python benchmarks/cold_start.py [--runs 7]. Target: init at most 0.4 s on this 2-core
machine. Python's own interpreter start-up is not included (Lambda's runtime pays it either way).
Writes benchmarks/results/cold_start.json.
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
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402

TARGET_S = 0.4
PROBE = """
import json, time
t0 = time.perf_counter()
import handler.app as app
t1 = time.perf_counter()
service = app.service()
assert service.classifier.manifest.runtime_sha256  # verified against the manifest during the import
service.storage.warm_up().join()  # returns once the warm-up that the import started has finished too
t2 = time.perf_counter()
print(json.dumps({"init": t1 - t0, "client_ready": t2 - t0}))
"""
ENV = {
    "POWERTOOLS_SERVICE_NAME": "bench",
    "POWERTOOLS_METRICS_NAMESPACE": "Bench",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_URI", "XRAY_SDK")} | ENV
    samples = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    init = statistics.median(s["init"] for s in samples)
    ready = statistics.median(s["client_ready"] for s in samples)
    print(
        f"cold start, init (import + load and verify the model): median {init:.3f} s over {args.runs} fresh processes"
        f"   target <= {TARGET_S} s: {'PASS' if init <= TARGET_S else 'FAIL'}"
    )
    print(f"cold start, until the S3 clients (built in the background) are ready: median {ready:.3f} s")
    write_results("cold_start", {"init_s": round(init, 3), "client_ready_s": round(ready, 3)})
    return 0 if init <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())

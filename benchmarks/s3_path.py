"""What one image costs on each S3 path, measured: CPU seconds in the function's process and S3 requests.

Photo-like JPEG uploads are put into a local S3 (moto's server, in its own process so that its CPU is not
counted), then read through ``pipeline.process`` the way each path does it:

- upload: batches of ``QueueBatchSize`` new inputs (the SQS path), one record object each;
- bulk objects: the same inputs into fresh record prefixes (the skip check finds nothing to skip);
- bulk jsonl: one JSON Lines object per batch of ``BulkBatchSize``.

CPU is ``time.process_time()`` of this process (every thread: decode, normalise, inference, boto3's request
signing and parsing), per image, the least of a few rounds. S3 requests are counted per operation by a
botocore hook: the cost table (``benchmarks/cost.py``) takes both from here instead of from assumptions.
The local S3 keeps connections alive, as AWS does, but speaks plain HTTP: the TLS that AWS adds is not
counted. CPU seconds depend on the machine, so a reference loop is timed beside them
(``benchmarks.common.reference_ms``).

Run: .venv/bin/python benchmarks/s3_path.py [--images 300 --rounds 5]
Writes benchmarks/results/s3_path.json.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import reference_ms, write_results  # noqa: E402
from handler import model  # noqa: E402
from handler.config import Settings, bundled_model_uri  # noqa: E402
from handler.pipeline import Service, process  # noqa: E402
from handler.records import Source  # noqa: E402
from handler.storage import Storage  # noqa: E402
from infra.local_s3 import free_port  # noqa: E402
from training.data import load_folder  # noqa: E402
from training.render import photo_like  # noqa: E402

BUCKET = "cost-bench"
UPLOAD_BATCH = 100  # template.yaml QueueBatchSize default
BULK_BATCH = 64  # template.yaml BulkBatchSize default


SERVE = """
import sys
from moto.server import DomainDispatcherApplication, create_backend_app
from waitress import serve
serve(DomainDispatcherApplication(create_backend_app), host="127.0.0.1", port=int(sys.argv[1]), threads=8, _quiet=True)
"""


def start_s3() -> subprocess.Popen[bytes]:
    """moto's S3 behind waitress, in its own process: HTTP/1.1 keep-alive, as boto3 gets from AWS (moto's own
    server closes every connection, which would add a TCP connect to each request's CPU). boto3 clients made
    after this call use it (``AWS_ENDPOINT_URL`` and test credentials in the environment)."""
    port = free_port()  # the embedded S3's own helper; that server runs in-process, this one must not
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            os.environ.update(
                AWS_ENDPOINT_URL=endpoint,
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
            )
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the local S3 did not start")


def measure(service: Service, sources: list[Source], batch: int, calls: Counter[str], **options: Any) -> dict[str, Any]:
    calls.clear()
    started = time.process_time()
    statuses: Counter[str] = Counter()
    for first in range(0, len(sources), batch):
        statuses.update(o.status for o in process(sources[first : first + batch], service, **options))
    cpu = time.process_time() - started
    return {
        "cpu_ms_per_image": round(cpu / len(sources) * 1000, 3),
        "requests_per_image": {name: round(count / len(sources), 4) for name, count in sorted(calls.items())},
        "statuses": dict(statuses),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5, help="the least CPU of these rounds is kept (a shared host)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "emnist"))
    args = parser.parse_args()
    emnist = load_folder(Path(args.data))
    rng = np.random.default_rng(1)
    blobs = [photo_like(emnist.images[i], rng) for i in rng.choice(len(emnist), args.images, replace=False)]
    server = start_s3()
    try:
        storage = Storage()
        storage.s3.create_bucket(Bucket=BUCKET)
        sources = []
        for i, blob in enumerate(blobs):
            key = f"input/bench/{i:05d}.jpg"
            etag = storage.s3.put_object(Bucket=BUCKET, Key=key, Body=blob)["ETag"].strip('"')
            sources.append(Source(BUCKET, key, etag, len(blob)))
        calls: Counter[str] = Counter()
        storage.s3.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
        classifier = model.load(bundled_model_uri(), Path("/tmp/models"))
        runs: dict[str, list[dict[str, Any]]] = {"upload": [], "bulk_objects": [], "bulk_jsonl": []}
        for round_ in range(args.rounds):  # fresh record prefixes each round: every input is new to each path
            for path, batch, options in (
                ("upload", UPLOAD_BATCH, {}),
                ("bulk_objects", BULK_BATCH, {"skip_existing": True}),
                ("bulk_jsonl", BULK_BATCH, {"jsonl": True}),
            ):
                settings = Settings(
                    bucket=BUCKET,
                    memory_mb=1024,
                    output_prefix=f"{path}-{round_}/output/",
                    error_prefix=f"{path}-{round_}/errors/",
                    bulk_output="jsonl" if path == "bulk_jsonl" else "objects",
                )
                service = Service(settings, storage, classifier)  # one process: what MemorySize 1024-3008 gives
                if round_ == 0 and path == "upload":
                    process(sources[:8], replace(service, settings=replace(settings, output_prefix="warm/")))
                runs[path].append(measure(service, sources, batch, calls, **options))
        results = {path: min(measured, key=lambda m: m["cpu_ms_per_image"]) for path, measured in runs.items()}
    finally:
        server.terminate()
    reference = reference_ms()
    print(
        f"{args.images} photo-like JPEG uploads through pipeline.process against a local S3 (one process); "
        f"this machine's reference loop: {reference:.0f} ms"
    )
    for path, figures in results.items():
        requests = ", ".join(f"{name} {count:g}" for name, count in figures["requests_per_image"].items())
        print(f"  {path:13} {figures['cpu_ms_per_image']:6.3f} ms CPU/image   requests/image: {requests}")
        print(f"  {'':13} outcomes: {figures['statuses']}")
    write_results(
        "s3_path",
        {
            "images": args.images,
            "upload_batch": UPLOAD_BATCH,
            "bulk_batch": BULK_BATCH,
            "reference_ms": round(reference),
            **results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

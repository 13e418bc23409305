"""What an input's GET and a record's PUT cost in CPU: boto3 with its defaults, with single changes, with the
service's settings, and the service's own path (``Storage.fetch`` and ``Storage.put_record``, which send
both through ``handler.lean_s3``). Interleaved request by request in one process (so a shared host's
drift hits every variant alike), against moto's S3 in its own process.

Run: .venv/bin/python benchmarks/s3_client.py [--requests 200 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import reference_ms  # noqa: E402
from benchmarks.s3_path import start_s3  # noqa: E402
from handler.records import Source  # noqa: E402
from handler.storage import CLIENT_CONFIG, Storage  # noqa: E402

BUCKET = "client-bench"
DEFAULTS = {key: value for key, value in CLIENT_CONFIG.items() if "checksum" not in key}
VARIANTS: dict[str, dict[str, Any]] = {
    "boto3 defaults (flexible checksums)": DEFAULTS,
    "+ no parameter validation": {**DEFAULTS, "parameter_validation": False},
    "the service's client (checksums when required)": CLIENT_CONFIG,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = start_s3()
    import boto3
    from botocore.config import Config

    try:
        clients = {name: boto3.client("s3", config=Config(**config)) for name, config in VARIANTS.items()}
        first = next(iter(clients.values()))
        storage = Storage(boto3.client("s3", config=Config(**CLIENT_CONFIG)))
        first.create_bucket(Bucket=BUCKET)
        body = os.urandom(20_000)  # a photo-sized input
        for i in range(args.requests):
            first.put_object(Bucket=BUCKET, Key=f"input/{i}.jpg", Body=body)
        record = b'{"schema": "handwriting-ocr/result/2"}' * 20
        metadata = {"source-etag": "0" * 32, "model-version": "v", "record-kind": "result"}

        def through_boto3(client: Any) -> Any:
            def both(i: int, key: str) -> None:
                client.get_object(Bucket=BUCKET, Key=f"input/{i}.jpg")["Body"].read()
                client.put_object(
                    Bucket=BUCKET,
                    Key=key,
                    Body=record,
                    ContentType="application/json",
                    Metadata=metadata,
                    IfNoneMatch="*",
                )

            return both

        def through_storage(i: int, key: str) -> None:
            storage.fetch(Source(BUCKET, f"input/{i}.jpg", None, None), 1 << 20)
            storage.put_record(BUCKET, key, record, "0" * 32, "v", replaces=None, kind="result")

        paths = {name: through_boto3(client) for name, client in clients.items()}
        paths["the service's path (handler.lean_s3)"] = through_storage
        cpu = dict.fromkeys(paths, 0.0)
        for round_ in range(args.rounds):
            for i in range(args.requests):
                for number, (name, both) in enumerate(paths.items()):
                    started = time.process_time()
                    both(i, f"output/{number}/{round_}/{i}.jpg.json")
                    cpu[name] += time.process_time() - started
    finally:
        server.terminate()
    base = next(iter(cpu.values()))
    print(
        f"CPU per input GET + record PUT, {args.requests} x {args.rounds} interleaved; reference loop {reference_ms():.0f} ms"
    )
    for name, seconds in cpu.items():
        print(f"  {name:48} {seconds / (args.requests * args.rounds) * 1000:6.3f} ms   {seconds / base - 1:+6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

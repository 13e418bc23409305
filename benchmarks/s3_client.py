"""What an input's GET and a record's PUT cost in CPU through boto3: with its defaults, with each documented
option the service might set, and the service's own path (``Storage.fetch`` and ``Storage.put_record`` on
a client built with ``storage.CLIENT_CONFIG``). Interleaved request by request in one process (so a shared
host's drift hits every variant alike), against moto's S3 in its own process. An option earns its place in
``CLIENT_CONFIG`` only where this shows it helps.

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

from benchmarks.common import reference_ms, write_results  # noqa: E402
from benchmarks.s3_path import start_s3  # noqa: E402
from handler.records import Source  # noqa: E402
from handler.storage import CLIENT_CONFIG, Storage  # noqa: E402

BUCKET = "client-bench"
WHEN_REQUIRED = {"request_checksum_calculation": "when_required", "response_checksum_validation": "when_required"}
VARIANTS: dict[str, dict[str, Any]] = {
    "boto3 defaults": {},
    "+ checksums when required": WHEN_REQUIRED,
    "+ no parameter validation": {"parameter_validation": False},
    "+ tcp_keepalive": {"tcp_keepalive": True},
    "+ standard retries, 64 connections": {"retries": {"mode": "standard"}, "max_pool_connections": 64},
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
        paths["the service's path (Storage, CLIENT_CONFIG)"] = through_storage
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
    reference = reference_ms()
    print(
        f"CPU per input GET + record PUT, {args.requests} x {args.rounds} interleaved; reference loop {reference:.0f} ms"
    )
    per_pair = {name: round(seconds / (args.requests * args.rounds) * 1000, 3) for name, seconds in cpu.items()}
    for name, seconds in cpu.items():
        print(f"  {name:52} {per_pair[name]:6.3f} ms   {seconds / base - 1:+6.1%}")
    write_results(
        "s3_client",
        {
            "requests": args.requests,
            "rounds": args.rounds,
            "reference_ms": round(reference),
            "cpu_ms_per_pair": per_pair,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

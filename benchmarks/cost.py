"""What a million images cost on AWS, per path, from measured CPU and requests per image and list prices.

``benchmarks/s3_path.py`` runs each path through ``pipeline.process`` against a local S3 and measures, per
image, the CPU of the function's process (decode, recognition, and boto3's own work on each request) and
the S3 requests by operation; this turns them into dollars:

- Lambda GB-seconds: the CPU time at the template's MemorySize (Lambda gives one vCPU per 1,769 MB, and one
  process uses at most one), plus the S3 waits that no computation overlaps: a batch's first fetch and its
  last write, ``S3_WAIT_S`` each (assumed; the pipeline fetches the next chunk and writes the last one while
  it reads the current one).
- S3, SQS, Step Functions and Lambda requests from the measured counts and the template's batch sizes.

Writes benchmarks/results/cost.json; the README's cost table is generated from it.

Run: .venv/bin/python benchmarks/s3_path.py && .venv/bin/python benchmarks/cost.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, write_results  # noqa: E402

PRICES_AS_OF = "2026-11 list prices, us-east-1 (no free tier)"
PRICE = {
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get": 0.0004 / 1000,  # GET, HEAD
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB request
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_s": {"x86_64": 0.0000166667, "arm64": 0.0000133334},
    "sfn_transition": 0.025 / 1000,  # standard workflow (the parent map run)
    "express_request": 1.00 / 1e6,  # express child executions
    "express_gb_s": 0.00001667,
}
MEMORY_MB = 1024  # template.yaml MemorySize default
MB_PER_VCPU = 1769
S3_WAIT_S = 0.03  # one S3 round trip that nothing overlaps (assumed)
TARGETS = {"bulk_jsonl": 1.5}  # dollars per million images
COMPUTE_SHARE = 0.05  # the upload path: Lambda compute at most this share of its cost, S3 requests and all
S3_OPERATIONS = {"GetObject": "s3_get", "HeadObject": "s3_get", "PutObject": "s3_put", "ListObjectsV2": "s3_put"}


def lambda_seconds(cpu_ms: float, batch: int, memory_mb: int = MEMORY_MB) -> float:
    """Billed seconds per image: CPU stretched by the vCPU share the memory buys, plus the unoverlapped waits."""
    share = min(1.0, memory_mb / MB_PER_VCPU)
    return cpu_ms / 1000 / share + 2 * S3_WAIT_S / batch


def per_million(measured: dict, architecture: str = "x86_64") -> dict[str, dict[str, float]]:
    gb_s = PRICE["lambda_gb_s"][architecture] * MEMORY_MB / 1024
    upload_batch, bulk_batch = measured["upload_batch"], measured["bulk_batch"]
    sqs_calls = 2 * -(-upload_batch // 10) / upload_batch  # ReceiveMessage and DeleteMessageBatch: 10 messages a call

    def s3(path: str) -> dict[str, float]:
        return {
            f"S3 {operation}": count * PRICE[S3_OPERATIONS[operation]]
            for operation, count in measured[path]["requests_per_image"].items()
        }

    upload = {
        **s3("upload"),
        "SQS: S3's message + receive/delete": PRICE["sqs_request"] * (1 + sqs_calls),
        "Lambda requests": PRICE["lambda_request"] / upload_batch,
        "Lambda GB-seconds": lambda_seconds(measured["upload"]["cpu_ms_per_image"], upload_batch) * gb_s,
    }

    def bulk(path: str) -> dict[str, float]:
        seconds = lambda_seconds(measured[path]["cpu_ms_per_image"], bulk_batch)
        return {
            "S3 LIST (1,000 keys a page)": PRICE["s3_put"] / 1000,
            **s3(path),
            "Step Functions: map transitions (one per batch)": PRICE["sfn_transition"] / bulk_batch,
            "Step Functions: express child (request + 64 MB for the batch)": (
                PRICE["express_request"] / bulk_batch + 0.0625 * seconds * PRICE["express_gb_s"]
            ),
            "Lambda requests": PRICE["lambda_request"] / bulk_batch,
            "Lambda GB-seconds": seconds * gb_s,
        }

    return {
        name: {item: round(cost * 1e6, 3) for item, cost in items.items()}
        for name, items in (
            ("upload", upload),
            ("bulk_objects", bulk("bulk_objects")),
            ("bulk_jsonl", bulk("bulk_jsonl")),
        )
    }


def main() -> int:
    measured = json.loads((RESULTS / "s3_path.json").read_text())
    table = per_million(measured)
    totals = {name: round(sum(items.values()), 2) for name, items in table.items()}
    arm = {name: round(sum(items.values()), 2) for name, items in per_million(measured, "arm64").items()}
    print(
        f"per million images ({PRICES_AS_OF}; {MEMORY_MB} MB x86_64; CPU and requests measured by "
        f"benchmarks/s3_path.py on {measured['images']} images, {S3_WAIT_S * 1000:.0f} ms per unoverlapped S3 wait)"
    )
    for name, items in table.items():
        target = TARGETS.get(name)
        verdict = f"   target <= ${target}: {'PASS' if totals[name] <= target else 'FAIL'}" if target else ""
        print(f"  {name:13} ${totals[name]:6.2f}   (arm64: ${arm[name]:.2f}){verdict}")
        for item, cost in items.items():
            print(f"      {item:62} ${cost:.3f}")
    fixed = sum(cost for item, cost in table["upload"].items() if item != "Lambda GB-seconds")
    compute = table["upload"]["Lambda GB-seconds"] / totals["upload"]
    verdict = "PASS" if compute <= COMPUTE_SHARE else "FAIL"
    print(f"  upload path before any compute: ${fixed:.2f}")
    print(f"  upload compute: {compute:.1%} of the upload path's cost   target <= {COMPUTE_SHARE:.0%}: {verdict}")
    write_results(
        "cost",
        {
            "prices_as_of": PRICES_AS_OF,
            "memory_mb": MEMORY_MB,
            "s3_wait_s": S3_WAIT_S,
            "totals": totals,
            "totals_arm64": arm,
            "upload_before_compute": round(fixed, 2),
            "upload_compute_share": round(compute, 4),
            "cpu_ms_per_image": {name: measured[name]["cpu_ms_per_image"] for name in table},
            "reference_ms": measured.get("reference_ms"),
            "items": table,
        },
    )
    within = all(totals[name] <= target for name, target in TARGETS.items())
    return 0 if within and compute <= COMPUTE_SHARE else 1


if __name__ == "__main__":
    sys.exit(main())

"""What a million images cost on AWS, per path, from the measured time per image and list prices.

Requests per image come from the code (see the comments); time per image from
benchmarks/results/speed.json (run benchmarks/speed.py first) plus the S3 round trips of a chunk.
Writes benchmarks/results/cost.json; the README's cost table is generated from it.

Run: .venv/bin/python benchmarks/cost.py
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
    "lambda_gb_s": 0.0000166667,  # x86_64 (arm64: 0.0000133334)
    "sfn_transition": 0.025 / 1000,  # standard workflow (the parent map run)
    "express_request": 1.00 / 1e6,  # express child executions
    "express_gb_s": 0.00001667,
}
MEMORY_GB = 2048 / 1024  # template default MemorySize
UPLOAD_BATCH = 20  # QueueBatchSize default
SQS_CALLS_PER_BATCH = -(-UPLOAD_BATCH // 10)  # ReceiveMessage and DeleteMessageBatch take at most 10 messages each
BULK_BATCH = 64  # BulkBatchSize default
S3_ROUND_TRIPS_S = 0.09  # GET + PUT + HEAD of a chunk of 16 inputs on 16 threads, ~30 ms each (assumed)
CHUNK = 16
TARGETS = {"upload": 6.0, "bulk_jsonl": 1.5}


def per_million(speed: dict[str, float]) -> dict[str, dict[str, float]]:
    cpu_s = speed["label_1_ms"] / 1000  # one vCPU at 2048 MB: Lambda gives 1.16
    wall_s = cpu_s + S3_ROUND_TRIPS_S / CHUNK
    lambda_s = wall_s * MEMORY_GB * PRICE["lambda_gb_s"]
    million = 1e6
    upload = {
        "S3 GET input": PRICE["s3_get"],
        "S3 PUT record (If-None-Match)": PRICE["s3_put"],
        "S3 HEAD other slot (race safety)": PRICE["s3_get"],
        "SQS: S3 notification + receive/delete": PRICE["sqs_request"] * (1 + 2 * SQS_CALLS_PER_BATCH / UPLOAD_BATCH),
        "Lambda requests": PRICE["lambda_request"] / UPLOAD_BATCH,
        "Lambda GB-seconds": lambda_s,
    }
    bulk_common = {
        "S3 LIST (1,000 keys a page)": PRICE["s3_put"] / 1000,
        "S3 GET input": PRICE["s3_get"],
        "Step Functions: map transitions (one per batch)": PRICE["sfn_transition"] / BULK_BATCH,
        "Step Functions: express child (request + 64 MB for the batch)": (
            PRICE["express_request"] + 0.0625 * wall_s * BULK_BATCH * PRICE["express_gb_s"]
        )
        / BULK_BATCH,
        "Lambda requests": PRICE["lambda_request"] / BULK_BATCH,
        "Lambda GB-seconds": lambda_s,
    }
    bulk_objects = {
        **bulk_common,
        "S3 HEAD x2 (skip check)": 2 * PRICE["s3_get"],
        "S3 PUT record": PRICE["s3_put"],
        "S3 HEAD other slot": PRICE["s3_get"],
    }
    bulk_jsonl = {
        **bulk_common,
        "S3 HEAD batch (skip check)": PRICE["s3_get"] / BULK_BATCH,
        "S3 PUT batch": PRICE["s3_put"] / BULK_BATCH,
    }
    return {
        name: {item: round(cost * million, 3) for item, cost in items.items()}
        for name, items in (("upload", upload), ("bulk_objects", bulk_objects), ("bulk_jsonl", bulk_jsonl))
    }


def main() -> int:
    speed = json.loads((RESULTS / "speed.json").read_text())
    table = per_million(speed)
    totals = {name: round(sum(items.values()), 2) for name, items in table.items()}
    print(
        f"per million images ({PRICES_AS_OF}; {speed['label_1_ms']:.2f} ms CPU per image measured, "
        f"+{S3_ROUND_TRIPS_S / CHUNK * 1000:.1f} ms S3 waits assumed, {MEMORY_GB * 1024:.0f} MB)"
    )
    for name, items in table.items():
        target = TARGETS.get(name)
        verdict = f"   target <= ${target}: {'PASS' if totals[name] <= target else 'FAIL'}" if target else ""
        print(f"  {name:13} ${totals[name]:6.2f}{verdict}")
        for item, cost in items.items():
            print(f"      {item:58} ${cost:.3f}")
    write_results("cost", {"prices_as_of": PRICES_AS_OF, "totals": totals, "items": table})
    return 0 if all(totals[name] <= target for name, target in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())

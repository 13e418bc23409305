"""Memory and time bounds of the largest inputs the limits allow (figures for the README).

1. Peak memory of one input at the limits: a 40 MP 16-bit RGBA PNG (MAX_PIXELS), decoded and normalised.
2. Peak memory of a bulk batch of 64 inputs of 19 MB (MAX_OBJECT_BYTES is 20 MiB) plus that PNG,
   processed by the pipeline from a local S3 (moto server in another process, so it is not counted).
3. Time of 128 such slow PNGs (more than fit) in one bulk call with the bulk function's 40 s timeout: the batch must
   answer before the deadline, handing back what did not fit as ``deferred``.

Run: .venv/bin/python benchmarks/limits.py   (about two minutes; needs ~3 GB of free memory)
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LAMBDA_MEMORY_MB = 1024  # the template's smallest MemorySize
BULK_TIMEOUT_S = 40  # BulkFunction's Timeout in template.yaml


def rgba16_png(width: int = 8000, height: int = 5000) -> bytes:
    """A 40 MP 16-bit RGBA page with a dark bar: the most memory per pixel Pillow decodes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    paper = np.full((width, 4), 65535, ">u2").tobytes()
    bar = np.full((width, 4), 65535, ">u2")
    bar[width // 2 - 300 : width // 2 + 300, :3] = 2000
    compressor = zlib.compressobj(6)
    rows = [
        compressor.compress(b"\x00" + (bar.tobytes() if abs(y - height // 2) < 1500 else paper)) for y in range(height)
    ]
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(rows) + compressor.flush())
        + chunk(b"IEND", b"")
    )


def noise_png(side: int = 2500) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
WORKER = r"""
import json, sys, time
from dataclasses import replace
import boto3
from handler.config import Settings
from handler.pipeline import Deadline, Service, process
from handler.records import Source

bucket, keys, deadline_s = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
service = Service.create(Settings(bucket=bucket))
baseline = HWM
s3 = boto3.client("s3")
sources = []
for key in keys:
    head = s3.head_object(Bucket=bucket, Key=key)
    sources.append(Source(bucket, key, head["ETag"].strip('"'), head["ContentLength"]))
started = time.monotonic()
deadline = Deadline(lambda: int((deadline_s - (time.monotonic() - started)) * 1000)) if deadline_s else None
outcomes = process(sources, service, deadline=deadline)
counts = {}
for outcome in outcomes:
    status = outcome.error_code or outcome.status
    counts[status] = counts.get(status, 0) + 1
print(json.dumps({"baseline_mb": baseline, "peak_mb": HWM, "seconds": time.monotonic() - started, "counts": counts}))
""".replace("HWM", HWM)

SINGLE = r"""
import json, sys
import handler.app
from handler import imaging
data = open(sys.argv[1], "rb").read()
baseline = HWM
imaging.prepare(data, 40_000_000)
print(json.dumps({"baseline_mb": baseline, "peak_mb": HWM}))
""".replace("HWM", HWM)  # VmHWM: this process's peak (ru_maxrss would carry the parent's over exec)


def run(code: str, *args: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    import tempfile

    import boto3

    from infra.local_s3 import embedded_s3

    big = rgba16_png()
    env = {
        **os.environ,
        "POWERTOOLS_SERVICE_NAME": "bench",
        "POWERTOOLS_METRICS_NAMESPACE": "Bench",
        "POWERTOOLS_TRACE_DISABLED": "true",
        # as on Lambda at the smallest MemorySize: the settings check it, and it buys one process (no helpers)
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(LAMBDA_MEMORY_MB),
    }
    with tempfile.NamedTemporaryFile(suffix=".png") as f:
        f.write(big)
        f.flush()
        single = run(SINGLE, f.name, env={**env, "AWS_DEFAULT_REGION": "us-east-1"})
    print(
        f"largest input (40 MP 16-bit RGBA PNG, {len(big) / 1e3:.0f} KB): peak {single['peak_mb']:.0f} MB "
        f"(process at rest {single['baseline_mb']:.0f} MB) vs MemorySize >= {LAMBDA_MEMORY_MB} MB"
    )
    with embedded_s3():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="limits")
        noise = noise_png()
        keys = [f"input/big/{i:02d}.png" for i in range(64)]
        for key in keys:
            s3.put_object(Bucket="limits", Key=key, Body=noise)
        s3.put_object(Bucket="limits", Key="input/big/rgba16.png", Body=big)
        batch = run(WORKER, "limits", json.dumps([*keys, "input/big/rgba16.png"]), "0", env={**env, **dict(os.environ)})
        print(
            f"bulk batch of 64 x {len(noise) / 1e6:.1f} MB + the 40 MP PNG: peak {batch['peak_mb']:.0f} MB "
            f"(at rest {batch['baseline_mb']:.0f} MB), {batch['seconds']:.1f} s, {batch['counts']}"
        )
        slow = [f"input/slow/{i:03d}.png" for i in range(128)]
        for key in slow:
            s3.put_object(Bucket="limits", Key=key, Body=big)
        timed = run(WORKER, "limits", json.dumps(slow), str(BULK_TIMEOUT_S), env={**env, **dict(os.environ)})
        print(
            f"{len(slow)} slow 40 MP PNGs under a {BULK_TIMEOUT_S} s deadline: answered after {timed['seconds']:.1f} s, "
            f"{timed['counts']} (deferred inputs are retried; peak {timed['peak_mb']:.0f} MB)"
        )
    ok = (
        single["peak_mb"] < LAMBDA_MEMORY_MB
        and batch["peak_mb"] < LAMBDA_MEMORY_MB
        and timed["seconds"] < BULK_TIMEOUT_S
    )
    print(f"within {LAMBDA_MEMORY_MB} MB and the {BULK_TIMEOUT_S} s timeout: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the benchmarks share: reading image files through ``python -m handler label`` as a user does, and
writing each benchmark's figures to ``benchmarks/results/<name>.json`` (the README's tables come from there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def label_files(blobs: list[bytes], *, allow: str | None = None, model_uri: str | None = None) -> list[dict[str, Any]]:
    """The CLI's record for each image, in order: the images are written as files into a folder and read
    by ``python -m handler label [--allow]`` (with ``MODEL_URI`` set when a model version is given)."""
    with tempfile.TemporaryDirectory() as tmp:
        for position, blob in enumerate(blobs):
            (Path(tmp) / f"{position:05d}.img").write_bytes(blob)
        command = [sys.executable, "-m", "handler", "label", *(["--allow", allow] if allow else []), tmp]
        env = {**os.environ, **({"MODEL_URI": model_uri} if model_uri else {})}
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    records = {Path(r["source"]["key"]).stem: r for r in map(json.loads, done.stdout.splitlines())}
    return [records[f"{i:05d}"] for i in range(len(blobs))]


def reference_ms() -> float:
    """How fast this machine runs Python today: the best of 3 runs of a fixed loop (ten million additions).

    CPU figures in ms compare across machines (and across days on a shared host) only beside this one."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return best * 1000


def write_results(name: str, results: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")

"""Warm throughput, image bytes -> label: this service (LiteRT, batched) vs the naive approach
(full TensorFlow, Keras ``predict`` one image at a time), measured in the same run.

Run: .venv/bin/python benchmarks/throughput.py [--images 256]. Target: at least 10x the naive rate.
Inputs are photo-like JPEG uploads made from real EMNIST glyphs (see training/render.py).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import reference_ms, write_results  # noqa: E402
from handler import model  # noqa: E402
from handler.config import bundled_model_uri  # noqa: E402
from handler.recognition import label  # noqa: E402
from handler.records import local_source  # noqa: E402
from training.data import load_folder  # noqa: E402
from training.render import photo_like  # noqa: E402

MAX_PIXELS = 40_000_000


def uploads(data_dir: str, n: int) -> list[bytes]:
    emnist = load_folder(Path(data_dir))
    rng = np.random.default_rng(0)
    return [photo_like(emnist.images[i], rng) for i in rng.choice(len(emnist), n, replace=False)]


def ours(classifier: model.Classifier, blobs: list[bytes], batch: int) -> float:
    items = [(local_source(f"{i}.jpg", b), b) for i, b in enumerate(blobs)]
    label(items[:batch], classifier, MAX_PIXELS)  # warm
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        label(items[i : i + batch], classifier, MAX_PIXELS)
    return len(items) / (time.perf_counter() - start)


def naive(keras_path: Path, blobs: list[bytes]) -> float:
    import keras
    from PIL import Image

    net = keras.models.load_model(keras_path)

    def one(blob: bytes) -> str:
        gray = Image.open(io.BytesIO(blob)).convert("L").resize((28, 28))
        x = 1.0 - np.asarray(gray, dtype=np.float32)[None, :, :, None] / 255.0
        return str(int(net.predict(x, verbose=0).argmax()))

    one(blobs[0])  # warm
    start = time.perf_counter()
    for blob in blobs:
        one(blob)
    return len(blobs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "emnist"))
    args = parser.parse_args()
    uri = bundled_model_uri()
    classifier = model.load(uri, Path("/tmp/models"))
    blobs = uploads(args.data, args.images)
    rate64 = ours(classifier, blobs, 64)
    rate1 = ours(classifier, blobs, 1)
    rate_naive = naive(Path(uri) / "model.keras", blobs[: min(len(blobs), 128)])
    print(f"model {classifier.manifest.version}, {args.images} photo-like JPEG uploads, {os.cpu_count()} CPUs")
    print(
        f"this service, batch 64 : {rate64:8.1f} images/s  ({1000 / rate64:.2f} ms/image)  {rate64 / rate_naive:5.1f}x naive"
    )
    print(
        f"this service, batch 1  : {rate1:8.1f} images/s  ({1000 / rate1:.2f} ms/image)  {rate1 / rate_naive:5.1f}x naive"
    )
    print(f"naive TF, predict x1   : {rate_naive:8.1f} images/s  ({1000 / rate_naive:.2f} ms/image)")
    ok = min(rate64, rate1) / rate_naive >= 10
    print(f"target >= 10x naive at batch 64 and 1: {'PASS' if ok else 'FAIL'}")
    write_results(
        "throughput",
        {
            "images_per_s_batch_64": round(rate64, 1),
            "images_per_s_batch_1": round(rate1, 1),
            "images_per_s_naive": round(rate_naive, 1),
            "reference_ms": round(reference_ms()),
        },
    )


if __name__ == "__main__":
    main()

"""Digit fields with and without ``--allow 0123456789``: held-out EMNIST digits (the model's validation
split, never trained on), read as files through ``pipeline.label`` as 28x28 PNGs and as 16x16 scans
(dark ink on white, shrunk as a scanner would), with and without the restriction.

Run: .venv/bin/python benchmarks/allow_digits.py [--images 2000]. Writes benchmarks/results/allow_digits.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handler import model  # noqa: E402
from handler.config import bundled_model_uri  # noqa: E402
from handler.pipeline import label, local_source  # noqa: E402
from handler.workers import Workers  # noqa: E402
from training.data import load_folder, stratified_split  # noqa: E402

DIGITS = "0123456789"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def as_scan(glyph: np.ndarray, side: int) -> bytes:
    """A small scan: black ink on white paper, shrunk from the 28x28 glyph with area averaging."""
    return png(Image.fromarray(255 - glyph).resize((side, side), Image.Resampling.BOX))


def accuracy(blobs: list[bytes], truth: list[str], classifier: model.Classifier, allow: str | None) -> float:
    workers = Workers(1, classifier.predict_in_helper)
    labels: list[str] = []
    for start in range(0, len(blobs), 64):
        items = [(local_source(f"{i}.png", b), b) for i, b in enumerate(blobs[start : start + 64], start)]
        labels += [r.get("label", "") for r in label(items, classifier, 40_000_000, workers=workers, allow=allow)]
    workers.close()
    return float(np.mean([a == b for a, b in zip(labels, truth, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "emnist"))
    args = parser.parse_args()
    data = load_folder(Path(args.data))
    held_out = stratified_split(data.labels, 0.15, 1234).val  # the bundled model's validation split
    digits = [i for i in held_out if data.classes[data.labels[i]] in DIGITS]
    chosen = np.random.default_rng(7).choice(digits, min(args.images, len(digits)), replace=False)
    truth = [data.classes[data.labels[i]] for i in chosen]
    classifier = model.load(bundled_model_uri(), Path("/tmp/models"))
    results = {}
    print(f"{len(chosen)} held-out EMNIST digits read as files through pipeline.label")
    for name, blobs in (
        ("28x28 PNG", [png(Image.fromarray(data.images[i])) for i in chosen]),
        ("16x16 scan", [as_scan(data.images[i], 16) for i in chosen]),
        ("12x12 scan", [as_scan(data.images[i], 12) for i in chosen]),
    ):
        free, digits_only = accuracy(blobs, truth, classifier, None), accuracy(blobs, truth, classifier, DIGITS)
        results[name] = {"any": round(free, 4), "allow_digits": round(digits_only, 4)}
        print(f"  {name:11} any class {free:7.2%}   --allow 0123456789 {digits_only:7.2%}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "allow_digits.json").write_text(json.dumps({"images": len(chosen), **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

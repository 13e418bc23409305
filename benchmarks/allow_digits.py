"""Digit fields with and without ``--allow 0123456789``: held-out EMNIST digits (the model's validation
split, never trained on) written as files, 28x28 PNGs and 16x16 / 12x12 scans (dark ink on white, shrunk
as a scanner would), read by ``python -m handler label``; beside the model's own accuracy on the arrays.

Run: .venv/bin/python benchmarks/allow_digits.py [--images 2000]. Writes benchmarks/results/allow_digits.json.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import label_files, write_results  # noqa: E402
from handler import model  # noqa: E402
from handler.config import bundled_model_uri  # noqa: E402
from handler.recognition import read  # noqa: E402
from training.data import load_folder, stratified_split  # noqa: E402

DIGITS = "0123456789"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def as_scan(glyph: np.ndarray, side: int) -> bytes:
    """A small scan: black ink on white paper, shrunk from the 28x28 glyph with area averaging."""
    return png(Image.fromarray(255 - glyph).resize((side, side), Image.Resampling.BOX))


def through_cli(blobs: list[bytes], truth: list[str], allow: str | None) -> float:
    """Accuracy of ``python -m handler label [--allow]`` on these images written as files."""
    return float(
        np.mean([r.get("label", "") == t for r, t in zip(label_files(blobs, allow=allow), truth, strict=True)])
    )


def on_arrays(classifier: model.Classifier, images: np.ndarray, truth: list[str], allow: str | None) -> float:
    """The model's own accuracy on the 28x28 arrays, no project code in between: the figure to compare with."""
    probabilities = classifier.predict(images.astype(np.float32) / 255.0)
    labels = [read(p, classifier.classes, allow=allow).label for p in probabilities]
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
    images = data.images[chosen]
    own = {"any": on_arrays(classifier, images, truth, None), "allow": on_arrays(classifier, images, truth, DIGITS)}
    results: dict[str, dict[str, float]] = {
        "model on the 28x28 arrays": {"any": round(own["any"], 4), "allow_digits": round(own["allow"], 4)}
    }
    print(f"{len(chosen)} held-out EMNIST digits written as files and read by python -m handler label")
    print(f"  {'model on arrays':17} any class {own['any']:7.2%}   --allow 0123456789 {own['allow']:7.2%}")
    for name, blobs in (
        ("28x28 PNG", [png(Image.fromarray(image)) for image in images]),
        ("16x16 scan", [as_scan(image, 16) for image in images]),
        ("12x12 scan", [as_scan(image, 12) for image in images]),
    ):
        free, digits_only = through_cli(blobs, truth, None), through_cli(blobs, truth, DIGITS)
        results[name] = {"any": round(free, 4), "allow_digits": round(digits_only, 4)}
        print(f"  {name:17} any class {free:7.2%}   --allow 0123456789 {digits_only:7.2%}")
    write_results("allow_digits", {"images": len(chosen), **results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Recognition end to end: held-out EMNIST glyphs (the model's validation split, never trained on) saved as
the files users upload and read by ``python -m handler label``, beside the model's own accuracy on the same
28x28 arrays (no project code in between).

Kinds: EMNIST's own 28x28 PNGs; photo-like JPEGs (ink on lit paper, off-centre, tilted, noisy); clean scans;
transparent PNGs; letters in the boxes of a printed form (box lines, neighbouring cells, dark scan borders,
grey paper); photos of the glyph redrawn along its centre lines with a 3-12 px pen (a ballpoint's or a
marker's strokes, not EMNIST's scaled ones); 16x16 digit-field scans with and without ``--allow 0123456789``. For each: accuracy,
class-balanced accuracy, expected calibration error of the record's confidence, and the coverage and
accuracy of labels not flagged for review. Targets are printed beside the figures.

Run: .venv/bin/python benchmarks/recognition.py [--n 3000] [--model models/<version> --out <name>].
Writes benchmarks/results/recognition.json (or <name>.json).
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
from training.render import (  # noqa: E402
    form_cell,
    pen_photo,
    pen_strokes,
    photo_like,
    scan_like,
    tiny_like,
    transparent_like,
)

DIGITS = "0123456789"
ECE_BINS = 15


def png(glyph: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(glyph).save(buffer, format="PNG")
    return buffer.getvalue()


def pen_glyph(glyph: np.ndarray, pen: float = 2.5) -> np.ndarray:
    """The glyph's centre lines redrawn with a ``pen`` px nib at 28x28 (drawn at 8x, then averaged down)."""
    strokes = pen_strokes(glyph, 28 * 8, round(pen * 8))
    return np.asarray(Image.fromarray(strokes).resize((28, 28), Image.Resampling.BOX), dtype=np.float32)


def balanced(truth: list[str], predicted: list[str]) -> float:
    truth_a, predicted_a = np.array(truth), np.array(predicted)
    return float(np.mean([np.mean(predicted_a[truth_a == c] == c) for c in np.unique(truth_a)]))


def ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    return float(
        sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * np.mean(bins == b) for b in np.unique(bins))
    )


def summarise(records: list[dict], truth: list[str]) -> dict[str, float]:
    """Scores of a kind; a record of several characters or an error counts as wrong (confidence 0)."""
    labels = [r.get("label", "?") for r in records]
    confidence = np.array([r.get("confidence", 0.0) for r in records])
    correct = np.array([a == b for a, b in zip(labels, truth, strict=True)])
    accepted = np.array([("label" in r) and not r.get("review", False) for r in records])
    return {
        "accuracy": round(float(correct.mean()), 4),
        "balanced_accuracy": round(balanced(truth, labels), 4),
        "ece": round(ece(confidence, correct), 4),
        "coverage": round(float(accepted.mean()), 4),
        "accepted_accuracy": round(float(correct[accepted].mean()) if accepted.any() else 0.0, 4),
        "not_one_character": int(sum("label" not in r for r in records)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000, help="held-out glyphs per kind (stratified sample)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "emnist"))
    parser.add_argument("--model", help="a model version folder (default: the bundled one)")
    parser.add_argument("--out", default="recognition", help="results/<out>.json")
    args = parser.parse_args()
    uri = str(Path(args.model).resolve()) if args.model else None
    classifier = model.load(uri or bundled_model_uri(), Path("/tmp/models"))
    split = classifier.manifest.training["split"]
    data = load_folder(Path(args.data))
    held_out = stratified_split(data.labels, split["val_fraction"], split["seed"]).val
    rng = np.random.default_rng(2027)
    chosen = np.sort(rng.choice(held_out, min(args.n, len(held_out)), replace=False))
    truth = [data.classes[i] for i in data.labels[chosen]]
    images = data.images[chosen]
    on_arrays = classifier.predict(images.astype(np.float32) / 255.0)
    arrays = [classifier.classes[i] for i in on_arrays.argmax(axis=1)]
    own = {
        "accuracy": float(np.mean([a == b for a, b in zip(arrays, truth, strict=True)])),
        "balanced_accuracy": balanced(truth, arrays),
    }

    pens = np.random.default_rng(2028)  # its own generator: adding pen photos left every other file as it was
    kinds = {
        "28x28 EMNIST PNG": [png(g) for g in images],
        "photo-like JPEG": [photo_like(g, rng) for g in images],
        "clean scan": [scan_like(g, rng) for g in images],
        "transparent PNG": [transparent_like(g, rng) for g in images],
        "form cell": [form_cell(g, rng) for g in images],
        "pen photo JPEG (3-12 px pen)": [pen_photo(g, pens) for g in images],
    }
    results: dict[str, object] = {
        "model": classifier.manifest.version,
        "images": len(chosen),
        "model_on_arrays": {k: round(v, 4) for k, v in own.items()},
        "kinds": {},
    }
    print(
        f"model {classifier.manifest.version}; {len(chosen)} held-out glyphs per kind, read by python -m handler label"
    )
    print(
        f"  {'model on the 28x28 arrays':26} accuracy {own['accuracy']:7.2%}  balanced {own['balanced_accuracy']:7.2%}"
    )
    for name, blobs in kinds.items():
        scores = summarise(label_files(blobs, model_uri=uri), truth)
        results["kinds"][name] = scores  # type: ignore[index]
        gap = (own["accuracy"] - scores["accuracy"]) * 100
        print(
            f"  {name:26} accuracy {scores['accuracy']:7.2%}  balanced {scores['balanced_accuracy']:7.2%}"
            f"  gap {gap:5.2f} pts  ECE {scores['ece']:6.2%}  accepted {scores['coverage']:6.1%} at {scores['accepted_accuracy']:6.2%}"
        )
    pen_arrays = np.stack([pen_glyph(g) for g in images])
    on_pen = [classifier.classes[i] for i in classifier.predict(pen_arrays).argmax(axis=1)]
    results["model_on_pen_arrays"] = round(float(np.mean([a == b for a, b in zip(on_pen, truth, strict=True)])), 4)
    print(
        f"  {'model on the same glyphs redrawn with a 2.5 px pen, as 28x28 arrays':26} "
        f"accuracy {results['model_on_pen_arrays']:7.2%}"
    )
    digits = [i for i, t in enumerate(truth) if t in DIGITS]
    digit_truth = [truth[i] for i in digits]
    tiny = [tiny_like(images[i], rng, side=16) for i in digits]
    digit_arrays = [read(on_arrays[i], classifier.classes, allow=DIGITS).label for i in digits]
    own_digits = float(np.mean([a == b for a, b in zip(digit_arrays, digit_truth, strict=True)]))
    results["digits_16x16"] = {
        "images": len(digits),
        "model_on_arrays_allow": round(own_digits, 4),
        "any": summarise(label_files(tiny, model_uri=uri), digit_truth),
        "allow_digits": summarise(label_files(tiny, allow=DIGITS, model_uri=uri), digit_truth),
    }
    any_, allow_ = results["digits_16x16"]["any"], results["digits_16x16"]["allow_digits"]  # type: ignore[index]
    print(
        f"  16x16 digit scans ({len(digits)})     any class {any_['accuracy']:7.2%}   --allow 0123456789"
        f" {allow_['accuracy']:7.2%}  (model on arrays with allow {own_digits:.2%})"
    )
    clean, photo = results["kinds"]["28x28 EMNIST PNG"], results["kinds"]["photo-like JPEG"]  # type: ignore[index]
    print("targets:")
    print(f"  28x28 PNGs within 0.3 pts of the arrays: {(own['accuracy'] - clean['accuracy']) * 100:.2f} pts")
    print(f"  photo-like within 1.5 pts of the arrays: {(own['accuracy'] - photo['accuracy']) * 100:.2f} pts")
    print(
        f"  class-balanced through the service >= 90.5%: {clean['balanced_accuracy']:.2%} (28x28), {photo['balanced_accuracy']:.2%} (photo)"
    )
    print(f"  ECE <= 1.5%: {clean['ece']:.2%} (28x28), {photo['ece']:.2%} (photo)")
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

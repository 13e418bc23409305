"""Accuracy through the CLI on photo-like uploads vs the model on the 28x28 originals.

Takes the bundled model's held-out validation split (its manifest names the split seed), turns
each glyph into a photo of dark ink on lit paper (larger, off-centre, tilted, noisy, JPEG), runs
``python -m handler label DIR`` on the folder and compares. Target: within 3 points.

Run: .venv/bin/python benchmarks/photo_accuracy.py [--n 3000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from handler import model  # noqa: E402
from handler.config import bundled_model_uri  # noqa: E402
from training.data import load_folder, stratified_split  # noqa: E402
from training.render import photo_like  # noqa: E402


def balanced(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean([np.mean(predicted[truth == c] == c) for c in np.unique(truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000, help="validation images to use (stratified sample)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "emnist"))
    args = parser.parse_args()
    classifier = model.load(bundled_model_uri(), Path("/tmp/models"))
    split_config = classifier.manifest.training["split"]
    emnist = load_folder(Path(args.data))
    val = stratified_split(emnist.labels, split_config["val_fraction"], split_config["seed"]).val
    rng = np.random.default_rng(2026)
    chosen = np.sort(rng.choice(val, min(args.n, len(val)), replace=False))
    truth = emnist.labels[chosen]

    originals = classifier.predict(emnist.images[chosen].astype(np.float32) / 255.0).argmax(axis=1)
    with tempfile.TemporaryDirectory() as tmp:
        for position, index in enumerate(chosen):
            (Path(tmp) / f"{position:05d}.jpg").write_bytes(photo_like(emnist.images[index], rng))
        done = subprocess.run(
            [sys.executable, "-m", "handler", "label", tmp], cwd=ROOT, capture_output=True, text=True, check=True
        )
    records = {Path(r["source"]["key"]).stem: r for r in map(json.loads, done.stdout.splitlines())}
    classes = classifier.classes
    photo = np.array(
        [
            classes.index(records[f"{i:05d}"].get("label", "?")) if "label" in records[f"{i:05d}"] else -1
            for i in range(len(chosen))
        ]
    )
    errors = int(np.sum(photo < 0))

    acc_orig, acc_photo = float(np.mean(originals == truth)), float(np.mean(photo == truth))
    print(f"model {classifier.manifest.version}; {len(chosen)} held-out validation images")
    print(f"28x28 originals (LiteRT)      : accuracy {acc_orig:.2%}, class-balanced {balanced(truth, originals):.2%}")
    print(
        f"photo-like uploads via the CLI: accuracy {acc_photo:.2%}, class-balanced {balanced(truth, photo):.2%} ({errors} error records)"
    )
    gap = (acc_orig - acc_photo) * 100
    print(f"gap: {gap:.2f} points; target within 3 points: {'PASS' if gap <= 3 else 'FAIL'}")


if __name__ == "__main__":
    main()

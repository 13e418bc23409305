"""Touching characters: segmentation by recognition (the service) against a segmentation-free CTC line
reader (``training/line_ctc.py``), on the same photo-like pages of 2-4 held-out EMNIST glyphs in one line,
every neighbouring pair touching or slightly overlapping. Character error rate and exact-string accuracy
for each; the service keeps whichever reads them better (the issue's choice, measured here).

Run: .venv/bin/python -m training.line_ctc (trains runs/line_ctc, ~15 min on 2 cores), then
.venv/bin/python benchmarks/touching.py [--pages 400]. Writes benchmarks/results/touching.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from benchmarks.strings import score  # noqa: E402
from handler import model  # noqa: E402
from handler.config import bundled_model_uri  # noqa: E402
from handler.pipeline import label, local_source  # noqa: E402
from training import line_ctc  # noqa: E402
from training.data import load_folder, stratified_split  # noqa: E402


def main() -> int:
    import keras

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "emnist"))
    parser.add_argument("--ctc", default=str(ROOT / "runs" / "line_ctc" / "model.keras"))
    args = parser.parse_args()
    data = load_folder(Path(args.data))
    held_out = stratified_split(data.labels, 0.15, 1234).val
    images, labels, pages = line_ctc.make_lines(
        data.images[held_out], data.labels[held_out], args.pages, seed=2027, jobs=8
    )
    truths = ["".join(data.classes[i] for i in row if i >= 0) for row in labels]
    reader = keras.models.load_model(args.ctc, compile=False)
    ctc = line_ctc.greedy(reader.predict(images[..., None], batch_size=64, verbose=0), data.classes)
    classifier = model.load(bundled_model_uri(), Path("/tmp/models"))
    records = label([(local_source(f"{i}.jpg", p), p) for i, p in enumerate(pages)], classifier, 40_000_000)
    service = [r.get("text", "").replace("\n", "") for r in records]
    results = {
        "pages": len(pages),
        "segmentation_by_recognition": score(truths, service),
        "ctc_line_reader": score(truths, ctc),
    }
    print(f"{len(pages)} one-line pages of 2-4 touching held-out EMNIST glyphs, photo-like")
    for name in ("segmentation_by_recognition", "ctc_line_reader"):
        r = results[name]
        print(f"  {name:28} CER {r['cer']:6.2%}  exact {r['exact']:6.2%}  count right {r['count_right']:6.2%}")
    better = min(("segmentation_by_recognition", "ctc_line_reader"), key=lambda k: results[k]["cer"])
    results["reads_better"] = better
    print(f"  reads touching characters better: {better}")
    write_results("touching", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

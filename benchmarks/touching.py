"""Touching characters: the service with its line reader (wide blobs read whole by CTC) against the same
service cutting them apart (segmentation by recognition alone), and the line reader alone on the whole
line, on the same photo-like pages of 2-4 held-out EMNIST glyphs in one line, every neighbouring pair
touching or slightly overlapping. Character error rate, exact strings and character count for each.

Run: .venv/bin/python benchmarks/touching.py [--pages 400] [--model models/<version>]
(the version must hold a line reader: ``python -m training line-reader``). Writes
benchmarks/results/touching.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from benchmarks.strings import score  # noqa: E402
from handler import model  # noqa: E402
from handler.config import bundled_model_uri  # noqa: E402
from handler.ctc import decode_line  # noqa: E402
from handler.recognition import label, model_info  # noqa: E402
from handler.records import local_source, record_of  # noqa: E402
from training import line_reader  # noqa: E402
from training.data import load_folder, stratified_split  # noqa: E402

WAYS = {
    "service_with_line_reader": "service, wide blobs read whole (bundled)",
    "segmentation_by_recognition": "service, wide blobs cut (no line reader)",
    "line_reader_on_whole_line": "line reader alone, whole line",
}


def records(items: list, classifier: model.Classifier) -> list[dict]:
    """The record ``python -m handler label`` gives each page."""
    info = model_info(classifier)
    return [
        record_of(source, read, info)
        for (source, _), read in zip(items, label(items, classifier, 40_000_000), strict=True)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=400)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "emnist"))
    parser.add_argument("--model", default=bundled_model_uri())
    args = parser.parse_args()
    data = load_folder(Path(args.data))
    held_out = stratified_split(data.labels, 0.15, 1234).val
    strips, labels, pages = line_reader.make_lines(
        data.images[held_out], data.labels[held_out], args.pages, seed=2027, jobs=8
    )
    keep = np.array([(row >= 0).sum() >= 2 for row in labels])  # touching: two characters or more
    strips, labels, pages = strips[keep], labels[keep], [p for p, k in zip(pages, keep, strict=True) if k]
    truths = ["".join(data.classes[i] for i in row if i >= 0) for row in labels]
    classifier = model.load(args.model, Path("/tmp/models"))
    if classifier.line_reader is None:
        raise SystemExit(f"{args.model} holds no line reader: run python -m training line-reader first")
    items = [(local_source(f"{i}.jpg", p), p) for i, p in enumerate(pages)]
    without = model.load(args.model, Path("/tmp/models"))
    without.line_reader = None  # the same version, cutting every wide blob as before the line reader
    read = {
        "service_with_line_reader": records(items, classifier),
        "segmentation_by_recognition": records(items, without),
    }
    texts = {name: [r.get("text", "").replace("\n", "") for r in records] for name, records in read.items()}
    frames = classifier.line_reader.predict(strips)
    texts["line_reader_on_whole_line"] = ["".join(data.classes[c.index] for c in decode_line(f)) for f in frames]
    results = {"pages": len(pages), **{name: score(truths, texts[name]) for name in WAYS}}
    accepted = [  # (right?) for every character a person need not check, on pages whose count is right
        c["label"] == t
        for record, truth in zip(read["service_with_line_reader"], truths, strict=True)
        if len(record.get("characters", [])) == len(truth)
        for c, t in zip(record["characters"], truth, strict=True)
        if c.get("review") is False
    ]
    counted = sum(
        len(r.get("characters", []))
        for r, t in zip(read["service_with_line_reader"], truths, strict=True)
        if len(r.get("characters", [])) == len(t)
    )
    results["review_false"] = {
        "coverage": round(len(accepted) / max(counted, 1), 4),
        "accuracy": round(sum(accepted) / max(len(accepted), 1), 4),
    }
    print(f"{len(pages)} one-line pages of 2-4 touching held-out EMNIST glyphs, photo-like")
    for name, title in WAYS.items():
        r = results[name]
        print(f"  {title:42} CER {r['cer']:6.2%}  exact {r['exact']:6.2%}  count right {r['count_right']:6.2%}")
    review = results["review_false"]
    print(
        f"  characters needing no review (pages with the count right): {review['coverage']:.1%}, "
        f"{review['accuracy']:.2%} of them right (the threshold aims at 99%)"
    )
    write_results("touching", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

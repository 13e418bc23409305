"""Forms photographed askew: printed box lines that are not level must still come out.

Held-out EMNIST glyphs rendered as a letter in a form box (``training.render.form_cell``) and as names in
the boxes of a form field (``training.render.form_field``), each turned by 0-3 degrees: a box cropped the way
a form processor cuts it out of a tilted photo (its lines run on past the crop's edges), a field whole on its
paper. Read by ``python -m handler label``.
Prints single-letter accuracy and the names' character error rate per angle.

Run: .venv/bin/python benchmarks/askew.py [--cells 600] [--names 150]. Writes benchmarks/results/askew.json.
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
from benchmarks.strings import score  # noqa: E402
from handler import model  # noqa: E402
from handler.config import bundled_model_uri  # noqa: E402
from training.data import load_folder, stratified_split  # noqa: E402
from training.render import form_cell, form_field  # noqa: E402

ANGLES = (0.0, 1.0, 2.0, 3.0)


def askew(data: bytes, degrees: float, crop: float) -> bytes:
    """The upload turned by ``degrees`` as a PNG: cropped by ``crop`` of its side at each edge (a form box cut
    out of a photo: its lines run on past the edges), or with no crop, whole on paper (a field photographed
    with the paper around it)."""
    image = Image.open(io.BytesIO(data)).convert("L")
    paper = int(np.median(np.asarray(image)))
    image = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=not crop, fillcolor=paper)
    width, height = image.size
    margin = int(crop * min(width, height))
    buffer = io.BytesIO()
    image.crop((margin, margin, width - margin, height - margin)).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=600)
    parser.add_argument("--names", type=int, default=150)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "emnist"))
    args = parser.parse_args()
    data = load_folder(Path(args.data))
    held_out = stratified_split(data.labels, 0.15, 1234).val
    rng = np.random.default_rng(5)
    chosen = rng.choice(held_out, args.cells, replace=False)
    truth = [data.classes[data.labels[i]] for i in chosen]
    cells = [form_cell(data.images[i], rng) for i in chosen]
    capitals = held_out[(data.labels[held_out] >= 10) & (data.labels[held_out] < 36)]
    names = [rng.choice(capitals, int(rng.integers(3, 11)), replace=False) for _ in range(args.names)]
    name_truth = ["".join(data.classes[data.labels[i]] for i in name) for name in names]
    fields = [form_field([data.images[i] for i in name], rng) for name in names]
    classifier = model.load(bundled_model_uri(), Path("/tmp/models"))
    on_arrays = classifier.predict(data.images[chosen].astype(np.float32) / 255.0).argmax(axis=1)
    own = float(np.mean([classifier.classes[i] == t for i, t in zip(on_arrays, truth, strict=True)]))
    results: dict[str, dict[str, float]] = {"model on the 28x28 arrays": {"form_cell_accuracy": round(own, 4)}}
    print(f"{args.cells} form cells and {args.names} names in form fields, turned and cropped like a photo")
    print(f"  the model on the same letters' 28x28 arrays: {own:6.2%}")
    for angle in ANGLES:
        signs = [1 if k % 2 else -1 for k in range(max(len(cells), len(fields)))]
        cell_records = label_files([askew(c, angle * s, 0.06) for c, s in zip(cells, signs, strict=False)])
        accuracy = float(np.mean([r.get("text") == t for r, t in zip(cell_records, truth, strict=True)]))
        name_records = label_files([askew(f, angle * s, 0.0) for f, s in zip(fields, signs, strict=False)])
        names_cer = score(name_truth, [r.get("text", "").replace("\n", "") for r in name_records])["cer"]
        results[f"{angle:g} degrees"] = {"form_cell_accuracy": round(accuracy, 4), "names_cer": names_cer}
        print(f"  {angle:3g} degrees   form cell accuracy {accuracy:6.2%}   names in form fields CER {names_cer:6.2%}")
    write_results("askew", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

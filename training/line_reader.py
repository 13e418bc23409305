"""The line reader: a small CTC model that reads a blob of touching characters whole.

Over-segmentation cuts touching characters apart at ink valleys and often cuts wrong; a CRNN (convolutions,
a bidirectional GRU, CTC) trained on strings composed from isolated glyphs reads them without cutting
(``benchmarks/touching.py`` measures both). Training pages are 1-4 training-split EMNIST glyphs written with
every pair touching (``training.render.string_page``), photographed, then read back by the service's own
``handler.imaging.find_ink`` and ``handler.imaging.strip.to_strip``: the strip serving makes for a wide blob.

``python -m training line-reader --model models/<version> --run runs/line_reader --to models`` trains,
exports to LiteRT (built-in ops only: the GRU is unrolled over the strip's 32 columns; float16 or, when it
reads held-out lines as well, dynamic range, about 3x faster), fits a temperature
for its per-character confidences on held-out lines, and publishes the base version plus the reader as a new
write-once version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handler.config import DEFAULT_POINTER
from handler.ctc import decode_line
from handler.imaging import ImageError, decode
from handler.imaging.page import find_ink
from handler.imaging.strip import HEIGHT, WIDTH, to_strip
from handler.model import (
    LINE_READER_FILE,
    MANIFEST_NAME,
    LineReader,
    Manifest,
    build_manifest,
    calibrate,
    sha256_file,
)
from handler.readings import Box
from training.calibrate import expected_calibration_error, fit_temperature
from training.data import load_folder, stratified_split
from training.render import string_page
from training.timing import ms_per_item

if TYPE_CHECKING:
    import keras

MAX_CHARACTERS = 4
CHARACTER_COUNTS = (1, 2, 3, 4)
COUNT_WEIGHTS = (0.15, 0.35, 0.3, 0.2)  # one: a wide single letter must read as one


def page_strip(data: bytes) -> np.ndarray | None:
    """Page bytes -> the strip serving would read if the page's ink were one blob (None: no ink found)."""
    try:
        ink = find_ink(decode(data, 40_000_000))
    except ImageError:
        return None
    rows, cols = np.nonzero(ink.mask)
    top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    box = Box(left, top, right - left + 1, bottom - top + 1)
    return to_strip(ink, box, ink.mask[top : bottom + 1, left : right + 1])


def _make(args: tuple[np.ndarray, np.ndarray, int, int]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    glyphs, labels, samples, seed = args
    rng = np.random.default_rng(seed)
    xs, ys, pages = [], [], []
    for _ in range(samples):
        k = int(rng.choice(CHARACTER_COUNTS, p=COUNT_WEIGHTS))
        chosen = rng.choice(len(glyphs), k, replace=False)
        page = string_page([glyphs[i] for i in chosen], "x" * k, rng, touch=1.0)
        strip = page_strip(page.data)
        if strip is None:
            continue
        label = np.full(MAX_CHARACTERS, -1, dtype=np.int32)
        label[:k] = labels[chosen]
        xs.append(strip)
        ys.append(label)
        pages.append(page.data)
    return np.stack(xs), np.stack(ys), pages


def make_lines(
    glyphs: np.ndarray, labels: np.ndarray, count: int, seed: int, jobs: int = 16
) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """``count`` touching-line samples: strips, labels padded with -1, and the page bytes."""
    rng = np.random.default_rng(seed)
    work = []
    for job in range(jobs):
        pool = rng.choice(len(glyphs), min(len(glyphs), 3000), replace=False)
        work.append((glyphs[pool], labels[pool], count // jobs, seed * 1000 + job))
    with ProcessPoolExecutor() as executor:
        parts = list(executor.map(_make, work))
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        [b for p in parts for b in p[2]],
    )


def build(n_classes: int = 47) -> keras.Model:
    """Convolutions down to 2 rows, then a bidirectional GRU over the 32 columns, one softmax per column
    (the classes, then CTC's blank). The GRU is unrolled so LiteRT runs it with built-in ops."""
    import keras
    from keras import layers

    inputs = keras.Input((HEIGHT, WIDTH, 1))
    x = inputs
    for filters, pool in ((32, (2, 2)), (64, (2, 2)), (128, (2, 1)), (128, (2, 1))):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(pool)(x)
    x = layers.Permute((2, 1, 3))(x)  # (columns, rows, channels)
    x = layers.Reshape((WIDTH // 4, (HEIGHT // 16) * 128))(x)
    x = layers.Bidirectional(layers.GRU(128, return_sequences=True, unroll=True))(x)
    outputs = layers.Dense(n_classes + 1, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="line_reader")


def ctc_loss(y_true: Any, y_pred: Any) -> Any:
    from keras import ops

    labels = ops.cast(y_true, "int32")
    label_length = ops.sum(ops.cast(labels >= 0, "int32"), axis=1)
    labels = ops.where(labels >= 0, labels, 0)
    batch = ops.shape(y_pred)[0]
    logit_length = ops.full((batch,), ops.shape(y_pred)[1], dtype="int32")
    blank = ops.shape(y_pred)[2] - 1
    return ops.ctc_loss(labels, ops.log(y_pred + 1e-8), label_length, logit_length, mask_index=blank)


def train(run: Path, data: str, samples: int, epochs: int) -> Path:
    """Train on touching lines of training-split glyphs; the best (validation loss) model in ``run``."""
    import keras

    emnist = load_folder(Path(data))
    split = stratified_split(emnist.labels, 0.15, 1234)
    x, y, _ = make_lines(emnist.images[split.train], emnist.labels[split.train], samples, seed=1)
    vx, vy, _ = make_lines(emnist.images[split.val], emnist.labels[split.val], max(800, samples // 10), seed=2)
    model = build(len(emnist.classes))
    steps = epochs * int(np.ceil(len(x) / 64))
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=ctc_loss)
    run.mkdir(parents=True, exist_ok=True)
    best = run / "model.keras"
    started = time.monotonic()
    history = model.fit(
        x[..., None],
        y,
        batch_size=64,
        epochs=epochs,
        validation_data=(vx[..., None], vy),
        callbacks=[keras.callbacks.ModelCheckpoint(str(best), save_best_only=True)],
        verbose=2,
    )
    (run / "history.json").write_text(
        json.dumps(
            {
                "samples": len(x),
                "epochs": epochs,
                "seconds": round(time.monotonic() - started, 1),
                "history": {k: [round(float(v), 4) for v in vs] for k, vs in history.history.items()},
            },
            indent=1,
        )
    )
    return best


VARIANTS = ("float16", "dynamic_range")
MAX_LINE_LOSS = 0.005  # of exact lines and of lines with the character count right, against float16


def export(run: Path, variant: str = "float16") -> Path:
    """model.keras -> ``run/candidate-<variant>.tflite`` (built-in ops only): float16 weights, or int8
    weights with activations quantised on the fly (dynamic range)."""
    import keras
    import tensorflow as tf

    model = keras.models.load_model(run / "model.keras", compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            converter.target_spec.supported_types = [tf.float16]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        path = run / f"candidate-{variant}.tflite"
        path.write_bytes(converter.convert())
    return path


def choose_variant(reports: dict[str, dict[str, Any]]) -> str:
    """Dynamic range when it reads held-out lines as well as float16 (at most ``MAX_LINE_LOSS`` fewer exact
    lines and lines with the count right); it is about 3x faster."""
    reference, quantised = reports["float16"], reports.get("dynamic_range")
    if quantised and all(quantised[key] >= reference[key] - MAX_LINE_LOSS for key in ("exact", "count_right")):
        return "dynamic_range"
    return "float16"


def export_best(run: Path, data: str, classes: str) -> dict[str, Any]:
    """Export every variant, measure each on the same held-out lines, keep the chosen one as
    ``run/line_reader.tflite``; returns its report with the candidates' figures."""
    held_out = held_out_lines(data)
    reports = {variant: measure(export(run, variant), held_out, classes) for variant in VARIANTS}
    variant = choose_variant(reports)
    (run / f"candidate-{variant}.tflite").replace(run / LINE_READER_FILE)
    for stale in run.glob("candidate-*.tflite"):  # as the glyph export does: only the kept file stays
        stale.unlink()
    candidates = {
        name: {key: r[key] for key in ("exact", "count_right", "ms_per_strip", "bytes")} for name, r in reports.items()
    }
    return {**reports[variant], "variant": variant, "candidates": candidates}


def reuse(version: Path, run: Path) -> int:
    """Copy a published version's reader into ``run`` (to publish it with another glyph model); returns how
    many lines it was trained on."""
    manifest = Manifest.from_json((version / MANIFEST_NAME).read_bytes(), str(version / MANIFEST_NAME))
    if not manifest.line_reader:
        raise ValueError(f"{version} has no line reader")
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy2(version / manifest.line_reader["file"], run / LINE_READER_FILE)
    return int(manifest.metrics.get("line_reader", {}).get("train_lines", 0))


def held_out_lines(data: str, lines: int = 2000, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Touching lines of validation-split glyphs (strips and padded labels): made once, every reader measured on them."""
    emnist = load_folder(Path(data))
    split = stratified_split(emnist.labels, 0.15, 1234)
    strips, labels, _ = make_lines(emnist.images[split.val], emnist.labels[split.val], lines, seed=seed)
    return strips, labels


def measure(path: Path, held_out: tuple[np.ndarray, np.ndarray], classes: str) -> dict[str, Any]:
    """On :func:`held_out_lines`, through an exported LiteRT reader: exact lines, count right, and a temperature
    for the per-character confidences fitted on half the lines and reported on the other half."""
    strips, labels = held_out
    reader = LineReader(path, temperature=1.0)
    frames = reader.predict(strips)
    truths = ["".join(classes[i] for i in row if i >= 0) for row in labels]
    peaks, truth_index, correct_count = [], [], []
    exact = 0
    for probabilities, truth in zip(frames, truths, strict=True):
        found = decode_line(probabilities)
        exact += "".join(classes[c.index] for c in found) == truth
        correct_count.append(len(found) == len(truth))
        if len(found) == len(truth):
            for character, label in zip(found, truth, strict=True):
                peaks.append(character.probabilities)
                truth_index.append(classes.index(label))
    if len(peaks) < 2:
        raise ValueError(f"the line reader read no held-out line's characters right in number ({len(strips)} tried)")
    peak = np.asarray(peaks)
    truth_array = np.asarray(truth_index)
    half = len(peak) // 2
    temperature = fit_temperature(peak[:half], truth_array[:half])
    held = peak[half:]
    scaled = calibrate(held, temperature)
    right = held.argmax(axis=1) == truth_array[half:]
    return {
        "lines": len(truths),
        "exact": round(exact / len(truths), 4),
        "count_right": round(float(np.mean(correct_count)), 4),
        "character_accuracy_when_count_right": round(float((peak.argmax(axis=1) == truth_array).mean()), 4),
        "temperature": round(float(temperature), 3),
        "ece_before": round(expected_calibration_error(held.max(axis=1), right), 4),
        "ece_after": round(expected_calibration_error(scaled.max(axis=1), right), 4),
        "ms_per_strip": round(ms_per_item(LineReader(path, 1.0, num_threads=1).predict, strips, batch=8), 3),
        "bytes": path.stat().st_size,
    }


def publish(base: Path, run: Path, root: Path, report: dict[str, Any]) -> str:
    """A new write-once version: the base version's files plus the line reader, listed in its manifest."""
    source = Manifest.from_json((base / MANIFEST_NAME).read_bytes(), str(base / MANIFEST_NAME))
    fingerprint = sha256_file(run / LINE_READER_FILE)[:6]
    version = f"{source.version}-lr{datetime.now(UTC):%Y%m%d}-{fingerprint}"
    target = root / version
    if target.exists():
        raise FileExistsError(f"{target} already exists; versions are write-once")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / version
        folder.mkdir()
        for name in source.files:
            shutil.copy2(base / name, folder / name)
        shutil.copy2(run / LINE_READER_FILE, folder / LINE_READER_FILE)
        card = (folder / "card.md").read_text() if (folder / "card.md").exists() else f"# {source.version}\n"
        (folder / "card.md").write_text(card.rstrip() + "\n\n" + card_section(report))
        manifest = build_manifest(
            folder,
            version,
            source.classes,
            metrics={**source.metrics, "line_reader": report},
            training={**source.training, "line_reader_added_to": source.version},
        )
        line_reader = {"file": LINE_READER_FILE, "temperature": report["temperature"]}
        manifest = Manifest(**{**manifest.__dict__, "calibration": source.calibration, "line_reader": line_reader})
        (folder / MANIFEST_NAME).write_text(manifest.to_json())
        shutil.copytree(folder, target)
    (root / DEFAULT_POINTER).write_text(version + "\n")
    return version


def card_section(report: dict[str, Any]) -> str:
    provenance = ""
    if "candidates" in report:
        figures = ", ".join(
            f"{name} {c['exact']:.2%} exact, {c['ms_per_strip']:.2f} ms per strip"
            for name, c in report["candidates"].items()
        )
        provenance += f" Exported {report['variant']}: {figures}."
    if "reused_from" in report:
        provenance += f" Carried over from `{report['reused_from']}`."
    return (
        "## Line reader (touching characters)\n\n"
        f"`{LINE_READER_FILE}`: a CTC line reader for blobs wide enough to hold several characters, trained on "
        f"{report.get('train_lines', '?')} touching lines of 1-4 training-split glyphs. On {report['lines']} "
        f"held-out lines: {report['exact']:.2%} read exactly, character count right on {report['count_right']:.2%}; "
        f"per-character temperature {report['temperature']} (ECE {report['ece_before']:.2%} -> "
        f"{report['ece_after']:.2%} on the half it was not fitted on).{provenance}\n"
    )

"""A segmentation-free reader for touching characters, to compare with segmentation by recognition.

A small CRNN (convolutions, a bidirectional GRU, CTC) reads a whole line image: pages of 2-4 touching
EMNIST glyphs (``training.render.string_page`` with every pair touching), photographed, then found and
cropped by the service's own ``handler.imaging.find_ink``. Trained on glyphs of the training split,
measured on held-out ones against ``handler.pipeline.label`` (the service's over-segmentation) on the
same pages. ``benchmarks/touching.py`` runs the comparison; nothing here is on the serving path.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from handler.imaging import ImageError, decode
from handler.imaging.page import find_ink
from training.data import load_folder, stratified_split
from training.render import string_page

if TYPE_CHECKING:
    import keras

HEIGHT, WIDTH = 32, 128
BLANK = 47  # CTC's blank: after the 47 classes


def line_image(data: bytes) -> np.ndarray | None:
    """Page bytes -> (32, 128) float32 ink on black: the ink's box, scaled to 32 px high, left-aligned."""
    try:
        ink = find_ink(decode(data, 40_000_000))
    except ImageError:
        return None
    rows, cols = np.nonzero(ink.mask)
    crop = ink.crop(int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))
    width = max(1, min(WIDTH, round(crop.shape[1] * (HEIGHT - 4) / crop.shape[0])))
    small = np.asarray(Image.fromarray(crop).resize((width, HEIGHT - 4), Image.Resampling.BILINEAR))
    out = np.zeros((HEIGHT, WIDTH), dtype=np.float32)
    out[2 : HEIGHT - 2, :width] = small
    return out


def _make(args: tuple[np.ndarray, np.ndarray, int, int]) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    glyphs, labels, samples, seed = args
    rng = np.random.default_rng(seed)
    xs, ys, pages = [], [], []
    for _ in range(samples):
        k = int(rng.integers(2, 5))
        chosen = rng.choice(len(glyphs), k, replace=False)
        page = string_page([glyphs[i] for i in chosen], "x" * k, rng, touch=1.0)
        line = line_image(page.data)
        if line is None:
            continue
        label = np.full(4, -1, dtype=np.int32)
        label[:k] = labels[chosen]
        xs.append(line)
        ys.append(label)
        pages.append(page.data)
    return np.stack(xs), np.stack(ys), pages


def make_lines(
    glyphs: np.ndarray, labels: np.ndarray, count: int, seed: int, jobs: int = 16
) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """``count`` touching-line samples: line images, labels padded with -1, and the page bytes."""
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
    """Convolutions down to 4 rows, then a bidirectional GRU over the 32 columns, one softmax per column."""
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
    x = layers.Bidirectional(layers.GRU(128, return_sequences=True))(x)
    outputs = layers.Dense(n_classes + 1, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="line_ctc")


def ctc_loss(y_true: Any, y_pred: Any) -> Any:
    from keras import ops

    labels = ops.cast(y_true, "int32")
    label_length = ops.sum(ops.cast(labels >= 0, "int32"), axis=1)
    labels = ops.where(labels >= 0, labels, 0)
    batch = ops.shape(y_pred)[0]
    logit_length = ops.full((batch,), ops.shape(y_pred)[1], dtype="int32")
    return ops.ctc_loss(labels, ops.log(y_pred + 1e-8), label_length, logit_length, mask_index=BLANK)


def greedy(probabilities: np.ndarray, classes: str) -> list[str]:
    """Best path: the most likely class per column, repeats merged, blanks dropped."""
    out = []
    for row in probabilities.argmax(axis=-1):
        text, previous = [], -1
        for index in row:
            if index != previous and index != BLANK:
                text.append(classes[index])
            previous = index
        out.append("".join(text))
    return out


def train(run: Path, data: str, samples: int, epochs: int) -> Path:
    """Train on touching lines of training-split glyphs; the best (validation loss) model in ``run``."""
    import keras

    emnist = load_folder(Path(data))
    split = stratified_split(emnist.labels, 0.15, 1234)
    x, y, _ = make_lines(emnist.images[split.train], emnist.labels[split.train], samples, seed=1)
    vx, vy, _ = make_lines(emnist.images[split.val], emnist.labels[split.val], samples // 10, seed=2)
    model = build(len(emnist.classes))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=ctc_loss)
    run.mkdir(parents=True, exist_ok=True)
    best = run / "model.keras"
    model.fit(
        x[..., None],
        y,
        batch_size=32,
        epochs=epochs,
        validation_data=(vx[..., None], vy),
        callbacks=[keras.callbacks.ModelCheckpoint(str(best), save_best_only=True)],
        verbose=2,
    )
    return best


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, default=Path("runs/line_ctc"))
    parser.add_argument("--data", default="../shared/emnist")
    parser.add_argument("--samples", type=int, default=16000)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    print(train(args.run, args.data, args.samples, args.epochs))

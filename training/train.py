"""Train one architecture into a run folder; resumable after a crash (Keras BackupAndRestore).

A run folder holds everything later steps need: ``config.json`` (what was trained on what),
``best.keras`` (best validation checkpoint), ``history.csv`` (per-epoch curves and timings).
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training import architectures
from training.augment import random_affine
from training.data import Emnist, class_weights, stratified_split


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained. ``seed``'s recipe is the reference's, unchanged."""

    epochs: int
    batch_size: int = 256
    learning_rate: float = 1e-3
    cosine_schedule: bool = False
    augment: bool = False
    balance_classes: bool = False
    patience: int = 5
    monitor: str = "val_accuracy"
    rendered_copies: int = 0  # per training image, rendered as an upload and normalised by the service's code
    label_smoothing: float = 0.0


RECIPES: dict[str, Recipe] = {
    "seed": Recipe(epochs=20),
    "bn_cnn": Recipe(
        epochs=30,
        learning_rate=2e-3,
        cosine_schedule=True,
        augment=True,
        balance_classes=True,
        patience=8,
        monitor="val_balanced_accuracy",
    ),
}


@dataclass(frozen=True)
class RunConfig:
    architecture: str
    recipe: Recipe
    seed: int
    val_fraction: float
    data: str
    data_files: tuple[str, ...]
    n_train: int
    n_val: int
    parameters: int
    commit: str
    limit: int | None = None  # only the first N images were used (smoke runs)
    init_from: str | None = None  # run folder whose best weights this run started from (fine-tuning)

    @classmethod
    def read(cls, run_dir: Path) -> RunConfig:
        raw = json.loads((run_dir / "config.json").read_text())
        raw["recipe"] = Recipe(**raw["recipe"])
        raw["data_files"] = tuple(raw["data_files"])
        return cls(**raw)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to the logs so history.csv records wall time across resumes."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = round(time.perf_counter() - self._start, 2)


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """Per-epoch logs, one row per epoch (the last one wins where a resume repeated an epoch)."""
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    rows: dict[int, dict[str, float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = {key: float(value) for key, value in row.items() if value}
    return [rows[epoch] for epoch in sorted(rows)]


def best_so_far(run_dir: Path, monitor: str) -> float | None:
    """So a resumed run's checkpoint only replaces the best one when it really is better."""
    values = [row[monitor] for row in read_history(run_dir) if monitor in row]
    return max(values) if values else None


def to_model_input(images: tf.Tensor) -> tf.Tensor:
    """uint8 (n, 28, 28) -> float32 (n, 28, 28, 1) in [0, 1]: the manifest's input contract."""
    return tf.cast(images, tf.float32)[..., tf.newaxis] / 255.0


def make_dataset(
    data: Emnist,
    indices: np.ndarray,
    recipe: Recipe,
    weights: np.ndarray,
    *,
    training: bool,
    seed: int,
    rendered: tuple[np.ndarray, np.ndarray] | None = None,
) -> tf.data.Dataset:
    """EMNIST's arrays (randomly distorted when the recipe augments) plus, for training, the rendered and
    normalised copies as the service would see them (already varied: not distorted again)."""
    n_classes = len(data.classes)
    images, labels = data.images[indices], data.labels[indices]
    distort = np.ones(len(labels), dtype=bool)
    if rendered is not None:
        copies, copy_labels = rendered
        images = np.concatenate([images, copies])
        labels = np.concatenate([labels, copy_labels])
        distort = np.concatenate([distort, np.zeros(len(copy_labels), dtype=bool)])
    ds = tf.data.Dataset.from_tensor_slices((images, labels, weights[labels], distort))
    if training:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    augment = training and recipe.augment

    def prepare(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor, d: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x = to_model_input(x)
        if augment:
            x = tf.where(d[:, tf.newaxis, tf.newaxis, tf.newaxis], random_affine(x), x)
        return x, tf.one_hot(y, n_classes), w

    return ds.batch(recipe.batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def rendered_training_copies(
    data: Emnist, indices: np.ndarray, recipe: Recipe, run_dir: Path, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The recipe's rendered copies of the training images with their labels (unreadable renders dropped)."""
    if not recipe.rendered_copies:
        return None
    from training.serving_view import cached_copies

    copies, labels = [], []
    for copy in range(recipe.rendered_copies):
        images, ok = cached_copies(run_dir, f"rendered-{copy}", data.images[indices], seed + copy)
        copies.append(images[ok])
        labels.append(data.labels[indices][ok])
    return np.concatenate(copies), np.concatenate(labels)


def compile_model(model: keras.Model, recipe: Recipe, steps_per_epoch: int) -> None:
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = recipe.learning_rate
    if recipe.cosine_schedule:
        warmup = steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=recipe.learning_rate / 10,
            warmup_target=recipe.learning_rate,
            warmup_steps=warmup,
            decay_steps=max(1, recipe.epochs * steps_per_epoch - warmup),
        )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        # Validation samples carry 1/class-count weights, so this is the class-balanced accuracy.
        weighted_metrics=[keras.metrics.CategoricalAccuracy(name="balanced_accuracy")],
    )


def train(
    data: Emnist,
    run_dir: Path,
    *,
    architecture: str = architectures.DEFAULT_ARCHITECTURE,
    epochs: int | None = None,
    seed: int = 1234,
    val_fraction: float = 0.15,
    data_label: str = "",
    limit: int | None = None,
    init_from: Path | None = None,
    recipe_overrides: dict[str, Any] | None = None,
    verbose: int = 2,
) -> RunConfig:
    """Train (or resume) a run; returns its config. The best checkpoint is ``run_dir/best.keras``."""
    if limit:
        data = data.head(limit)
    recipe = RECIPES.get(architecture, RECIPES[architectures.DEFAULT_ARCHITECTURE])
    if epochs is not None:
        recipe = replace(recipe, epochs=epochs)
    if recipe_overrides:
        recipe = replace(recipe, **recipe_overrides)
    keras.utils.set_random_seed(seed)
    split = stratified_split(data.labels, val_fraction, seed)
    n_classes = len(data.classes)
    ones = np.ones(n_classes, dtype=np.float32)
    train_weights = class_weights(data.labels[split.train], n_classes) if recipe.balance_classes else ones
    val_weights = class_weights(data.labels[split.val], n_classes)

    model = architectures.build(architecture, n_classes)
    if init_from is not None:
        model.set_weights(keras.models.load_model(init_from / "best.keras").get_weights())
    steps = int(np.ceil(len(split.train) * (1 + recipe.rendered_copies) / recipe.batch_size))
    compile_model(model, recipe, steps)
    config = RunConfig(
        architecture=architecture,
        recipe=recipe,
        seed=seed,
        val_fraction=val_fraction,
        data=data_label,
        data_files=data.sources,
        n_train=len(split.train),
        n_val=len(split.val),
        parameters=model.count_params(),
        commit=git_commit(),
        limit=limit,
        init_from=str(init_from) if init_from else None,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    resuming = (run_dir / "backup").exists()
    if not resuming:
        (run_dir / "history.csv").unlink(missing_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")

    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        EpochTimer(),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"),
            monitor=recipe.monitor,
            mode="max",
            save_best_only=True,
            initial_value_threshold=best_so_far(run_dir, recipe.monitor) if resuming else None,
        ),
        keras.callbacks.EarlyStopping(monitor=recipe.monitor, mode="max", patience=recipe.patience),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    rendered = rendered_training_copies(data, split.train, recipe, run_dir, seed)
    model.fit(
        make_dataset(data, split.train, recipe, train_weights, training=True, seed=seed, rendered=rendered),
        validation_data=make_dataset(data, split.val, recipe, val_weights, training=False, seed=seed),
        epochs=recipe.epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the dataset is already shuffled each epoch
    )
    return config

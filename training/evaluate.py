"""Score a run's best checkpoint on its validation split and write the model card with plots."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.data import Emnist, stratified_split
from training.render import TRAINING_MIX
from training.train import RunConfig, read_history

REPORT = "report.json"
EXPORT_REPORT = "export.json"


@dataclass(frozen=True)
class Report:
    accuracy: float
    balanced_accuracy: float
    per_class: dict[str, float]
    support: dict[str, int]
    confused_pairs: list[tuple[str, str, int]]  # (true, predicted, count), most frequent first
    n_val: int
    epochs_run: int
    best_epoch: int
    train_seconds: float


def summarise(
    labels: np.ndarray, predicted: np.ndarray, classes: str
) -> tuple[float, float, dict, dict, list, np.ndarray]:
    n = len(classes)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.zeros(n), where=support > 0)
    accuracy = float(np.trace(confusion) / max(1, confusion.sum()))
    balanced = float(recall[support > 0].mean()) if support.any() else 0.0
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:10]
    pairs = [
        (classes[i], classes[j], int(off[i, j]))
        for i, j in zip(*np.unravel_index(order, off.shape), strict=False)
        if off[i, j]
    ]
    per_class = {classes[i]: round(float(recall[i]), 4) for i in range(n)}
    counts = {classes[i]: int(support[i]) for i in range(n)}
    return accuracy, balanced, per_class, counts, pairs, confusion


def plot_confusion(confusion: np.ndarray, classes: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(11, 10))
    image = ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), list(classes), fontsize=7)
    ax.set_yticks(range(len(classes)), list(classes), fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Validation confusion matrix (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(row["epoch"]) + 1 for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        loss_ax.plot(epochs, [row.get(key, np.nan) for row in history], label=label)
    loss_ax.set_title("loss")
    for key, label in (
        ("accuracy", "train accuracy"),
        ("val_accuracy", "validation accuracy"),
        ("val_balanced_accuracy", "validation class-balanced accuracy"),
    ):
        acc_ax.plot(epochs, [row.get(key, np.nan) for row in history], label=label)
    acc_ax.set_title("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def validation_set(run_dir: Path, data: Emnist) -> tuple[np.ndarray, np.ndarray, RunConfig]:
    """The exact validation images the run held out (same seed, same split)."""
    config = RunConfig.read(run_dir)
    if config.limit:
        data = data.head(config.limit)
    split = stratified_split(data.labels, config.val_fraction, config.seed)
    if len(split.val) != config.n_val:
        raise ValueError(f"{run_dir}: data gives {len(split.val)} validation images, the run held out {config.n_val}")
    images = data.images[split.val].astype(np.float32)[..., np.newaxis] / 255.0
    return images, data.labels[split.val], config


def evaluate_run(run_dir: Path, data: Emnist) -> Report:
    import keras

    images, labels, config = validation_set(run_dir, data)
    model = keras.models.load_model(run_dir / "best.keras")
    predicted = model.predict(images, batch_size=512, verbose=0).argmax(axis=1)
    accuracy, balanced, per_class, support, pairs, confusion = summarise(labels, predicted, data.classes)
    history = read_history(run_dir)
    monitor = config.recipe.monitor
    best_epoch = 1 + int(np.argmax([row.get(monitor, -1) for row in history])) if history else 0
    report = Report(
        accuracy=round(accuracy, 4),
        balanced_accuracy=round(balanced, 4),
        per_class=per_class,
        support=support,
        confused_pairs=pairs,
        n_val=len(labels),
        epochs_run=len(history),
        best_epoch=best_epoch,
        train_seconds=round(sum(row.get("epoch_seconds", 0.0) for row in history), 1),
    )
    (run_dir / REPORT).write_text(json.dumps(asdict(report), indent=2) + "\n")
    plot_confusion(confusion, data.classes, run_dir / "confusion.png")
    plot_curves(history, run_dir / "curves.png")
    write_card(run_dir)
    return report


def read_report(run_dir: Path) -> Report:
    raw = json.loads((run_dir / REPORT).read_text())
    raw["confused_pairs"] = [tuple(pair) for pair in raw["confused_pairs"]]
    return Report(**raw)


def _candidate_line(name: str, candidate: dict[str, float]) -> str:
    accuracy = f" accuracy {candidate['accuracy']:.2%}," if "accuracy" in candidate else ""
    return (
        f"- candidate `{name}`: {candidate['bytes']:,} bytes, agreement {candidate['agreement']:.4%},{accuracy}"
        f" balanced accuracy {candidate['balanced_accuracy']:.2%}, {candidate['ms_per_image_batch64']:.3f} ms/image"
        " at batch 64"
    )


def _base_run_line(base: Path) -> str:
    """Fine-tuned runs: say what the starting weights cost, so the card's totals are not misread."""
    history = read_history(base) if base.exists() else []
    if not history:
        return f"- fine-tuned from the best weights of `{base}`"
    minutes = sum(row.get("epoch_seconds", 0.0) for row in history) / 60
    recipe = RunConfig.read(base).recipe
    return (
        f"- fine-tuned from the best weights of `{base}`: {len(history)} epochs, {minutes:.0f} min, lr {recipe.learning_rate}"
        f"{' cosine' if recipe.cosine_schedule else ''}, augmentation {'on' if recipe.augment else 'off'};"
        " the table above covers the fine-tuning only"
    )


def write_card(run_dir: Path) -> Path:
    """Render card.md from the run's config, report and (once exported) export check."""
    config = RunConfig.read(run_dir)
    report = read_report(run_dir)
    export = json.loads((run_dir / EXPORT_REPORT).read_text()) if (run_dir / EXPORT_REPORT).exists() else None
    recipe = config.recipe
    worst = sorted(report.per_class.items(), key=lambda item: item[1])[:8]
    lines = [
        f"# Model card: EMNIST handwritten character classifier ({config.architecture})",
        "",
        "Classifies one handwritten character, 28x28 grayscale, white ink on black, upright, into the",
        "47 classes of EMNIST Balanced (`0-9 A-Z a b d e f g h n q r t`; letters whose upper and lower",
        "case look alike are merged, e.g. `c`/`C`, `o`/`O`).",
        "",
        "## Validation results",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| class-balanced accuracy (mean per-class recall) | **{report.balanced_accuracy:.2%}** |",
        f"| overall accuracy | {report.accuracy:.2%} |",
        f"| validation images | {report.n_val:,} (stratified {config.val_fraction:.0%} of {config.n_train + config.n_val:,}) |",
        f"| parameters | {config.parameters:,} |",
        f"| epochs run / best epoch | {report.epochs_run} / {report.best_epoch} |",
        f"| training wall time | {report.train_seconds / 60:.1f} min |",
        "",
        "The reference CNN reached 88.63% validation accuracy. Class-balanced accuracy is the figure to",
        "compare with EMNIST Balanced's test set, which has the same number of images of every class.",
        "",
        "![training curves](curves.png)",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "## Where it errs",
        "",
        "Most confused pairs (true -> predicted: count):",
        "",
        *(f"- `{true}` -> `{pred}`: {count}" for true, pred, count in report.confused_pairs),
        "",
        "Weakest classes (recall): " + ", ".join(f"`{c}` {r:.1%}" for c, r in worst) + ".",
        "",
        "Many of these are ambiguous in the data itself (`0`/`O`, `1`/`l`/`I`, `9`/`q`, `5`/`S`); a",
        "prediction's `top` list in the service's records shows the alternatives with confidences.",
        "",
        "## Per-class recall",
        "",
        "| class | recall | images |",
        "| --- | --- | --- |",
        *(f"| `{c}` | {r:.1%} | {report.support[c]} |" for c, r in report.per_class.items()),
        "",
        "## Training",
        "",
        f"- data: {config.data} ({', '.join(config.data_files)}), {config.n_train:,} training images",
        f"- recipe: Adam lr {recipe.learning_rate}{', cosine decay with 1 warm-up epoch' if recipe.cosine_schedule else ''},"
        f" batch {recipe.batch_size}, up to {recipe.epochs} epochs, early stopping patience {recipe.patience} on"
        f" `{recipe.monitor}`, best checkpoint kept",
        f"- class imbalance: {'inverse-frequency sample weights' if recipe.balance_classes else 'none (reference recipe)'}",
        f"- augmentation: {'random affine (rotation ±10°, scale 0.9-1.1, shear ±0.15, shift ±2 px)' if recipe.augment else 'none'}",
        *(
            [
                f"- uploads: {recipe.rendered_copies} rendered copy per training image ("
                + ", ".join(f"{kind} {share:.0%}" for kind, share in TRAINING_MIX.items())
                + ": `training/render.py`) read back by the service's own `handler.imaging`"
            ]
            if recipe.rendered_copies
            else []
        ),
        *([f"- label smoothing {recipe.label_smoothing}"] if recipe.label_smoothing else []),
        *([_base_run_line(Path(config.init_from))] if config.init_from else []),
        f"- seed {config.seed}, code commit `{config.commit}`",
        "",
    ]
    if export:
        lines += [
            "## Export",
            "",
            f"- runtime file: `model.tflite` ({export['variant']}, {export['tflite_bytes']:,} bytes)",
            f"- LiteRT vs Keras top-1 agreement on the validation set: {export['agreement']:.4%}"
            f" (this variant needs at least {export['min_agreement']:.1%})",
            *(_candidate_line(name, c) for name, c in export["candidates"].items()),
            f"- kept: {export['why']}",
            "",
        ]
    lines += [
        "## Intended use and limits",
        "",
        "- One character per 28x28 input. The service segments pages into candidate characters and keeps the",
        "  best split by these probabilities; non-Latin scripts still get meaningless labels: check `review`.",
        "- Trained on NIST writers (US census staff and students); other handwriting styles may score lower.",
        "- The service normalises uploads (polarity, printed lines, crop, centring, size) to match this input;",
        "  very cluttered photos or heavy shadows can defeat that normalisation.",
        "",
    ]
    path = run_dir / "card.md"
    path.write_text("\n".join(lines))
    return path

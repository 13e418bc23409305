"""Publish an exported run as a write-once model version: ``<root>/<version>/`` with its manifest.

The root is a folder (the repo's bundled ``models/``) or ``s3://bucket/models``. Files go up
first and ``manifest.json`` last, so a version is visible only once complete; an existing
version is never overwritten.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from handler.config import DEFAULT_POINTER
from handler.model import MANIFEST_NAME, RUNTIME_FILE, build_manifest, sha256_file
from handler.storage import Storage, WriteConflict, parse_s3_uri
from training.data import EMNIST_BALANCED_CLASSES
from training.evaluate import EXPORT_REPORT, read_report
from training.export import EXPORT_DIR
from training.train import RunConfig

CARD_FILES = ("card.md", "curves.png", "confusion.png")


def version_name(run_dir: Path) -> str:
    config = RunConfig.read(run_dir)
    digest = sha256_file(run_dir / EXPORT_DIR / RUNTIME_FILE)[:6]
    name = "ensemble" if config.architecture.startswith("ensemble") else config.architecture.replace("_", "-")
    return f"emnist-{name}-{datetime.now(UTC):%Y%m%d}-{digest}"


def stage(run_dir: Path, folder: Path, version: str) -> None:
    """Copy a run's runtime, fine-tuning model and card into ``folder`` and write its manifest."""
    for name in (RUNTIME_FILE, "model.keras"):
        shutil.copy2(run_dir / EXPORT_DIR / name, folder / name)
    for name in CARD_FILES:
        shutil.copy2(run_dir / name, folder / name)
    config = RunConfig.read(run_dir)
    report = read_report(run_dir)
    export = json.loads((run_dir / EXPORT_REPORT).read_text())
    metrics = {
        "val_accuracy": report.accuracy,
        "val_balanced_accuracy": report.balanced_accuracy,
        "validation_images": report.n_val,
        "litert_keras_agreement": round(export["agreement"], 6),
        "per_class_recall": report.per_class,
    }
    training = {
        "architecture": config.architecture,
        "parameters": config.parameters,
        "epochs": report.epochs_run,
        "best_epoch": report.best_epoch,
        "train_seconds": report.train_seconds,
        "recipe": config.recipe.__dict__,
        "runtime_variant": export["variant"],
        "data": f"{config.data} ({', '.join(config.data_files)})",
        "split": {"val_fraction": config.val_fraction, "seed": config.seed},
        "commit": config.commit,
    }
    manifest = build_manifest(folder, version, EMNIST_BALANCED_CLASSES, metrics=metrics, training=training)
    (folder / MANIFEST_NAME).write_text(manifest.to_json())


def publish_run(run_dir: Path, root: str, version: str | None = None, storage: Storage | None = None) -> str:
    """Publish and return the ``MODEL_URI`` to deploy. Raises WriteConflict if the version exists."""
    version = version or version_name(run_dir)
    if not root.startswith("s3://"):
        target = Path(root) / version
        if target.exists():
            raise WriteConflict(f"{target} already exists; versions are write-once")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            stage(run_dir, Path(tmp), version)
            Path(tmp).chmod(0o755)
            Path(tmp).rename(target)
        (Path(root) / DEFAULT_POINTER).write_text(version + "\n")
        return str(target)
    storage = storage or Storage()
    bucket, prefix = parse_s3_uri(root.rstrip("/") + "/")
    base = f"{prefix}{version}/"
    if storage.any_under(bucket, base):
        raise WriteConflict(f"s3://{bucket}/{base} already exists; versions are write-once")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stage(run_dir, folder, version)
        names = [*sorted(p.name for p in folder.iterdir() if p.name != MANIFEST_NAME), MANIFEST_NAME]
        for name in names:
            storage.upload_once(folder / name, bucket, base + name)
    return f"s3://{bucket}/{base}"

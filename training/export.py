"""Export a run for serving: LiteRT flatbuffer (checked against Keras) and a clean ``model.keras``.

Float32, float16 and dynamic-range variants are all converted and measured on the validation set. Float32
must agree with Keras on >= 99.9% of it (the conversion itself is right). A reduced-precision variant is
judged on what users get: it may lose at most 0.1 point of accuracy and of class-balanced accuracy, and must
still agree on >= 99.5% (rounding moves a few close calls, a broken conversion many more). Of those, the
fastest is kept (the smallest, where timings tie).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handler.model import RUNTIME_FILE, Classifier, Manifest
from training import architectures
from training.data import Emnist
from training.evaluate import EXPORT_REPORT, summarise, validation_set, write_card
from training.timing import ms_per_item

MIN_AGREEMENT = 0.999  # float32 against Keras
MIN_REDUCED_AGREEMENT = 0.995  # float16 or dynamic range against Keras
MAX_ACCURACY_LOSS = 0.001  # overall and class-balanced, against float32
SPEED_TIE = 1.1  # timings this close are noise: prefer the smaller file
EXPORT_DIR = "export"


class ExportError(RuntimeError):
    """The exported model does not reproduce the Keras model closely enough to ship."""


@dataclass(frozen=True)
class ExportResult:
    tflite: Path
    keras: Path
    variant: str
    agreement: float


def convert(saved_model: Path, variant: str) -> bytes:
    """SavedModel -> LiteRT flatbuffer. (Converting a Keras 3 model's concrete function directly
    gave NaN outputs with TF 2.21; the SavedModel route reproduces Keras exactly.)"""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if variant in ("float16", "dynamic_range"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _classifier(path: Path, classes: str) -> Classifier:
    manifest = Manifest(version="candidate", classes=classes, files={RUNTIME_FILE: {}})
    return Classifier(manifest, path, num_threads=1)


def predict_in_batches(classifier: Classifier, images: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([classifier.predict(images[i : i + batch]) for i in range(0, len(images), batch)])


def choose_variant(candidates: dict[str, dict[str, float]]) -> tuple[str, str]:
    """The variant to ship and why (see the module's docstring); :class:`ExportError` if float32 is off."""
    float32 = candidates["float32"]
    if float32["agreement"] < MIN_AGREEMENT:
        raise ExportError(f"LiteRT float32 agrees with Keras on {float32['agreement']:.4%} < {MIN_AGREEMENT:.1%}")
    eligible = {
        name: c
        for name, c in candidates.items()
        if name == "float32"
        or (
            c["agreement"] >= MIN_REDUCED_AGREEMENT
            and all(c[metric] >= float32[metric] - MAX_ACCURACY_LOSS for metric in ("accuracy", "balanced_accuracy"))
        )
    }
    fastest = min(c["ms_per_image_batch64"] for c in eligible.values())
    as_fast = [name for name, c in eligible.items() if c["ms_per_image_batch64"] <= fastest * SPEED_TIE]
    variant = min(as_fast, key=lambda name: eligible[name]["bytes"])
    why = (
        f"`{variant}`: the smallest of the fastest variants at batch 64 (within {SPEED_TIE - 1:.0%}) among float32"
        f" and the reduced-precision ones with >= {MIN_REDUCED_AGREEMENT:.1%} agreement and at most"
        f" {MAX_ACCURACY_LOSS:.1%} accuracy and balanced-accuracy loss"
    )
    return variant, why


def export_run(run_dir: Path, data: Emnist) -> ExportResult:
    import keras

    images, labels, config = validation_set(run_dir, data)
    classes = data.classes
    trained = keras.models.load_model(run_dir / "best.keras")
    if config.architecture in architectures.ARCHITECTURES:
        inference = architectures.build(config.architecture, len(classes))  # never compiled: no optimizer state
        inference.set_weights(trained.get_weights())
    else:  # an ensemble (training.ensemble): saved uncompiled already
        inference = trained
    reference = inference.predict(images, batch_size=512, verbose=0).argmax(axis=1)

    out = run_dir / EXPORT_DIR
    out.mkdir(exist_ok=True)
    saved_model = out / "saved_model"
    shutil.rmtree(saved_model, ignore_errors=True)
    inference.export(str(saved_model), format="tf_saved_model", verbose=False)
    candidates: dict[str, dict[str, float]] = {}
    for variant in ("float32", "float16", "dynamic_range"):
        path = out / f"candidate-{variant}.tflite"
        path.write_bytes(convert(saved_model, variant))
        classifier = _classifier(path, classes)
        predicted = predict_in_batches(classifier, images).argmax(axis=1)
        accuracy, balanced = summarise(labels, predicted, classes)[:2]
        candidates[variant] = {
            "bytes": path.stat().st_size,
            "agreement": float(np.mean(predicted == reference)),
            "accuracy": accuracy,
            "balanced_accuracy": balanced,
            "ms_per_image_batch64": ms_per_item(classifier.predict, images, batch=64),
        }
        print(f"  {variant}: {candidates[variant]}", flush=True)

    variant, why = choose_variant(candidates)
    tflite = out / RUNTIME_FILE
    (out / f"candidate-{variant}.tflite").replace(tflite)
    for stale in out.glob("candidate-*.tflite"):
        stale.unlink()
    shutil.rmtree(saved_model)
    keras_path = out / "model.keras"
    inference.save(keras_path)
    report = {
        "variant": variant,
        "agreement": candidates[variant]["agreement"],
        "min_agreement": MIN_AGREEMENT if variant == "float32" else MIN_REDUCED_AGREEMENT,
        "tflite_bytes": tflite.stat().st_size,
        "candidates": candidates,
        "why": why,
    }
    (run_dir / EXPORT_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    write_card(run_dir)
    return ExportResult(tflite, keras_path, variant, candidates[variant]["agreement"])

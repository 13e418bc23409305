"""The model artifact contract: a write-once version folder, its manifest, and batched prediction.

Training writes versions with :func:`build_manifest`; the service reads them with :func:`load`.
Every file is checked against the manifest's sha256 before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST_NAME = "manifest.json"
RUNTIME_FILE = "model.tflite"
LINE_READER_FILE = "line_reader.tflite"  # optional: reads blobs of touching characters whole (CTC)
FORMAT = 1
INPUT_SPEC: dict[str, Any] = {
    "height": 28,
    "width": 28,
    "channels": 1,
    "dtype": "float32",
    "scale": [0, 1],
    "ink": "white-on-black",
    "orientation": "upright",
}
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelError(RuntimeError):
    """The model version is missing, malformed or fails its checksums: an infrastructure fault."""


@dataclass(frozen=True)
class Manifest:
    version: str
    classes: str
    files: dict[str, dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    input: dict[str, Any] = field(default_factory=lambda: dict(INPUT_SPEC))
    format: int = FORMAT
    calibration: dict[str, Any] = field(default_factory=dict)  # {"temperature", "review_below", ...}
    line_reader: dict[str, Any] = field(default_factory=dict)  # {"file": LINE_READER_FILE, "temperature"}

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))

    @property
    def class_temperatures(self) -> np.ndarray | None:
        """One temperature per predicted class (the argmax never changes); None: the one temperature."""
        values = self.calibration.get("class_temperatures")
        return None if values is None else np.asarray(values, dtype=np.float32)

    @property
    def review_below(self) -> float | None:
        """Confidence under which a label should be checked by a person (None: not calibrated)."""
        value = self.calibration.get("review_below")
        return None if value is None else float(value)

    def to_json(self) -> str:
        body = {
            "format": self.format,
            "version": self.version,
            "classes": self.classes,
            "input": self.input,
            "files": self.files,
            "metrics": self.metrics,
            "training": self.training,
            "created_at": self.created_at,
        }
        if self.calibration:
            body["calibration"] = self.calibration
        if self.line_reader:
            body["line_reader"] = self.line_reader
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str = MANIFEST_NAME) -> Manifest:
        try:
            raw = json.loads(text)
            manifest = cls(
                version=raw["version"],
                classes=raw["classes"],
                files=raw["files"],
                metrics=raw.get("metrics", {}),
                training=raw.get("training", {}),
                created_at=raw.get("created_at", ""),
                input=raw["input"],
                format=raw["format"],
                calibration=raw.get("calibration") or {},
                line_reader=raw.get("line_reader") or {},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{source}: not a model manifest ({exc!r})") from exc
        if manifest.format != FORMAT:
            raise ModelError(f"{source}: manifest format {manifest.format}, this code reads format {FORMAT}")
        if manifest.input != INPUT_SPEC:
            raise ModelError(f"{source}: input spec {manifest.input} differs from the service's {INPUT_SPEC}")
        if not isinstance(manifest.classes, str) or len(set(manifest.classes)) != len(manifest.classes):
            raise ModelError(f"{source}: classes must be a string of distinct characters")
        if not isinstance(manifest.files, dict) or RUNTIME_FILE not in manifest.files:
            raise ModelError(f"{source}: lists no {RUNTIME_FILE}")
        for name, entry in manifest.files.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64):
                raise ModelError(f"{source}: files[{name!r}] needs a 64-hex-digit sha256, got {entry!r}")
        if not VERSION_PATTERN.match(manifest.version):
            raise ModelError(f"{source}: invalid version name {manifest.version!r}")
        if not (isinstance(manifest.calibration, dict) and 0.05 <= manifest.temperature <= 20):
            raise ModelError(f"{source}: calibration must hold a temperature between 0.05 and 20")
        per_class = manifest.calibration.get("class_temperatures")
        if per_class is not None and not (
            isinstance(per_class, list) and all(isinstance(t, (int, float)) and 0.05 <= t <= 20 for t in per_class)
        ):
            raise ModelError(f"{source}: class_temperatures must be a list of temperatures in 0.05-20")
        reader = manifest.line_reader
        if reader and not (
            isinstance(reader, dict)
            and reader.get("file") == LINE_READER_FILE
            and LINE_READER_FILE in manifest.files
            and isinstance(reader.get("temperature"), (int, float))
            and 0.05 <= reader["temperature"] <= 20
        ):
            raise ModelError(f"{source}: line_reader must name {LINE_READER_FILE} (listed in files) and a temperature")
        return manifest

    @property
    def runtime_sha256(self) -> str:
        return str(self.files[RUNTIME_FILE]["sha256"])


def calibrate(
    probabilities: np.ndarray, temperature: float, class_temperatures: np.ndarray | None = None
) -> np.ndarray:
    """Temperature scaling of softmax outputs: softmax(log p / T), fitted on validation data (``training calibrate``).
    With ``class_temperatures``, each row takes the temperature of its predicted class: a model can be
    underconfident on some classes and overconfident on others, and the argmax stays where it was."""
    if class_temperatures is not None:
        divisor: float | np.ndarray = class_temperatures[probabilities.argmax(axis=-1)][..., np.newaxis]
    elif temperature == 1.0:
        return probabilities
    else:
        divisor = temperature
    scaled = np.log(np.clip(probabilities, 1e-12, 1.0)) / divisor
    scaled = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return (scaled / scaled.sum(axis=-1, keepdims=True)).astype(np.float32)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    folder: Path,
    version: str,
    classes: str,
    *,
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
) -> Manifest:
    """Describe every file in ``folder`` (checksums, sizes) as one version."""
    files = {
        path.name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    }
    manifest = Manifest(
        version=version,
        classes=classes,
        files=files,
        metrics=dict(metrics),
        training=dict(training),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return Manifest.from_json(manifest.to_json(), source=f"{folder}/{MANIFEST_NAME}")


def verify_file(path: Path, manifest: Manifest) -> None:
    expected = manifest.files[path.name]
    if not path.exists():
        raise ModelError(f"{path}: missing (listed in the manifest of {manifest.version})")
    actual = sha256_file(path)
    if actual != expected["sha256"]:
        raise ModelError(f"{path}: sha256 {actual} does not match the manifest's {expected['sha256']}")


class _Runtime:
    """One LiteRT interpreter, resized to each batch, shared by threads under a lock (re-made after a fork)."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        output = self._interpreter.get_output_details()[0]
        self._output = output["index"]
        self.outputs = int(output["shape"][-1])
        self._batch = 0
        self._lock = threading.Lock()
        self._owner = os.getpid()

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._owner != os.getpid():  # a forked helper: the parent's lock may have been held at fork
            self._owner, self._lock = os.getpid(), threading.Lock()
        with self._lock:
            if len(batch) != self._batch:
                self._interpreter.resize_tensor_input(self._input, list(batch.shape))
                self._interpreter.allocate_tensors()
                self._batch = len(batch)
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._output))


class LineReader:
    """The CTC line reader: strips of touching characters (``handler.imaging.strip``) -> per-column
    probabilities over the classes and CTC's blank (last). ``temperature`` calibrates its characters."""

    def __init__(self, path: Path, temperature: float, num_threads: int | None = None) -> None:
        from handler.imaging.strip import HEIGHT, WIDTH

        self._shape = (HEIGHT, WIDTH)
        self._runtime = _Runtime(path, num_threads)
        self.temperature = temperature

    @property
    def outputs(self) -> int:
        return self._runtime.outputs

    def predict(self, strips: np.ndarray) -> np.ndarray:
        """(n, 32, 128) float32 in [0, 1], white ink on black -> (n, columns, classes + 1)."""
        if len(strips) == 0:
            return np.zeros((0, self._shape[1] // 4, self.outputs), dtype=np.float32)
        return self._runtime.run(np.ascontiguousarray(strips, dtype=np.float32).reshape(len(strips), *self._shape, 1))


class Classifier:
    """A verified model version, ready to predict; thread-safe, one interpreter per process. With a line
    reader in the version, :attr:`line_reader` reads blobs of touching characters (else None)."""

    def __init__(
        self,
        manifest: Manifest,
        tflite_path: Path,
        num_threads: int | None = None,
        line_reader_path: Path | None = None,
    ) -> None:
        self.manifest = manifest
        self._runtime = _Runtime(tflite_path, num_threads)
        outputs = self._runtime.outputs
        if outputs != len(manifest.classes):
            raise ModelError(
                f"{manifest.version}: the manifest lists {len(manifest.classes)} classes but {tflite_path.name} "
                f"has {outputs} outputs; labels would be wrong, so the model is refused"
            )
        per_class = manifest.class_temperatures
        if per_class is not None and len(per_class) != outputs:
            raise ModelError(
                f"{manifest.version}: calibration gives {len(per_class)} class temperatures for {outputs} classes"
            )
        self.line_reader: LineReader | None = None
        if line_reader_path is not None and manifest.line_reader:
            self.line_reader = LineReader(line_reader_path, float(manifest.line_reader["temperature"]), num_threads)
            if self.line_reader.outputs != outputs + 1:
                raise ModelError(
                    f"{manifest.version}: {LINE_READER_FILE} has {self.line_reader.outputs} outputs, "
                    f"not the {outputs} classes and a blank"
                )

    @property
    def classes(self) -> str:
        return self.manifest.classes

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(n, 28, 28) float32 in [0, 1], white ink on black -> (n, classes) probabilities."""
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        batch = np.ascontiguousarray(images, dtype=np.float32).reshape(len(images), 28, 28, 1)
        probabilities = self._runtime.run(batch)
        return calibrate(probabilities, self.manifest.temperature, self.manifest.class_temperatures)


Fetcher = Callable[[str, Path], None]
"""Copies the object at an ``s3://`` URI to a local path (``handler.storage`` provides one)."""


def resolve(uri: str, cache_dir: Path, fetch: Fetcher | None = None) -> tuple[Manifest, Path]:
    """Find a version's manifest and runtime files locally (the line reader's beside the classifier's),
    downloading from S3 into ``cache_dir``; returns the manifest and the classifier's file."""
    if not uri.startswith("s3://"):
        folder = Path(uri)
        manifest_path = folder / MANIFEST_NAME
        if not manifest_path.exists():
            raise ModelError(f"{folder}: no {MANIFEST_NAME}; MODEL_URI must name one model version folder")
        manifest = Manifest.from_json(manifest_path.read_bytes(), str(manifest_path))
        for name in _runtime_files(manifest):
            verify_file(folder / name, manifest)
        return manifest, folder / RUNTIME_FILE
    if fetch is None:
        raise ModelError(f"{uri}: an S3 model needs a fetcher")
    base = uri.rstrip("/")
    local = cache_dir / hashlib.sha256(base.encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    manifest_path = local / MANIFEST_NAME
    fetch(f"{base}/{MANIFEST_NAME}", manifest_path)
    manifest = Manifest.from_json(manifest_path.read_bytes(), f"{base}/{MANIFEST_NAME}")
    for name in _runtime_files(manifest):
        path = local / name
        if not (path.exists() and sha256_file(path) == manifest.files[name]["sha256"]):
            fetch(f"{base}/{name}", path)
        verify_file(path, manifest)
    return manifest, local / RUNTIME_FILE


def _runtime_files(manifest: Manifest) -> list[str]:
    return [RUNTIME_FILE, LINE_READER_FILE] if manifest.line_reader else [RUNTIME_FILE]


def load(uri: str, cache_dir: Path, fetch: Fetcher | None = None, num_threads: int | None = None) -> Classifier:
    """Load and verify one model version from a folder or ``s3://bucket/models/<version>/``.

    Any failure is a :class:`ModelError` that names the URI (``MODEL_URI``) it came from.
    """
    try:
        manifest, tflite = resolve(uri, cache_dir, fetch)
        reader = tflite.parent / LINE_READER_FILE if manifest.line_reader else None
        return Classifier(manifest, tflite, num_threads=num_threads, line_reader_path=reader)
    except ModelError as exc:
        if uri in str(exc):
            raise
        raise ModelError(f"MODEL_URI={uri}: {exc}") from exc
    except Exception as exc:  # an S3 404/403, a bad file: say which model could not be loaded
        raise ModelError(f"MODEL_URI={uri}: cannot load the model: {exc!r}") from exc

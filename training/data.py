"""EMNIST loaders: NIST's gzip IDX files and the Kaggle CSV edition, from a folder or ``s3://``.

Every loader returns images upright with white ink on black (EMNIST's own convention), so the
rest of training never thinks about the transposition the files are stored with.
"""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMNIST_BALANCED_CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
IMAGE_SIDE = 28
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


class DataError(ValueError):
    """A data file is missing, malformed or truncated; the message names the file."""


@dataclass(frozen=True)
class Emnist:
    images: np.ndarray  # (n, 28, 28) uint8, upright, white ink on black
    labels: np.ndarray  # (n,) int64 class indices into ``classes``
    classes: str
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> Emnist:
        return Emnist(self.images[:n], self.labels[:n], self.classes, self.sources)


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # indices
    val: np.ndarray


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path}: not a valid gzip file ({exc})") from exc
    return raw


def read_idx_images(path: Path) -> np.ndarray:
    """Read an IDX3 image file and return upright images (EMNIST stores them transposed)."""
    data = _read_bytes(path)
    if len(data) < 16:
        raise DataError(f"{path}: too short for an IDX image header ({len(data)} bytes)")
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IDX_IMAGES_MAGIC:
        raise DataError(f"{path}: not an IDX image file (magic {magic:#010x}, expected {IDX_IMAGES_MAGIC:#010x})")
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{path}: images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    expected = 16 + count * rows * cols
    if len(data) != expected:
        raise DataError(
            f"{path}: truncated or padded: header promises {count} images ({expected} bytes), file has {len(data)}"
        )
    stored = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    return np.ascontiguousarray(stored.transpose(0, 2, 1))


def read_idx_labels(path: Path) -> np.ndarray:
    data = _read_bytes(path)
    if len(data) < 8:
        raise DataError(f"{path}: too short for an IDX label header ({len(data)} bytes)")
    magic, count = struct.unpack(">II", data[:8])
    if magic != IDX_LABELS_MAGIC:
        raise DataError(f"{path}: not an IDX label file (magic {magic:#010x}, expected {IDX_LABELS_MAGIC:#010x})")
    if len(data) != 8 + count:
        raise DataError(f"{path}: truncated or padded: header promises {count} labels, file has {len(data) - 8}")
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def read_mapping(path: Path) -> str:
    """Read ``label ascii_code`` lines into the class string (index -> character)."""
    chars: dict[int, str] = {}
    for number, line in enumerate(_read_bytes(path).decode("ascii").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            label, code = (int(part) for part in line.split())
        except ValueError as exc:
            raise DataError(f"{path}:{number}: expected 'label ascii_code', got {line!r}") from exc
        chars[label] = chr(code)
    if sorted(chars) != list(range(len(chars))):
        raise DataError(f"{path}: labels are not 0..{len(chars) - 1}")
    return "".join(chars[i] for i in range(len(chars)))


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the Kaggle edition: one row per image, label then 784 pixels, no header row."""
    text = _read_bytes(path)
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a headerless CSV of integers ({exc})") from exc
    if table.shape[1] != 1 + IMAGE_SIDE * IMAGE_SIDE:
        raise DataError(f"{path}: rows have {table.shape[1]} columns, expected 785 (label + 784 pixels)")
    if table.size and (table[:, 1:].min() < 0 or table[:, 1:].max() > 255):
        raise DataError(f"{path}: pixel values outside 0..255")
    stored = table[:, 1:].astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    return np.ascontiguousarray(stored.transpose(0, 2, 1)), table[:, 0]


def _pairs(folder: Path) -> Iterable[tuple[Path, Path]]:
    for images in sorted(folder.glob("*-images-idx3-ubyte*")):
        labels = images.with_name(images.name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte"))
        if not labels.exists():
            raise DataError(f"{images}: no matching labels file {labels.name}")
        yield images, labels


def load_folder(folder: Path) -> Emnist:
    """Load every IDX pair and CSV file in ``folder`` (e.g. train and test) into one set."""
    mappings = sorted(folder.glob("*-mapping.txt"))
    classes = read_mapping(mappings[0]) if mappings else EMNIST_BALANCED_CLASSES
    if classes != EMNIST_BALANCED_CLASSES:
        raise DataError(f"{mappings[0]}: classes {classes!r} are not EMNIST Balanced's 47")
    images, labels, sources = [], [], []
    for image_path, label_path in _pairs(folder):
        x, y = read_idx_images(image_path), read_idx_labels(label_path)
        if len(x) != len(y):
            raise DataError(f"{image_path}: {len(x)} images but {label_path.name} has {len(y)} labels")
        images.append(x)
        labels.append(y)
        sources.append(image_path.name)
    for csv_path in sorted(folder.glob("*.csv")) + sorted(folder.glob("*.csv.gz")):
        x, y = read_csv(csv_path)
        images.append(x)
        labels.append(y)
        sources.append(csv_path.name)
    if not images:
        raise DataError(f"{folder}: no EMNIST files (*-images-idx3-ubyte[.gz] or *.csv)")
    all_labels = np.concatenate(labels)
    if all_labels.min() < 0 or all_labels.max() >= len(classes):
        raise DataError(f"{folder}: labels outside 0..{len(classes) - 1}")
    return Emnist(np.concatenate(images), all_labels, classes, tuple(sources))


def load(source: str) -> Emnist:
    """Load EMNIST from a local folder or an ``s3://bucket/prefix`` (downloaded to a temp dir)."""
    if not source.startswith("s3://"):
        return load_folder(Path(source))
    from handler.storage import Storage, parse_s3_uri

    bucket, prefix = parse_s3_uri(source)
    storage = Storage()
    with tempfile.TemporaryDirectory() as tmp:
        for item in storage.list_objects(bucket, prefix):
            name = item.key.rsplit("/", 1)[-1]
            if name:
                storage.download(f"s3://{bucket}/{item.key}", Path(tmp) / name)
        return load_folder(Path(tmp))


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> Split:
    """Same class proportions in train and validation; the same seed gives the same split."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, round(len(members) * val_fraction))
        val.append(members[:n_val])
        train.append(members[n_val:])
    return Split(np.sort(np.concatenate(train)), np.sort(np.concatenate(val)))


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights with mean 1 per sample: the loss sees every class equally often."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)

"""EMNIST loaders on small files the tests write: both formats, the transposition, broken files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import glyph_array
from training.data import (
    EMNIST_BALANCED_CLASSES,
    DataError,
    class_weights,
    load,
    load_folder,
    read_idx_images,
    stratified_split,
)


def upright_glyphs(n: int) -> np.ndarray:
    """n copies of an asymmetric glyph ('7'), each shifted a little so they differ."""
    base = glyph_array()
    return np.stack([np.roll(base, i % 3, axis=1) for i in range(n)])


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, name: str = "emnist-balanced-train") -> None:
    """Write images as EMNIST stores them: transposed (column-major), gzip'd IDX."""
    stored = images.transpose(0, 2, 1)
    header = struct.pack(">IIII", 0x803, len(images), 28, 28)
    (folder / f"{name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + stored.tobytes()))
    label_header = struct.pack(">II", 0x801, len(labels))
    (folder / f"{name}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(label_header + labels.astype(np.uint8).tobytes())
    )
    mapping = "\n".join(f"{i} {ord(c)}" for i, c in enumerate(EMNIST_BALANCED_CLASSES))
    (folder / "emnist-balanced-mapping.txt").write_text(mapping + "\n")


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The Kaggle edition: label then 784 transposed pixels, no header row."""
    rows = np.column_stack([labels, images.transpose(0, 2, 1).reshape(len(images), -1)])
    np.savetxt(path, rows, fmt="%d", delimiter=",")


def test_idx_loader_returns_upright_glyphs(tmp_path: Path) -> None:
    images, labels = upright_glyphs(6), np.arange(6)
    write_idx(tmp_path, images, labels)
    data = load_folder(tmp_path)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.classes == EMNIST_BALANCED_CLASSES


def test_transposition_is_undone_not_flipped_or_rotated(tmp_path: Path) -> None:
    glyph = glyph_array()
    write_idx(tmp_path, glyph[None], np.array([7]))
    loaded = load_folder(tmp_path).images[0]
    np.testing.assert_array_equal(loaded, glyph)
    for wrong in (glyph.T, np.fliplr(np.rot90(glyph)), np.flipud(glyph), np.fliplr(glyph)):
        assert not np.array_equal(loaded, wrong)
    top_bar, bottom = loaded[:8].sum(), loaded[-8:].sum()
    assert top_bar > bottom  # a 7 has its bar at the top


def test_csv_loader_matches_idx_loader(tmp_path: Path) -> None:
    images, labels = upright_glyphs(4), np.array([3, 1, 4, 1])
    write_csv(tmp_path / "emnist-balanced-train.csv", images, labels)
    data = load_folder(tmp_path)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert len(data) == 4  # no header row swallowed


def test_folder_with_train_and_test_files_loads_both(tmp_path: Path) -> None:
    write_idx(tmp_path, upright_glyphs(3), np.array([0, 1, 2]), "emnist-balanced-train")
    write_idx(tmp_path, upright_glyphs(2), np.array([3, 4]), "emnist-balanced-test")
    assert len(load_folder(tmp_path)) == 5


def test_s3_prefix_is_downloaded_and_loaded(s3, tmp_path: Path) -> None:
    write_idx(tmp_path, upright_glyphs(3), np.array([5, 6, 7]))
    for path in tmp_path.iterdir():
        s3.upload_file(str(path), "test-bucket", f"data/emnist/{path.name}")
    data = load("s3://test-bucket/data/emnist/")
    np.testing.assert_array_equal(data.labels, [5, 6, 7])


def test_truncated_file_is_named_in_the_error(tmp_path: Path) -> None:
    write_idx(tmp_path, upright_glyphs(3), np.array([0, 1, 2]))
    path = tmp_path / "emnist-balanced-train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"images-idx3-ubyte\.gz: truncated"):
        load_folder(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(struct.pack(">IIII", 0x801, 1, 28, 28) + bytes(784)), "not an IDX image file"),
        (gzip.compress(struct.pack(">IIII", 0x803, 1, 32, 32) + bytes(1024)), "expected 28x28"),
        (b"definitely not gzip", "not a valid gzip file"),
        (gzip.compress(b"\x00\x00"), "too short"),
    ],
)
def test_malformed_image_file_gets_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as caught:
        read_idx_images(path)
    assert str(path) in str(caught.value)


def test_csv_with_wrong_width_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="expected 785"):
        load_folder(tmp_path)


def test_mismatched_image_and_label_counts_are_refused(tmp_path: Path) -> None:
    write_idx(tmp_path, upright_glyphs(3), np.array([0, 1, 2]))
    header = struct.pack(">II", 0x801, 2)
    (tmp_path / "emnist-balanced-train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + b"\x00\x01"))
    with pytest.raises(DataError, match="3 images but"):
        load_folder(tmp_path)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no EMNIST files"):
        load_folder(tmp_path)


def test_stratified_split_is_deterministic_and_keeps_class_shares() -> None:
    labels = np.repeat(np.arange(4), [400, 200, 100, 40])
    split = stratified_split(labels, 0.25, seed=3)
    again = stratified_split(labels, 0.25, seed=3)
    np.testing.assert_array_equal(split.val, again.val)
    assert set(split.train).isdisjoint(split.val) and len(split.train) + len(split.val) == len(labels)
    np.testing.assert_array_equal(np.bincount(labels[split.val]), [100, 50, 25, 10])
    assert not np.array_equal(split.val, stratified_split(labels, 0.25, seed=4).val)


def test_class_weights_equalise_total_weight_per_class() -> None:
    labels = np.repeat(np.arange(3), [600, 60, 6])
    weights = class_weights(labels, 3)
    per_class_total = np.bincount(labels, weights=weights[labels])
    np.testing.assert_allclose(per_class_total, per_class_total[0])
    assert weights[labels].mean() == pytest.approx(1.0)

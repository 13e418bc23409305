"""Finding the handwriting on a page: printed box and grid lines, scan borders, specks and neighbours'
fragments are dropped; a tight crop's own strokes are never taken for lines. Built from real EMNIST glyphs
(the fixtures' 28x28 PNGs) rendered into form cells the way the recognition benchmark renders them."""

from __future__ import annotations

import io
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handler.imaging import ImageError, decode, ops, page, prepare
from handler.imaging.errors import ErrorCode
from handler.imaging.page import find_ink
from training.render import form_cell, pen_photo, scan_like

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "normaliser"
GLYPHS = [np.asarray(Image.open(FIXTURES / f"emnist-{i:02d}.png").convert("L")) for i in range(6)]
LIMIT = 40_000_000


def png(page: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def flood_fill_count(mask: np.ndarray) -> list[int]:
    """Component areas by breadth-first search: slow and obviously right, the reference for ops.components."""
    seen = np.zeros_like(mask)
    areas = []
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, area = deque([(y, x)]), 0
        while queue:
            a, b = queue.popleft()
            area += 1
            for c in range(max(a - 1, 0), min(a + 2, mask.shape[0])):
                for d in range(max(b - 1, 0), min(b + 2, mask.shape[1])):
                    if mask[c, d] and not seen[c, d]:
                        seen[c, d] = True
                        queue.append((c, d))
        areas.append(area)
    return sorted(areas)


@pytest.mark.parametrize("seed", range(20))
def test_components_match_a_flood_fill(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.uniform(0.1, 0.7)
    found = ops.components(mask)
    assert sorted(found.area.tolist()) == flood_fill_count(mask)
    assert np.array_equal(found.mask(np.ones(len(found), dtype=bool), mask.shape), mask)


@pytest.mark.parametrize("seed", range(10))
def test_components_of_strokes_match_a_flood_fill(seed: int) -> None:
    """Blobs and strokes: long chains of runs (one below the other), forks and merges, rings."""
    rng = np.random.default_rng(seed)
    mask = rng.random((80, 70)) < 0.02
    for _ in range(int(rng.integers(1, 4))):
        mask = ops.grow(mask)
    mask[rng.integers(0, 80), :] = True  # a line joining blobs from the side
    found = ops.components(mask)
    assert sorted(found.area.tolist()) == flood_fill_count(mask)
    assert np.array_equal(found.mask(np.ones(len(found), dtype=bool), mask.shape), mask)


def test_both_labelling_strategies_agree(monkeypatch) -> None:
    """Small pages use a plain union-find, large noisy ones vectorised label propagation: same components."""
    mask = np.random.default_rng(9).random((120, 90)) < 0.4
    small = ops.components(mask)
    monkeypatch.setattr(ops, "PYTHON_UNION_FIND", 0)
    large = ops.components(mask)
    assert np.array_equal(small.of_run, large.of_run) and np.array_equal(small.area, large.area)


@pytest.mark.parametrize("index", range(len(GLYPHS)))
def test_a_letter_in_a_printed_form_box_reads_as_the_bare_letter(index: int, classifier) -> None:
    rng = np.random.default_rng(index)
    bare = prepare(scan_like(GLYPHS[index], rng), LIMIT)
    boxed = [prepare(form_cell(GLYPHS[index], rng), LIMIT) for _ in range(3)]
    labels = classifier.predict(np.stack([bare, *boxed])).argmax(axis=1)
    assert (labels == labels[0]).all()


def test_box_lines_and_a_scan_border_are_not_ink() -> None:
    page = np.full((120, 120), 0.9, dtype=np.float32)
    page[10:13, :] = page[-13:-10, :] = page[:, 10:13] = page[:, -13:-10] = 0.1  # the box
    page[:, :5] = 0.05  # a dark scan border
    glyph = np.asarray(Image.fromarray(GLYPHS[0]).resize((60, 60)), dtype=np.float32) / 255
    page[30:90, 30:90] -= glyph * 0.8
    ink = find_ink(decode(png(page), LIMIT))
    rows, cols = np.nonzero(ink.mask)
    assert rows.min() >= 25 and rows.max() <= 95 and cols.min() >= 25 and cols.max() <= 95


def test_an_empty_form_box_has_no_handwriting() -> None:
    page = np.full((100, 100), 0.9, dtype=np.float32)
    page[5:8, :] = page[-8:-5, :] = page[:, 5:8] = page[:, -8:-5] = 0.1
    with pytest.raises(ImageError) as raised:
        prepare(png(page), LIMIT)
    assert raised.value.code == ErrorCode.NO_INK


def test_a_tight_crop_keeps_strokes_that_run_edge_to_edge() -> None:
    page = np.full((60, 60), 0.95, dtype=np.float32)
    page[:8, :] = 0.1  # a T whose bar fills the width and whose stem fills the height
    page[:, 26:34] = 0.1
    ink = find_ink(decode(png(page), LIMIT))
    assert ink.mask[:8].mean() > 0.9 and ink.mask[:, 26:34].mean() > 0.9


def test_a_speck_and_a_neighbours_fragment_are_dropped() -> None:
    page = np.full((120, 120), 0.92, dtype=np.float32)
    glyph = np.asarray(Image.fromarray(GLYPHS[1]).resize((60, 60)), dtype=np.float32) / 255
    page[30:90, 30:90] -= glyph * 0.8
    page[100:103, 10:13] = 0.2  # a speck
    page[40:70, 112:] = 0.2  # a stroke of the next letter, cut by the crop
    ink = find_ink(decode(png(page), LIMIT))
    assert not ink.mask[95:, :20].any() and not ink.mask[:, 105:].any()
    assert ink.mask[30:90, 30:90].any()


def test_a_subset_of_components_is_what_its_mask_holds() -> None:
    mask = np.random.default_rng(3).random((40, 50)) < 0.35
    found = ops.components(mask)
    keep = found.area >= 3
    subset = found.subset(keep)
    again = ops.components(found.mask(keep, mask.shape))
    assert sorted(subset.area.tolist()) == sorted(again.area.tolist())
    assert np.array_equal(subset.mask(np.ones(len(subset), dtype=bool), mask.shape), found.mask(keep, mask.shape))


@pytest.mark.parametrize("side", [8, 12, 16])
def test_a_tiny_scan_that_fills_its_frame_is_scaled_up_not_cropped(side: int) -> None:
    from training.render import tiny_like

    glyph = prepare(tiny_like(GLYPHS[2], np.random.default_rng(side), side=side), LIMIT)
    rows, cols = np.nonzero(glyph > 0.3)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 >= 18  # the glyph spans the 28x28 frame as EMNIST's do


@pytest.mark.parametrize("seed", range(6))
def test_the_tilt_search_counts_what_shearing_every_pixel_counts(seed: int) -> None:
    """The per-span tilt search gives, for every tilt, the fullest row of the pixel-by-pixel shear."""
    rng = np.random.default_rng(seed)
    mask = rng.random((int(rng.integers(5, 90)), int(rng.integers(5, 300)))) < 0.1
    mask[rng.integers(0, mask.shape[0]), :] = True  # a printed line
    rows, cols = np.nonzero(mask)
    expected = [int(np.bincount(page._shear(rows, cols, tilt)).max()) for tilt in page.TILTS]
    assert page._fullest_rows(mask, page.TILTS).tolist() == expected


def _large_page(glyph: np.ndarray, side: int, glyph_side: int) -> bytes:
    """One EMNIST glyph, ``glyph_side`` px tall, dark on light paper in a ``side`` px square page."""
    page = np.full((side, side), 0.9, dtype=np.float32)
    ink = np.asarray(Image.fromarray(glyph).resize((glyph_side, glyph_side), Image.Resampling.BICUBIC)) / 255.0
    top = (side - glyph_side) // 2
    page[top : top + glyph_side, top : top + glyph_side] -= 0.8 * ink
    return png(page)


def test_a_large_page_of_large_writing_is_read_at_half_resolution() -> None:
    ink = find_ink(decode(_large_page(GLYPHS[0], 400, 240), LIMIT))
    assert ink.mask.shape == (200, 200)


@pytest.mark.parametrize("glyph_side", [60, 70])  # under HALF_MIN_HEIGHT once halved: small writing
def test_small_writing_on_a_large_page_is_read_at_full_resolution(glyph_side: int) -> None:
    ink = find_ink(decode(_large_page(GLYPHS[0], 400, glyph_side), LIMIT))
    assert ink.mask.shape == (400, 400)


def test_fine_strokes_on_a_large_page_are_read_at_full_resolution() -> None:
    page = np.full((400, 400), 0.9, dtype=np.float32)
    page[100:300, 150:154] = 0.1  # a '1' drawn 4 px wide: 2 px once halved
    page[100:104, 120:154] = 0.1
    assert find_ink(decode(png(page), LIMIT)).mask.shape == (400, 400)


def test_half_resolution_reads_the_same_glyph_as_full_resolution(monkeypatch) -> None:
    data = _large_page(GLYPHS[1], 400, 240)
    halved = prepare(data, LIMIT)
    monkeypatch.setattr(page, "HALF_FROM", 10**9)
    full = prepare(data, LIMIT)
    assert float(np.abs(halved - full).mean()) < 0.03


def test_a_large_sixteen_bit_page_is_read_at_half_resolution_too() -> None:
    eight_bit = np.asarray(Image.open(io.BytesIO(_large_page(GLYPHS[0], 400, 240))))
    buffer = io.BytesIO()
    Image.fromarray(eight_bit.astype(np.uint16) * 257).save(buffer, format="PNG")
    gray = decode(buffer.getvalue(), LIMIT)
    assert gray.dtype == np.float32
    assert find_ink(gray).mask.shape == (200, 200)


@pytest.mark.parametrize("pen", [4, 10])
def test_a_pen_photo_is_written_with_strokes_of_the_pens_width(pen: int) -> None:
    ink = page._find_ink(decode(pen_photo(GLYPHS[0], np.random.default_rng(pen), pen), LIMIT))
    stroke = ops.relative_stroke_width(ink.mask) * max(ink.mask.shape)
    assert pen <= stroke <= pen + 3


def test_a_fine_pen_photo_is_read_at_full_resolution() -> None:
    gray = decode(pen_photo(GLYPHS[0], np.random.default_rng(0), 3), LIMIT)
    assert find_ink(gray).mask.shape == gray.shape

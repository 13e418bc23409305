"""Reading several characters in one image: real EMNIST glyphs (the fixtures' 28x28 PNGs) written side by
side and in lines. Each character gets its own label, confidence and box in the input's pixels; a string
never comes back as one confident character."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handler.imaging import candidates, prepare
from tests.conftest import label_record

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "normaliser"
GLYPHS = [np.asarray(Image.open(FIXTURES / f"emnist-{i:02d}.png").convert("L")) for i in range(6)]
LIMIT = 40_000_000
HEIGHT = 64


def page(rows: list[list[int]], gap: int = 16, pad: int = 24) -> np.ndarray:
    """Dark glyphs on light paper, ``rows`` of fixture indices, ``gap`` pixels between neighbours' ink."""
    lines = []
    for row in rows:
        parts = []
        for index in row:
            big = np.asarray(Image.fromarray(GLYPHS[index]).resize((HEIGHT, HEIGHT), Image.Resampling.BICUBIC))
            cols = np.flatnonzero(big.max(axis=0) > 25)
            parts.append(big[:, cols[0] : cols[-1] + 1].astype(np.float32) / 255)
        width = sum(p.shape[1] for p in parts) + gap * (len(parts) - 1)
        line = np.zeros((HEIGHT, width), dtype=np.float32)
        x = 0
        for part in parts:
            region = line[:, max(x, 0) : x + part.shape[1]]
            np.maximum(region, part[:, -region.shape[1] :], out=region)
            x += part.shape[1] + gap
        lines.append(line)
    width = max(line.shape[1] for line in lines)
    ink = np.zeros((len(lines) * (HEIGHT + pad) + pad, width + 2 * pad), dtype=np.float32)
    for number, line in enumerate(lines):
        top = pad + number * (HEIGHT + pad)
        ink[top : top + HEIGHT, pad : pad + line.shape[1]] = line
    return np.clip((0.92 - 0.8 * ink) * 255, 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def read(data: bytes, classifier) -> dict:
    return label_record(data, classifier, LIMIT)


@pytest.fixture(scope="module")
def alone(classifier) -> list[str]:
    """What the model reads for each fixture glyph on its own."""
    return [
        classifier.classes[i]
        for i in classifier.predict(np.stack([prepare(png(page([[i]])), LIMIT) for i in range(6)])).argmax(axis=1)
    ]


def test_glyphs_side_by_side_read_as_a_string_never_one_confident_label(classifier, alone) -> None:
    record = read(png(page([[0, 1, 2]])), classifier)
    assert record["text"] == "".join(alone[:3])
    assert "label" not in record and "top" not in record
    assert len(record["characters"]) == 3 and record["segmentation"]["lines"] == 1


def test_each_character_has_its_box_in_order_inside_the_image(classifier) -> None:
    pixels = page([[3, 4, 5]])
    record = read(png(pixels), classifier)
    boxes = [c["box"] for c in record["characters"]]
    lefts = [b["left"] for b in boxes]
    assert lefts == sorted(lefts)
    for box in boxes:
        assert box["left"] >= 0 and box["left"] + box["width"] <= pixels.shape[1]
        assert box["top"] >= 0 and box["top"] + box["height"] <= pixels.shape[0]
        assert 0.5 * HEIGHT <= max(box["width"], box["height"]) <= 1.1 * HEIGHT
    for a, b in itertools.pairwise(boxes):
        assert a["left"] + a["width"] <= b["left"]  # separate characters do not overlap


def test_lines_are_read_top_to_bottom(classifier) -> None:
    """Each line as it reads on a page of its own (a line's kind, digits or letters, may settle an ambiguous
    glyph, so not necessarily as each glyph reads alone), the upper line first."""
    record = read(png(page([[0, 1], [2, 3, 4]])), classifier)
    lines = [read(png(page([row])), classifier)["text"] for row in ([0, 1], [2, 3, 4])]
    assert record["text"] == "\n".join(lines) and all(len(line) == n for line, n in zip(lines, (2, 3), strict=True))
    assert [c["line"] for c in record["characters"]] == [0, 0, 1, 1, 1]


def test_a_single_character_keeps_the_schema_1_fields(classifier, alone) -> None:
    record = read(png(page([[2]])), classifier)
    assert record["label"] == alone[2] == record["text"]
    assert record["top"][0]["label"] == alone[2] and len(record["characters"]) == 1
    assert record["segmentation"] == {"confidence": 1.0, "lines": 1}


def test_boxes_are_in_the_input_pixels_when_the_image_is_reduced_to_read_it() -> None:
    pixels = page([[0, 1, 2]])
    big = np.asarray(Image.fromarray(pixels).resize((pixels.shape[1] * 8, pixels.shape[0] * 8)))
    small, large = candidates(png(pixels), LIMIT), candidates(png(big), 10**9)
    assert large.scale[0] > 1  # the page was read reduced ...
    piece_small = small.segmentation.lines[0].pieces[0]
    piece_large = large.segmentation.lines[0].pieces[0]
    box_small, box_large = small.box(piece_small), large.box(piece_large)
    assert abs(box_large.left - 8 * box_small.left) <= 16 and abs(box_large.width - 8 * box_small.width) <= 24


def test_touching_characters_are_split(classifier, alone) -> None:
    record = read(png(page([[0, 3]], gap=-2)), classifier)
    assert len(record["characters"]) == 2 and "label" not in record


def test_a_blank_page_is_still_no_ink(classifier) -> None:
    record = read(png(np.full((80, 200), 230, dtype=np.uint8)), classifier)
    assert record["error"]["code"] == "NoInk"


def test_segmenting_any_rendered_upload_gives_candidates_or_an_image_error() -> None:
    """Overlapping blobs, cut blobs beside narrow ones, noise: the segmenter answers or says why not."""
    from handler.imaging import ImageError
    from training.render import RENDERERS, amount_page, form_field, string_page

    rng = np.random.default_rng(4)
    uploads = [render(GLYPHS[i % 6], rng) for i in range(12) for render in RENDERERS.values()]
    uploads += [
        string_page([GLYPHS[j % 6] for j in range(n)], "x" * n, rng, lines=1 + n // 5, touch=0.6).data
        for n in range(1, 11)
    ]
    uploads += [form_field([GLYPHS[j % 6] for j in range(n)], rng) for n in range(1, 9)]
    uploads += [amount_page({d: np.stack(GLYPHS) for d in range(10)}, rng)[0].data for _ in range(10)]
    uploads += [png((rng.random((90, 160)) * 255).astype(np.uint8)) for _ in range(5)]
    for data in uploads:
        try:
            found = candidates(data, LIMIT)
        except ImageError:
            continue
        assert len(found.glyphs) == sum(len(line.pieces) for line in found.segmentation.lines) >= 1
        assert len(found.strips) == sum(len(line.wide) for line in found.segmentation.lines)


def test_a_page_of_many_small_characters_is_read_not_dropped_as_specks(classifier) -> None:
    rows = [[(r * 10 + c) % 6 for c in range(10)] for r in range(6)]
    full = page(rows, gap=12, pad=16)
    pixels = np.asarray(Image.fromarray(full).resize((full.shape[1] // 2, full.shape[0] // 2)))  # 32 px characters
    record = read(png(pixels), classifier)
    assert len(record["characters"]) >= 50 and record["segmentation"]["lines"] == 6


def test_a_hostile_page_of_stripes_is_bounded() -> None:
    """Hundreds of page-tall strokes side by side: the candidates stay few per stroke (at most 4 strokes
    each), not every run of strokes."""
    from handler.imaging.segment import MAX_PIECES

    stripes = ((np.arange(1000)[None, :] // 3) % 2 * 255 * np.ones((1000, 1))).astype(np.uint8)
    found = candidates(png(stripes), LIMIT)
    assert len(found.glyphs) <= MAX_PIECES and max(p.last - p.first for p in found.segmentation.lines[0].pieces) < 4


def test_full_stops_commas_and_dashes_between_characters_are_not_read_as_characters(classifier) -> None:
    pixels = page([[0, 3, 1, 2]], gap=30)
    ink_rows = np.flatnonzero((pixels < 128).any(axis=1))
    baseline, middle = int(ink_rows[-1]), int(ink_rows.mean())
    columns = np.flatnonzero((pixels < 128).any(axis=0))
    gaps = [c for c in range(columns[0], columns[-1]) if not (pixels[:, c] < 128).any()]
    starts = [c for c in gaps if c - 1 not in gaps]
    dot, comma, dash = (start + 15 for start in starts[:3])  # the middle of each 30-pixel gap
    pixels[baseline - 8 : baseline, dot - 4 : dot + 4] = 20  # a full stop, as wide as a stroke
    pixels[baseline - 8 : baseline + 8, comma - 4 : comma + 4] = 20  # a comma, hanging below the line
    pixels[middle - 3 : middle + 3, dash - 9 : dash + 9] = 20  # a dash
    record = read(png(pixels), classifier)
    assert len(record["characters"]) == 4, record.get("text")


def test_a_fragment_absorbed_across_paper_leaves_no_empty_candidate() -> None:
    from handler.imaging.segment import _inked_atoms

    mask = np.zeros((3, 10), dtype=bool)
    mask[:, 0:3] = mask[:, 7:9] = True
    assert _inked_atoms(mask, [0, 3, 5, 10], [0.0, 0.5, 0.7]) == ([0, 5, 10], [0.0, 0.7])


def test_a_name_written_in_the_boxes_of_a_form_field_is_read_without_the_box_lines(classifier) -> None:
    from training.render import form_field

    rng = np.random.default_rng(5)
    data = form_field([GLYPHS[i] for i in (0, 3, 1, 2, 4)], rng)
    record = read(data, classifier)
    assert len(record["characters"]) == 5, record.get("text")
    lefts = [c["box"]["left"] for c in record["characters"]]
    assert lefts == sorted(lefts)


@pytest.mark.parametrize("degrees", [-2.5, 1.0])
def test_a_form_field_photographed_askew_loses_its_box_lines_too(classifier, degrees: float) -> None:
    from training.render import form_field

    data = form_field([GLYPHS[i] for i in (0, 3, 1, 2, 4)], np.random.default_rng(5))
    image = Image.open(io.BytesIO(data)).convert("L")
    paper = int(np.median(np.asarray(image)))
    tilted = image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=paper)
    record = read(png(np.asarray(tilted)), classifier)
    assert len(record["characters"]) == 5, record.get("text")


@pytest.mark.parametrize("seed", [5, 7, 8])
def test_a_form_box_cut_out_of_a_tilted_photo_is_one_character_not_its_line_stubs(seed: int) -> None:
    from training.render import form_cell

    image = Image.open(io.BytesIO(form_cell(GLYPHS[seed % 6], np.random.default_rng(seed)))).convert("L")
    image = image.rotate(3.0, resample=Image.Resampling.BICUBIC, fillcolor=int(np.median(np.asarray(image))))
    margin = int(0.06 * image.width)  # the box lines run on past the crop's edges
    cropped = image.crop((margin, margin, image.width - margin, image.height - margin))
    assert len(candidates(png(np.asarray(cropped)), LIMIT).glyphs) == 1

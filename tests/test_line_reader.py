"""The line reader: touching characters in a wide blob are read whole (CTC), each with a box and a
calibrated confidence; a blob it reads as one character stays the classifier's."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from handler import model
from handler.ctc import decode_line, line_probability, one_character_probabilities
from handler.imaging import candidates
from handler.imaging.strip import FRAME, HEIGHT, WIDTH, strip_columns
from handler.recognition import read_page
from tests.test_strings import LIMIT, page, png

CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
BLANK = len(CLASSES)
COLUMNS = WIDTH // FRAME


def frames(path: list[int | None], sure: float = 0.9) -> np.ndarray:
    """(columns, classes + blank) probabilities whose best path is ``path`` (None: blank), padded with blanks."""
    out = np.full((COLUMNS, BLANK + 1), (1 - sure) / BLANK, dtype=np.float32)
    for column in range(COLUMNS):
        index = path[column] if column < len(path) else None
        out[column, BLANK if index is None else index] = sure
    return out


def test_best_path_merges_repeats_and_drops_blanks() -> None:
    a, seven = CLASSES.index("A"), CLASSES.index("7")
    found = decode_line(frames([a, a, None, a, seven, None]))
    assert [CLASSES[c.index] for c in found] == ["A", "A", "7"]
    assert [(c.first, c.last) for c in found] == [(0, 1), (3, 3), (4, 4)]
    assert all(abs(c.probabilities.sum() - 1) < 1e-6 and len(c.probabilities) == BLANK for c in found)


def test_allowed_characters_apply_to_every_column() -> None:
    letter_o, zero = CLASSES.index("O"), CLASSES.index("0")
    columns = frames([letter_o, None])
    columns[0, zero] = 0.05
    allowed = np.zeros(BLANK, dtype=bool)
    allowed[:10] = True
    assert [CLASSES[c.index] for c in decode_line(columns, allowed)] == ["0"]


def test_line_probabilities_sum_every_alignment() -> None:
    rng = np.random.default_rng(0)
    columns = rng.random((6, 4))
    columns /= columns.sum(axis=1, keepdims=True)
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(4), repeat=6):  # every alignment, collapsed the CTC way
        collapsed = tuple(k for k, _ in itertools.groupby(path) if k != 3)
        totals[collapsed] = totals.get(collapsed, 0.0) + float(np.prod(columns[np.arange(6), path]))
    for labels in [(0,), (1, 2), (1, 1), (2, 0, 2)]:
        assert line_probability(columns, list(labels)) == pytest.approx(totals[labels])
    assert one_character_probabilities(columns) == pytest.approx([totals[(c,)] for c in range(3)])


def test_a_lone_blob_stays_one_character_unless_the_reader_is_far_surer_of_several(touching) -> None:
    rows = np.full((len(touching.glyphs), BLANK), 1e-3, dtype=np.float32)
    rows[:, CLASSES.index("M")] = 1.0
    n, r = CLASSES.index("n"), CLASSES.index("r")
    unsure = frames([None, r, None, n, None], sure=0.5)
    unsure[1:4, CLASSES.index("M")] = 0.45  # "M" nearly as likely as "rn"
    assert read_page(touching, rows, CLASSES, strips=unsure[np.newaxis]).text == "M"
    assert read_page(touching, rows, CLASSES, strips=frames([None, r, None, n, None])[np.newaxis]).text == "rn"


@pytest.fixture(scope="module")
def touching():
    found = candidates(png(page([[1, 2]], gap=-14)), LIMIT)  # one blob: the ink runs together
    assert len(found.strips) == 1 and found.strips.max() == 1.0
    return found


def test_a_blob_read_as_two_characters_gives_two_boxed_characters(touching) -> None:
    wide = touching.segmentation.lines[0].wide[0]
    columns = strip_columns(wide.box) // FRAME
    a, seven = CLASSES.index("A"), CLASSES.index("7")
    path = [None] * columns
    path[columns // 4], path[3 * columns // 4] = a, seven
    rows = np.full((len(touching.glyphs), BLANK), 1 / BLANK, dtype=np.float32)
    reading = read_page(touching, rows, CLASSES, strips=frames(path)[np.newaxis], review_below=0.99)
    assert reading.text == "A7"
    first, second = (c.box for c in reading.characters)
    assert first is not None and second is not None
    assert first.left < second.left and first.left + first.width <= second.left + 1
    whole = touching.box(wide.box)
    assert first.left == whole.left and second.left + second.width == whole.left + whole.width
    assert all(c.review for c in reading.characters)  # 0.9 < 0.99


def test_a_blob_read_as_one_character_is_left_to_the_classifier(touching) -> None:
    rows = np.full((len(touching.glyphs), BLANK), 1e-3, dtype=np.float32)
    rows[:, CLASSES.index("M")] = 1.0
    one = frames([None, CLASSES.index("W"), None])[np.newaxis]
    reading = read_page(touching, rows, CLASSES, strips=one)
    assert "W" not in reading.text and set(reading.text) == {"M"}


def test_the_bundled_version_reads_touching_glyphs_with_its_line_reader(classifier) -> None:
    assert classifier.line_reader is not None
    from tests.conftest import label_record

    data = png(page([[0, 3, 1]], gap=-14))  # one blob of three glyphs
    record = label_record(data, classifier, LIMIT, "p.png")
    assert len(record["characters"]) == 3 and "label" not in record


def test_a_version_naming_a_line_reader_it_does_not_hold_is_refused(model_uri: str, tmp_path: Path) -> None:
    folder = tmp_path / "version"
    shutil.copytree(model_uri, folder)
    body = json.loads((folder / model.MANIFEST_NAME).read_text())
    body["files"].pop(model.LINE_READER_FILE, None)
    body["line_reader"] = {"file": model.LINE_READER_FILE, "temperature": 1.0}
    (folder / model.MANIFEST_NAME).write_text(json.dumps(body))
    with pytest.raises(model.ModelError, match="line_reader"):
        model.load(str(folder), tmp_path / "cache")


def test_a_tampered_line_reader_is_refused(model_uri: str, tmp_path: Path) -> None:
    folder = tmp_path / "version"
    shutil.copytree(model_uri, folder)
    assert json.loads((folder / model.MANIFEST_NAME).read_text()).get("line_reader")
    with (folder / model.LINE_READER_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(model.ModelError, match="sha256"):
        model.load(str(folder), tmp_path / "cache")


def test_strips_are_32_by_128_and_left_aligned(touching) -> None:
    strip = touching.strips[0]
    assert strip.shape == (HEIGHT, WIDTH)
    used = strip_columns(touching.segmentation.lines[0].wide[0].box)
    assert strip[:, used:].max() == 0 and strip[:, :used].max() == 1.0


def test_a_published_reader_can_be_reused_with_another_glyph_model(model_uri: str, tmp_path: Path) -> None:
    from training import line_reader

    trained_on = line_reader.reuse(Path(model_uri), tmp_path / "run")
    copied = (tmp_path / "run" / model.LINE_READER_FILE).read_bytes()
    assert copied == (Path(model_uri) / model.LINE_READER_FILE).read_bytes()
    assert (
        trained_on
        == json.loads((Path(model_uri) / model.MANIFEST_NAME).read_text())["metrics"]["line_reader"]["train_lines"]
    )


def test_reusing_the_reader_of_a_version_without_one_is_refused(model_uri: str, tmp_path: Path) -> None:
    from training import line_reader

    folder = tmp_path / "version"
    shutil.copytree(model_uri, folder)
    body = json.loads((folder / model.MANIFEST_NAME).read_text())
    body["files"].pop(model.LINE_READER_FILE)
    body.pop("line_reader")
    (folder / model.MANIFEST_NAME).write_text(json.dumps(body))
    with pytest.raises(ValueError, match="no line reader"):
        line_reader.reuse(folder, tmp_path / "run")


@pytest.mark.parametrize(
    ("exact", "count_right", "kept"),
    [
        (0.730, 0.982, "dynamic_range"),
        (0.728, 0.979, "dynamic_range"),
        (0.72, 0.982, "float16"),
        (0.73, 0.97, "float16"),
    ],
)
def test_the_quantised_line_reader_ships_only_when_it_reads_lines_as_well(
    exact: float, count_right: float, kept: str
) -> None:
    from training.line_reader import choose_variant

    reports = {
        "float16": {"exact": 0.731, "count_right": 0.9825},
        "dynamic_range": {"exact": exact, "count_right": count_right},
    }
    assert choose_variant(reports) == kept


def test_the_line_reader_card_names_the_variant_kept_and_where_a_reused_reader_came_from() -> None:
    from training.line_reader import card_section

    report = {
        "lines": 2000,
        "exact": 0.73,
        "count_right": 0.98,
        "temperature": 1.2,
        "ece_before": 0.03,
        "ece_after": 0.01,
    }
    figures = {"exact": 0.73, "count_right": 0.98, "ms_per_strip": 0.4, "bytes": 1}
    exported = card_section(
        {**report, "variant": "dynamic_range", "candidates": {"float16": figures, "dynamic_range": figures}}
    )
    assert "Exported dynamic_range" in exported and "0.40 ms per strip" in exported
    assert "Carried over from `v1`" in card_section({**report, "reused_from": "v1"})

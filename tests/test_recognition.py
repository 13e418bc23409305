"""Readings from probabilities: allowed characters restrict and renormalise the answer, and say so."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from handler.recognition import AllowError, allowed_mask, read
from infra.local_s3 import LocalContext, s3_notification
from tests.conftest import BUCKET, draw_seven, png_bytes

CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"


def probabilities(**weights: float) -> np.ndarray:
    p = np.full(len(CLASSES), 1e-4)
    for label, weight in weights.items():
        p[CLASSES.index(label.strip("_"))] = weight
    return p / p.sum()


def test_without_allow_the_best_classes_win() -> None:
    reading = read(probabilities(O=0.6, _0=0.3), CLASSES)
    assert reading.label == "O" and reading.allowed is None and len(reading.top) == 5


def test_allowing_digits_answers_with_a_digit_and_renormalises() -> None:
    reading = read(probabilities(O=0.6, _0=0.3, _8=0.05), CLASSES, allow="0123456789")
    assert reading.label == "0" and reading.allowed == "0123456789"
    assert all(a.label.isdigit() for a in reading.top)
    assert reading.confidence == pytest.approx(0.3 / (0.3 + 0.05 + 8e-4 * 1.0), abs=0.01)


def test_top_k_never_lists_a_character_that_is_not_allowed() -> None:
    reading = read(probabilities(A=0.9), CLASSES, allow="XY")
    assert [a.label for a in reading.top] == ["X", "Y"] or [a.label for a in reading.top] == ["Y", "X"]


def test_merged_lowercase_letters_allow_their_capital_class() -> None:
    assert {CLASSES[i] for i in allowed_mask(CLASSES, "cos").nonzero()[0]} == {"C", "O", "S"}
    assert {CLASSES[i] for i in allowed_mask(CLASSES, "ab").nonzero()[0]} == {"a", "b"}


@pytest.mark.parametrize("allow", ["0-9", "€", ""])
def test_characters_the_model_cannot_read_are_refused(allow: str) -> None:
    with pytest.raises(AllowError):
        allowed_mask(CLASSES, allow)


def test_an_upload_says_its_field_holds_digits_through_object_metadata(app: Any, s3: Any) -> None:
    body = png_bytes(draw_seven())
    plain = s3.put_object(Bucket=BUCKET, Key="input/any.png", Body=body)["ETag"].strip('"')
    digits = s3.put_object(Bucket=BUCKET, Key="input/digits.png", Body=body, Metadata={"allow": "0123456789"})
    bad = s3.put_object(Bucket=BUCKET, Key="input/bad.png", Body=body, Metadata={"allow": "0-9"})
    event = s3_notification(
        BUCKET,
        [
            ("input/any.png", plain, len(body)),
            ("input/digits.png", digits["ETag"].strip('"'), len(body)),
            ("input/bad.png", bad["ETag"].strip('"'), len(body)),
        ],
    )
    app.on_upload(event, LocalContext())
    record = json.loads(s3.get_object(Bucket=BUCKET, Key="output/digits.png.json")["Body"].read())
    assert record["allowed"] == "0123456789" and record["label"].isdigit()
    assert "allowed" not in json.loads(s3.get_object(Bucket=BUCKET, Key="output/any.png.json")["Body"].read())
    error = json.loads(s3.get_object(Bucket=BUCKET, Key="errors/bad.png.json")["Body"].read())["error"]
    assert error["code"] == "Unsupported" and "-" in error["message"]


def test_a_deployment_wide_allow_setting_applies_to_every_upload(app: Any, s3: Any, monkeypatch) -> None:
    from dataclasses import replace

    app.service().settings = replace(app.service().settings, allow="0123456789")
    body = png_bytes(draw_seven())
    etag = s3.put_object(Bucket=BUCKET, Key="input/x.png", Body=body)["ETag"].strip('"')
    app.on_upload(s3_notification(BUCKET, [("input/x.png", etag, len(body))]), LocalContext())
    assert json.loads(s3.get_object(Bucket=BUCKET, Key="output/x.png.json")["Body"].read())["allowed"] == "0123456789"


def _row(**probabilities: float) -> np.ndarray:
    classes = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
    row = np.full(len(classes), 1e-4, dtype=np.float32)
    for label, p in probabilities.items():
        row[classes.index(label.strip("_"))] = p
    return row / row.sum()


def test_a_line_of_letters_reads_an_ambiguous_character_as_a_letter_and_a_line_of_digits_as_a_digit() -> None:
    from handler.recognition import _in_context

    classes = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
    ambiguous = _row(_0=0.6, O=0.4)
    letters = _in_context([_row(M=0.95), _row(A=0.95), ambiguous, _row(K=0.95)], classes)
    assert classes[int(letters[2].argmax())] == "O"
    digits = _in_context([_row(_4=0.95), _row(_7=0.95), _row(_0=0.4, O=0.6), _row(_2=0.95)], classes)
    assert classes[int(digits[2].argmax())] == "0"
    mixed = _in_context([_row(A=0.95), _row(_7=0.95), ambiguous, _row(X=0.95), _row(_9=0.95)], classes)
    assert classes[int(mixed[2].argmax())] == "0"  # a code like A7X9: no kind to lean on
    assert all(abs(float(row.sum()) - 1) < 1e-5 for row in letters + digits + mixed)
    short = [_row(M=0.95), ambiguous]
    assert _in_context(short, classes) is short


def test_a_label_its_line_made_sure_of_still_asks_for_review_when_the_character_alone_is_not() -> None:
    from handler.recognition import _character

    classes = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
    in_line, alone = _row(O=0.999), _row(_0=0.55, O=0.45)
    assert _character(in_line, classes, 3, 0.99, None, alone).review is True
    assert _character(in_line, classes, 3, 0.99, None, in_line).review is False


def test_a_line_of_capitals_reads_an_ambiguous_f_as_a_capital() -> None:
    from handler.recognition import _in_context

    classes = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
    line = _in_context([_row(M=0.95), _row(A=0.95), _row(f=0.55, F=0.45), _row(K=0.95), _row(E=0.95)], classes)
    assert classes[int(line[2].argmax())] == "F"
    word = _in_context([_row(h=0.95), _row(e=0.95), _row(f=0.55, F=0.45), _row(t=0.95)], classes)
    assert classes[int(word[2].argmax())] == "f"  # a lowercase word keeps its lowercase f

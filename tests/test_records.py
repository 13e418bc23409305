"""Record schemas and where each record goes."""

from __future__ import annotations

import numpy as np
import pytest

from handler.recognition import read
from handler.records import (
    ERROR_SCHEMA,
    RESULT_SCHEMA,
    ErrorCode,
    ModelInfo,
    Source,
    error_record,
    record_key,
    result_record,
)

SOURCE = Source("bucket", "input/a/b.png", "etag1", 1234)
MODEL = ModelInfo("emnist-test", "ab" * 32)


def test_input_key_maps_to_output_and_error_keys() -> None:
    assert record_key("input/a/b.png", "input/", "output/") == "output/a/b.png.json"
    assert record_key("input/a/b.png", "input/", "errors/") == "errors/a/b.png.json"
    assert record_key("input/with space/é+.png", "input/", "output/") == "output/with space/é+.png.json"


def test_key_outside_input_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="not under the input prefix"):
        record_key("output/a.png.json", "input/", "output/")


def test_result_record_has_label_confidence_top_k_and_provenance() -> None:
    probabilities = np.zeros(47, dtype=np.float32)
    probabilities[[10, 4, 7]] = [0.9, 0.07, 0.03]
    reading = read(probabilities, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt", top_k=5)
    record = result_record(SOURCE, reading, MODEL)
    assert record["schema"] == RESULT_SCHEMA
    assert (record["label"], record["confidence"]) == ("A", 0.9)
    assert [t["label"] for t in record["top"][:3]] == ["A", "4", "7"]
    assert len(record["top"]) == 5
    assert record["source"] == {"bucket": "bucket", "key": "input/a/b.png", "etag": "etag1", "size": 1234}
    assert record["model"] == {"version": "emnist-test", "sha256": "ab" * 32}
    assert record["processed_at"].endswith("Z")


def test_error_record_names_an_actionable_code() -> None:
    record = error_record(SOURCE, ErrorCode.CORRUPT, "cannot decode image: truncated", MODEL)
    assert record["schema"] == ERROR_SCHEMA
    assert record["error"] == {"code": "Corrupt", "message": "cannot decode image: truncated"}
    assert "label" not in record

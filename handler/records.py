"""Result and error records (the service's output contract) and where each is written."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # records only read a Reading's fields; recognize imports imaging, which imports ErrorCode
    from handler.recognize import Reading

RESULT_SCHEMA = "handwriting-ocr/result/2"
ERROR_SCHEMA = "handwriting-ocr/error/1"
RECORD_SUFFIX = ".json"
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
LONG_KEYS = "_long-keys/"


class ErrorCode(StrEnum):
    """What a user can act on: re-upload, convert, shrink, or check the page has writing. ``Unreadable``:
    the service failed on this image (a bug, logged with its traceback): report it; the rest of the batch
    goes on, and retrying the same bytes would fail the same way."""

    EMPTY = "Empty"
    CORRUPT = "Corrupt"
    UNSUPPORTED = "Unsupported"
    TOO_LARGE = "TooLarge"
    NO_INK = "NoInk"
    NOT_FOUND = "NotFound"
    UNREADABLE = "Unreadable"


@dataclass(frozen=True)
class Source:
    bucket: str | None
    key: str
    etag: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    version: str
    sha256: str


def _plain(flat: Any) -> dict[str, Any]:
    """A dataclass of plain values as a dict: ``dataclasses.asdict`` deep-copies each value, 20 times the cost,
    and a record has a dozen of them."""
    return dict(vars(flat))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_record(source: Source, reading: Reading, model: ModelInfo) -> dict[str, Any]:
    """A :class:`Reading` as the versioned JSON record (schema 2).

    ``text`` and ``characters`` (each with its label, confidence, top-k, box in the input's upright pixels
    and line) describe any reading; an image of exactly one character also keeps schema 1's ``label``,
    ``confidence`` and ``top``, so consumers of single characters read it as before. A multi-character
    image has no ``label``: never one confident character for a string. ``allowed`` appears only when the
    answer was restricted; ``review`` when the model is calibrated.
    """
    record: dict[str, Any] = {"schema": RESULT_SCHEMA, "source": _plain(source), "text": reading.text}
    if reading.single:
        record |= {
            "label": reading.label,
            "confidence": reading.confidence,
            "top": [_plain(alternative) for alternative in reading.top],
        }
    record["characters"] = [_character(character) for character in reading.characters]
    record["segmentation"] = {
        "confidence": reading.segmentation,
        "lines": len({character.line for character in reading.characters}),
    }
    if reading.allowed:
        record["allowed"] = reading.allowed
    if reading.review is not None:
        record["review"] = reading.review
    return {**record, "model": _plain(model), "processed_at": utc_now()}


def _character(character: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": character.label,
        "confidence": character.confidence,
        "top": [_plain(alternative) for alternative in character.top],
    }
    if character.box is not None:
        out["box"] = _plain(character.box)
    out["line"] = character.line
    if character.review is not None:
        out["review"] = character.review
    return out


def error_record(source: Source, code: ErrorCode, message: str, model: ModelInfo) -> dict[str, Any]:
    return {
        "schema": ERROR_SCHEMA,
        "source": _plain(source),
        "error": {"code": str(code), "message": message},
        "model": _plain(model),
        "processed_at": utc_now(),
    }


def is_error(record: dict[str, Any]) -> bool:
    return record["schema"] == ERROR_SCHEMA


def record_key(input_key: str, input_prefix: str, destination_prefix: str) -> str:
    """``input/a/b.png`` -> ``output/a/b.png.json`` (or ``errors/...``): the path below the prefix is kept.

    Where that would pass S3's 1,024-byte key limit, the record goes to
    ``output/_long-keys/<sha256 of the input key>.json`` instead (its ``source.key`` names the input).
    """
    if not input_key.startswith(input_prefix):
        raise ValueError(f"{input_key!r} is not under the input prefix {input_prefix!r}")
    key = destination_prefix + input_key[len(input_prefix) :] + RECORD_SUFFIX
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    return destination_prefix + LONG_KEYS + hashlib.sha256(input_key.encode()).hexdigest() + RECORD_SUFFIX

"""Result and error records (the service's output contract): typed readings and image errors as JSON, and
where each is written."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from handler.imaging.errors import ErrorCode, ImageError
from handler.readings import Alternative, Box, Character, Reading

__all__ = ["ErrorCode", "ModelInfo", "Record", "Source", "error_record", "record_of", "result_record"]

RESULT_SCHEMA = "handwriting-ocr/result/2"
ERROR_SCHEMA = "handwriting-ocr/error/1"
RECORD_SUFFIX = ".json"
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
LONG_KEYS = "_long-keys/"

Json = str | int | float | bool | None | list["Json"] | dict[str, "Json"]
Record = dict[str, Json]


@dataclass(frozen=True)
class Source:
    """An input: an S3 object (``bucket`` None for a local file), as far as it is known."""

    bucket: str | None
    key: str
    etag: str | None = None
    size: int | None = None

    def as_json(self) -> dict[str, Json]:
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag, "size": self.size}


@dataclass(frozen=True)
class ModelInfo:
    version: str
    sha256: str

    def as_json(self) -> dict[str, Json]:
        return {"version": self.version, "sha256": self.sha256}


def local_source(name: str, data: bytes) -> Source:
    """A file on disk described like an S3 object (MD5 hex is S3's ETag for a simple upload)."""
    return Source(bucket=None, key=name, etag=hashlib.md5(data, usedforsecurity=False).hexdigest(), size=len(data))


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_of(source: Source, read: Reading | ImageError, model: ModelInfo) -> Record:
    """An input's record: its reading's, or its error's."""
    if isinstance(read, ImageError):
        return error_record(source, read.code, str(read), model)
    return result_record(source, read, model)


def result_record(source: Source, reading: Reading, model: ModelInfo) -> Record:
    """A :class:`Reading` as the versioned JSON record (schema 2).

    ``text`` and ``characters`` (each with its label, confidence, top-k, box in the input's upright pixels
    and line) describe any reading; an image of exactly one character also keeps schema 1's ``label``,
    ``confidence`` and ``top``, so consumers of single characters read it as before. A multi-character
    image has no ``label``: never one confident character for a string. ``allowed`` appears only when the
    answer was restricted; ``review`` when the model is calibrated.
    """
    record: Record = {"schema": RESULT_SCHEMA, "source": source.as_json(), "text": reading.text}
    if reading.single:
        record |= {"label": reading.label, "confidence": reading.confidence, "top": _alternatives(reading.top)}
    record["characters"] = [
        _character(character, number) for number, line in enumerate(reading.lines) for character in line.characters
    ]
    record["segmentation"] = {
        "confidence": reading.segmentation,
        "lines": sum(1 for ln in reading.lines if ln.characters),
    }
    if reading.allowed:
        record["allowed"] = reading.allowed
    if reading.review is not None:
        record["review"] = reading.review
    return {**record, "model": model.as_json(), "processed_at": utc_now()}


def _alternatives(top: tuple[Alternative, ...]) -> list[Json]:
    return [{"label": alternative.label, "confidence": alternative.confidence} for alternative in top]


def _box(box: Box) -> dict[str, Json]:
    return {"left": box.left, "top": box.top, "width": box.width, "height": box.height}


def _character(character: Character, line: int) -> dict[str, Json]:
    out: dict[str, Json] = {
        "label": character.label,
        "confidence": character.confidence,
        "top": _alternatives(character.top),
    }
    if character.box is not None:
        out["box"] = _box(character.box)
    out["line"] = line
    if character.review is not None:
        out["review"] = character.review
    return out


def error_record(source: Source, code: ErrorCode, message: str, model: ModelInfo) -> Record:
    return {
        "schema": ERROR_SCHEMA,
        "source": source.as_json(),
        "error": {"code": str(code), "message": message},
        "model": model.as_json(),
        "processed_at": utc_now(),
    }


def is_error(record: Record) -> bool:
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

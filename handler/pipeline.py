"""A batch of inputs -> exactly one record each: decode -> normalise -> predict (one batch) -> record.

:func:`label` is pure (bytes in, records out) and serves the CLI; :func:`process` adds S3:
concurrent fetches and writes, and resumable skipping for bulk runs. A bad image never fails
its batch; an infrastructure fault on one object is reported as ``failed`` for a retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, TypeVar

import numpy as np

from handler import imaging
from handler import model as model_artifact
from handler.config import Settings
from handler.imaging import ImageError
from handler.model import Classifier
from handler.records import ErrorCode, ModelInfo, Source, error_record, is_error, record_key, result_record
from handler.storage import META_ETAG, META_MODEL, ObjectMissing, ObjectTooLarge, Storage

Status = Literal["result", "error", "skipped", "failed"]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome:
    source: Source
    status: Status
    record_key: str | None = None
    error_code: str | None = None
    failure: str | None = None


@dataclass
class Service:
    """What a batch needs, built once per container: settings, S3 access and the loaded model."""

    settings: Settings
    storage: Storage
    classifier: Classifier

    @classmethod
    def create(cls, settings: Settings, storage: Storage | None = None) -> Service:
        storage = storage or Storage()
        classifier = model_artifact.load(settings.resolved_model_uri, settings.model_cache_dir, fetch=storage.download)
        return cls(settings, storage, classifier)

    @cached_property
    def model_info(self) -> ModelInfo:
        return model_info(self.classifier)


def model_info(classifier: Classifier) -> ModelInfo:
    return ModelInfo(classifier.manifest.version, classifier.manifest.runtime_sha256)


def local_source(name: str, data: bytes) -> Source:
    """A file on disk described like an S3 object (MD5 hex is S3's ETag for a simple upload)."""
    return Source(bucket=None, key=name, etag=hashlib.md5(data, usedforsecurity=False).hexdigest(), size=len(data))


def label(
    items: Sequence[tuple[Source, bytes | ImageError]], classifier: Classifier, max_pixels: int, top_k: int = 5
) -> list[dict[str, Any]]:
    """One record per item, in order; every readable image is predicted in a single batch."""
    info = model_info(classifier)
    prepared: list[np.ndarray | ImageError] = []
    for _, payload in items:
        if isinstance(payload, ImageError):
            prepared.append(payload)
            continue
        try:
            prepared.append(imaging.prepare(payload, max_pixels))
        except ImageError as exc:
            prepared.append(exc)
    readable = [glyph for glyph in prepared if not isinstance(glyph, ImageError)]
    probabilities = iter(classifier.predict(np.stack(readable)) if readable else [])
    records = []
    for (source, _), glyph in zip(items, prepared, strict=True):
        if isinstance(glyph, ImageError):
            records.append(error_record(source, glyph.code, str(glyph), info))
        else:
            records.append(result_record(source, next(probabilities), classifier.classes, info, top_k))
    return records


def _map(function: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(function, items))


def _already_done(service: Service, source: Source) -> str | None:
    """The record key if this input already has a record for the same etag and model version."""
    settings = service.settings
    if not source.etag:
        return None
    for prefix in (settings.output_prefix, settings.error_prefix):
        key = record_key(source.key, settings.input_prefix, prefix)
        meta = service.storage.record_metadata(str(source.bucket), key)
        if meta and meta.get(META_ETAG) == source.etag and meta.get(META_MODEL) == service.model_info.version:
            return key
    return None


def process(sources: Sequence[Source], service: Service, *, skip_existing: bool = False) -> list[Outcome]:
    """Fetch, label and record each S3 input; returns one outcome per input, in order."""
    settings, storage = service.settings, service.storage
    workers = settings.concurrency
    outcomes: dict[int, Outcome] = {}
    if skip_existing:
        for index, done in enumerate(_map(lambda s: _guard(lambda: _already_done(service, s)), sources, workers)):
            if isinstance(done, Exception):
                outcomes[index] = Outcome(sources[index], "failed", failure=repr(done))
            elif done:
                outcomes[index] = Outcome(sources[index], "skipped", record_key=done)

    def fetch(source: Source) -> tuple[Source, bytes | ImageError] | Exception:
        try:
            fetched = storage.fetch(source, settings.max_object_bytes)
            return fetched.source, fetched.body
        except ObjectMissing as exc:
            return source, ImageError(ErrorCode.NOT_FOUND, str(exc))
        except ObjectTooLarge as exc:
            return source, ImageError(ErrorCode.TOO_LARGE, str(exc))
        except Exception as exc:  # noqa: BLE001 - an infrastructure fault: reported per input, retried
            return exc

    pending = [index for index in range(len(sources)) if index not in outcomes]
    items: list[tuple[int, tuple[Source, bytes | ImageError]]] = []
    for index, fetched in zip(pending, _map(fetch, [sources[i] for i in pending], workers), strict=True):
        if isinstance(fetched, Exception):
            outcomes[index] = Outcome(sources[index], "failed", failure=repr(fetched))
        else:
            items.append((index, fetched))
    records = label([item for _, item in items], service.classifier, settings.max_pixels, settings.top_k)

    def write(job: tuple[Source, dict[str, Any]]) -> Outcome:
        source, record = job
        bucket = str(source.bucket)
        errored = is_error(record)
        key = record_key(
            source.key, settings.input_prefix, settings.error_prefix if errored else settings.output_prefix
        )
        stale = record_key(
            source.key, settings.input_prefix, settings.output_prefix if errored else settings.error_prefix
        )
        try:
            storage.put_record(bucket, key, record, source.etag or "", service.model_info.version)
            storage.delete(bucket, stale)  # an input re-uploaded after an error keeps exactly one record
        except Exception as exc:  # noqa: BLE001
            return Outcome(source, "failed", failure=repr(exc))
        code = record["error"]["code"] if errored else None
        return Outcome(source, "error" if errored else "result", record_key=key, error_code=code)

    jobs = [(source, record) for (_, (source, _)), record in zip(items, records, strict=True)]
    for (index, _), outcome in zip(items, _map(write, jobs, workers), strict=True):
        outcomes[index] = outcome
    return [outcomes[index] for index in range(len(sources))]


def _guard(function: Callable[[], T]) -> T | Exception:
    try:
        return function()
    except Exception as exc:  # noqa: BLE001
        return exc

"""A batch of inputs -> exactly one record each: decode -> page -> segment -> predict (one batch) -> read -> record.

:func:`label` is pure (bytes in, records out) and serves the CLI; :func:`process` adds S3:
concurrent fetches and writes, and resumable skipping for bulk runs. A bad image never fails
its batch; an infrastructure fault on one object is reported as ``failed`` for a retry, and what
does not fit before the deadline as ``deferred``. ``superseded`` means a newer version of the
object was uploaded meanwhile: its own event writes its record.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, TypeVar, overload

from handler import model as model_artifact
from handler.config import Settings
from handler.imaging import Candidates, ImageError
from handler.imaging.errors import unreadable
from handler.model import Classifier
from handler.recognize import AllowError, read_page
from handler.records import ErrorCode, ModelInfo, Source, error_record, is_error, result_record
from handler.sinks import RecordSlots, S3RecordSink, batch_key, in_step, write_batch
from handler.storage import ALLOW_METADATA, ObjectMissing, ObjectTooLarge, Storage
from handler.workers import Scores, Workers, prepare_one, readable_of, scorer

LOGGER = logging.getLogger(__name__)
Status = Literal["result", "error", "skipped", "superseded", "deferred", "failed"]
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
    workers: Workers | None = None

    @classmethod
    def create(cls, settings: Settings, storage: Storage | None = None) -> Service:
        storage = storage or Storage()
        classifier = model_artifact.load(settings.resolved_model_uri, settings.model_cache_dir, fetch=storage.download)
        return cls(settings, storage, classifier, Workers(settings.cpu_workers - 1, scorer(classifier)))

    @cached_property
    def io(self) -> ThreadPoolExecutor:
        """The threads that S3 requests wait on (``CONCURRENCY``), kept for the container's life: a pool per
        batch started its threads again for every invocation, about 0.1 ms of CPU per input."""
        return ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="s3-io")

    @cached_property
    def model_info(self) -> ModelInfo:
        return model_info(self.classifier)


def model_info(classifier: Classifier) -> ModelInfo:
    return ModelInfo(classifier.manifest.version, classifier.manifest.runtime_sha256)


def local_source(name: str, data: bytes) -> Source:
    """A file on disk described like an S3 object (MD5 hex is S3's ETag for a simple upload)."""
    return Source(bucket=None, key=name, etag=hashlib.md5(data, usedforsecurity=False).hexdigest(), size=len(data))


@overload
def label(
    items: Sequence[tuple[Source, bytes | ImageError]], classifier: Classifier, max_pixels: int, top_k: int = 5
) -> list[dict[str, Any]]: ...
@overload
def label(
    items: Sequence[tuple[Source, bytes | ImageError]],
    classifier: Classifier,
    max_pixels: int,
    top_k: int = 5,
    *,
    deadline: Deadline | None,
) -> list[dict[str, Any] | None]: ...
def label(
    items: Sequence[tuple[Source, bytes | ImageError]],
    classifier: Classifier,
    max_pixels: int,
    top_k: int = 5,
    *,
    deadline: Deadline | None = None,
    workers: Workers | None = None,
    allow: str | Sequence[str | None] | None = None,
) -> list[dict[str, Any]] | list[dict[str, Any] | None]:
    """One record per item, in order; every readable image is predicted in a single batch.

    ``allow`` restricts answers to those characters: one string for every item, or one per item.

    With ``workers``, decoding and normalising run on every vCPU. With a ``deadline`` (and no
    workers), an image whose decoding no longer fits gets None (deferred) instead of a record.
    """
    info = model_info(classifier)
    prepared: list[Candidates | ImageError | None] = [p if isinstance(p, ImageError) else None for _, p in items]
    scores: dict[int, Scores] = {}
    todo = [i for i, (_, payload) in enumerate(items) if not isinstance(payload, ImageError)]
    score = scorer(classifier)

    def predict(indices: list[int]) -> None:
        readable = [i for i in indices if isinstance(prepared[i], Candidates)]
        scores.update(zip(readable, score([prepared[i] for i in readable]), strict=True))  # type: ignore[misc]

    if workers and workers.processes and len(todo) > 1:
        started = time.perf_counter()
        payloads = [items[i][1] for i in todo]
        for positions, share, predicted in workers.shares(payloads, max_pixels):  # type: ignore[arg-type]
            indices = [todo[position] for position in positions]
            for index, result in zip(indices, share, strict=True):
                prepared[index] = result
            if predicted is None:
                predict(indices)  # the caller's own share, while the helpers finish theirs
            else:
                scores.update(zip([indices[i] for i in readable_of(share)], predicted, strict=True))
        if deadline:
            deadline.took(time.perf_counter() - started)
    else:
        for i in todo:
            if deadline and not deadline.allows():
                continue
            started = time.perf_counter()
            prepared[i] = prepare_one(items[i][1], max_pixels)  # type: ignore[arg-type]
            if deadline:
                deadline.took(time.perf_counter() - started)
        predict(todo)
    allows = [allow] * len(items) if allow is None or isinstance(allow, str) else list(allow)
    records: list[dict[str, Any] | None] = []
    for index, ((source, _), page) in enumerate(zip(items, prepared, strict=True)):
        if page is None:
            records.append(None)
        elif isinstance(page, ImageError):
            records.append(error_record(source, page.code, str(page), info))
        else:
            try:
                reading = read_page(
                    page,
                    scores[index].glyphs,
                    classifier.classes,
                    strips=scores[index].strips,
                    strip_temperature=classifier.line_reader.temperature if classifier.line_reader else 1.0,
                    top_k=top_k,
                    allow=allows[index],
                    review_below=classifier.manifest.review_below,
                )
            except AllowError as exc:
                records.append(error_record(source, ErrorCode.UNSUPPORTED, str(exc), info))
                continue
            except MemoryError:
                raise
            except Exception as exc:  # a bug on this input's reading: its own error, not its batch's
                LOGGER.exception("reading %s failed", source.key)
                failure = unreadable(exc)
                records.append(error_record(source, failure.code, str(failure), info))
                continue
            records.append(result_record(source, reading, info))
    return records


class Deadline:
    """Time left in this invocation (Lambda's ``get_remaining_time_in_millis``), and whether one more step fits.

    A step fits if, after the longest step seen so far, ``reserve`` seconds remain to write records
    and answer. What does not fit is handed back as ``deferred`` for a retry, never cut off mid-write.
    """

    def __init__(self, remaining_ms: Callable[[], int], reserve: float = 5.0) -> None:
        self.remaining_ms = remaining_ms
        self.reserve = reserve
        self.longest = 0.0

    def allows(self) -> bool:
        return self.remaining_ms() / 1000 > self.reserve + self.longest

    def took(self, seconds: float) -> None:
        self.longest = max(self.longest, seconds)


def _slots(service: Service, key: str) -> RecordSlots:
    s = service.settings
    return RecordSlots.of(key, s.input_prefix, s.output_prefix, s.error_prefix)


def _already_done(service: Service, source: Source) -> str | None:
    """The record key if this input's record is for the same etag and model version and its errors/ mirror
    is in step (a crash between the two leaves them apart: such an input is redone, which repairs it)."""
    if not source.etag:
        return None
    slots = _slots(service, source.key)
    bucket = str(source.bucket)
    head = service.storage.head_record(bucket, slots.record)
    if head is None or head.source_etag != source.etag or head.model_version != service.model_info.version:
        return None  # to be redone whatever the mirror says: its HEAD is not asked (new inputs: one HEAD, not two)
    return slots.record if in_step(head, service.storage.head_record(bucket, slots.mirror)) else None


def _chunks(indices: list[int], sources: Sequence[Source], max_items: int, max_bytes: int) -> Iterator[list[int]]:
    """Bounded pieces of a batch: at most ``max_items`` inputs and (by their listed sizes) ``max_bytes``."""
    chunk: list[int] = []
    held = 0
    for index in indices:
        size = sources[index].size or 0
        if chunk and (len(chunk) >= max_items or held + size > max_bytes):
            yield chunk
            chunk, held = [], 0
        chunk.append(index)
        held += size
    if chunk:
        yield chunk


def process(
    sources: Sequence[Source],
    service: Service,
    *,
    skip_existing: bool = False,
    deadline: Deadline | None = None,
    jsonl: bool = False,
) -> list[Outcome]:
    """Fetch, label and record each S3 input; returns one outcome per input, in order.

    Inputs go through in bounded chunks (memory: only one chunk's bytes are held; time: the deadline
    is checked before each chunk and each image), so a batch of any size and content finishes or
    hands back what is left before Lambda's timeout.
    """
    settings, storage = service.settings, service.storage
    sink = S3RecordSink(storage, service.model_info.version)
    outcomes: dict[int, Outcome] = {}
    collected: dict[int, dict[str, Any]] = {}
    batch = batch_key(settings.output_prefix, service.model_info.version, sources) if jsonl else ""
    if jsonl and sources and storage.head_record(str(sources[0].bucket), batch):
        return [Outcome(source, "skipped", record_key=batch) for source in sources]
    if skip_existing and not jsonl:
        for index, done in enumerate(service.io.map(lambda s: _guard(lambda: _already_done(service, s)), sources)):
            if isinstance(done, Exception):
                outcomes[index] = Outcome(sources[index], "failed", failure=repr(done))
            elif done:
                outcomes[index] = Outcome(sources[index], "skipped", record_key=done)

    allowed: dict[int, str | None] = {}

    def fetch(index: int) -> tuple[Source, bytes | ImageError] | Exception:
        source = sources[index]
        try:
            fetched = storage.fetch(source, settings.max_object_bytes)
            allowed[index] = fetched.metadata.get(ALLOW_METADATA) or settings.allow  # per upload, else per deployment
            return fetched.source, fetched.body
        except ObjectMissing as exc:
            return Source(source.bucket, source.key, None, None), ImageError(ErrorCode.NOT_FOUND, str(exc))
        except ObjectTooLarge as exc:
            return source, ImageError(ErrorCode.TOO_LARGE, str(exc))
        except Exception as exc:  # noqa: BLE001 - an infrastructure fault: reported per input, retried
            return exc

    def write(job: tuple[Source, dict[str, Any]]) -> Outcome:
        source, record = job
        errored = is_error(record)
        code = record["error"]["code"] if errored else None
        if jsonl:  # collected here, written once for the whole batch below
            return Outcome(source, "error" if errored else "result", record_key=batch, error_code=code)
        slots = _slots(service, source.key)
        try:
            committed = sink.commit(str(source.bucket), source.key, source.etag or "", slots, record)
        except Exception as exc:  # noqa: BLE001
            return Outcome(source, "failed", failure=repr(exc))
        if committed == "superseded":
            return Outcome(source, "superseded")
        return Outcome(source, "error" if errored else "result", record_key=slots.record, error_code=code)

    pending = [index for index in range(len(sources)) if index not in outcomes]
    chunks = list(_chunks(pending, sources, settings.chunk_items, settings.chunk_bytes))
    writing: list[tuple[int, Future[Outcome]]] = []
    submitted: list[Future[Any]] = []

    def submit(function: Callable[[T], R], argument: T) -> Future[R]:
        submitted.append(future := service.io.submit(function, argument))
        return future

    try:
        # S3 waits overlap the CPU: the next chunk is fetched and the last one written while this one is read
        fetching = [submit(fetch, index) for index in chunks[0]] if chunks else []
        for number, chunk in enumerate(chunks):
            if deadline and not deadline.allows():
                break
            started = time.perf_counter()
            items: list[tuple[int, tuple[Source, bytes | ImageError]]] = []
            for index, future in zip(chunk, fetching, strict=True):
                fetched = future.result()
                if isinstance(fetched, Exception):
                    outcomes[index] = Outcome(sources[index], "failed", failure=repr(fetched))
                else:
                    items.append((index, fetched))
            following = chunks[number + 1] if number + 1 < len(chunks) else []
            fetching = [submit(fetch, index) for index in following]
            records = label(
                [item for _, item in items],
                service.classifier,
                settings.max_pixels,
                settings.top_k,
                deadline=deadline,
                workers=service.workers,
                allow=[allowed.get(index, settings.allow) for index, _ in items],
            )
            for (index, (source, _)), record in zip(items, records, strict=True):
                if record is not None:
                    writing.append((index, submit(write, (source, record))))
                    if jsonl:
                        collected[index] = record
            if deadline:
                deadline.took(time.perf_counter() - started)
        for future in fetching:  # fetched ahead of a deadline that then stopped the batch: deferred
            future.cancel()
        for index, future in writing:
            outcomes[index] = future.result()
    finally:
        wait(submitted)  # even when the batch fails, none of its requests outlives it
    final = [outcomes.get(index) or Outcome(sources[index], "deferred") for index in range(len(sources))]
    if jsonl:
        return _finish_batch(service, batch, sources, final, collected)
    return final


def _finish_batch(
    service: Service, key: str, sources: Sequence[Source], outcomes: list[Outcome], records: dict[int, dict[str, Any]]
) -> list[Outcome]:
    """JSON Lines mode: the batch is written whole or not at all, so a rerun either skips it or redoes it."""
    if any(outcome.status in ("failed", "deferred") for outcome in outcomes):
        return [o if o.status in ("failed", "deferred") else Outcome(o.source, "deferred") for o in outcomes]
    try:
        ordered = [records[index] for index in sorted(records)]
        write_batch(service.storage, str(sources[0].bucket), key, ordered, service.model_info.version)
    except Exception as exc:  # noqa: BLE001 - the whole batch is retried
        return [Outcome(o.source, "failed", failure=repr(exc)) for o in outcomes]
    return outcomes


def _guard(function: Callable[[], T]) -> T | Exception:
    try:
        return function()
    except Exception as exc:  # noqa: BLE001
        return exc

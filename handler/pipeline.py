"""A batch of S3 inputs -> exactly one record each: fetch -> read (:func:`handler.recognition.label`) ->
commit (a :class:`~handler.sinks.RecordSink`).

A bad image never fails its batch; an infrastructure fault on one object is reported as ``failed`` for a
retry, and what does not fit before the deadline as ``deferred``. ``superseded`` means a newer version of
the object was uploaded meanwhile: its own event writes its record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from handler import model as model_artifact
from handler.config import Settings
from handler.imaging import ImageError
from handler.imaging.errors import ErrorCode
from handler.model import Classifier
from handler.readings import Reading
from handler.recognition import Deadline, label, model_info
from handler.records import ModelInfo, Source
from handler.sinks import RETRY, STATUSES, JsonLinesSink, ObjectSink, Outcome, RecordSink
from handler.storage import ALLOW_METADATA, ObjectMissing, ObjectTooLarge, Storage
from handler.workers import Workers, scorer

__all__ = ["RETRY", "STATUSES", "Deadline", "Outcome", "Service", "batch_result", "is_input", "process"]

T = TypeVar("T")
R = TypeVar("R")


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
        batch would start its threads again on every invocation."""
        return ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="s3-io")

    @cached_property
    def model_info(self) -> ModelInfo:
        return model_info(self.classifier)

    def sink(self, sources: Sequence[Source], *, skip_existing: bool, jsonl: bool) -> RecordSink:
        s = self.settings
        if jsonl:
            return JsonLinesSink(self.storage, self.model_info, s.output_prefix, sources)
        prefixes = (s.input_prefix, s.output_prefix, s.error_prefix)
        return ObjectSink(self.storage, self.model_info, prefixes, skip_existing=skip_existing)


def is_input(key: str, input_prefix: str) -> bool:
    """Objects worth labelling: under the input prefix and not a folder marker."""
    return key.startswith(input_prefix) and not key.endswith("/")


def batch_result(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The small, mergeable result of one batch (Step Functions keeps each under 256 KB)."""
    counts = Counter(outcome.status for outcome in outcomes)
    return {
        "counts": {status: counts.get(status, 0) for status in STATUSES},
        "error_codes": dict(Counter(o.error_code for o in outcomes if o.error_code)),
        "failures": [{"key": o.source.key, "reason": o.failure} for o in outcomes if o.status == "failed"],
    }


Arrived = tuple[Source, bytes | ImageError, str | None]  # the input as read, its bytes (or why not), its allow


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


def fetch(service: Service, source: Source) -> Arrived:
    """An input's bytes and the characters its field may hold (``x-amz-meta-allow``, else ``ALLOW``); an
    input that is gone or too large becomes its error here. Other faults raise (the input is retried)."""
    settings = service.settings
    try:
        fetched = service.storage.fetch(source, settings.max_object_bytes)
    except ObjectMissing as exc:
        return Source(source.bucket, source.key, None, None), ImageError(ErrorCode.NOT_FOUND, str(exc)), None
    except ObjectTooLarge as exc:
        return source, ImageError(ErrorCode.TOO_LARGE, str(exc)), None
    return fetched.source, fetched.body, fetched.metadata.get(ALLOW_METADATA) or settings.allow


@dataclass
class _Batch:
    """One invocation's work in flight. Every S3 request it starts is kept, so that none outlives it."""

    service: Service
    sources: Sequence[Source]
    sink: RecordSink
    outcomes: dict[int, Outcome]
    started: set[Future[Any]] = field(default_factory=set)  # requests still to be waited for
    writes: list[tuple[int, Future[Outcome]]] = field(default_factory=list)

    def submit(self, function: Callable[[T], R], argument: T) -> Future[R]:
        self.started.add(future := self.service.io.submit(function, argument))
        return future

    def fetch(self, chunk: list[int]) -> list[tuple[int, Future[Arrived]]]:
        return [(index, self.submit(lambda i: fetch(self.service, self.sources[i]), index)) for index in chunk]

    def arrived(self, fetching: list[tuple[int, Future[Arrived]]]) -> list[tuple[int, Arrived]]:
        """The chunk's fetched inputs; one whose fetch failed gets its outcome (``failed``) instead."""
        ready = []
        for index, future in fetching:
            try:
                ready.append((index, future.result()))
            except Exception as exc:  # noqa: BLE001 - an infrastructure fault: reported per input, retried
                self.outcomes[index] = Outcome(self.sources[index], "failed", failure=repr(exc))
            self.started.discard(future)  # done: its body must not outlive its chunk (memory holds two chunks)
        return ready

    def commit(self, index: int, source: Source, read: Reading | ImageError) -> None:
        self.writes.append((index, self.submit(lambda _: self.sink.commit(index, source, read), None)))


def process(
    sources: Sequence[Source],
    service: Service,
    *,
    skip_existing: bool = False,
    deadline: Deadline | None = None,
    jsonl: bool = False,
) -> list[Outcome]:
    """Fetch, read and record each S3 input; returns one outcome per input, in order.

    Inputs go through in bounded chunks (memory: only one chunk's bytes are held; time: the deadline is
    checked before each chunk and each image), so a batch of any size and content finishes or hands back
    what is left before Lambda's timeout. S3 waits overlap the CPU: the next chunk is fetched and the last
    one written while this one is read.
    """
    settings = service.settings
    sink = service.sink(sources, skip_existing=skip_existing, jsonl=jsonl)
    batch = _Batch(service, sources, sink, sink.skipped(sources, service.io))
    pending = [index for index in range(len(sources)) if index not in batch.outcomes]
    chunks = list(_chunks(pending, sources, settings.chunk_items, settings.chunk_bytes))
    try:
        fetching = batch.fetch(chunks[0]) if chunks else []
        for number in range(len(chunks)):
            if deadline and not deadline.allows():
                break
            started = time.perf_counter()
            arrived = batch.arrived(fetching)
            fetching = batch.fetch(chunks[number + 1]) if number + 1 < len(chunks) else []
            _read(batch, arrived, deadline)
            if deadline:
                deadline.took(time.perf_counter() - started)
        for _, future in fetching:  # fetched ahead of a deadline that then stopped the batch: deferred
            future.cancel()
        for index, write in batch.writes:
            batch.outcomes[index] = write.result()
    finally:
        wait(batch.started)  # even when the batch fails, none of its requests outlives it
    final = [batch.outcomes.get(index) or Outcome(sources[index], "deferred") for index in range(len(sources))]
    return sink.finish(final)


def _read(batch: _Batch, arrived: list[tuple[int, Arrived]], deadline: Deadline | None) -> None:
    """Read a chunk's inputs (one model batch) and hand each reading to the sink; an input the deadline
    left unread gets no outcome here (deferred)."""
    service = batch.service
    settings = service.settings
    readings = label(
        [(source, body) for _, (source, body, _) in arrived],
        service.classifier,
        settings.max_pixels,
        settings.top_k,
        deadline=deadline,
        workers=service.workers,
        allow=[allow for _, (_, _, allow) in arrived],
    )
    for (index, (source, _, _)), read in zip(arrived, readings, strict=True):
        if read is not None:
            batch.commit(index, source, read)

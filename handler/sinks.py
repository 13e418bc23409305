"""Where records go: a :class:`RecordSink` takes each input's reading (or error) and says what became of it.

Two sinks: :class:`ObjectSink`, one object per input (uploads, and bulk runs by default), and
:class:`JsonLinesSink`, one JSON Lines object per bulk batch (``BULK_OUTPUT=jsonl``).

An input's record (:class:`ObjectSink`) lives in one object, ``output/<key>.json``: its result or its error (``schema`` says
which). One object means one conditional write decides every race, so the common case (a new upload)
costs a single PUT. Error records are also mirrored to ``errors/<key>.json``, an index that lets
operators list what failed; the mirror follows its record, never the other way round.

Writing a record (every step conditional, so any interleaving of writers, such as two versions of one
key, a bulk run racing an upload, or a retry after a crash, ends with the record of the object's
current ETag):

1. PUT the record with ``If-None-Match: *`` (most inputs are new). Done, for a result.
2. If that fails, HEAD the record: if it already holds this version and model, keep it; if it holds
   another version, ask S3 which one is current (HEAD the input), and stop if it is not ours. Otherwise
   PUT it ``If-Match`` the ETag just seen; on 412, start again.
3. After an error record, or after step 2 (a record was already there, perhaps an error), bring the
   mirror in line with whatever the record is now (:meth:`S3RecordSink.mirror`).

A crash anywhere leaves the record right or for the next attempt (an SQS redelivery, a bulk rerun) to
finish from step 1; that attempt takes step 3 too, so it also repairs a mirror the crash left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from handler.imaging.errors import ImageError
from handler.readings import Reading
from handler.records import ModelInfo, Record, Source, is_error, record_key, record_of
from handler.storage import ERROR_KIND, RESULT_KIND, RecordHead, Storage, WriteConflict

BATCHES = "_batches/"
MAX_ROUNDS = 8  # each round is lost only to another writer's progress; 8 in a row means a storm: retry later
Committed = Literal["written", "unchanged", "superseded"]
Status = Literal["result", "error", "skipped", "superseded", "deferred", "failed"]
STATUSES: tuple[Status, ...] = ("result", "error", "skipped", "superseded", "deferred", "failed")
RETRY: tuple[Status, ...] = ("failed", "deferred")  # handed back for another attempt
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What became of one input in a batch. ``superseded``: a newer version of the object was uploaded
    meanwhile (its own event writes its record); ``deferred``: no time left; ``failed``: an infrastructure
    fault, retried."""

    source: Source
    status: Status
    record_key: str | None = None
    error_code: str | None = None
    failure: str | None = None


def recorded(source: Source, read: Reading | ImageError, key: str) -> Outcome:
    if isinstance(read, ImageError):
        return Outcome(source, "error", record_key=key, error_code=str(read.code))
    return Outcome(source, "result", record_key=key)


class RecordSink(Protocol):
    """Where one batch's records go."""

    def skipped(self, sources: Sequence[Source], pool: Executor) -> dict[int, Outcome]:
        """The inputs (by position) whose records already say what this run would write."""
        ...

    def commit(self, index: int, source: Source, read: Reading | ImageError) -> Outcome:
        """Record the batch's ``index``-th input (called from I/O threads, several at once)."""
        ...

    def finish(self, outcomes: list[Outcome]) -> list[Outcome]:
        """After every input has its outcome: the batch's final outcomes."""
        ...


class CommitContention(RuntimeError):
    """Other writers kept changing this input's records; the input is retried later like any S3 fault."""


@dataclass(frozen=True)
class RecordSlots:
    """Where an input's record goes (``record``), and where it is mirrored while it is an error (``mirror``)."""

    record: str
    mirror: str

    @classmethod
    def of(cls, input_key: str, input_prefix: str, output_prefix: str, error_prefix: str) -> RecordSlots:
        return cls(
            record_key(input_key, input_prefix, output_prefix), record_key(input_key, input_prefix, error_prefix)
        )


class ObjectSink:
    """One JSON object per input, written with the protocol above. With ``skip_existing`` (bulk runs), an
    input whose record already describes its current bytes under this model, mirror in step, is skipped."""

    def __init__(
        self, storage: Storage, model: ModelInfo, prefixes: tuple[str, str, str], *, skip_existing: bool = False
    ) -> None:
        self.storage = storage
        self.model = model
        self.prefixes = prefixes  # input, output, errors
        self.skip_existing = skip_existing

    @property
    def model_version(self) -> str:
        return self.model.version

    def slots(self, input_key: str) -> RecordSlots:
        return RecordSlots.of(input_key, *self.prefixes)

    def skipped(self, sources: Sequence[Source], pool: Executor) -> dict[int, Outcome]:
        if not self.skip_existing:
            return {}
        found: dict[int, Outcome] = {}
        for index, done in enumerate(pool.map(lambda source: guarded(lambda: self.done(source)), sources)):
            if isinstance(done, Exception):
                found[index] = Outcome(sources[index], "failed", failure=repr(done))
            elif done:
                found[index] = Outcome(sources[index], "skipped", record_key=done)
        return found

    def done(self, source: Source) -> str | None:
        """The record key if this input's record is for the same etag and model version and its errors/
        mirror is in step (a crash between the two leaves them apart: such an input is redone, which repairs
        it). A new input costs one HEAD: the mirror is asked only when the record says done."""
        if not source.etag:
            return None
        slots, bucket = self.slots(source.key), str(source.bucket)
        head = self.storage.head_record(bucket, slots.record)
        if head is None or head.source_etag != source.etag or head.model_version != self.model_version:
            return None
        return slots.record if in_step(head, self.storage.head_record(bucket, slots.mirror)) else None

    def commit(self, index: int, source: Source, read: Reading | ImageError) -> Outcome:
        slots = self.slots(source.key)
        try:
            committed = self.write(
                str(source.bucket), source.key, source.etag or "", slots, record_of(source, read, self.model)
            )
        except Exception as exc:  # noqa: BLE001 - an infrastructure fault: reported per input, retried
            return Outcome(source, "failed", failure=repr(exc))
        if committed == "superseded":
            return Outcome(source, "superseded")
        return recorded(source, read, slots.record)

    def finish(self, outcomes: list[Outcome]) -> list[Outcome]:
        return outcomes

    def write(self, bucket: str, input_key: str, source_etag: str, slots: RecordSlots, record: Record) -> Committed:
        """Steps 1-3 of the protocol above."""
        body = json.dumps(record, ensure_ascii=False).encode()
        kind = ERROR_KIND if is_error(record) else RESULT_KIND
        try:  # most inputs are new: "only if absent", no HEAD
            etag = self.storage.put_record(
                bucket, slots.record, body, source_etag, self.model_version, replaces=None, kind=kind
            )
        except WriteConflict:
            pass  # a record is there already: step 2
        else:
            if kind == ERROR_KIND:
                self.mirror(bucket, slots, (etag, body))
            return "written"
        for _ in range(MAX_ROUNDS):
            try:
                outcome = self._replace(bucket, input_key, source_etag, slots.record, body, kind)
            except WriteConflict:
                continue
            self.mirror(bucket, slots, (outcome[1], body) if outcome[1] else None)
            return outcome[0]
        raise CommitContention(f"s3://{bucket}/{input_key}: records kept changing under {MAX_ROUNDS} attempts")

    def _replace(
        self, bucket: str, input_key: str, etag: str, key: str, body: bytes, kind: str
    ) -> tuple[Committed, str | None]:
        """Step 2: (what happened, the record's ETag if it now holds the body we wrote)."""
        seen = self.storage.head_record(bucket, key)
        if seen and seen.source_etag != etag and (self.storage.current_etag(bucket, input_key) or "") != etag:
            return "superseded", None
        if seen and seen.source_etag == etag and seen.model_version == self.model_version:
            return "unchanged", None  # an earlier attempt's body: the mirror must copy that one, not ours
        new_etag = self.storage.put_record(
            bucket, key, body, etag, self.model_version, replaces=seen.etag if seen else None, kind=kind
        )
        return "written", new_etag

    def mirror(self, bucket: str, slots: RecordSlots, ours: tuple[str, bytes] | None = None) -> None:
        """Make ``errors/<key>.json`` a copy of the record while the record is an error, and absent otherwise.

        Each round reads the record, fixes the mirror, and reads the record again: a round whose record
        changed meanwhile starts over, so the last writer to touch the mirror always leaves it matching
        the record. ``ours`` is (ETag, body) of a record we just wrote, which saves reading it back.
        """
        storage = self.storage
        for _ in range(MAX_ROUNDS):
            record = storage.head_record(bucket, slots.record)
            copy = storage.head_record(bucket, slots.mirror)
            try:
                if record is None or record.kind != ERROR_KIND:
                    if copy:
                        storage.delete_if_unchanged(bucket, slots.mirror, copy.etag)
                elif copy is None or copy.copy_of != record.etag:
                    body = ours[1] if ours and ours[0] == record.etag else None
                    if body is None:
                        body, read_etag = storage.get_record(bucket, slots.record)
                        if read_etag != record.etag:
                            continue
                    storage.put_record(
                        bucket,
                        slots.mirror,
                        body,
                        record.source_etag,
                        record.model_version,
                        replaces=copy.etag if copy else None,
                        kind=ERROR_KIND,
                        copy_of=record.etag,
                    )
            except WriteConflict:
                continue
            now = storage.head_record(bucket, slots.record)
            if (now.etag if now else None) == (record.etag if record else None):
                return
        raise CommitContention(f"s3://{bucket}/{slots.mirror}: the record kept changing under {MAX_ROUNDS} attempts")


def in_step(record: RecordHead | None, mirror: RecordHead | None) -> bool:
    """Whether a record and its mirror agree (what a bulk rerun checks before skipping an error)."""
    if record is None or record.kind != ERROR_KIND:
        return mirror is None
    return mirror is not None and mirror.copy_of == record.etag


def batch_key(output_prefix: str, model_version: str, sources: Sequence[Source]) -> str:
    """Where a bulk batch's JSON Lines go: named by what it holds (keys and ETags) and the model, so a
    rerun over unchanged inputs finds the batch already written and skips it with one HEAD."""
    listing = "\n".join(sorted(f"{s.key}\t{s.etag or ''}" for s in sources))
    digest = hashlib.sha256(listing.encode()).hexdigest()[:32]
    return f"{output_prefix}{BATCHES}{model_version}/{digest}.jsonl"


class JsonLinesSink:
    """Every record of a bulk batch in one JSON Lines object, written whole or not at all, so a rerun
    either skips the batch (one HEAD) or redoes it."""

    def __init__(self, storage: Storage, model: ModelInfo, output_prefix: str, sources: Sequence[Source]) -> None:
        self.storage = storage
        self.model = model
        self.bucket = str(sources[0].bucket) if sources else ""
        self.key = batch_key(output_prefix, model.version, sources)
        self._records: dict[int, Record] = {}
        self._lock = threading.Lock()
        self._already_written = False

    def skipped(self, sources: Sequence[Source], pool: Executor) -> dict[int, Outcome]:
        if not sources or not self.storage.head_record(self.bucket, self.key):
            return {}
        self._already_written = True
        return {index: Outcome(source, "skipped", record_key=self.key) for index, source in enumerate(sources)}

    def commit(self, index: int, source: Source, read: Reading | ImageError) -> Outcome:
        record = record_of(source, read, self.model)
        with self._lock:
            self._records[index] = record
        return recorded(source, read, self.key)

    def finish(self, outcomes: list[Outcome]) -> list[Outcome]:
        if self._already_written:
            return outcomes
        if any(outcome.status in RETRY for outcome in outcomes):
            return [o if o.status in RETRY else Outcome(o.source, "deferred") for o in outcomes]
        try:
            write_batch(
                self.storage,
                self.bucket,
                self.key,
                [self._records[i] for i in sorted(self._records)],
                self.model.version,
            )
        except Exception as exc:  # noqa: BLE001 - the whole batch is retried
            return [Outcome(o.source, "failed", failure=repr(exc)) for o in outcomes]
        return outcomes


def write_batch(storage: Storage, bucket: str, key: str, records: Iterable[Record], model_version: str) -> None:
    """Every record of a batch in one object (write-once: a concurrent retry that wrote it first is fine)."""
    body = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode()
    with contextlib.suppress(WriteConflict):
        storage.put_record(bucket, key, body, "", model_version, replaces=None, content_type="application/x-ndjson")


def guarded(function: Callable[[], T]) -> T | Exception:
    """A call's result, or the exception it raised (for pool.map, which would stop at the first)."""
    try:
        return function()
    except Exception as exc:  # noqa: BLE001
        return exc

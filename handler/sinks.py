"""Where records go, and the write protocol that keeps exactly one record per input describing it as it is now.

An input has two record slots, ``output/<key>.json`` (result) and ``errors/<key>.json`` (error). Every
writer follows the same steps, all of them conditional, so that any interleaving of writers (two
versions of one key, a bulk run racing an upload, a retry after a crash) ends with one record, and
that record is for the object's current ETag:

1. PUT our slot with ``If-None-Match: *`` (most inputs are new). If that fails, HEAD the slot: if it
   already holds this version and model, skip the PUT; if it holds another version, ask S3 which one
   is current (HEAD the input), and stop if it is not ours.
2. PUT our slot with ``If-Match`` the ETag seen in step 1; on 412, start again from the HEAD.
3. HEAD the other slot. If it describes the current version and ours does not, delete ours; otherwise
   delete it, ``If-Match`` the ETag we saw (conditional delete); on 412, start again.

The common case (a new upload) costs PUT + HEAD; the input HEAD is paid only when two versions meet.
A crash anywhere leaves a state the next attempt (an SQS redelivery, a bulk rerun) finishes from step 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from handler.records import Source, is_error, record_key
from handler.storage import RecordHead, Storage, WriteConflict

BATCHES = "_batches/"
MAX_ROUNDS = 8  # each round is lost only to another writer's progress; 8 in a row means a storm: retry later
Committed = Literal["written", "unchanged", "superseded"]


class CommitContention(RuntimeError):
    """Other writers kept changing this input's records; the input is retried later like any S3 fault."""


@dataclass(frozen=True)
class RecordSlots:
    """The two places an input's record can be; exactly one of them holds it."""

    result: str
    error: str

    @classmethod
    def of(cls, input_key: str, input_prefix: str, output_prefix: str, error_prefix: str) -> RecordSlots:
        return cls(
            record_key(input_key, input_prefix, output_prefix), record_key(input_key, input_prefix, error_prefix)
        )

    def for_record(self, record: dict[str, Any]) -> tuple[str, str]:
        """(where this record goes, the slot that must end up empty)."""
        return (self.error, self.result) if is_error(record) else (self.result, self.error)


class S3RecordSink:
    """One JSON object per input, written with the protocol above."""

    def __init__(self, storage: Storage, model_version: str) -> None:
        self.storage = storage
        self.model_version = model_version

    def commit(
        self, bucket: str, input_key: str, source_etag: str, slots: RecordSlots, record: dict[str, Any]
    ) -> Committed:
        mine, other = slots.for_record(record)
        body = json.dumps(record, ensure_ascii=False).encode()
        for attempt in range(MAX_ROUNDS):
            try:
                return self._round(bucket, input_key, source_etag, mine, other, body, optimistic=attempt == 0)
            except WriteConflict:
                continue
        raise CommitContention(f"s3://{bucket}/{input_key}: records kept changing under {MAX_ROUNDS} attempts")

    def _round(
        self, bucket: str, input_key: str, etag: str, mine: str, other: str, body: bytes, *, optimistic: bool
    ) -> Committed:
        storage = self.storage
        written: str | None = None
        outcome = "written"
        if optimistic:  # most inputs are new: try "only if absent" first and skip the HEAD
            with contextlib.suppress(WriteConflict):
                written = storage.put_record(bucket, mine, body, etag, self.model_version, replaces=None)
        if written is None:
            seen = storage.head_record(bucket, mine)
            if seen and seen.source_etag != etag and not self._is_current(bucket, input_key, etag):
                return "superseded"
            if seen and seen.source_etag == etag and seen.model_version == self.model_version:
                written, outcome = seen.etag, "unchanged"
            else:
                written = storage.put_record(
                    bucket, mine, body, etag, self.model_version, replaces=seen.etag if seen else None
                )
        rival = storage.head_record(bucket, other)
        if rival is None:
            return outcome  # type: ignore[return-value]
        if self._rival_wins(bucket, input_key, etag, rival):
            storage.delete_if_unchanged(bucket, mine, written)
            return "superseded"
        storage.delete_if_unchanged(bucket, other, rival.etag)
        return outcome  # type: ignore[return-value]

    def _is_current(self, bucket: str, input_key: str, etag: str) -> bool:
        return (self.storage.current_etag(bucket, input_key) or "") == etag

    def _rival_wins(self, bucket: str, input_key: str, etag: str, rival: RecordHead) -> bool:
        """The other slot's record stays only if it describes the current object and ours does not."""
        if rival.source_etag == etag:
            return False  # same version: ours is the newer verdict (a fixed model, a retried write)
        return not self._is_current(bucket, input_key, etag)


def batch_key(output_prefix: str, model_version: str, sources: Sequence[Source]) -> str:
    """Where a bulk batch's JSON Lines go: named by what it holds (keys and ETags) and the model, so a
    rerun over unchanged inputs finds the batch already written and skips it with one HEAD."""
    listing = "\n".join(sorted(f"{s.key}\t{s.etag or ''}" for s in sources))
    digest = hashlib.sha256(listing.encode()).hexdigest()[:32]
    return f"{output_prefix}{BATCHES}{model_version}/{digest}.jsonl"


def write_batch(storage: Storage, bucket: str, key: str, records: Sequence[dict[str, Any]], model_version: str) -> None:
    """Every record of a batch in one object (write-once: a concurrent retry that wrote it first is fine)."""
    body = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode()
    with contextlib.suppress(WriteConflict):
        storage.put_record(bucket, key, body, "", model_version, replaces=None, content_type="application/x-ndjson")

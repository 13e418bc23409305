"""The only module that talks to S3, through one boto3 client per process: fetch inputs, write records,
list prefixes, move model files.

boto3 reads ``AWS_ENDPOINT_URL`` itself, which is how the demo and tests point it at a local S3.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from handler.records import Source

CLIENT_CONFIG: dict[str, Any] = {
    "retries": {"mode": "standard", "max_attempts": 6},
    "max_pool_connections": 64,  # CONCURRENCY requests in flight, plus the model fetcher's
    "tcp_keepalive": True,  # an idle warm container's connections survive NAT and load-balancer timeouts
    "parameter_validation": False,  # every call's parameters are built here, typed; S3 still checks them
    # Checksums only where S3 requires one: every request travels over TLS already, and the flexible
    # checksums cost CPU on every GET and PUT (benchmarks/s3_client.py).
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
META_ETAG = "source-etag"
META_MODEL = "model-version"
META_KIND = "record-kind"  # "result" or "error": what a HEAD needs to keep the errors/ mirror in step
META_COPY_OF = "record-etag"  # on a mirror: the ETag of the record it copies
RESULT_KIND, ERROR_KIND = "result", "error"
ALLOW_METADATA = "allow"  # x-amz-meta-allow on an upload: the characters its field may hold

# Without s3:ListBucket (least privilege) S3 answers a missing key with 403 AccessDenied, not 404.
# Our roles can read every key they ask for, so a 403 on a read means "not there".
NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
MISSING = NOT_FOUND | {"403", "AccessDenied", "Forbidden"}
CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class ObjectMissing(LookupError):
    """The input was deleted (or never existed) before it could be read."""


class ObjectTooLarge(ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"object is {size:,} bytes; the limit is {limit:,} bytes (MAX_OBJECT_BYTES)")


class WriteConflict(FileExistsError):
    """A write-once or conditional write lost to another writer."""


@dataclass(frozen=True)
class Fetched:
    source: Source
    body: bytes
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordHead:
    """What a HEAD tells about a record object: its own ETag (for conditional writes) and whom it describes."""

    etag: str
    source_etag: str
    model_version: str
    kind: str = ""
    copy_of: str = ""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


def _etag(response: dict[str, Any]) -> str:
    """An ETag as S3 sends it in a response or a listing, without its quotes (empty if absent)."""
    return str(response.get("ETag", "")).strip('"')


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_missing(error: ClientError) -> bool:
    """404, or the 403 that S3 gives a role without s3:ListBucket for a key that is not there."""
    return _code(error) in MISSING


def is_conflict(error: ClientError) -> bool:
    """A conditional request (If-Match, If-None-Match) that lost to another writer."""
    return _code(error) in CONFLICT


class Storage:
    """S3 for the service. Each method is one boto3 call (or a paginated listing), with S3's answers for
    "not there" and "someone else wrote first" turned into :class:`ObjectMissing`, None or
    :class:`WriteConflict` where the caller acts on them."""

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._lock = threading.Lock()

    @property
    def s3(self) -> Any:
        """The boto3 client, made on first use: importing boto3 and building the client costs ~250 ms that a
        cold start with the bundled model need not wait for (see :meth:`warm_up`)."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.client("s3", config=Config(**CLIENT_CONFIG))
            return self._client

    def warm_up(self) -> threading.Thread:
        """Build the client in the background, overlapping whatever the caller does next (join to wait)."""
        thread = threading.Thread(target=lambda: self.s3, name="s3-client", daemon=True)
        thread.start()
        return thread

    def fetch(self, source: Source, max_bytes: int) -> Fetched:
        """Read an object, refusing one over ``max_bytes`` before its body is downloaded."""
        bucket, key = str(source.bucket), source.key
        try:
            response = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                raise ObjectMissing(f"s3://{bucket}/{key} does not exist (deleted before it was read)") from exc
            raise
        size, body = int(response["ContentLength"]), response["Body"]
        if size > max_bytes:
            body.close()
            raise ObjectTooLarge(size, max_bytes)
        data = body.read()
        metadata = dict(response.get("Metadata") or {})
        return Fetched(Source(source.bucket, key, _etag(response) or source.etag, size), data, metadata)

    def put_record(
        self,
        bucket: str,
        key: str,
        body: bytes,
        source_etag: str,
        model_version: str,
        *,
        replaces: str | None,
        content_type: str = "application/json",
        kind: str = "",
        copy_of: str = "",
    ) -> str:
        """Write a record only if the slot still holds what we last saw: ``replaces`` is that object's
        ETag (``If-Match``), or None for "nothing there" (``If-None-Match: *``). Returns the new ETag;
        :class:`WriteConflict` if another writer got there first. The metadata lets a bulk run skip
        inputs already done by this model, and a HEAD tell a result from an error (``kind``) and a mirror
        from the record it copies (``copy_of``)."""
        metadata = {META_ETAG: source_etag, META_MODEL: model_version}
        metadata |= {name: value for name, value in ((META_KIND, kind), (META_COPY_OF, copy_of)) if value}
        condition = {"IfMatch": replaces} if replaces else {"IfNoneMatch": "*"}
        try:
            response = self.s3.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata, **condition
            )
        except ClientError as exc:
            if is_conflict(exc) or (replaces and _code(exc) in NOT_FOUND):  # If-Match on a key deleted since
                raise WriteConflict(f"s3://{bucket}/{key} changed while we wrote it") from exc
            raise
        return _etag(response)

    def delete_if_unchanged(self, bucket: str, key: str, etag: str) -> None:
        """Delete a record only if it is still the one we looked at (S3 conditional delete, ``If-Match``).
        Already gone is fine; changed since raises :class:`WriteConflict`."""
        try:
            self.s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if is_conflict(exc):
                raise WriteConflict(f"s3://{bucket}/{key} changed before we could delete it") from exc
            if not is_missing(exc):
                raise

    def head(self, bucket: str, key: str) -> tuple[str, dict[str, str]] | None:
        """(ETag, user metadata) of an object, or None if there is none."""
        try:
            response = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        return _etag(response), dict(response.get("Metadata") or {})

    def head_record(self, bucket: str, key: str) -> RecordHead | None:
        """A record's ETag and metadata, or None if there is none."""
        found = self.head(bucket, key)
        if found is None:
            return None
        etag, meta = found
        return RecordHead(
            etag, meta.get(META_ETAG, ""), meta.get(META_MODEL, ""), meta.get(META_KIND, ""), meta.get(META_COPY_OF, "")
        )

    def current_etag(self, bucket: str, key: str) -> str | None:
        """The input's ETag now (None if it is gone): the arbiter when two versions' records meet."""
        found = self.head(bucket, key)
        return (found[0] or None) if found else None

    def get_record(self, bucket: str, key: str) -> tuple[bytes, str]:
        """A record's body and the ETag of the version read (to copy exactly what a HEAD saw)."""
        try:
            response = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                raise WriteConflict(f"s3://{bucket}/{key} was removed while we read it") from exc
            raise
        return response["Body"].read(), _etag(response)

    def list_objects(self, bucket: str, prefix: str) -> Iterator[Source]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield Source(bucket, item["Key"], _etag(item) or None, int(item["Size"]))

    def get_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def iter_chunks(self, bucket: str, key: str, size: int = 1 << 16) -> Iterator[bytes]:
        """An object's body in pieces, for files too large to hold at once."""
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(size)
        finally:
            body.close()

    def put_json(self, bucket: str, key: str, body: Any) -> None:
        self.s3.put_object(
            Bucket=bucket, Key=key, Body=json.dumps(body, indent=2).encode(), ContentType="application/json"
        )

    def download(self, uri: str, path: Path) -> None:
        """Copy an ``s3://`` object to a local file (the model fetcher)."""
        bucket, key = parse_s3_uri(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.s3.download_file(bucket, key, str(path))

    def any_under(self, bucket: str, prefix: str) -> bool:
        return bool(self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0))

    def upload_once(self, path: Path, bucket: str, key: str) -> None:
        """Upload refusing to overwrite (S3 conditional write: ``If-None-Match: *``)."""
        try:
            with path.open("rb") as body:
                self.s3.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
        except ClientError as exc:
            if is_conflict(exc):
                raise WriteConflict(f"s3://{bucket}/{key} already exists") from exc
            raise

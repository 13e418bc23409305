"""The only module that talks to S3: fetch inputs, write records, list prefixes, move model files.

An input's GET, a record's PUT and HEAD, the requests made per input, go through :mod:`handler.lean_s3`
(a third of boto3's CPU, the same hooks and errors); every other call through the boto3 client. boto3
reads ``AWS_ENDPOINT_URL`` itself, which is how the demo and tests point it at a local S3.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from handler.records import Source

if TYPE_CHECKING:
    from handler.lean_s3 import LeanS3

R = TypeVar("R")

CLIENT_CONFIG = {
    "retries": {"mode": "standard", "max_attempts": 6},
    "max_pool_connections": 64,
    # Checksums only where S3 requires one: every request travels over TLS already, and the flexible
    # checksums cost 5-8% of boto3's CPU on an input's GET and a record's PUT (benchmarks/s3_client.py).
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
META_ETAG = "source-etag"
META_MODEL = "model-version"
META_KIND = "record-kind"  # "result" or "error": what a HEAD needs to keep the errors/ mirror in step
META_COPY_OF = "record-etag"  # on a mirror: the ETag of the record it copies
RESULT_KIND, ERROR_KIND = "result", "error"
ALLOW_METADATA = "allow"  # x-amz-meta-allow on an upload: the characters its field may hold


MISSING = ("NoSuchKey", "404", "NotFound")
# Without s3:ListBucket (least privilege) S3 answers a missing key with 403 AccessDenied, not 404.
# Our roles can read every key they ask for, so a 403 on a read means "not there".
MISSING_WITHOUT_LIST = (*MISSING, "403", "AccessDenied", "Forbidden")
CONFLICT = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


class ObjectMissing(LookupError):
    """The input was deleted (or never existed) before it could be read."""


class ObjectTooLarge(ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"object is {size:,} bytes; the limit is {limit:,} bytes (MAX_OBJECT_BYTES)")


class WriteConflict(FileExistsError):
    """A write-once object already exists."""


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


class Storage:
    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._lean: LeanS3 | None = None
        self._lean_made = False
        self._boto_only: set[str] = set()  # buckets in another region, or S3 Express: see lean_s3.BotoOnly
        self._lock = threading.Lock()
        self._lean_lock = threading.Lock()

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

    def _leanly(self, bucket: str, request: Callable[[LeanS3], R]) -> R | None:
        """``request`` sent the lean way; None when boto3 must send it: no credentials to sign with, or a bucket
        only boto3 reaches (see :class:`handler.lean_s3.BotoOnly`), which then stays boto3's."""
        lean = None if bucket in self._boto_only else self._lean_client()
        if lean is None:
            return None
        from handler.lean_s3 import BotoOnly  # loaded by _lean_client

        try:
            return request(lean)
        except BotoOnly:
            self._boto_only.add(bucket)
            return None

    def _lean_client(self) -> LeanS3 | None:
        """Made once, from the client (None without credentials to sign with: boto3 then does as it would)."""
        if self._lean_made:  # every request asks: no locks once it is made
            return self._lean
        client = self.s3
        with self._lean_lock:
            if not self._lean_made:
                import boto3

                from handler.lean_s3 import LeanS3  # botocore's signer and HTTP modules: not at cold start

                # the session boto3.client() used: its credentials are the client's own, already resolved
                credentials = (boto3.DEFAULT_SESSION or boto3.session.Session()).get_credentials()
                retries = client.meta.config.retries or {}  # max_attempts counts retries; total_max_attempts all
                attempts = retries.get("total_max_attempts") or retries.get("max_attempts", 4) + 1
                self._lean = LeanS3(client, credentials, attempts) if credentials else None
                self._lean_made = True  # after _lean: a reader that sees True sees the client too
            return self._lean

    def warm_up(self) -> threading.Thread:
        """Build the clients in the background, overlapping whatever the caller does next (join to wait)."""
        thread = threading.Thread(target=self._lean_client, name="s3-client", daemon=True)
        thread.start()
        return thread

    def fetch(self, source: Source, max_bytes: int) -> Fetched:
        """Read an object, refusing one over ``max_bytes`` before its body is downloaded."""
        bucket, key = str(source.bucket), source.key
        try:
            size, etag, metadata, body = self._get(bucket, key, max_bytes)
        except ClientError as exc:
            if _code(exc) in MISSING_WITHOUT_LIST:
                raise ObjectMissing(f"s3://{bucket}/{key} does not exist (deleted before it was read)") from exc
            raise
        if size > max_bytes:
            raise ObjectTooLarge(size, max_bytes)
        return Fetched(Source(source.bucket, key, etag or source.etag, size), body, metadata)

    def _get(self, bucket: str, key: str, max_bytes: int) -> tuple[int, str, dict[str, str], bytes]:
        """(size, ETag, user metadata, body); the body is left unread (``b""``) when over ``max_bytes``."""
        reply = self._leanly(bucket, lambda lean: lean.get(bucket, key, max_bytes))
        if reply is not None:
            return int(reply.headers.get("content-length", 0)), reply.etag, reply.metadata, reply.body
        response = self.s3.get_object(Bucket=bucket, Key=key)
        size = int(response["ContentLength"])
        if size > max_bytes:
            response["Body"].close()
            return size, _etag(response), {}, b""
        return size, _etag(response), dict(response.get("Metadata") or {}), response["Body"].read()

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
        try:
            return self._put(bucket, key, body, content_type, metadata, replaces)
        except ClientError as exc:
            if _code(exc) in CONFLICT or (replaces and _code(exc) in MISSING):
                raise WriteConflict(f"s3://{bucket}/{key} changed while we wrote it") from exc
            raise

    def _put(
        self, bucket: str, key: str, body: bytes, content_type: str, metadata: dict[str, str], replaces: str | None
    ) -> str:
        """A conditional PUT (``If-Match: replaces``, or ``If-None-Match: *``); returns the new ETag."""
        headers = {"Content-Type": content_type} | {f"x-amz-meta-{name}": value for name, value in metadata.items()}
        headers |= {"If-Match": replaces} if replaces else {"If-None-Match": "*"}
        reply = self._leanly(bucket, lambda lean: lean.put(bucket, key, body, headers))
        if reply is not None:
            return reply.etag
        condition = {"IfMatch": replaces} if replaces else {"IfNoneMatch": "*"}
        response = self.s3.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata, **condition
        )
        return _etag(response)

    def delete_if_unchanged(self, bucket: str, key: str, etag: str) -> None:
        """Delete a record only if it is still the one we looked at (S3 conditional delete, ``If-Match``).
        Already gone is fine; changed since raises :class:`WriteConflict`."""
        try:
            self.s3.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            if _code(exc) in CONFLICT:
                raise WriteConflict(f"s3://{bucket}/{key} changed before we could delete it") from exc
            if _code(exc) not in MISSING_WITHOUT_LIST:
                raise

    def head_record(self, bucket: str, key: str) -> RecordHead | None:
        """A record's ETag and metadata, or None if there is none (404, or 403 without s3:ListBucket)."""
        try:
            etag, meta = self._head(bucket, key)
        except ClientError as exc:
            if _code(exc) in MISSING_WITHOUT_LIST:
                return None
            raise
        return RecordHead(
            etag,
            meta.get(META_ETAG, ""),
            meta.get(META_MODEL, ""),
            meta.get(META_KIND, ""),
            meta.get(META_COPY_OF, ""),
        )

    def _head(self, bucket: str, key: str) -> tuple[str, dict[str, str]]:
        """(ETag, user metadata) of an object."""
        reply = self._leanly(bucket, lambda lean: lean.head(bucket, key))
        if reply is not None:
            return reply.etag, reply.metadata
        response = self.s3.head_object(Bucket=bucket, Key=key)
        return _etag(response), dict(response.get("Metadata") or {})

    def get_record(self, bucket: str, key: str) -> tuple[bytes, str]:
        """A record's body and the ETag of the version read (to copy exactly what a HEAD saw)."""
        try:
            response = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in MISSING_WITHOUT_LIST:
                raise WriteConflict(f"s3://{bucket}/{key} was removed while we read it") from exc
            raise
        return response["Body"].read(), _etag(response)

    def current_etag(self, bucket: str, key: str) -> str | None:
        """The input's ETag now (None if it is gone): the arbiter when two versions' records meet."""
        try:
            return self._head(bucket, key)[0] or None
        except ClientError as exc:
            if _code(exc) in MISSING_WITHOUT_LIST:
                return None
            raise

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
            if _code(exc) in CONFLICT:
                raise WriteConflict(f"s3://{bucket}/{key} already exists") from exc
            raise

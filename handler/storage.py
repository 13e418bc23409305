"""The only module that talks to S3: fetch inputs, write records, list prefixes, move model files.

boto3 reads ``AWS_ENDPOINT_URL`` itself, which is how the demo and tests point it at a local S3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from handler.records import Source

RETRIES = Config(retries={"mode": "standard", "max_attempts": 6}, max_pool_connections=64)
META_ETAG = "source-etag"
META_MODEL = "model-version"


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


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Storage:
    def __init__(self, client: Any = None) -> None:
        self.s3 = client or boto3.client("s3", config=RETRIES)

    def fetch(self, source: Source, max_bytes: int) -> Fetched:
        """Read an object, refusing one over ``max_bytes`` before its body is downloaded."""
        try:
            response = self.s3.get_object(Bucket=source.bucket, Key=source.key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise ObjectMissing(f"s3://{source.bucket}/{source.key} does not exist") from exc
            raise
        size = int(response["ContentLength"])
        actual = Source(source.bucket, source.key, response.get("ETag", "").strip('"') or source.etag, size)
        if size > max_bytes:
            response["Body"].close()
            raise ObjectTooLarge(size, max_bytes)
        return Fetched(actual, response["Body"].read())

    def put_record(self, bucket: str, key: str, record: dict[str, Any], source_etag: str, model_version: str) -> None:
        """Write a record; its metadata lets a bulk run skip inputs already done by this model."""
        self.s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(record, ensure_ascii=False).encode(),
            ContentType="application/json",
            Metadata={META_ETAG: source_etag, META_MODEL: model_version},
        )

    def delete(self, bucket: str, key: str) -> None:
        self.s3.delete_object(Bucket=bucket, Key=key)

    def record_metadata(self, bucket: str, key: str) -> dict[str, str] | None:
        """A record's metadata, or None if it is absent.

        Without s3:ListBucket (least privilege), S3 answers HEAD on a missing key with 403, not
        404; both mean "not recorded yet", and at worst an input is labelled again.
        """
        try:
            return dict(self.s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied", "Forbidden"):
                return None
            raise

    def list_objects(self, bucket: str, prefix: str) -> Iterator[Source]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield Source(bucket, item["Key"], item.get("ETag", "").strip('"') or None, int(item["Size"]))

    def get_json(self, bucket: str, key: str) -> Any:
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

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
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise WriteConflict(f"s3://{bucket}/{key} already exists") from exc
            raise

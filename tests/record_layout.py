"""What every test of the write protocol checks after the dust settles: one record per input, in
``output/``, for the object's current ETag, and an ``errors/`` mirror exactly when that record is an error."""

from __future__ import annotations

import json
from typing import Any

from handler.sinks import RecordSlots


def assert_record_in_step(s3: Any, bucket: str, key: str, *, context: Any = "") -> dict[str, Any]:
    """The input's one record (checked against the input as it is now, and against its mirror)."""
    slots = RecordSlots.of(key, "input/", "output/", "errors/")
    current = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    response = s3.get_object(Bucket=bucket, Key=slots.record)
    record = json.loads(response["Body"].read())
    meta = response["Metadata"]
    assert record["source"]["key"] == key, (key, record["source"], context)
    assert meta["source-etag"] == current == record["source"]["etag"], (key, meta, record["source"], context)
    assert meta["record-kind"] == ("error" if "error" in record else "result"), (key, meta, context)
    try:
        mirror = s3.get_object(Bucket=bucket, Key=slots.mirror)
    except s3.exceptions.ClientError:
        mirror = None
    if "error" in record:
        assert mirror is not None, f"{key}: error record without its errors/ mirror; {context}"
        assert json.loads(mirror["Body"].read()) == record, (key, context)
        assert mirror["Metadata"]["record-etag"] == response["ETag"].strip('"'), (key, context)
    else:
        assert mirror is None, f"{key}: a result with a stale errors/ mirror; {context}"
    return record

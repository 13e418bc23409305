"""An embedded S3 (moto server on 127.0.0.1) and the notifications real S3 would send.

Used by the demo and the end-to-end tests: the service talks real HTTP to a local endpoint,
and moto does not deliver bucket notifications, so we build them as S3 would.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_s3() -> Iterator[str]:
    """Start a moto server on loopback, point boto3 at it (AWS_ENDPOINT_URL), yield the endpoint."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request access log
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {name: os.environ.get(name) for name in [*FAKE_CREDENTIALS, "AWS_ENDPOINT_URL", "AWS_PROFILE"]}
    os.environ.pop("AWS_PROFILE", None)  # never fall back to a real account's profile
    os.environ.update({**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
    try:
        yield endpoint
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def s3_notification(bucket: str, objects: Sequence[tuple[str, str, int]]) -> dict[str, Any]:
    """An ``ObjectCreated:Put`` notification for (key, etag, size) objects, keys URL-encoded as S3 does."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": now,
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "EXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": uuid.uuid4().hex[:16], "x-amz-id-2": "EXAMPLE"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "input-uploads",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "EXAMPLE"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": etag,
                        "sequencer": "0A1B2C3D4E5F678901",
                    },
                },
            }
            for key, etag, size in objects
        ]
    }


def sqs_wrap(notifications: Sequence[dict[str, Any]], queue: str = "uploads") -> dict[str, Any]:
    """SQS messages carrying S3 notifications, as the queue delivers them to Lambda."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "EXAMPLE",
                "body": json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1732449600000",
                    "SenderId": "EXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1732449600001",
                },
                "messageAttributes": {},
                "md5OfBody": "EXAMPLE",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
                "awsRegion": "us-east-1",
            }
            for body in notifications
        ]
    }


class LocalContext:
    """The attributes of a Lambda context that Powertools reads, for invoking handlers locally."""

    function_name = "handwriting-ocr-local"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:handwriting-ocr-local"
    memory_limit_in_mb = 2048
    aws_request_id = "local-request"
    log_group_name = "/aws/lambda/handwriting-ocr-local"
    log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000

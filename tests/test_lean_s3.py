"""The lean GET and PUT (handler.lean_s3): byte for byte the requests boto3 would sign and send, the same
hooks and errors, boto3's retries, and boto3 itself for a bucket in another region."""

from __future__ import annotations

import datetime
import io
import shutil
import ssl
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.httpsession import get_cert_path

from handler import lean_s3
from handler.records import Source
from handler.storage import CLIENT_CONFIG, ObjectMissing, Storage, WriteConflict
from tests.conftest import BUCKET

KEY = "input/a b/ü+x~(1).png"
UNSIGNED = ("user-agent", "amz-sdk-invocation-id", "amz-sdk-request", "expect")  # boto3's telemetry; 100-continue
FROZEN = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.UTC)


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Any:
        yield self.read()


def _reply(status: int, body: bytes = b"", **headers: str) -> AWSResponse:
    return AWSResponse("https://s3.amazonaws.com", status, headers, _Raw(body))  # type: ignore[arg-type]


def _s3_error(code: str, message: str, **fields: str) -> bytes:
    """An error body as S3 documents it (REST error responses): Code, Message, then per-code fields and ids."""
    extra = "".join(f"<{name}>{value}</{name}>" for name, value in fields.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>{extra}'
        "<RequestId>4442587FB7D0A2F9</RequestId><HostId>eftixk72aD6Ap51TnqcoF8eFidJG9Z/2mkiDFu8yU9AS1ed4OpIszj7UDNEHGran</HostId>"
        "</Error>"
    ).encode()


SLOW_DOWN = _s3_error("SlowDown", "Please reduce your request rate.")


def _bytes(body: Any) -> bytes:
    if hasattr(body, "read"):
        body.seek(0)
        return body.read()
    return body or b""


def _headers(request: Any) -> dict[str, str]:
    return {
        name.lower(): value.decode() if isinstance(value, bytes) else value for name, value in request.headers.items()
    }


def _boto3_sent(request: Any) -> bool:
    return "amz-sdk-invocation-id" in request.headers


@pytest.mark.parametrize(
    ("region", "endpoint"), [("eu-west-1", None), ("us-east-1", None), ("us-east-1", "http://127.0.0.1:9")]
)
def test_requests_are_signed_and_addressed_as_boto3_signs_them(
    region: str, endpoint: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: FROZEN)
    monkeypatch.setattr(lean_s3, "get_current_datetime", lambda: FROZEN)
    client = boto3.client("s3", region_name=region, endpoint_url=endpoint, config=Config(**CLIENT_CONFIG))
    storage = Storage(client)
    sent: list[Any] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request) or _reply(200))
    metadata = {"source-etag": "0" * 32, "model-version": "v1", "record-kind": "result"}

    client.get_object(Bucket=BUCKET, Key=KEY)
    storage.fetch(Source(BUCKET, KEY, None, None), 100)
    client.put_object(
        Bucket=BUCKET, Key=KEY, Body=b"{}", ContentType="application/json", Metadata=metadata, IfNoneMatch="*"
    )
    storage.put_record(BUCKET, KEY, b"{}", "0" * 32, "v1", replaces=None, kind="result")
    client.head_object(Bucket=BUCKET, Key=KEY)
    storage.head_record(BUCKET, KEY)

    assert [_boto3_sent(request) for request in sent] == [True, False] * 3
    for theirs, ours in (sent[:2], sent[2:4], sent[4:]):
        assert (ours.method, ours.url, _bytes(ours.body)) == (theirs.method, theirs.url, _bytes(theirs.body))
        assert _headers(ours) == {name: value for name, value in _headers(theirs).items() if name not in UNSIGNED}
        assert "Signature=" in ours.headers["Authorization"]


def test_lean_calls_fire_the_clients_hooks_and_honour_their_answers(s3: Any) -> None:
    storage = Storage(s3)
    seen: Counter[str] = Counter()
    s3.meta.events.register("before-call.s3", lambda model, **_: seen.update([f"before {model.name}"]))
    s3.meta.events.register("after-call.s3", lambda model, **_: seen.update([f"after {model.name}"]))
    answers: list[tuple[str, bytes]] = []  # what an after-call hook reads of the response, as from boto3's
    s3.meta.events.register(
        "after-call.s3.GetObject",
        lambda http_response, **_: answers.append((http_response.headers.get("ETag"), http_response.content)),
    )
    etag = storage.put_record(BUCKET, "output/k.json", b"{}", "e", "v1", replaces=None)
    fetched = storage.fetch(Source(BUCKET, "output/k.json", None, None), 100)
    assert (fetched.body, fetched.source.etag, fetched.metadata["model-version"]) == (b"{}", etag, "v1")
    assert answers == [(f'"{etag}"', b"{}")]  # headers by any case, the body already read
    head = storage.head_record(BUCKET, "output/k.json")
    assert head is not None and (head.etag, head.model_version) == (etag, "v1")
    assert storage.head_record(BUCKET, "output/none.json") is None
    assert seen == {
        "before PutObject": 1,
        "after PutObject": 1,
        "before GetObject": 1,
        "after GetObject": 1,
        "before HeadObject": 2,
        "after HeadObject": 2,
    }

    refused = ({}, {"Error": {"Code": "AccessDenied", "Message": "hooked"}, "ResponseMetadata": {}})
    s3.meta.events.register_first("before-call.s3.GetObject", lambda **_: (_reply(403), refused[1]))
    with pytest.raises(ObjectMissing):  # the hook's 403 stands in for S3's answer, as it does for boto3
        storage.fetch(Source(BUCKET, "output/k.json", None, None), 100)


def test_s3_errors_come_back_as_boto3_raises_them(s3: Any) -> None:
    storage = Storage(s3)
    with pytest.raises(ObjectMissing):
        storage.fetch(Source(BUCKET, "input/never.png", None, None), 100)
    storage.put_record(BUCKET, "output/once.json", b"{}", "e", "v1", replaces=None)
    with pytest.raises(WriteConflict):
        storage.put_record(BUCKET, "output/once.json", b"{}", "e", "v1", replaces=None)
    with pytest.raises(ClientError) as raised:
        storage.put_record("no-such-bucket", "output/x.json", b"{}", "e", "v1", replaces=None)
    assert raised.value.response["Error"]["Code"] == "NoSuchBucket"


def test_throttling_is_retried_with_backoff(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage(s3)
    s3.put_object(Bucket=BUCKET, Key="input/a.png", Body=b"image")
    waits: list[float] = []
    monkeypatch.setattr(lean_s3.time, "sleep", waits.append)
    internal = _s3_error("InternalError", "We encountered an internal error. Please try again.")
    answers = iter([_reply(503, SLOW_DOWN), _reply(500, internal)])
    s3.meta.events.register_first("before-send.s3.GetObject", lambda **_: next(answers, None))
    assert storage.fetch(Source(BUCKET, "input/a.png", None, None), 100).body == b"image"
    assert len(waits) == 2 and all(0 <= wait <= 2 for wait in waits)


def test_retries_stop_at_the_clients_max_attempts(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage(s3)
    monkeypatch.setattr(lean_s3.time, "sleep", lambda _: None)
    sends: list[int] = []
    s3.meta.events.register_first("before-send.s3.PutObject", lambda **_: sends.append(1) or _reply(503, SLOW_DOWN))
    with pytest.raises(ClientError, match="SlowDown"):
        storage.put_record(BUCKET, "output/k.json", b"{}", "e", "v1", replaces=None)
    assert len(sends) == storage._lean_client().max_attempts == 5  # type: ignore[union-attr]  # boto3's (legacy) default


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (
            301,
            _s3_error(
                "PermanentRedirect",
                "The bucket you are attempting to access must be addressed using the specified endpoint. "
                "Please send all future requests to this endpoint.",
                Bucket=BUCKET,
                Endpoint=f"{BUCKET}.s3.eu-west-1.amazonaws.com",
            ),
            {"x-amz-bucket-region": "eu-west-1"},
        ),
        (
            400,
            _s3_error(
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'",
                Region="eu-west-1",
            ),
            {},
        ),
    ],
)
def test_a_bucket_in_another_region_is_left_to_boto3(s3: Any, status: int, body: bytes, headers: dict) -> None:
    storage = Storage(s3)
    s3.put_object(Bucket=BUCKET, Key="input/a.png", Body=b"image")
    moved = _reply(status, body, **headers)
    lean: list[str] = []
    s3.meta.events.register_first(
        "before-send.s3", lambda request, **_: None if _boto3_sent(request) else lean.append(request.method) or moved
    )
    assert storage.fetch(Source(BUCKET, "input/a.png", None, None), 100).body == b"image"
    storage.put_record(BUCKET, "output/a.json", b"{}", "e", "v1", replaces=None)
    assert lean == ["GET"]  # asked once; from then on boto3, which follows S3's redirects, has that bucket


def test_an_object_over_the_limit_is_not_downloaded(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="input/big.png", Body=b"x" * 1000)
    reply = Storage(s3)._lean_client().get(BUCKET, "input/big.png", 100)  # type: ignore[union-attr]
    assert (reply.headers["content-length"], reply.body) == ("1000", b"")


def test_a_bucket_signed_otherwise_than_with_plain_sigv4_is_left_to_boto3() -> None:
    client = boto3.client("s3", region_name="eu-west-1", config=Config(**CLIENT_CONFIG))
    sent: list[Any] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request) or _reply(200))
    lean = lean_s3.LeanS3(client, boto3.session.Session().get_credentials())
    with pytest.raises(lean_s3.BotoOnly, match="s3express"):  # S3 Express signs with its own session keys
        lean.get("ocr-inputs--euw1-az1--x-s3", "input/a.png", 100)
    assert sent == []


@pytest.mark.parametrize(
    "proxy",
    [
        {"proxies": {"https": "https://proxy.example:3129"}},
        {"proxies": {"https": "http://proxy.example:3128"}, "proxies_config": {"proxy_use_forwarding_for_https": True}},
    ],
    ids=["TLS to the proxy", "proxies_config"],
)
def test_a_client_behind_a_proxy_only_boto3_handles_leaves_every_bucket_to_boto3(proxy: dict[str, Any]) -> None:
    client = boto3.client("s3", region_name="eu-west-1", config=Config(**CLIENT_CONFIG, **proxy))
    sent: list[Any] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request) or _reply(200))
    lean = lean_s3.LeanS3(client, boto3.session.Session().get_credentials())
    with pytest.raises(lean_s3.BotoOnly, match="proxy"):
        lean.get("ocr-inputs", "input/a.png", 100)
    assert sent == []


@pytest.mark.parametrize("verify", [None, "own bundle", False])  # the default chain; a proxy's CA; checks off
def test_s3_is_verified_as_the_boto3_client_verifies_it(verify: str | bool | None, tmp_path: Any) -> None:
    if verify == "own bundle":
        verify = str(tmp_path / "corporate-ca.pem")
        shutil.copy(get_cert_path(True), verify)
    client = boto3.client("s3", region_name="eu-west-1", verify=verify, config=Config(**CLIENT_CONFIG))
    connections = lean_s3.LeanS3(client, boto3.session.Session().get_credentials())._http
    assert connections.verify == client._endpoint.http_session._verify  # botocore's choice, whatever its source
    if verify is not None:
        assert connections.verify == verify
    context = connections.tls()
    expected = (ssl.CERT_NONE, False) if verify is False else (ssl.CERT_REQUIRED, True)
    assert (context.verify_mode, context.check_hostname) == expected

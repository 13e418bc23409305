"""The requests made per input (GET the input, PUT its record; HEAD a record in bulk runs and races),
sent without boto3's per-call work.

boto3 spends 1.6-2 ms of CPU on each of them (parameter validation, serialisation, endpoint rules, its
event pipeline, response parsing): together as much as decoding and reading the image, and the one large
item left in the upload path's cost (``benchmarks/s3_client.py``). Here each is one SigV4-signed request
on a keep-alive connection (``handler.connections``: a fifth of urllib3's CPU per request), made from the
boto3 client's own settings: its endpoint rules (resolved once per bucket), region, credentials, timeouts,
proxies and CA bundle. The requests are byte for byte the ones boto3 sends, less its telemetry headers
and ``Expect: 100-continue`` (``tests/test_lean_s3.py`` compares them, signature included).

The boto3 client's events still fire (``before-call``, ``before-send``, ``after-call``), with the
arguments the client gives them, so whatever hooks the client sees these calls as its own: moto's mock,
a fault injector, a scheduled race. (The X-Ray SDK patches boto3's call method instead: it does not see
them.) Failures come out as the client's do: a :class:`~botocore.exceptions.ClientError` with S3's
error code, after retries on the same faults as boto3's standard mode (throttling, 5xx, connection
errors; exponential backoff with full jitter).

What only boto3 does raises :class:`BotoOnly`, and the caller sends that bucket's requests through
boto3 from then on: a bucket in another region than the client's (its answer names the region in
``x-amz-bucket-region``, or is a redirect or wrong-region error; boto3 follows it), one signed
otherwise than with plain SigV4 (S3 Express directory buckets, Outposts), or any bucket when the client
goes through an HTTPS proxy (TLS within TLS) or has ``proxies_config``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import random
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from html import unescape
from http.client import HTTPException
from http.client import responses as REASONS
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HeadersDict
from botocore.compat import get_current_datetime
from botocore.exceptions import ClientError
from botocore.hooks import first_non_none_response
from botocore.utils import get_environ_proxies, percent_encode

from handler.connections import Connections, host_of, over_limit

RETRY_STATUS = frozenset({500, 502, 503, 504})
RETRY_CODES = frozenset({"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "PriorRequestNotComplete"})
REDIRECT_CODES = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed"})  # the bucket is elsewhere
MAX_BACKOFF_S = 20.0  # boto3's standard mode
META = "x-amz-meta-"
UNSIGNED = frozenset(SIGNED_HEADERS_BLACKLIST)
_ERROR_FIELD = re.compile(rb"<(Code|Message)>(.*?)</\1>", re.S)


class BotoOnly(Exception):
    """The bucket needs what only boto3 does: following it to another region, another way of signing, or a
    proxy reached over TLS."""


@dataclass(frozen=True)
class Reply:
    """What a successful request told us: its headers (lower-case names) and body."""

    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def etag(self) -> str:
        return self.headers.get("etag", "").strip('"')

    @property
    def metadata(self) -> dict[str, str]:
        return {name[len(META) :]: value for name, value in self.headers.items() if name.startswith(META)}


@dataclass(frozen=True)
class Endpoint:
    """Where a bucket's keys live and how requests to it are signed."""

    base: str  # the URL its keys hang from, "/"-terminated
    path: str  # that URL's path: what SigV4 signs before the key
    host: str
    region: str


@dataclass
class LeanS3:
    """GetObject, PutObject and HeadObject for one boto3 S3 client, at a fraction of its CPU."""

    client: Any
    credentials: Any
    max_attempts: int = 6
    _endpoints: dict[str, Endpoint] = field(default_factory=dict)
    _keys: dict[tuple[str, str, str], bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        meta = self.client.meta
        config = meta.config
        self._region = meta.region_name
        self._events = meta.events
        self._service = meta.service_model.service_id.hyphenize()
        self._models = {
            name: meta.service_model.operation_model(name) for name in ("GetObject", "PutObject", "HeadObject")
        }
        proxy = (config.proxies or get_environ_proxies(meta.endpoint_url)).get(urlsplit(meta.endpoint_url).scheme)
        # TLS to the proxy itself (TLS within TLS to S3) and botocore's proxy settings stay boto3's to do
        self._proxy_only_boto3 = bool(proxy and (urlsplit(proxy).scheme != "http" or config.proxies_config))
        proxy = None if self._proxy_only_boto3 else proxy
        # what the client verifies S3 against (ca_bundle, AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE, or its default;
        # False when verification is off): botocore's choice read back, as its chain has several sources
        verify = self.client._endpoint.http_session._verify
        self._http = Connections(max(config.connect_timeout, config.read_timeout), proxy, verify)
        if meta.endpoint_url.startswith("https"):
            self._http.tls()  # now, in the warm-up thread, rather than on the first request

    def get(self, bucket: str, key: str, max_bytes: int) -> Reply:
        """The object's headers, and its body unless it is over ``max_bytes`` (then ``b""``: not downloaded)."""
        return self._call("GetObject", bucket, key, {}, b"", max_bytes)

    def put(self, bucket: str, key: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        return self._call("PutObject", bucket, key, dict(headers), body, None)

    def head(self, bucket: str, key: str) -> Reply:
        return self._call("HeadObject", bucket, key, {}, b"", None)

    def _endpoint(self, bucket: str) -> Endpoint:
        """The bucket's endpoint by the client's own rules (virtual hosted or path style, custom endpoints,
        FIPS and dual-stack settings), resolved once per bucket. The resolver is botocore's internal API;
        ``tests/test_lean_s3.py`` checks what comes of it against boto3's own requests."""
        if bucket not in self._endpoints:
            if self._proxy_only_boto3:
                raise BotoOnly(f"s3://{bucket} is reached through an HTTPS proxy or with proxies_config")
            context: dict[str, Any] = {}
            url, _, _ = self.client._resolve_endpoint_ruleset(
                self._models["GetObject"], {"Bucket": bucket, "Key": "k"}, context
            )
            parts = urlsplit(url)
            signing = context.get("signing", {})
            if context.get("auth_type", "v4") != "v4" or signing.get("signing_name", "s3") != "s3":
                raise BotoOnly(f"s3://{bucket} is signed with {context.get('auth_type')}, not plain SigV4")
            region = signing.get("region", self._region)
            base = url.rstrip("/") + "/"
            self._endpoints[bucket] = Endpoint(base, parts.path.rstrip("/") + "/", host_of(parts), region)
        return self._endpoints[bucket]

    def _call(
        self, operation: str, bucket: str, key: str, headers: dict[str, str], body: bytes, max_bytes: int | None
    ) -> Reply:
        model = self._models[operation]
        endpoint = self._endpoint(bucket)
        context: dict[str, Any] = {"client_region": self._region, "client_config": self.client.meta.config}
        context["signing"] = {"bucket": bucket, "region": endpoint.region}
        path = percent_encode(key, safe="/~")
        params = {
            "url_path": "/" + path,
            "query_string": {},
            "method": model.http["method"],
            "headers": headers,
            "body": body,
            "url": endpoint.base + path,
            "context": context,
        }
        _, answered = self._events.emit_until_response(
            f"before-call.{self._service}.{operation}", model=model, params=params, request_signer=None, context=context
        )
        http, parsed = answered if answered is not None else self._send(operation, endpoint, params, max_bytes)
        self._events.emit(
            f"after-call.{self._service}.{operation}", http_response=http, parsed=parsed, model=model, context=context
        )
        fields = parsed["ResponseMetadata"].get("HTTPHeaders") or {n.lower(): v for n, v in http.headers.items()}
        if http.status_code >= 300:
            region = fields.get("x-amz-bucket-region")
            if (region and region != self._region) or parsed.get("Error", {}).get("Code") in REDIRECT_CODES:
                raise BotoOnly(f"s3://{bucket} is in {region or 'another region'}, not {self._region}")
            raise ClientError(parsed, operation)
        return Reply(fields, parsed.get("Body", b""))

    def _send(
        self, operation: str, endpoint: Endpoint, params: dict[str, Any], max_bytes: int | None
    ) -> tuple[AWSResponse, dict[str, Any]]:
        """Sign and send, retrying what boto3's standard mode retries; returns (response, parsed)."""
        method, url, body = params["method"], params["url"], params["body"]
        for attempt in range(1, self.max_attempts + 1):
            headers = self._signed(method, endpoint, url[len(endpoint.base) :], params["headers"], body)
            if body:
                headers["Content-Length"] = str(len(body))
            request = AWSPreparedRequest(method, url, headers, body, stream_output=False)
            try:
                mocked = first_non_none_response(
                    self._events.emit(f"before-send.{self._service}.{operation}", request=request)
                )
                status, fields, data = (
                    _read(mocked, max_bytes) if mocked else self._http.exchange(method, url, headers, body, max_bytes)
                )
                http, parsed = _parse(url, status, fields, data)
            except (HTTPException, OSError):
                if attempt == self.max_attempts:
                    raise
            else:
                code = parsed.get("Error", {}).get("Code")
                if attempt == self.max_attempts or not (http.status_code in RETRY_STATUS or code in RETRY_CODES):
                    return http, parsed
            time.sleep(random.random() * min(MAX_BACKOFF_S, 2 ** (attempt - 1)))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _signed(
        self, method: str, endpoint: Endpoint, key: str, headers: dict[str, str], body: bytes
    ) -> dict[str, str]:
        """``headers`` plus SigV4's for the encoded ``key`` (S3 flavour: the path as sent, the payload signed)."""
        credentials = self.credentials.get_frozen_credentials()
        now = get_current_datetime().strftime("%Y%m%dT%H%M%SZ")
        added = {"X-Amz-Date": now, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
        if credentials.token:
            added["X-Amz-Security-Token"] = credentials.token
        sent = headers | added
        signed = {name.lower(): value for name, value in sent.items() if name.lower() not in UNSIGNED}
        signed["host"] = endpoint.host
        names = sorted(signed)
        lines = [f"{name}:{' '.join(str(signed[name]).split())}" for name in names]
        payload = added["X-Amz-Content-SHA256"]
        canonical = "\n".join([method, endpoint.path + key, "", *lines, "", ";".join(names), payload])
        scope = f"{now[:8]}/{endpoint.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{now}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signing_key = self._signing_key(credentials.secret_key, now[:8], endpoint.region)
        signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
        sent["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return sent

    def _signing_key(self, secret: str, day: str, region: str) -> bytes:
        """SigV4's derived key, which changes once a day (or with the credentials)."""
        key = self._keys.get((secret, day, region))
        if key is None:
            key = ("AWS4" + secret).encode()
            for part in (day, region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(secret, day, region): key}  # the one in use: yesterday's is never needed again
        return key


def _read(http: AWSResponse, max_bytes: int | None) -> tuple[int, dict[str, str], bytes]:
    """A response a ``before-send`` hook gave instead of S3 (moto's mock), read like one from S3."""
    fields = {name.lower(): value for name, value in http.headers.items()}
    if over_limit(http.status_code, fields, max_bytes):
        http.raw.close()
        return http.status_code, fields, b""
    return http.status_code, fields, http.content


def _parse(url: str, status: int, fields: dict[str, str], body: bytes) -> tuple[AWSResponse, dict[str, Any]]:
    """The response as boto3's hooks see it, and the parts of boto3's parsed response that callers and
    hooks read: status, body, or S3's error."""
    http = _Response(url, status, fields, body)
    parsed: dict[str, Any] = {"ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": fields}}
    if status < 300:
        parsed["Body"] = body
        return http, parsed
    errors = {name.decode(): unescape(value.decode(errors="replace")) for name, value in _ERROR_FIELD.findall(body)}
    parsed["Error"] = {
        "Code": errors.get("Code", str(status)),
        "Message": errors.get("Message", REASONS.get(status, "")),
    }
    return http, parsed


class _Read(io.BytesIO):
    """A body already read, as ``AWSResponse.content`` reads a stream."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


class _Response(AWSResponse):
    """boto3's response object for the hooks, its case-insensitive headers made only if a hook reads them
    (building them took a tenth of a request's CPU, and no hook of a deployed function reads them)."""

    def __init__(self, url: str, status: int, fields: dict[str, str], body: bytes) -> None:
        self.url, self.status_code, self._fields = url, status, fields
        self.raw = _Read(body)  # type: ignore[assignment]
        self._content = None

    @cached_property
    def headers(self) -> HeadersDict:  # type: ignore[override]
        return HeadersDict(self._fields)

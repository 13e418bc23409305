"""The lean requests' HTTP/1.1 (handler.connections): what S3 and the proxies in front of it may answer,
read as http.client would read it, on connections kept alive between requests."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPException, IncompleteRead
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from handler.connections import Connections

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Request:
    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Scripted:
    """A server that answers each request with what ``answer`` returns: (the raw bytes, close afterwards)."""

    answer: Callable[[Request], tuple[bytes, bool]]
    tls: ssl.SSLContext | None = None  # speaks HTTPS with it
    requests: list[Request] = field(default_factory=list)
    accepted: int = 0

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._talk, args=(sock,), daemon=True).start()

    def _talk(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # a client that drops, or refuses our certificate
            self._answer(self.tls.wrap_socket(sock, server_side=True) if self.tls else sock)

    def _answer(self, sock: socket.socket) -> None:
        with sock, sock.makefile("rb") as reader:
            while line := reader.readline().decode():
                headers = {}
                while (header := reader.readline().decode()) not in ("\r\n", ""):
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                request = Request(line.strip(), headers, reader.read(int(headers.get("content-length", 0))))
                self.requests.append(request)
                answer, close = self.answer(request)
                sock.sendall(answer)
                if close:
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(*answers: bytes, close: bool = False) -> Scripted:
        """A server giving these answers in turn (the last one from then on)."""
        script = list(answers)
        servers.append(Scripted(lambda _: (script.pop(0) if len(script) > 1 else script[0], close)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _idle(connections: Connections, url: str) -> list:
    return connections._idle.get(("http", url.removeprefix("http://")), [])


def test_one_connection_carries_request_after_request(serve: Callable[..., Scripted]) -> None:
    server = serve(OK)
    connections = Connections(5.0, None)
    for _ in range(3):
        assert connections.exchange("GET", f"{server.url}/a", {}, b"", None) == (200, {"content-length": "2"}, b"ok")
    assert server.accepted == 1


def test_the_request_is_sent_whole_with_host_and_length(serve: Callable[..., Scripted]) -> None:
    server = serve(OK)
    Connections(5.0, None).exchange("PUT", f"{server.url}/out/a%20b.json?x=1", {"X-Amz-Meta-A": "1"}, b"{}", None)
    (request,) = server.requests
    assert request.line == "PUT /out/a%20b.json?x=1 HTTP/1.1"
    assert request.headers == {"host": server.url.removeprefix("http://"), "x-amz-meta-a": "1", "content-length": "2"}
    assert request.body == b"{}"


def test_a_connection_closed_while_idle_is_replaced_without_failing_the_request(
    serve: Callable[..., Scripted],
) -> None:
    server = serve(OK)
    connections = Connections(5.0, None)
    assert connections.exchange("GET", f"{server.url}/first", {}, b"", None)[0] == 200
    (idle,) = _idle(connections, server.url)
    idle.sock.shutdown(socket.SHUT_RDWR)  # as if S3 had dropped it while it sat in the pool
    assert connections.exchange("GET", f"{server.url}/second", {}, b"", None)[0] == 200
    (replacement,) = _idle(connections, server.url)
    assert replacement is not idle
    assert [request.line for request in server.requests] == ["GET /first HTTP/1.1", "GET /second HTTP/1.1"]


def test_a_fresh_connection_closed_before_answering_is_an_error_not_a_resend(serve: Callable[..., Scripted]) -> None:
    server = serve(b"", close=True)
    with pytest.raises(ConnectionResetError):  # http.client's RemoteDisconnected: the caller's to retry
        Connections(5.0, None).exchange("PUT", f"{server.url}/a", {}, b"{}", None)
    assert len(server.requests) == 1


def test_a_chunked_answer_is_read_whole_and_its_connection_kept(serve: Callable[..., Scripted]) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n"
    )
    server = serve(chunked)
    connections = Connections(5.0, None)
    assert connections.exchange("GET", f"{server.url}/a", {}, b"", None)[2] == b"hello world"
    assert connections.exchange("GET", f"{server.url}/a", {}, b"", None)[2] == b"hello world"
    assert server.accepted == 1


def test_an_answer_without_a_length_is_read_to_the_close_and_its_length_told(serve: Callable[..., Scripted]) -> None:
    server = serve(b"HTTP/1.1 500 Internal Error\r\nContent-Type: text/plain\r\n\r\nall of it", close=True)
    connections = Connections(5.0, None)
    status, fields, body = connections.exchange("GET", f"{server.url}/a", {}, b"", None)
    assert (status, fields["content-length"], body) == (500, "9", b"all of it")
    assert _idle(connections, server.url) == []


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"40\r\n" + b"x" * 64 + b"\r\n") * 20,
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1000,
    ],
    ids=["chunked", "read to the close"],
)
def test_a_body_of_unannounced_length_stops_being_read_past_the_limit(
    serve: Callable[..., Scripted], answer: bytes
) -> None:
    server = serve(answer)
    connections = Connections(5.0, None)
    status, fields, body = connections.exchange("GET", f"{server.url}/a", {}, b"", 100)
    assert (status, body) == (200, b"")  # as for an announced length over the limit: nothing kept
    assert int(fields["content-length"]) > 100  # so the caller refuses the object as too large
    assert _idle(connections, server.url) == []


@pytest.mark.parametrize("length", ["ten", "-1", "\u00b2"])
def test_a_malformed_length_is_an_error(serve: Callable[..., Scripted], length: str) -> None:
    server = serve(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nok".encode("latin-1"), close=True)
    with pytest.raises(HTTPException, match="Content-Length"):
        Connections(5.0, None).exchange("GET", f"{server.url}/a", {}, b"", 100)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
)
def test_a_connection_the_server_closes_is_not_reused(serve: Callable[..., Scripted], answer: bytes) -> None:
    server = serve(answer, close=True)
    connections = Connections(5.0, None)
    assert connections.exchange("GET", f"{server.url}/a", {}, b"", None)[2] == b"ok"
    assert _idle(connections, server.url) == []


def test_informational_answers_before_the_answer_are_skipped(serve: Callable[..., Scripted]) -> None:
    server = serve(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + OK)
    assert Connections(5.0, None).exchange("PUT", f"{server.url}/a", {}, b"{}", None) == (
        200,
        {"content-length": "2"},
        b"ok",
    )


def test_header_names_are_lower_cased_repeats_joined_and_folded_lines_continued(
    serve: Callable[..., Scripted],
) -> None:
    server = serve(b'HTTP/1.1 204 No Content\r\nETag: "e"\r\nX-Many: a\r\nx-many: b\r\nX-Long: one\r\n two\r\n\r\n')
    status, fields, body = Connections(5.0, None).exchange("GET", f"{server.url}/a", {}, b"", None)
    assert (status, body) == (204, b"")
    assert fields == {"etag": '"e"', "x-many": "a, b", "x-long": "one two"}


def test_a_head_answer_has_no_body_whatever_its_length(serve: Callable[..., Scripted]) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n")
    connections = Connections(5.0, None)
    for _ in range(2):  # the connection is still in step: no body was waited for
        assert connections.exchange("HEAD", f"{server.url}/a", {}, b"", None) == (200, {"content-length": "20000"}, b"")


def test_a_body_cut_short_is_an_error_not_a_short_body(serve: Callable[..., Scripted]) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", close=True)
    with pytest.raises(IncompleteRead):
        Connections(5.0, None).exchange("GET", f"{server.url}/a", {}, b"", None)


def test_a_body_over_the_limit_is_left_unread_and_its_connection_dropped(serve: Callable[..., Scripted]) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
    connections = Connections(5.0, None)
    assert connections.exchange("GET", f"{server.url}/a", {}, b"", 100) == (200, {"content-length": "1000"}, b"")
    assert _idle(connections, server.url) == []


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb"])
def test_a_header_that_would_split_the_request_is_refused_before_sending(
    serve: Callable[..., Scripted], value: str
) -> None:
    server = serve(OK)
    with pytest.raises(ValueError, match="line break"):
        Connections(5.0, None).exchange("PUT", f"{server.url}/a", {"x-amz-meta-model": value}, b"{}", None)
    assert server.requests == []


def test_plain_http_through_a_proxy_sends_the_absolute_url_and_the_proxy_credentials(
    serve: Callable[..., Scripted],
) -> None:
    proxy = serve(OK)
    Connections(5.0, proxy.url.replace("http://", "http://user:p%40ss@")).exchange(
        "GET", "http://bucket.s3.example:9000/a", {}, b"", None
    )
    (request,) = proxy.requests
    assert request.line == "GET http://bucket.s3.example:9000/a HTTP/1.1"
    assert request.headers["host"] == "bucket.s3.example:9000"
    assert request.headers["proxy-authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for s3.test and 127.0.0.1 (its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("s3.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, private = folder / "ca.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, private


def _tunnelling_proxy(target: tuple[str, int], seen: list[bytes]) -> socket.socket:
    """A proxy that answers one CONNECT (whatever host it names: s3.test resolves only here) and then pipes
    bytes both ways between the client and ``target``."""
    listener = socket.create_server(("127.0.0.1", 0))

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        client, _ = listener.accept()
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += client.recv(1)
        seen.append(head)
        upstream = socket.create_connection(target)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

    threading.Thread(target=serve, daemon=True).start()
    return listener


def _https(cert: Path, key: Path, close: bool = False) -> Scripted:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    return Scripted(lambda _: (OK, close), tls)


def test_https_goes_through_a_proxy_tunnel_and_verifies_s3_against_the_ca_bundle(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server = _https(cert, key)
    seen: list[bytes] = []
    port = int(server.url.rsplit(":", 1)[1])
    proxy = _tunnelling_proxy(("127.0.0.1", port), seen)
    proxy_url = f"http://someone:secret@127.0.0.1:{proxy.getsockname()[1]}"
    try:
        connections = Connections(5.0, proxy_url, verify=str(cert))
        assert connections.exchange("GET", f"https://s3.test:{port}/a", {}, b"", None)[2] == b"ok"
        assert connections.exchange("GET", f"https://s3.test:{port}/b", {}, b"", None)[2] == b"ok"
    finally:
        server.close()
        proxy.close()
    authorization = base64.b64encode(b"someone:secret").decode()
    assert seen == [
        f"CONNECT s3.test:{port} HTTP/1.1\r\nHost: s3.test:{port}\r\n"
        f"Proxy-Authorization: Basic {authorization}\r\n\r\n".encode()
    ]
    assert [(r.line, r.headers) for r in server.requests] == [
        ("GET /a HTTP/1.1", {"host": f"s3.test:{port}"}),
        ("GET /b HTTP/1.1", {"host": f"s3.test:{port}"}),  # one tunnel, kept alive
    ]


def test_https_refuses_a_certificate_outside_the_ca_bundle(tmp_path: Path) -> None:
    server = _https(*_certificate(tmp_path))
    port = int(server.url.rsplit(":", 1)[1])
    proxy = _tunnelling_proxy(("127.0.0.1", port), [])
    try:
        with pytest.raises(ssl.SSLCertVerificationError):  # botocore's default bundle does not know this CA
            Connections(5.0, f"http://127.0.0.1:{proxy.getsockname()[1]}").exchange(
                "GET", f"https://s3.test:{port}/a", {}, b"", None
            )
    finally:
        server.close()
        proxy.close()


def test_a_tls_connection_closed_while_idle_is_replaced_without_failing_the_request(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server = _https(cert, key, close=True)  # answers keep-alive, then closes: as S3 does after idling
    port = int(server.url.rsplit(":", 1)[1])
    connections = Connections(5.0, None, verify=str(cert))
    try:
        for path in ("/first", "/second", "/third"):
            assert connections.exchange("GET", f"https://127.0.0.1:{port}{path}", {}, b"", None)[2] == b"ok"
    finally:
        server.close()
    assert server.accepted == 3


def test_only_plain_http_proxies_are_taken() -> None:
    with pytest.raises(ValueError, match="plain HTTP proxies"):
        Connections(5.0, "https://proxy.example:3129")

"""Keep-alive HTTP/1.1 connections to S3 for the lean requests (``handler.lean_s3``).

The exchange is written here rather than left to ``http.client``: S3's answers to these requests are plain
(a status line, a dozen headers, a body of known length), and ``http.client`` reads headers with the
``email`` package's parser, which took over half of each request's CPU (``benchmarks/s3_client.py``:
0.55 ms per GET + PUT against 0.2 ms here). What it did that S3's answers can need is kept: chunked
bodies, bodies read to the close, 1xx answers skipped, folded and repeated header lines, limits on line
length and header count, connections closed on ``Connection: close``, headers refused if they would split
the request; and plain-HTTP proxies (CONNECT tunnels for HTTPS, the absolute URL for plain HTTP, Basic
credentials from the proxy URL). A proxy reached over TLS is left to boto3 (``lean_s3.BotoOnly``).
"""

from __future__ import annotations

import base64
import io
import socket
import ssl
import threading
from collections.abc import Mapping
from http.client import BadStatusLine, HTTPException, IncompleteRead, LineTooLong, RemoteDisconnected
from urllib.parse import SplitResult, unquote, urlsplit

from botocore.httpsession import get_cert_path

MAX_LINE = 65536  # http.client's limits on a header line and on the number of headers
MAX_HEADERS = 100


class Connections:
    """Keep-alive connections, one per request in flight, kept per host between requests.

    A connection S3 closed while it sat idle fails on its next request before any answer; that request is
    sent again at once on a fresh connection (only then: anything else is the caller's to retry).
    """

    def __init__(self, timeout: float, proxy: str | None, verify: bool | str = True) -> None:
        self._timeout = timeout
        self._proxy = urlsplit(proxy) if proxy else None
        if self._proxy and self._proxy.scheme != "http":
            raise ValueError(f"only plain HTTP proxies are supported here, not {self._proxy.scheme}://")
        self._tls: ssl.SSLContext | None = None
        self.verify = verify  # a CA bundle's path, True for botocore's default bundle, False for none
        self._idle: dict[tuple[str, str], list[Connection]] = {}
        self._origins: dict[tuple[str, str], tuple[SplitResult, str]] = {}  # (scheme, netloc): parsed, Host
        self._lock = threading.Lock()

    def exchange(
        self, method: str, url: str, headers: dict[str, str], body: bytes, max_bytes: int | None
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body); a 2xx body over ``max_bytes`` is not read (``b""``)."""
        scheme, _, rest = url.partition("://")
        slot = (scheme, rest.partition("/")[0])
        if slot not in self._origins:
            parts = urlsplit(f"{scheme}://{slot[1]}")
            self._origins[slot] = (parts, host_of(parts))
        parts, host = self._origins[slot]
        # a proxy forwards plain HTTP itself, given the absolute URL (as urllib3 does)
        target = url if self._proxy and scheme == "http" else rest[len(slot[1]) :] or "/"
        request = _request(method, target, host, headers, body)
        connection, reused = self._take(parts)
        try:
            try:
                status, fields, will_close = connection.send(request, method)
            except (RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                connection.close()
                connection, _ = self._take(parts, fresh=True)
                status, fields, will_close = connection.send(request, method)
            if over_limit(status, fields, max_bytes):
                connection.close()  # refused before its body is read
                return status, fields, b""
            cap = max_bytes + 1 if max_bytes is not None and status < 300 else None
            data, to_close = connection.body(method, status, fields, cap)
            if "content-length" not in fields and method != "HEAD" and status not in (204, 304):  # its size
                fields["content-length"] = str(len(data))
                if cap is not None and len(data) >= cap:  # over the limit: read no further, keep none of it
                    connection.close()
                    return status, fields, b""
        except BaseException:
            connection.close()
            raise
        if will_close or to_close:
            connection.close()
        else:
            with self._lock:
                self._idle.setdefault(slot, []).append(connection)
        return status, fields, data

    def tls(self) -> ssl.SSLContext:
        """The TLS context, made once: loading the CA bundle takes about 40 ms."""
        if self._tls is None:
            context = ssl.create_default_context(
                cafile=get_cert_path(True) if self.verify is True else self.verify or None
            )
            if self.verify is False:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls

    def _take(self, parts: SplitResult, fresh: bool = False) -> tuple[Connection, bool]:
        """An idle connection to the URL's host (reused: True), else a new one."""
        if not fresh:
            with self._lock:
                idle = self._idle.get((parts.scheme, parts.netloc))
                if idle:
                    return idle.pop(), True
        return self._open(parts), False

    def _open(self, parts: SplitResult) -> Connection:
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        proxy = self._proxy  # plain HTTP: lean_s3 leaves TLS to a proxy (TLS within TLS) to boto3
        address = (proxy.hostname, proxy.port or 80) if proxy else (parts.hostname, port)
        sock = socket.create_connection(address, self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request goes out in one write
            if proxy and https:
                _tunnel(sock, host_of(parts, with_port=True), _proxy_authorization(proxy))
            if https:
                sock = self.tls().wrap_socket(sock, server_hostname=parts.hostname)
        except BaseException:
            sock.close()
            raise
        return Connection(sock, _proxy_authorization(proxy) if proxy and not https else b"")


class Connection:
    """One socket to S3 and the buffered reader of its answers; one request at a time."""

    def __init__(self, sock: socket.socket, proxy_authorization: bytes = b"") -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._extra = proxy_authorization  # a header line sent with every request (plain HTTP through a proxy)

    def send(self, request: tuple[bytes, bytes], method: str) -> tuple[int, dict[str, str], bool]:
        """Send the request; (status, headers, whether the connection closes after the body) of its answer.
        :class:`RemoteDisconnected` when the connection closes before any answer."""
        head, body = request
        self.sock.sendall(b"".join((head, self._extra, b"\r\n", body)))
        while True:
            line = self._reader.readline(MAX_LINE + 1)
            if not line:
                raise RemoteDisconnected("S3 closed the connection without answering")
            version, status = _status_line(line)
            fields = _fields(self._reader)
            if status >= 200:
                break  # 1xx (100 Continue, 103 Early Hints) precede the answer: skipped, as http.client does
        connection = fields.get("connection", "").lower()
        keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        return status, fields, not keep_alive

    def body(self, method: str, status: int, fields: dict[str, str], cap: int | None = None) -> tuple[bytes, bool]:
        """The answer's body, and whether the connection must be closed after it (read to its close, or cut
        short). A body of unannounced length (chunked, or read to the close) is read up to ``cap`` bytes."""
        if method == "HEAD" or status in (204, 304):
            return b"", False
        if "chunked" in fields.get("transfer-encoding", "").lower():
            data = _chunked(self._reader, cap)
            return data, cap is not None and len(data) >= cap
        length = fields.get("content-length")
        if length is None:
            return self._reader.read(-1 if cap is None else cap), True
        if not _is_number(length):
            raise HTTPException(f"S3 answered with Content-Length {length!r}")
        data = self._reader.read(int(length))
        if len(data) < int(length):
            raise IncompleteRead(data, int(length) - len(data))
        return data, False

    def close(self) -> None:
        self._reader.close()
        self.sock.close()


def host_of(parts: SplitResult, with_port: bool = False) -> str:
    """The Host header for a URL, as botocore signs it: no default port, IPv6 in brackets."""
    host = str(parts.hostname)
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = parts.port or default
    return f"{host}:{port}" if with_port or port != default else host


def _request(method: str, target: str, host: str, headers: Mapping[str, str], body: bytes) -> tuple[bytes, bytes]:
    """The request's head (less its closing blank line) and body; refuses a header that would split it."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers.items())]
    if "Content-Length" not in headers and (body or method == "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines)
    if head.count("\n") != len(lines) - 1 or head.count("\r") != len(lines) - 1:
        raise ValueError(f"a header of the {method} request holds a line break")
    return head.encode("latin-1") + b"\r\n", body


def _status_line(line: bytes) -> tuple[str, int]:
    version, _, rest = line.decode("latin-1").partition(" ")
    status = rest[:3]
    if len(line) > MAX_LINE or not version.startswith("HTTP/1.") or not _is_number(status):
        raise BadStatusLine(line[:100].decode("latin-1"))
    return version, int(status)


def _fields(reader: io.BufferedReader) -> dict[str, str]:
    """Header lines up to the blank line, names lower-cased; a repeated header's values joined by commas."""
    fields: dict[str, str] = {}
    name = ""
    for _ in range(MAX_HEADERS + 1):
        line = reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return fields
        text = line.decode("latin-1")
        if text[0] in " \t" and name:  # a folded line continues the header before it
            fields[name] = f"{fields[name]} {text.strip()}"
            continue
        name, _, value = text.partition(":")
        name, value = name.strip().lower(), value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    raise HTTPException(f"S3 answered with more than {MAX_HEADERS} headers")


def _chunked(reader: io.BufferedReader, cap: int | None = None) -> bytes:
    """A chunked body, or its first ``cap`` bytes or more (then the rest is left unread)."""
    chunks = []
    held = 0
    while cap is None or held < cap:
        line = reader.readline(MAX_LINE + 1)
        size = line.split(b";", 1)[0].strip()
        try:
            left = int(size, 16)
        except ValueError:
            raise HTTPException(f"bad chunk size {line[:40]!r}") from None
        if left == 0:
            _fields(reader)  # trailers, unused
            return b"".join(chunks)
        chunk = reader.read(left)
        if len(chunk) < left:
            raise IncompleteRead(b"".join(chunks) + chunk)
        chunks.append(chunk)
        held += left
        reader.readline(MAX_LINE + 1)  # the CRLF after the chunk
    return b"".join(chunks)


def _tunnel(sock: socket.socket, target: str, authorization: bytes) -> None:
    """CONNECT through the proxy to ``target`` (host:port), so that TLS runs end to end with S3."""
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode("latin-1") + authorization + b"\r\n")
    with sock.makefile("rb") as reader:  # nothing follows the proxy's answer until TLS starts
        _, status = _status_line(reader.readline(MAX_LINE + 1) or b"HTTP/1.1 000")
        _fields(reader)
    if not 200 <= status < 300:
        raise OSError(f"the proxy refused to tunnel to {target}: {status}")


def _proxy_authorization(proxy: SplitResult) -> bytes:
    """The ``Proxy-Authorization`` header line: Basic credentials from the proxy URL's user part, as botocore
    sends them; b"" without one."""
    if proxy.username is None:
        return b""
    pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
    return b"Proxy-Authorization: Basic " + base64.b64encode(pair.encode()) + b"\r\n"


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def over_limit(status: int, fields: dict[str, str], max_bytes: int | None) -> bool:
    """Whether a successful answer's body is announced larger than the caller will read (then it is not
    downloaded). A malformed length is not judged here: reading the body refuses it."""
    length = fields.get("content-length", "0")
    return max_bytes is not None and status < 300 and _is_number(length) and int(length) > max_bytes

"""A tiny HTTP/1.1 upstream that records each request's header names and values exactly as
they arrive (order, case, underscores, repeats) and answers 200 with them as JSON.

httpbin under gunicorn cannot stand in here: WSGI maps `x_jwt_claim_groups` and
`x-jwt-claim-groups` to the same environ key (HTTP_X_JWT_CLAIM_GROUPS), and gunicorn drops
names with an underscore altogether, so a header that only exists in its `_` spelling would be
invisible to the test and the very bug under test (an app stack folding `_` into `-`) hidden.

    with RawUpstream() as up:
        env = start_envoy(cfg, jwks_port=..., httpbin_port=up.port)   # the httpbin cluster → up
        r = env.get("/status/200")
        r.json()  # {"method": "GET", "path": "/status/200", "headers": [["host", "..."], ...]}
        up.requests[-1].names()                                      # as received

Stdlib only; one thread per connection; keep-alive as Envoy's connection pool uses it.
"""
from __future__ import annotations

import json
import socketserver
import threading
from dataclasses import dataclass, field

MAX_LINE = 65536
MAX_HEADERS = 500


@dataclass
class RecordedRequest:
    method: str
    path: str  # the request target as received (Envoy's forwarded :path)
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)  # as received, in order
    body: bytes = b""

    def names(self) -> list[str]:
        return [name for name, _ in self.headers]

    def values(self, name: str) -> list[str]:
        """Values of every header spelled exactly `name` (case-sensitive, as received)."""
        return [v for n, v in self.headers if n == name]

    def as_json(self) -> dict:
        return {"method": self.method, "path": self.path, "version": self.version,
                "headers": [[n, v] for n, v in self.headers]}


class _Handler(socketserver.StreamRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        while self._one_request():
            pass

    def _one_request(self) -> bool:
        """Reads, records and answers one request; False when the connection is done."""
        line = self.rfile.readline(MAX_LINE + 1)
        if not line or len(line) > MAX_LINE:
            return False
        if line in (b"\r\n", b"\n"):  # tolerated before a request line (RFC 9112 §2.2)
            return True
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3:
            return False
        method, path, version = parts
        headers: list[tuple[str, str]] = []
        while True:
            raw = self.rfile.readline(MAX_LINE + 1)
            if not raw or len(raw) > MAX_LINE or len(headers) > MAX_HEADERS:
                return False
            if raw in (b"\r\n", b"\n"):
                break
            name, sep, value = raw.decode("latin-1").rstrip("\r\n").partition(":")
            if not sep:
                return False
            headers.append((name, value.strip(" \t")))
        lower = [(n.lower(), v) for n, v in headers]
        body = self._read_body(lower)
        if body is None:
            return False
        req = RecordedRequest(method, path, version, headers, body)
        self.server.owner._record(req)
        payload = json.dumps(req.as_json()).encode()
        close = any(n == "connection" and "close" in v.lower() for n, v in lower) or version == "HTTP/1.0"
        head = ("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
        self.wfile.write(head.encode() + payload)
        self.wfile.flush()
        return not close

    def _read_body(self, lower: list[tuple[str, str]]) -> bytes | None:
        te = [v.lower() for n, v in lower if n == "transfer-encoding"]
        if any("chunked" in v for v in te):
            out = b""
            while True:
                size_line = self.rfile.readline(MAX_LINE + 1)
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(MAX_LINE + 1)
        lengths = [v for n, v in lower if n == "content-length"]
        if lengths:
            try:
                return self.rfile.read(int(lengths[0]))
            except ValueError:
                return None
        return b""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "RawUpstream"


class RawUpstream:
    """Listens on 127.0.0.1:`port` (0: a free one, see .port after start())."""

    def __init__(self, port: int = 0):
        self.port = port
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def start(self) -> "RawUpstream":
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"raw-upstream:{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "RawUpstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

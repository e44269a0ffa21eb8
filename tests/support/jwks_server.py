"""A controllable JWKS server for the end-to-end tests (stdlib only, plus tokens.py for the
generated key sets).

Serves
  GET  /jwks.json                          the current key set, in the current mode
                                           (another path: jwks_path=, --path)
  GET  /.well-known/openid-configuration   {"issuer": ..., "jwks_uri": ".../jwks.json"}
Control, on the same port
  POST /_control/mode?m=MODE[&delay=SECONDS]  MODE one of
       ok       200 with the key set
       500      HTTP 500
       garbage  200 with a body that is not a JWKS
       slow     sleeps `delay` seconds (default 10), then answers as ok
       reset    closes the connection with a TCP RST (SO_LINGER 0), no response
       down     closes the connection without a response (FIN); for connection refused,
                stop the server (JwksServer.stop()) and start it again on the same port
     Failures after a 200 and its headers (Content-Length: the whole key set's length):
       reset-after-headers  sends half the body, then closes with a TCP RST
       trickle              sends the body a few bytes every 50 ms, spread over `delay`
                            seconds (make it longer than the rule's `timeout`)
       stall-after-headers  sends no body at all, until the client closes the connection
     These three end by themselves when the client goes away or the server is stopped
     (JwksServer.stop()), and after at most 60 s in any case.
  POST /_control/hold[?max=SECONDS]        hold every /jwks.json answer (whatever the mode)
                                           until /_control/release, or `max` seconds (10)
  POST /_control/release                   answer the held requests, stop holding
  POST /_control/keyset?k=A|AB|B|istio     serve a named key set (see tokens.py)
  POST /_control/keyset   (JSON body)      serve that body verbatim
  GET  /_control/hits                      {"hits": n, "discovery_hits": m, "mode": ..}
  POST /_control/reset-hits

Run as a script:
  python tests/support/jwks_server.py --port 8091 --jwks tests/fixtures/istio-samples/jwks.json
Or in-process:
  srv = JwksServer(keyset="A").start(); srv.set_mode("500"); srv.hits; srv.stop()

Recorded per /jwks.json request: `hits`, `request_headers` and `hit_log` ((monotonic time,
mode it was answered in) pairs); per discovery request: `discovery_hits` and
`discovery_request_headers`. `public_host` names the host the discovery document uses in
`issuer` and `jwks_uri` (default 127.0.0.1; the server always listens on 127.0.0.1).
"""
from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

try:
    from . import tokens
except ImportError:  # run as a script: tests/support is on sys.path
    import tokens  # type: ignore[no-redef]

MODES = ("ok", "500", "garbage", "slow", "reset", "down",
         "reset-after-headers", "trickle", "stall-after-headers")
# The longest an answer in an after-headers mode keeps its connection (and thread).
AFTER_HEADERS_MAX = 60.0
TRICKLE_STEP = 0.05  # seconds between two pieces of a trickled body
GARBAGE = b"<html><body>this is not a JWKS</body></html>\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "JwksServer"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, fmt, *args):  # keep pytest output quiet; the owner can record
        if self.server.owner.verbose:
            sys.stderr.write("jwks_server: " + (fmt % args) + "\n")

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _abort(self, rst: bool) -> None:
        """Drop the connection without answering: RST if `rst`, otherwise a plain FIN."""
        if rst:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.close()
        finally:
            # Stop BaseHTTPRequestHandler.finish() from flushing into the closed socket.
            self.wfile = _Null()

    # -- the after-headers modes (see the module docstring) ---------------------------------
    def _serving(self, until: float) -> bool:
        """The server this request came in on still runs (not stopped, not restarted) and
        the answer has not reached AFTER_HEADERS_MAX."""
        return self.server.owner._httpd is self.server and time.monotonic() < until

    def _write_or_drop(self, data: bytes) -> bool:
        """Writes and flushes `data`; False (and the connection dropped) if the client is gone."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            self._abort(rst=False)
            return False

    def _send_head(self, body: bytes) -> bool:
        """200 and headers announcing all of `body`, flushed; False if the client is gone."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        try:
            self.end_headers()  # flushes the headers
            return True
        except OSError:
            self._abort(rst=False)
            return False

    def _client_gone(self, wait: float) -> bool:
        """Waits up to `wait` s for the client to close (or send anything: it is not waiting
        for this answer any more either way)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], wait)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _stall(self) -> None:
        until = time.monotonic() + AFTER_HEADERS_MAX
        while self._serving(until) and not self._client_gone(TRICKLE_STEP):
            pass

    def _trickle(self, body: bytes, duration: float) -> None:
        """The body in equal pieces every TRICKLE_STEP s, the last one after `duration` s."""
        steps = max(2, int(duration / TRICKLE_STEP))
        size = max(1, -(-len(body) // steps))
        until = time.monotonic() + AFTER_HEADERS_MAX
        if not self._send_head(body):
            return
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(body), size)):
            if i:
                pause = start + i * duration / steps - time.monotonic()
                if self._client_gone(max(0.0, pause)) or not self._serving(until):
                    self._abort(rst=False)
                    return
            if not self._write_or_drop(body[offset:offset + size]):
                return

    def do_GET(self):
        owner = self.server.owner
        path = urlsplit(self.path).path
        if path == owner.jwks_path:
            mode, delay, body = owner._on_hit({k.lower(): v for k, v in self.headers.items()})
            gate, hold_max = owner._gate, owner.hold_max
            if not gate.is_set():
                gate.wait(hold_max)
            if mode == "slow":
                time.sleep(delay)
                mode = "ok"
            if mode == "ok":
                self._send(200, body)
            elif mode == "500":
                self._send(500, b'{"error":"internal"}')
            elif mode == "garbage":
                self._send(200, GARBAGE, "text/html")
            elif mode == "reset":
                self._abort(rst=True)
            elif mode == "down":
                self._abort(rst=False)
            elif mode == "reset-after-headers":
                if self._send_head(body) and self._write_or_drop(body[:max(1, len(body) // 2)]):
                    self._abort(rst=True)
            elif mode == "trickle":
                self._trickle(body, delay)
            elif mode == "stall-after-headers":
                if self._send_head(body):
                    self._stall()
                self._abort(rst=False)
        elif path == "/.well-known/openid-configuration":
            with owner._lock:
                owner.discovery_hits += 1
                owner.discovery_request_headers.append({k.lower(): v for k, v in self.headers.items()})
            doc = {"issuer": owner.issuer, "jwks_uri": owner.public_url + owner.jwks_path}
            self._send(200, json.dumps(doc).encode())
        elif path == "/_control/hits":
            self._send(200, json.dumps(owner.status()).encode())
        else:
            self._send(404, b'{"error":"not found"}')

    def do_POST(self):
        owner = self.server.owner
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            if url.path == "/_control/mode":
                owner.set_mode(q.get("m", ""), float(q["delay"]) if "delay" in q else None)
            elif url.path == "/_control/keyset":
                if "k" in q:
                    owner.set_keyset(q["k"])
                elif body:
                    owner.set_body(body)
                else:
                    raise ValueError("give ?k=A|AB|B|istio or a JSON body")
            elif url.path == "/_control/reset-hits":
                owner.reset_hits()
            elif url.path == "/_control/hold":
                owner.hold(float(q["max"]) if "max" in q else None)
            elif url.path == "/_control/release":
                owner.release()
            else:
                self._send(404, b'{"error":"not found"}')
                return
        except (ValueError, KeyError) as e:
            self._send(400, json.dumps({"error": str(e)}).encode())
            return
        self._send(200, json.dumps(owner.status()).encode())


class _Null:
    closed = True

    def write(self, _data):
        return 0

    def flush(self):
        pass

    def close(self):
        pass


class JwksServer:
    """The JWKS server, controllable from Python or over HTTP. Starts on 127.0.0.1:`port`
    (0: a free port, see .port after start())."""

    def __init__(self, port: int = 0, keyset: str | None = "istio", body: bytes | None = None,
                 issuer: str | None = None, slow_delay: float = 10.0, verbose: bool = False,
                 public_host: str | None = None, ssl_context=None, jwks_path: str = "/jwks.json"):
        self.port = port
        # Where the key set is served: a URI's own path, e.g. the Istio task's jwksUri on GitHub.
        self.jwks_path = jwks_path
        self.public_host = public_host
        # An ssl.SSLContext (server side): serve HTTPS with it (see tests/support/tls.py).
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        self.verbose = verbose
        self.mode = "ok"
        self.slow_delay = slow_delay
        self.hits = 0
        self.discovery_hits = 0
        self.request_headers: list[dict] = []  # of each /jwks.json request, names lower-cased
        self.hit_log: list[tuple[float, str]] = []  # (time.monotonic(), mode) per /jwks.json hit
        self.discovery_request_headers: list[dict] = []
        self.hold_max = 10.0
        self._gate = threading.Event()
        self._gate.set()  # open: answer at once
        self._issuer = issuer
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._body = b""
        if body is not None:
            self.set_body(body)
        elif keyset is not None:
            self.set_keyset(keyset)

    # -- state ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def jwks_uri(self) -> str:
        return self.url + self.jwks_path

    @property
    def public_url(self) -> str:
        """The base URL under `public_host` (the discovery document's hosts)."""
        return f"{self.scheme}://{self.public_host or '127.0.0.1'}:{self.port}"

    @property
    def issuer(self) -> str:
        """The issuer of the discovery document (default: the server's base URL under
        `public_host`, so that `<issuer>/.well-known/openid-configuration` is this server)."""
        return self._issuer or self.public_url

    def hold(self, max_wait: float | None = None) -> None:
        """Hold every /jwks.json answer until release() (at most `max_wait` seconds each, then
        it answers anyway): a fetch is in flight for as long as a test needs."""
        with self._lock:
            if max_wait is not None:
                self.hold_max = max_wait
            self._gate.clear()

    def release(self) -> None:
        """Answer the held requests now and stop holding."""
        self._gate.set()

    def set_mode(self, mode: str, delay: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            self.mode = mode
            if delay is not None:
                self.slow_delay = delay

    def set_keyset(self, name: str) -> None:
        """Serve the named key set: A, AB, B (generated keys) or istio (the sample jwks.json)."""
        if name not in ("A", "B", "AB", "istio"):
            raise ValueError(f"unknown key set {name!r}")
        self.set_body(tokens.jwks_json(name).encode())

    def set_body(self, body: bytes | str | dict) -> None:
        """Serve exactly this body as the key set (a dict is JSON-encoded)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        with self._lock:
            self._body = body

    def reset_hits(self) -> None:
        with self._lock:
            self.hits = 0
            self.discovery_hits = 0
            self.request_headers = []
            self.hit_log = []
            self.discovery_request_headers = []

    def status(self) -> dict:
        with self._lock:
            return {"hits": self.hits, "discovery_hits": self.discovery_hits,
                    "mode": self.mode, "slow_delay": self.slow_delay,
                    "held": not self._gate.is_set()}

    def _on_hit(self, headers: dict) -> tuple[str, float, bytes]:
        with self._lock:
            self.hits += 1
            self.request_headers.append(headers)
            self.hit_log.append((time.monotonic(), self.mode))
            return self.mode, self.slow_delay, self._body

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "JwksServer":
        """Listen (again) on self.port; a stopped server restarts on the same port."""
        httpd = _Server(("127.0.0.1", self.port), _Handler)
        httpd.owner = self
        self.port = httpd.server_address[1]
        if self.ssl_context is not None:
            # The handshake runs on the handler's thread (at its first read), so a client
            # that fails it, or never sends a ClientHello, does not block accept().
            httpd.socket = self.ssl_context.wrap_socket(httpd.socket, server_side=True,
                                                        do_handshake_on_connect=False)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name=f"jwks:{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections are refused until start() is called again.
        Held requests are released."""
        self._gate.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> "JwksServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8091)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--jwks", type=Path, help="file whose content is served as the key set")
    src.add_argument("--keyset", choices=("A", "AB", "B", "istio"), help="a named key set")
    ap.add_argument("--path", default="/jwks.json", help="the key set's path (default /jwks.json)")
    ap.add_argument("--issuer", help="issuer in the discovery document (default: base URL)")
    ap.add_argument("--slow-delay", type=float, default=10.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    body = args.jwks.read_bytes() if args.jwks else None
    srv = JwksServer(port=args.port, keyset=args.keyset or "istio", body=body, issuer=args.issuer,
                     slow_delay=args.slow_delay, verbose=args.verbose, jwks_path=args.path)
    srv.start()
    print(f"jwks_server: serving {srv.jwks_uri}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

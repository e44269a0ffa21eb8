"""Assertions shared by the end-to-end tests: what httpbin echoed, the 401 contract, and
waiting for a condition or counting Envoy's per-worker connections."""
from __future__ import annotations

import re
import time
from typing import Callable

import requests

CLAIM_PREFIX = "x-jwt-claim"


def echoed_headers(resp: requests.Response) -> dict[str, str]:
    """The request headers httpbin received (from /headers or /delay/N), names lower-cased:
    gunicorn/werkzeug title-case them ("X-Jwt-Claim.Groups")."""
    assert resp.status_code == 200, f"expected 200 from httpbin, got {resp.status_code}: {resp.text[:300]}"
    return {k.lower(): v for k, v in resp.json()["headers"].items()}


def claim_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith(CLAIM_PREFIX)}


def assert_invalid_token(resp: requests.Response, token: str | None = None) -> None:
    """401 with `WWW-Authenticate: Bearer realm="…", error="invalid_token"`, a short body
    saying why, and nothing of the token in the body."""
    assert resp.status_code == 401, f"expected 401, got {resp.status_code}: {resp.text[:300]}"
    www = resp.headers.get("www-authenticate", "")
    assert re.match(r'^Bearer realm="[^"]*"', www), f"WWW-Authenticate: {www!r}"
    assert 'error="invalid_token"' in www, f"WWW-Authenticate: {www!r}"
    assert resp.text.strip(), "401 body should say why"
    if token:
        assert token not in resp.text, "the 401 body contains the token"
        for part in token.split("."):
            if len(part) >= 16:
                assert part not in resp.text, "the 401 body contains part of the token"


# Envoy or proxy-wasm lines that mean a VM failed (a Rust panic aborts the VM; a trap or an
# exception escapes a proxy_on_* callback; a plugin or VM cannot load).
VM_FAILURE_LOG = ("panicked", "Uncaught", "Function: proxy_on_", "Wasm VM failed",
                  "Plugin configured to fail closed", "failed to load", "Failed to load Wasm",
                  "Failed to initialize Wasm", "wasm trap", "RuntimeError", "Segmentation fault",
                  "Caught Aborted", "[critical]", "][error][wasm]")


def assert_no_vm_failure(log: str) -> None:
    """No line of Envoy's log (read after it stopped: it flushes on exit) says a VM failed."""
    bad = [ln for ln in log.splitlines() if any(m in ln for m in VM_FAILURE_LOG)]
    assert not bad, "VM failure in Envoy's log:\n" + "\n".join(bad[:20])


def wait_until(cond: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Polls `cond` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def worker_connections(env, workers: int) -> dict[str, float]:
    """Connections accepted per worker on the gateway listener of `env` (an Envoy with
    `workers` workers)."""
    out = {}
    for key, value in env.stats().items():
        if key.startswith("envoy_listener_worker_downstream_cx_total{") and \
                f'envoy_listener_address="127.0.0.1_{env.listener_port}"' in key:
            out[re.search(r'envoy_worker_id="(\d+)"', key).group(1)] = value
    assert len(out) == workers, f"expected {workers} workers on the listener: {out}"
    return out

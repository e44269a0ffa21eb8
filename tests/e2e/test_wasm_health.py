"""The built module's exports and bodies through it; last (the file sorts last), the seed Envoy
is alive after the rest of the suite and its wasm VM never failed."""
from __future__ import annotations

import importlib
import re
import sys

from support.envoy import GATEWAY_HOST, ROOT, WASM


# The proxy-wasm SDK trait methods that the host reaches through an export of the module.
CALLBACK_EXPORTS = {
    "on_vm_start": "proxy_on_vm_start",
    "on_configure": "proxy_on_configure",
    "on_tick": "proxy_on_tick",
    "on_queue_ready": "proxy_on_queue_ready",
    "on_done": "proxy_on_done",
    "on_foreign_function": "proxy_on_foreign_function",
    "on_log": "proxy_on_log",
    "on_http_call_response": "proxy_on_http_call_response",
    "on_grpc_call_response": "proxy_on_grpc_receive",
    "on_grpc_stream_initial_metadata": "proxy_on_grpc_receive_initial_metadata",
    "on_grpc_stream_message": "proxy_on_grpc_receive",
    "on_grpc_stream_trailing_metadata": "proxy_on_grpc_receive_trailing_metadata",
    "on_grpc_stream_close": "proxy_on_grpc_close",
    "on_http_request_headers": "proxy_on_request_headers",
    "on_http_request_body": "proxy_on_request_body",
    "on_http_request_trailers": "proxy_on_request_trailers",
    "on_http_response_headers": "proxy_on_response_headers",
    "on_http_response_body": "proxy_on_response_body",
    "on_http_response_trailers": "proxy_on_response_trailers",
    "on_new_connection": "proxy_on_new_connection",
    "on_downstream_data": "proxy_on_downstream_data",
    "on_upstream_data": "proxy_on_upstream_data",
    "on_downstream_close": "proxy_on_downstream_connection_close",
    "on_upstream_close": "proxy_on_upstream_connection_close",
}
SDK_TRAITS = ("Context", "RootContext", "HttpContext", "StreamContext")


def implemented_callbacks(source: str) -> set[str]:
    """Names of the `on_*` methods inside `impl <SDK trait> for ...` blocks."""
    found = set()
    for m in re.finditer(r"\bimpl\s+(?:\w+::)*(\w+)\s+for\s+\w+\s*\{", source):
        if m.group(1) not in SDK_TRAITS:
            continue
        depth, at = 1, m.end()
        while depth and at < len(source):
            depth += {"{": 1, "}": -1}.get(source[at], 0)
            at += 1
        found |= set(re.findall(r"\bfn\s+(on_\w+)", source[m.end():at]))
    return found


def test_the_module_exports_exactly_the_callbacks_the_filter_handles():
    """scripts/build.sh trims the SDK's exports to KEEP (the host skips a callback the module
    does not export, and each VM entry costs per stream) and puts the filter's own stream
    entry points in place of the SDK's (RENAME); a callback the source implements but the
    build trimmed would silently never run."""
    sys.path.insert(0, str(ROOT / "scripts"))
    wasm_exports = importlib.import_module("wasm-exports")
    exported = wasm_exports.exports(WASM.read_bytes())
    assert len(exported) == len(set(exported)), exported
    exported = set(exported)
    assert exported == set(wasm_exports.KEEP), sorted(exported ^ set(wasm_exports.KEEP))
    source = "\n".join(p.read_text() for p in sorted((ROOT / "src").rglob("*.rs")))
    for own, abi in wasm_exports.RENAME.items():
        assert re.search(rf'#\[no_mangle\]\s*pub extern "C" fn {own}\(', source), own
        assert abi in exported and own not in exported, (own, abi)
    callbacks = implemented_callbacks(source)
    assert {"on_http_call_response", "on_tick", "on_configure"} <= callbacks, callbacks
    # Streams enter through src/filter/streams.rs only: an SDK stream callback would never run.
    assert not callbacks & {"on_http_request_headers", "on_done", "on_log"}, callbacks
    unknown = callbacks - CALLBACK_EXPORTS.keys()
    assert not unknown, f"map {sorted(unknown)} to their exports in CALLBACK_EXPORTS"
    trimmed = {cb: CALLBACK_EXPORTS[cb] for cb in callbacks if CALLBACK_EXPORTS[cb] not in exported}
    assert not trimmed, f"implemented but not exported (add to KEEP in scripts/wasm-exports.py): {trimmed}"


def test_bodies_pass_through_the_trimmed_module(seed_envoy, groups_token):
    """The module exports no body callbacks: Envoy must stream request and response bodies past
    it unchanged, and a denial must still stop a request whose body is on its way."""
    def chunks():  # 1 MiB, chunked, so Envoy sees many body frames
        for _ in range(64):
            yield b"x" * 16384

    # /delay/0 reads the body and echoes it (an endpoint that ignores the body, /status, can
    # get its connection reset by gunicorn, closing with the body unread, before Envoy reads
    # the response: a 503 that has nothing to do with the filter).
    url = seed_envoy.base_url + "/delay/0"
    ok = seed_envoy.session.post(url, data=chunks(), timeout=15, allow_redirects=False,
                                 headers={"Host": GATEWAY_HOST, "Authorization": f"Bearer {groups_token}"})
    assert ok.status_code == 200, ok.text[:200]
    assert ok.json()["data"] == "x" * (64 * 16384), "the body did not arrive whole"
    denied = seed_envoy.session.post(url, data=chunks(), timeout=15, allow_redirects=False,
                                     headers={"Host": GATEWAY_HOST, "Authorization": "Bearer some.invalid.token"})
    assert denied.status_code == 401, denied.text[:200]
    echoed = seed_envoy.get("/headers", token=groups_token)
    assert echoed.status_code == 200 and echoed.json()["headers"]["X-Jwt-Claim.Groups"] == "group1,group2"


def test_seed_envoy_healthy(seed_envoy, groups_token):
    assert seed_envoy.alive()
    assert seed_envoy.get("/headers", token=groups_token).status_code == 200
    log = seed_envoy.log
    for bad in ("panicked", "Function: proxy_on_", "wasm trap", "Segmentation fault", "Caught Aborted"):
        assert bad not in log, f"{bad!r} in Envoy log:\n" + "\n".join(
            line for line in log.splitlines() if bad in line)[:2000]
    failed = {k: v for k, v in seed_envoy.stats().items()
              if re.search(r"wasm.*(fail|crash)", k) and v > 0}
    assert failed == {}, failed

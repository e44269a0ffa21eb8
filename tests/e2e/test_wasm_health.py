"""The built module's exports and bodies through it; last (the file sorts last), the seed Envoy
is alive after the rest of the suite and its wasm VM never failed."""
from __future__ import annotations

import json
import re
import subprocess

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


def module_exports(path) -> list[str]:
    """The export names of a wasm module, read by V8's own parser (Node)."""
    script = ("const fs = require('fs');"
              "const m = new WebAssembly.Module(fs.readFileSync(process.argv[1]));"
              "console.log(JSON.stringify(WebAssembly.Module.exports(m).map(e => e.name)));")
    out = subprocess.run(["node", "-e", script, str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_the_module_is_what_cargo_builds_in_the_sdk_shape():
    """scripts/build.sh copies cargo's artefact: nothing edits the module after the linker.
    The SDK exports its entry points (a stream's context is created, gets its callbacks, and
    is deleted), and every callback the source implements is one the module exports."""
    trimmed = WASM.name.endswith(".trimmed.wasm")  # scripts/build.sh's optional step
    if not trimmed:
        artefacts = list((ROOT / "target").rglob("wasm32-wasip1/release/jwt_claims_filter.wasm"))
        assert artefacts, "no cargo artefact under target/ (run scripts/build.sh)"
        newest = max(artefacts, key=lambda p: p.stat().st_mtime)
        assert newest.read_bytes() == WASM.read_bytes(), f"{WASM} differs from cargo's {newest}"
    exported = module_exports(WASM)
    assert len(exported) == len(set(exported)), exported
    exported = set(exported)
    for sdk in ("proxy_on_context_create", "proxy_on_request_headers", "proxy_on_delete",
                "proxy_on_vm_start", "proxy_on_configure", "proxy_on_memory_allocate"):
        assert sdk in exported, (sdk, sorted(exported))
    if trimmed:
        assert "proxy_on_response_headers" not in exported and "proxy_on_log" not in exported, sorted(exported)
    else:
        assert "proxy_on_response_headers" in exported, "the SDK's exports, untouched"
    assert not {e for e in exported if e.startswith("jcf_")}, sorted(exported)
    source = "\n".join(p.read_text() for p in sorted((ROOT / "src").rglob("*.rs")))
    callbacks = implemented_callbacks(source)
    assert {"on_http_call_response", "on_tick", "on_configure", "on_http_request_headers"} <= callbacks
    unknown = callbacks - CALLBACK_EXPORTS.keys()
    assert not unknown, f"map {sorted(unknown)} to their exports in CALLBACK_EXPORTS"
    missing = {cb: CALLBACK_EXPORTS[cb] for cb in callbacks if CALLBACK_EXPORTS[cb] not in exported}
    assert not missing, f"implemented but not exported: {missing}"


def test_bodies_pass_through_the_module(seed_envoy, groups_token):
    """The filter acts on request headers only: Envoy must stream request and response bodies
    past it unchanged, and a denial must still stop a request whose body is on its way."""
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

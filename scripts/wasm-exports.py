#!/usr/bin/env python3
"""Lists or trims the exports of a built .wasm module.

    scripts/wasm-exports.py list FILE
    scripts/wasm-exports.py trim IN OUT

Why trim: the proxy-wasm Rust SDK exports every callback of the ABI (`proxy_on_log`,
`proxy_on_response_headers`, `proxy_on_done`, body and trailer callbacks, ...), whether or not
the filter implements it. The host (proxy-wasm-cpp-host, in Envoy and Istio) enters the VM for
every exported callback of every stream and skips the ones a module does not export. Each
entry costs 1,300 to 2,000 host instructions here (callgrind, `scripts/bench.sh
--instructions`), and body callbacks come once per chunk. `trim` keeps exactly the callbacks
the filter handles (KEEP below), drops the export entries of the rest (the dropped functions
stay in the code section, unreachable), and puts the filter's own stream entry points in place
of the SDK's (RENAME below, see src/filter/streams.rs). tests/e2e/test_wasm_health.py checks
that every callback the source implements is kept.
"""
from __future__ import annotations

import sys

# What the filter needs from the ABI: its memory and start-up, the allocator the host writes
# into, the root callbacks (start-up and configuration, which src/filter/streams.rs takes over
# to create the SDK's root contexts; the tick and a key fetch's response, which the SDK
# dispatches), and the one stream callback src/filter/streams.rs implements itself.
# Not `proxy_on_context_create` nor `proxy_on_delete`: nothing per stream is kept (streams.rs
# says how a stream finds its configuration, and how roots are freed).
KEEP = frozenset({
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_http_call_response",
    "proxy_on_request_headers",
})

# The filter's own entry points (src/filter/streams.rs, root_entry.rs, and request_headers.rs's
# allocator) and the ABI names they take over from the SDK's exports of those names.
RENAME = {
    "jcf_on_vm_start": "proxy_on_vm_start",
    "jcf_on_configure": "proxy_on_configure",
    "jcf_on_request_headers": "proxy_on_request_headers",
    "jcf_on_memory_allocate": "proxy_on_memory_allocate",
}

EXPORT_SECTION = 7


class WasmError(Exception):
    pass


def read_leb(data: bytes, at: int) -> tuple[int, int]:
    """An unsigned LEB128 at `at`: (value, offset after it)."""
    value = shift = 0
    while True:
        if at >= len(data) or shift > 35:
            raise WasmError("truncated or oversized LEB128")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def leb(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def sections(module: bytes):
    """(id, payload) of every section, in order."""
    if module[:4] != b"\0asm" or module[4:8] != b"\1\0\0\0":
        raise WasmError("not a version 1 wasm module")
    at = 8
    while at < len(module):
        section_id = module[at]
        size, start = read_leb(module, at + 1)
        if start + size > len(module):
            raise WasmError(f"section {section_id} runs past the end of the module")
        yield section_id, module[start:start + size]
        at = start + size


def export_entries(payload: bytes):
    """(name, encoded entry) of every export in an export section's payload."""
    count, at = read_leb(payload, 0)
    for _ in range(count):
        start = at
        length, at = read_leb(payload, at)
        name = payload[at:at + length].decode()
        at += length + 1  # the name, then the kind byte
        _index, at = read_leb(payload, at)
        yield name, payload[start:at]
    if at != len(payload):
        raise WasmError("export section has trailing bytes")


def exports(module: bytes) -> list[str]:
    return [name for section_id, payload in sections(module) if section_id == EXPORT_SECTION
            for name, _ in export_entries(payload)]


def export_entry(name: str, rest: bytes) -> bytes:
    """An export entry: the name, then `rest` (kind byte and index) as it was."""
    encoded = name.encode()
    return leb(len(encoded)) + encoded + rest


def trim(module: bytes, keep: frozenset[str] = KEEP, rename: dict[str, str] | None = None) -> bytes:
    rename = RENAME if rename is None else rename
    out = bytearray(module[:8])
    for section_id, payload in sections(module):
        if section_id == EXPORT_SECTION:
            entries = list(export_entries(payload))
            names = {name for name, _ in entries}
            absent = set(rename) - names
            if absent:
                raise WasmError(f"the module does not export {sorted(absent)} (to rename)")
            taken_over = set(rename.values())
            kept = []
            for name, entry in entries:
                if name in rename:
                    # The entry without its name: kind byte and index stay.
                    length, at = read_leb(entry, 0)
                    kept.append((rename[name], export_entry(rename[name], entry[at + length:])))
                elif name in keep and name not in taken_over:
                    kept.append((name, entry))
            missing = keep - {name for name, _ in kept}
            if missing:
                raise WasmError(f"the module does not export {sorted(missing)}")
            payload = leb(len(kept)) + b"".join(entry for _, entry in kept)
        out += bytes([section_id]) + leb(len(payload)) + payload
    return bytes(out)


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[1] == "list":
            with open(argv[2], "rb") as f:
                print("\n".join(exports(f.read())))
            return 0
        if len(argv) == 4 and argv[1] == "trim":
            with open(argv[2], "rb") as f:
                trimmed = trim(f.read())
            with open(argv[3], "wb") as f:
                f.write(trimmed)
            return 0
    except (OSError, WasmError, UnicodeDecodeError) as e:
        print(f"wasm-exports: {e}", file=sys.stderr)
        return 1
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

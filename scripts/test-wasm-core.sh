#!/usr/bin/env bash
# The verification core inside wasm: runs tests/wasm_core.rs as wasm32-unknown-unknown under
# wasm-bindgen-test on Node, then natively. The assertions are the same, so passing both
# shows that time, randomness and big-integer code behave in wasm as they do natively.
# Non-zero on any failure.
#
# Installs what is missing, once: wasm-bindgen-cli at the version of wasm-bindgen in
# Cargo.lock (the runner refuses test binaries of any other version). Needs node.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

command -v node >/dev/null 2>&1 || { log "node is required (wasm-bindgen-test runs the tests on Node)"; exit 1; }

wasm_bindgen_version=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$wasm_bindgen_version" ] || { log "no wasm-bindgen in Cargo.lock"; exit 1; }
installed=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
if [ "$installed" != "$wasm_bindgen_version" ]; then
  log "installing wasm-bindgen-cli $wasm_bindgen_version (have: ${installed:-none})"
  # Without default features: they bring TLS for downloading browser drivers, which Node
  # does not need. --locked first; where its lock file names a crate version the registry
  # does not offer (0.2.130's webpki-roots 1.0.11 here), resolve afresh.
  install=(cargo install wasm-bindgen-cli --version "$wasm_bindgen_version" --no-default-features --force --quiet)
  "${install[@]}" --locked 2>/dev/null || "${install[@]}"
fi
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner

log "wasm_core in wasm32-unknown-unknown (Node $(node --version))"
cargo_for_target wasm32-unknown-unknown test --test wasm_core

log "wasm_core natively"
cargo test --test wasm_core

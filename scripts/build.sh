#!/usr/bin/env bash
# Builds the filter (release, wasm32-wasip1) into wasm/jwt_claims_filter.wasm.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
cargo_for_target wasm32-wasip1 build --release --lib --quiet
mkdir -p wasm
# Only the callbacks the filter handles stay exported: the host skips the rest per stream.
python3 "$ROOT/scripts/wasm-exports.py" trim \
  "$(target_dir_for wasm32-wasip1)/release/jwt_claims_filter.wasm" "$WASM_OUT.tmp"
mv "$WASM_OUT.tmp" "$WASM_OUT"
log "wrote $WASM_OUT ($(stat -c %s "$WASM_OUT") bytes)"

#!/usr/bin/env bash
# Installs what is missing, builds the filter, runs the native unit tests, then the
# end-to-end tests (real Envoy + the built .wasm + httpbin + a JWKS server). Non-zero on any
# failure. Extra arguments go to pytest (e.g. `scripts/test.sh -k seed`).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh"

log "native unit tests"
cargo test --lib --quiet

if rustup_has_target wasm32-wasip1 && cargo clippy --version >/dev/null 2>&1; then
  log "clippy (wasm32-wasip1, unwrap/expect/panic denied outside tests)"
  cargo clippy --quiet --lib --target wasm32-wasip1 -- -D warnings
  cargo clippy --quiet --lib --tests -- -D warnings
fi

log "end-to-end tests"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"

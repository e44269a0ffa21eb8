#!/usr/bin/env bash
# Installs what is missing, builds the filter, then runs, stopping at the first failure:
#   native unit and integration tests, clippy, the verification core in wasm32 under Node,
#   a short fuzzing pass of every target, and the end-to-end tests (real Envoy + the built
#   .wasm + httpbin + JWKS servers).
# Extra arguments go to pytest (e.g. `scripts/test.sh -k seed`).
# FUZZ_SECONDS sets the fuzzing time per target (default 10; 0 skips fuzzing).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" --test-panic  # also the test-only module tests/e2e/test_vm_reload.py crashes

log "native unit and integration tests"
cargo test --quiet

log "the Istio compiler's tests (tools/istio-envoy)"
CARGO_TARGET_DIR="$ROOT/target/tools" cargo test --quiet --manifest-path "$ROOT/tools/istio-envoy/Cargo.toml"

if cargo clippy --version >/dev/null 2>&1; then
  log "clippy (unwrap/expect/panic denied outside tests)"
  cargo clippy --quiet --lib --tests -- -D warnings
  CARGO_TARGET_DIR="$ROOT/target/tools" cargo clippy --quiet --all-targets \
    --manifest-path "$ROOT/tools/istio-envoy/Cargo.toml" -- -D warnings
  # The wasm32 glue (src/filter/) too, where rustup has the target (not on the Debian route).
  if rustup_has_target wasm32-wasip1; then
    cargo clippy --quiet --lib --target wasm32-wasip1 -- -D warnings
  fi
fi

log "verification core in wasm32-unknown-unknown (wasm-bindgen-test on Node)"
"$ROOT/scripts/test-wasm-core.sh"

if [ "${FUZZ_SECONDS:-10}" != 0 ]; then
  log "fuzzing, ${FUZZ_SECONDS:-10} s per target"
  "$ROOT/scripts/fuzz.sh" "${FUZZ_SECONDS:-10}"
fi

log "end-to-end tests"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"

log "end-to-end tests on the trimmed module (scripts/build.sh's optional step)"
JWT_FILTER_WASM="$ROOT/wasm/jwt_claims_filter.trimmed.wasm" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/e2e "$@"

#!/usr/bin/env bash
# Builds the filter (release, wasm32-wasip1) into wasm/jwt_claims_filter.wasm: the module
# `cargo build --release --target wasm32-wasip1` makes, copied.
#   scripts/build.sh                 the module (what ships)
#   scripts/build.sh --test-panic    also the test-only variant (cargo feature `test-panic`: a
#                                    request whose :path starts with /__jcf_test_panic aborts
#                                    the VM) into wasm/jwt_claims_filter.test-panic.wasm, for
#                                    tests/e2e/test_vm_reload.py. Never ship that file.
# Both use the same target directory: the feature adds no dependency feature, so only the
# filter's own crate is compiled again. The variant is built first and the shipped module
# last, so cargo's state ends at the normal features (a later plain build has nothing to do)
# and the normal module is built exactly as without the option.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

TEST_PANIC_OUT="$ROOT/wasm/jwt_claims_filter.test-panic.wasm"
TRIMMED_OUT="$ROOT/wasm/jwt_claims_filter.trimmed.wasm"
test_panic=0
for arg in "$@"; do
  case "$arg" in
    --test-panic) test_panic=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $arg (see --help)"; exit 2 ;;
  esac
done

mkdir -p wasm
ARTEFACT="$(target_dir_for wasm32-wasip1)/release/jwt_claims_filter.wasm"

# build_module OUT CARGO_ARGS...: builds with the extra cargo arguments and copies the module
# to OUT. What cargo builds is the module: nothing edits it after the linker.
build_module() {
  local out="$1"; shift
  cargo_for_target wasm32-wasip1 build --release --lib --quiet "$@"
  cp "$ARTEFACT" "$out.tmp"
  mv "$out.tmp" "$out"
  log "wrote $out ($(stat -c %s "$out") bytes)"
}

if [ "$test_panic" = 1 ]; then
  build_module "$TEST_PANIC_OUT" --features test-panic
fi
build_module "$WASM_OUT"

# The optional size and speed step: the same module with only the callbacks the filter
# implements exported (the host enters the VM for every exported callback of every stream and
# skips the others), by tools/wasm-trim (walrus). tests/e2e/test_wasm_health.py checks that
# every callback the source implements is kept; scripts/test.sh runs the end-to-end suite on
# both modules.
KEEP_EXPORTS=(memory _initialize proxy_abi_version_0_2_1 proxy_on_memory_allocate
  proxy_on_vm_start proxy_on_configure proxy_on_tick proxy_on_http_call_response
  proxy_on_context_create proxy_on_request_headers proxy_on_delete)
CARGO_TARGET_DIR="$ROOT/target/tools" cargo build --release --quiet --manifest-path "$ROOT/tools/wasm-trim/Cargo.toml"
"$ROOT/target/tools/release/wasm-trim" "$WASM_OUT" "$TRIMMED_OUT.tmp" "${KEEP_EXPORTS[@]}"
mv "$TRIMMED_OUT.tmp" "$TRIMMED_OUT"
log "wrote $TRIMMED_OUT ($(stat -c %s "$TRIMMED_OUT") bytes)"

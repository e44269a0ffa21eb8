#!/usr/bin/env bash
# Compiles Istio resources for jwt-claims-filter (tools/istio-envoy), building it first.
#
#   scripts/istio-envoy.sh [--emit envoy|istio] [--bind PORT=ADDR:PORT]... [--admin ADDR:PORT]
#                          [--wasm PATH] [--upstream HOST:PORT=ADDR:PORT]...
#                          [--tls-cert CREDENTIAL=CERT.pem,KEY.pem]... FILE|DIR...
#
# --emit envoy (default) writes an Envoy bootstrap to stdout; --emit istio writes manifests
# for a real ingress gateway. Unsupported input: exit 2 and a message naming the resource,
# the field and the reason.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BIN="$ROOT/target/tools/release/istio-envoy"
# Native build; quiet so that stdout stays the compiler's output.
CARGO_TARGET_DIR="$ROOT/target/tools" cargo build --release --quiet \
  --manifest-path "$ROOT/tools/istio-envoy/Cargo.toml" >&2
exec "$BIN" "$@"

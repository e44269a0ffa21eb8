#!/usr/bin/env bash
# Benchmarks the filter against Envoy's native jwt_authn, side by side (issue 5).
#
#   scripts/bench.sh                 RS256 + ES256 + EdDSA (+ PS256 distinct tokens only), ~35 minutes
#   scripts/bench.sh --quick         smoke check, ~8 minutes
#   scripts/bench.sh --alg RS256 --repeated-rounds 20 --duration 2 --rounds 3 --token-cache-size 1000 --rss-100k
#   scripts/bench.sh --help          every option
#   scripts/bench.sh --instructions  Envoy's instructions per request under callgrind instead
#                                    (steady on a busy machine; bench/instructions.py)
#
# Six configurations (no auth filter; native jwt_authn with and without jwt_cache_config; a
# no-op proxy-wasm filter, the floor any Wasm filter pays; the same module making only the
# host calls this filter's job takes, the floor of any Wasm filter doing it; this filter), each an
# Envoy with one worker on the same route and key set, alternate over the rounds; two workloads:
# one token repeated with wrk (every Envoy up at once, 10 rounds of 2 s loads in a shuffled
# order; and head to head: two Envoys on one core loaded at the same time, 12 generations of
# fresh processes, compared by requests per CPU-second), 20,000 distinct tokens each sent once
# over HTTP/1.1 (wrk with bench/distinct.lua, 16 connections) and over HTTP/2 (h2load, one
# connection with 16 streams), a fresh Envoy per run, 3 rounds. The
# medians go to stdout and to bench/latest.md as a markdown table with the machine and the
# date. bench/bench.py does the work; its docstring explains the choices. A run where any
# request failed or was not verified is reported as INVALID and the script exits 1.
#
# Installs wrk and h2load (nghttp2-client) with apt if they are missing. Uses the .venv and
# wasm/jwt_claims_filter.wasm as they are (setup.sh / build.sh only when missing). Builds the
# no-op/floor module (bench/noop-filter, its own crate) by build.sh's toolchain route into
# bench/.cache/noop_filter.wasm, again only when its sources changed. Everything it starts is
# stopped on exit, Ctrl-C or SIGTERM.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

case " $* " in
  *" -h "* | *" --help "*) ;;
  *)
    missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
    command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
    case " $* " in *" --instructions "*) command -v valgrind >/dev/null 2>&1 || missing+=(valgrind) ;; esac
    if [ "${#missing[@]}" -gt 0 ]; then
      sudo=""
      [ "$(id -u)" -eq 0 ] || sudo=sudo
      log "installing ${missing[*]} with apt"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import jwt, yaml, envoy' 2>/dev/null; then
      "$ROOT/scripts/setup.sh"
    fi
    if [ ! -f "$WASM_OUT" ]; then
      "$ROOT/scripts/build.sh"
    elif [ -n "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$WASM_OUT" -print -quit 2>/dev/null)" ]; then
      log "note: src/ changed after $WASM_OUT was built; run scripts/build.sh to measure the current code"
    fi
    # The no-op/floor module, unless --configs leaves both noop_wasm and floor_wasm out.
    configs=""
    prev=""
    for arg in "$@"; do
      [ "$prev" = --configs ] && configs="$arg"
      case "$arg" in --configs=*) configs="${arg#--configs=}" ;; esac
      prev="$arg"
    done
    case ",${configs:-noop_wasm}," in
      *,noop_wasm,* | *,floor_wasm,*)
        noop_src="$ROOT/bench/noop-filter"
        noop_wasm="$ROOT/bench/.cache/noop_filter.wasm"
        # What the module is built from ; the cached
        # build records the hash it was built at.
        noop_hash() {
          { (cd "$noop_src" && find Cargo.toml Cargo.lock src -type f 2>/dev/null | LC_ALL=C sort |
            xargs sha256sum); } | sha256sum | cut -d' ' -f1
        }
        if [ ! -f "$noop_wasm" ] || [ "$(cat "$noop_wasm.src-sha256" 2>/dev/null)" != "$(noop_hash)" ]; then
          log "building the no-op proxy-wasm filter (bench/noop-filter)"
          # The main target directory (the rustup route; the Debian route picks its own), so
          # that target_dir_for finds the artefact either way.
          CARGO_TARGET_DIR="$ROOT/target" cargo_for_target wasm32-wasip1 build --release --quiet \
            --manifest-path "$noop_src/Cargo.toml"
          mkdir -p "$(dirname "$noop_wasm")"
          # As cargo builds it, like the filter.
          cp "$(target_dir_for wasm32-wasip1)/release/noop_filter.wasm" "$noop_wasm.tmp"
          mv "$noop_wasm.tmp" "$noop_wasm"
          noop_hash >"$noop_wasm.src-sha256"
          log "wrote $noop_wasm ($(stat -c %s "$noop_wasm") bytes)"
        fi
        ;;
    esac
    ;;
esac

case " $* " in
  *" --instructions "*)
    args=()
    for arg in "$@"; do [ "$arg" = --instructions ] || args+=("$arg"); done
    exec "$VENV/bin/python" "$ROOT/bench/instructions.py" "${args[@]}"
    ;;
esac
exec "$VENV/bin/python" "$ROOT/bench/bench.py" "$@"

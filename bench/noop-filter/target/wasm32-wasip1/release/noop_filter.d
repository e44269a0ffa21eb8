/work/main/bench/noop-filter/target/wasm32-wasip1/release/noop_filter.wasm: /work/main/bench/noop-filter/src/../../../src/filter/root_entry.rs /work/main/bench/noop-filter/src/lib.rs

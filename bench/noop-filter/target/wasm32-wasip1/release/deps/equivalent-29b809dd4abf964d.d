/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/equivalent-29b809dd4abf964d.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs

/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/libequivalent-29b809dd4abf964d.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs

/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/libequivalent-29b809dd4abf964d.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs:

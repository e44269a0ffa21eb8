/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/equivalent-8fa672954a0cc813.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs

/work/main/bench/noop-filter/target/wasm32-wasip1/release/deps/libequivalent-8fa672954a0cc813.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/equivalent-1.0.3/src/lib.rs:

//! The plugin, its request path and its key lifecycle, driven natively through a fake host
//! (`fake.rs`): cold start, key rotation, workers sharing one key record, OpenID discovery,
//! backoff, deadlines, clients that leave, configurations that are replaced.

// A test crate: its helpers may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod fake;
mod keys;

mod backoff;
mod client_leaves;
mod cold_start;
mod deadlines;
mod discovery;
mod reconfigure;
mod rotation;
mod tick_starvation;
mod workers;

//! A proxy-wasm HTTP filter that does nothing, entered by the host exactly as the real filter
//! is: the SDK runs its root context, created by the module's own `proxy_on_vm_start` and
//! `proxy_on_configure`, and a stream's one entry point is the module's own
//! `proxy_on_request_headers` (no `proxy_on_context_create`, no per-stream context, no
//! `proxy_on_delete`; see src/filter/streams.rs). scripts/bench.sh trims and
//! renames its exports like the filter's (scripts/wasm-exports.py), so this is the floor any
//! proxy-wasm filter that handles request headers pays per request. Built and loaded by
//! scripts/bench.sh ("noop_wasm").

use proxy_wasm::traits::{Context, RootContext};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {}

// The filter's own root entry points, the same file (`proxy_on_vm_start` and
// `proxy_on_configure` create the SDK's root context; no `proxy_on_context_create`).
#[path = "../../../src/filter/root_entry.rs"]
mod root_entry;

/// `proxy_on_request_headers` once renamed: continue.
#[no_mangle]
pub extern "C" fn jcf_on_request_headers(_context_id: u32, _num_headers: u32, _end_of_stream: u32) -> u32 {
    0
}

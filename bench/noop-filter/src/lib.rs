//! A proxy-wasm HTTP filter that does nothing, entered by the host exactly as the real filter
//! is: the SDK runs its root context, and the stream entry points are the module's own
//! (`proxy_on_context_create` for a stream and `proxy_on_request_headers` only, no per-stream
//! context, no `proxy_on_delete`; see src/filter/streams.rs). scripts/bench.sh trims and
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

extern "C" {
    #[link_name = "proxy_on_context_create"]
    fn sdk_on_context_create(context_id: u32, root_context_id: u32);
}

/// `proxy_on_context_create` once renamed: roots go to the SDK, streams need nothing.
#[no_mangle]
pub extern "C" fn jcf_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        // SAFETY: the SDK's own export with the ABI's signature, called as the host would.
        unsafe { sdk_on_context_create(context_id, 0) };
    }
}

/// `proxy_on_request_headers` once renamed: continue.
#[no_mangle]
pub extern "C" fn jcf_on_request_headers(_context_id: u32, _num_headers: u32, _end_of_stream: u32) -> u32 {
    0
}

//! Two floors for the benchmark, one module, entered by the host exactly as the real filter
//! is: the SDK runs its root context, created by the module's own `proxy_on_vm_start` and
//! `proxy_on_configure`, and a stream's one entry point is the module's own
//! `proxy_on_request_headers` (no `proxy_on_context_create`, no per-stream context, no
//! `proxy_on_delete`; see src/filter/streams.rs). scripts/bench.sh trims and renames its
//! exports like the filter's (scripts/wasm-exports.py).
//!
//! - Configured with anything else than `rewrite-headers` ("noop_wasm"): it does nothing, the
//!   floor any proxy-wasm filter that handles request headers pays per request.
//! - Configured with `rewrite-headers` ("floor_wasm"): it makes the host calls the filter's
//!   job takes on a cached token, and nothing else: it reads every request header in one call
//!   (as the filter does, for the token and the `x-jwt-claim` family), removes
//!   `authorization` (`forwardOriginalToken: false`) and adds `x-jwt-claim.groups` with the
//!   bench tokens' value. No token is looked at: this is the floor of any proxy-wasm filter
//!   doing that job, and the filter's own work is what it measures above it.

use std::cell::Cell;

use proxy_wasm::traits::{Context, RootContext};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

thread_local! {
    /// Configured with `rewrite-headers`.
    static REWRITE_HEADERS: Cell<bool> = const { Cell::new(false) };
}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let configuration = self.get_plugin_configuration().unwrap_or_default();
        REWRITE_HEADERS.with(|mode| mode.set(configuration.trim_ascii() == b"rewrite-headers"));
        true
    }
}

// The filter's own root entry points, the same file (`proxy_on_vm_start` and
// `proxy_on_configure` create the SDK's root context; no `proxy_on_context_create`).
#[path = "../../../src/filter/root_entry.rs"]
mod root_entry;

// The filter's own read of the request headers (and the allocator it lends its buffer through).
#[path = "../../../src/filter/request_headers.rs"]
mod request_headers;

#[link(wasm_import_module = "env")]
extern "C" {
    // The ABI's (0.2.1) calls.
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

const REQUEST_HEADERS: u32 = 0;

/// `proxy_on_request_headers` once renamed: continue, after the rewrite when configured so.
#[no_mangle]
pub extern "C" fn jcf_on_request_headers(_context_id: u32, _num_headers: u32, _end_of_stream: u32) -> u32 {
    if REWRITE_HEADERS.with(Cell::get) {
        rewrite_headers();
    }
    0
}

fn rewrite_headers() {
    const TOKEN_HEADER: &[u8] = b"authorization";
    const CLAIM_HEADER: &[u8] = b"x-jwt-claim.groups";
    const CLAIM_VALUE: &[u8] = b"group1,group2";
    // Read as the filter reads them, and not looked at.
    request_headers::with_request_header_buffer(|_| ());
    // SAFETY: the host only reads the slices passed.
    unsafe {
        proxy_remove_header_map_value(REQUEST_HEADERS, TOKEN_HEADER.as_ptr(), TOKEN_HEADER.len());
        proxy_add_header_map_value(
            REQUEST_HEADERS,
            CLAIM_HEADER.as_ptr(),
            CLAIM_HEADER.len(),
            CLAIM_VALUE.as_ptr(),
            CLAIM_VALUE.len(),
        );
    }
}

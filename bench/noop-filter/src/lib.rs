//! Two floors for the benchmark, one module, in the standard proxy-wasm shape the filter has:
//! the SDK's root context creates one HTTP context per stream.
//!
//! - Configured with anything else than `rewrite-headers` ("noop_wasm"): it does nothing, the
//!   floor any proxy-wasm filter that handles request headers pays per request.
//! - Configured with `rewrite-headers` ("floor_wasm"): it makes the host calls the filter's
//!   job takes on a cached token, and nothing else: it reads every request header in one call
//!   (as the filter does, for the token and the `x-jwt-claim` family), removes
//!   `authorization` (`forwardOriginalToken: false`) and adds `x-jwt-claim.groups` with the
//!   bench tokens' value. No token is looked at: this is the floor of any proxy-wasm filter
//!   doing that job, and the filter's own work is what it measures above it.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { rewrite_headers: false }) });
}}

struct NoopRoot {
    /// Configured with `rewrite-headers`.
    rewrite_headers: bool,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let configuration = self.get_plugin_configuration().unwrap_or_default();
        self.rewrite_headers = configuration.trim_ascii() == b"rewrite-headers";
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopStream { rewrite_headers: self.rewrite_headers }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct NoopStream {
    rewrite_headers: bool,
}

impl Context for NoopStream {}

impl HttpContext for NoopStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.rewrite_headers {
            rewrite_headers();
        }
        Action::Continue
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    // The ABI's (0.2.1) calls, as the filter makes them (src/filter/abi.rs).
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
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

fn rewrite_headers() {
    const TOKEN_HEADER: &[u8] = b"authorization";
    const CLAIM_HEADER: &[u8] = b"x-jwt-claim.groups";
    const CLAIM_VALUE: &[u8] = b"group1,group2";
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated through the module (the SDK's allocator:
    // exactly `size` bytes), taken and freed as the SDK's own readers do; the other calls
    // only read the slices passed.
    unsafe {
        // Read as the filter reads them, and not looked at.
        if proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) == 0 && !data.is_null() {
            drop(Vec::from_raw_parts(data, size, size));
        }
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

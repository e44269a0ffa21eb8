//! A proxy-wasm HTTP filter that does nothing: every callback keeps the SDK's default
//! (Continue), and on_http_request_headers says so explicitly. Envoy still creates a context
//! per stream and calls into the VM for each callback the module exports: scripts/bench.sh
//! trims its exports to the filter's (scripts/wasm-exports.py), so this is the floor any
//! proxy-wasm filter that handles request headers pays per request. Built and loaded by
//! scripts/bench.sh ("noop_wasm").

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}

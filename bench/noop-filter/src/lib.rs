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

use std::cell::RefCell;

extern "C" {
    #[link_name = "proxy_on_context_create"]
    fn sdk_on_context_create(context_id: u32, root_context_id: u32);
    #[link_name = "proxy_on_vm_start"]
    fn sdk_on_vm_start(context_id: u32, vm_configuration_size: usize) -> bool;
    #[link_name = "proxy_on_configure"]
    fn sdk_on_configure(context_id: u32, plugin_configuration_size: usize) -> bool;
}

thread_local! {
    static SDK_ROOTS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// The SDK's root context for `root_context_id`, created the first time the host names it.
fn ensure_root(root_context_id: u32) {
    let created = SDK_ROOTS.with(|roots| {
        let mut roots = roots.borrow_mut();
        !roots.contains(&root_context_id) && {
            roots.push(root_context_id);
            true
        }
    });
    if created {
        // SAFETY: the SDK's own export with the ABI's signature, called as the host would.
        unsafe { sdk_on_context_create(root_context_id, 0) };
    }
}

/// `proxy_on_vm_start` once renamed.
#[no_mangle]
pub extern "C" fn jcf_on_vm_start(root_context_id: u32, vm_configuration_size: usize) -> bool {
    ensure_root(root_context_id);
    // SAFETY: as in `ensure_root`.
    unsafe { sdk_on_vm_start(root_context_id, vm_configuration_size) }
}

/// `proxy_on_configure` once renamed.
#[no_mangle]
pub extern "C" fn jcf_on_configure(root_context_id: u32, plugin_configuration_size: usize) -> bool {
    ensure_root(root_context_id);
    // SAFETY: as in `ensure_root`.
    unsafe { sdk_on_configure(root_context_id, plugin_configuration_size) }
}

/// `proxy_on_request_headers` once renamed: continue.
#[no_mangle]
pub extern "C" fn jcf_on_request_headers(_context_id: u32, _num_headers: u32, _end_of_stream: u32) -> u32 {
    0
}

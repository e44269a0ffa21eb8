//! How the host enters a root context: `proxy_on_vm_start` and `proxy_on_configure`, renamed
//! into place by scripts/wasm-exports.py. The module does not export `proxy_on_context_create`
//! (the host would enter the VM for it on every stream, see streams.rs), so the host starts
//! and configures a root without announcing it: the first of those callbacks creates the SDK's
//! root context, then hands over to the SDK, which drives configuration, ticks and fetch
//! responses. Self-contained: bench/noop-filter includes this file too, so the floor it
//! measures is entered exactly as the filter is.

use std::cell::RefCell;

extern "C" {
    // The SDK's exports (`#[no_mangle]` in the proxy-wasm crate); the linker resolves them,
    // no import is left in the module.
    #[link_name = "proxy_on_context_create"]
    fn sdk_on_context_create(context_id: u32, root_context_id: u32);
    #[link_name = "proxy_on_vm_start"]
    fn sdk_on_vm_start(context_id: u32, vm_configuration_size: usize) -> bool;
    #[link_name = "proxy_on_configure"]
    fn sdk_on_configure(context_id: u32, plugin_configuration_size: usize) -> bool;
}

thread_local! {
    /// Root contexts created in the SDK, configured or not.
    static SDK_ROOTS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Creates the SDK's root context for `root_context_id` the first time the host names it.
fn ensure_root(root_context_id: u32) {
    let created = SDK_ROOTS.with(|roots| match roots.try_borrow_mut() {
        Ok(mut roots) if !roots.contains(&root_context_id) => {
            roots.push(root_context_id);
            true
        }
        _ => false,
    });
    if created {
        // SAFETY: the SDK's own export with the ABI's signature, called as the host would.
        unsafe { sdk_on_context_create(root_context_id, 0) };
    }
}

/// `proxy_on_vm_start`, after scripts/wasm-exports.py renames it.
#[no_mangle]
pub extern "C" fn jcf_on_vm_start(root_context_id: u32, vm_configuration_size: usize) -> bool {
    ensure_root(root_context_id);
    // SAFETY: as in `ensure_root`.
    unsafe { sdk_on_vm_start(root_context_id, vm_configuration_size) }
}

/// `proxy_on_configure`, after scripts/wasm-exports.py renames it.
#[no_mangle]
pub extern "C" fn jcf_on_configure(root_context_id: u32, plugin_configuration_size: usize) -> bool {
    ensure_root(root_context_id);
    // SAFETY: as in `ensure_root`.
    unsafe { sdk_on_configure(root_context_id, plugin_configuration_size) }
}

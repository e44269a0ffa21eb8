//! The request path's entry points from the host, in place of the SDK's per-stream contexts.
//!
//! The SDK gives every stream a boxed context: created when the host calls
//! `proxy_on_context_create`, looked up on each callback, freed on `proxy_on_delete`. This
//! filter keeps nothing per stream (a paused request lives in its plugin's waiting list), and
//! every call is an entry into the VM that the host pays for on every request: about 1,500
//! host instructions for the delete alone, and 2,300 with the SDK's bookkeeping (callgrind,
//! `scripts/bench.sh --instructions`); in CPU time the host's calls into V8 cost more than
//! their instructions suggest (3.6 µs per request in an A/B, README "Performance").
//!
//! So the module handles streams itself. `jcf_on_context_create` and
//! `jcf_on_request_headers` are exported and renamed into place by scripts/wasm-exports.py
//! (the SDK's own exports of those names are dropped), and `proxy_on_delete` is not exported
//! at all. What that takes:
//! - A stream's root. The host creates a stream's context right before it calls the request
//!   headers callback (Envoy's `Context::decodeHeaders` does both, back to back), so the
//!   last creation names the root of the request whose headers arrive. Several roots share a
//!   VM when several configurations of the filter use it (two filters in one chain, or the
//!   old and new configuration during an update), each stream then meets its own.
//! - Root contexts still go through the SDK, which drives configuration, ticks and fetch
//!   responses: a root creation is forwarded to the SDK's `proxy_on_context_create`.
//! - Without `proxy_on_delete`, nobody says when a root is gone. Its plugin is freed when
//!   another root's tick finds the host no longer knows its context id ([`forget_gone_roots`]).
//!   A paused request whose stream is gone is dropped when it is woken (the host refuses its
//!   context id) or at its deadline.

use std::cell::{Cell, RefCell};

use proxy_wasm::hostcalls;
use proxy_wasm::types::Action;

use super::SharedPlugin;

extern "C" {
    /// The SDK's export, called for root contexts only. Defined by the proxy-wasm crate
    /// (`#[no_mangle]`); the linker resolves it, no import is left in the module.
    #[link_name = "proxy_on_context_create"]
    fn sdk_on_context_create(context_id: u32, root_context_id: u32);
}

thread_local! {
    /// Every configured root context of this VM and its plugin.
    static PLUGINS: RefCell<Vec<(u32, SharedPlugin)>> = const { RefCell::new(Vec::new()) };
    /// The stream context created last, and its root context.
    static LAST_CREATED: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

/// `proxy_on_context_create`, after scripts/wasm-exports.py renames it.
#[no_mangle]
pub extern "C" fn jcf_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        // SAFETY: the SDK's own export with the ABI's signature, called as the host would.
        unsafe { sdk_on_context_create(context_id, 0) };
    } else {
        LAST_CREATED.with(|last| last.set((context_id, root_context_id)));
    }
}

/// `proxy_on_request_headers`, after scripts/wasm-exports.py renames it.
#[no_mangle]
pub extern "C" fn jcf_on_request_headers(context_id: u32, _num_headers: u32, _end_of_stream: u32) -> u32 {
    let action = match plugin_of_stream(context_id) {
        Some(plugin) => match plugin.try_borrow_mut() {
            Ok(mut plugin) => plugin.on_request(context_id),
            Err(_) => {
                // Cannot happen (one thread, no re-entry); fail closed if it ever does.
                let _ = hostcalls::send_http_response(500, vec![], Some(b"jwt filter busy\n"));
                Action::Pause
            }
        },
        None => {
            // A root whose configuration was rejected has no plugin, and Envoy does not run a
            // filter whose configuration failed; fail closed rather than let a request pass
            // unchecked if it ever does.
            log::error!("request {context_id}: no configured filter for it; answering 500");
            let _ = hostcalls::send_http_response(500, vec![], Some(b"jwt filter not configured\n"));
            Action::Pause
        }
    };
    // The SDK's enum is the ABI's value (`repr(u32)`).
    action as u32
}

/// The plugin of the root that created `context_id`. Should the creation not be the last one
/// (no host does that today), a VM with one configuration still has one answer.
fn plugin_of_stream(context_id: u32) -> Option<SharedPlugin> {
    let (created, root) = LAST_CREATED.with(Cell::get);
    if created == context_id {
        return plugin_of_root(root);
    }
    PLUGINS.with(|plugins| match plugins.try_borrow().ok()?.as_slice() {
        [(_, only)] => Some(only.clone()),
        _ => None,
    })
}

/// The plugin of a root context, if it is configured.
pub(super) fn plugin_of_root(root_context_id: u32) -> Option<SharedPlugin> {
    PLUGINS.with(|plugins| {
        let plugins = plugins.try_borrow().ok()?;
        plugins.iter().find(|(id, _)| *id == root_context_id).map(|(_, plugin)| plugin.clone())
    })
}

/// Registers (or replaces) a root context's plugin.
pub(super) fn set_plugin(root_context_id: u32, plugin: SharedPlugin) {
    PLUGINS.with(|plugins| {
        if let Ok(mut plugins) = plugins.try_borrow_mut() {
            plugins.retain(|(id, _)| *id != root_context_id);
            plugins.push((root_context_id, plugin));
        }
    });
}

/// Frees the plugins of root contexts the host has deleted (a configuration that was
/// replaced or removed): the host refuses to make a deleted context effective. Called in
/// `current`'s tick, which is made effective again afterwards.
pub(super) fn forget_gone_roots(current: u32) {
    PLUGINS.with(|plugins| {
        let Ok(mut plugins) = plugins.try_borrow_mut() else { return };
        if plugins.len() < 2 {
            return; // one configuration (the usual case): nothing to ask the host
        }
        plugins.retain(|(id, _)| {
            let alive = *id == current || hostcalls::set_effective_context(*id).is_ok();
            if !alive {
                log::info!("jwt-claims-filter: root context {id} is gone (configuration replaced or removed); its state is freed");
            }
            alive
        });
        let _ = hostcalls::set_effective_context(current);
    });
}

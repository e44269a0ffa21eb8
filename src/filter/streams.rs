//! The request path's entry points from the host, in place of the SDK's per-stream contexts.
//!
//! The SDK gives every stream a boxed context: created when the host calls
//! `proxy_on_context_create`, looked up on each callback, freed on `proxy_on_delete`. This
//! filter keeps nothing per stream (a paused request lives in its plugin's waiting list), and
//! every export is an entry into the VM that the host makes for every stream: 1,300 to 1,900
//! host instructions each (callgrind, `scripts/bench.sh --instructions`), and in CPU time the
//! host's calls into V8 cost more than their instructions suggest (README "Performance").
//!
//! So the module exports neither `proxy_on_context_create` nor `proxy_on_delete`: a request
//! costs the host one entry, `proxy_on_request_headers`. `jcf_on_request_headers` here (and
//! root_entry.rs's `jcf_on_vm_start` and `jcf_on_configure`) are exported and renamed into
//! place by scripts/wasm-exports.py (the SDK's own exports of those names are dropped). What
//! that takes:
//! - Root contexts, created when the host first starts or configures them (root_entry.rs).
//! - A stream's configuration. With one configuration in the VM (the usual case) it is that
//!   one. Several configurations share a VM when several filters with the same `vm_config`
//!   are in use (two in one chain, or the old and the new configuration while a listener or
//!   filter configuration is updated); then the stream's plugin name (a host property, one
//!   more host call for such VMs only) picks the newest configuration of that name. Filters
//!   that share a VM at the same time need distinct names (`config.name`, as Istio gives each
//!   WasmPlugin); of two with one name, the later configured serves both, which is what an
//!   update wants.
//! - Without `proxy_on_delete`, nobody says when a root is gone. Its plugin is freed when
//!   another root's tick finds the host no longer knows its context id ([`forget_gone_roots`]).
//!   A paused request whose stream is gone is dropped when it is woken (the host refuses its
//!   context id) or at its deadline.

use std::cell::RefCell;

use proxy_wasm::types::Action;

use super::{host, Plugin, SharedPlugin};

/// A configured root context of this VM.
struct ConfiguredRoot {
    context_id: u32,
    /// The host's `plugin_name` for it; `None` if the host would not say.
    plugin_name: Option<Vec<u8>>,
    plugin: SharedPlugin,
}

thread_local! {
    /// Every configured root context of this VM, oldest first.
    static PLUGINS: RefCell<Vec<ConfiguredRoot>> = const { RefCell::new(Vec::new()) };
}

/// `proxy_on_request_headers`, after scripts/wasm-exports.py renames it.
#[no_mangle]
pub extern "C" fn jcf_on_request_headers(context_id: u32, _num_headers: u32, _end_of_stream: u32) -> u32 {
    // One configuration in the VM (the usual case): the stream's, without asking the host,
    // and used in place (the registry is only changed when a root is configured or ticks,
    // never during a request).
    let only = PLUGINS.with(|plugins| {
        let plugins = plugins.try_borrow().ok()?;
        let [only] = plugins.as_slice() else { return None };
        Some(on_request(&only.plugin, context_id))
    });
    let action = match only {
        Some(action) => action,
        None => match plugin_of_named_stream() {
            Some(plugin) => on_request(&plugin, context_id),
            // A root whose configuration was rejected has no plugin, and Envoy does not run a
            // filter whose configuration failed; fail closed rather than let a request pass
            // unchecked if it ever does.
            None => fail_closed(context_id, "jwt filter not configured\n"),
        },
    };
    // The SDK's enum is the ABI's value (`repr(u32)`).
    action as u32
}

fn on_request(plugin: &RefCell<Plugin>, context_id: u32) -> Action {
    match plugin.try_borrow_mut() {
        Ok(mut plugin) => plugin.on_request(context_id),
        // Cannot happen (one thread, no re-entry); fail closed if it ever does.
        Err(_) => fail_closed(context_id, "jwt filter busy\n"),
    }
}

/// Answers 500 to a request the filter cannot decide (out of line: the request path's code
/// is fetched again on every request, README "Performance").
#[cold]
#[inline(never)]
fn fail_closed(context_id: u32, why: &str) -> Action {
    log::error!("request {context_id}: {}; answering 500", why.trim_end());
    let _ = host::send_response(500, &[], why.as_bytes());
    Action::Pause
}

/// The plugin of the stream whose callback is running, among several configurations in the
/// VM: the newest whose plugin name is the stream's (out of line: most VMs have one).
#[inline(never)]
fn plugin_of_named_stream() -> Option<SharedPlugin> {
    let name = effective_plugin_name()?;
    PLUGINS.with(|plugins| {
        let plugins = plugins.try_borrow().ok()?;
        plugins.iter().rev().find(|root| root.plugin_name.as_ref() == Some(&name)).map(|root| root.plugin.clone())
    })
}

/// The host's `plugin_name` for the effective context, root or stream (Envoy: the filter's
/// `config.name`).
pub(super) fn effective_plugin_name() -> Option<Vec<u8>> {
    host::property(&["plugin_name"]).ok().flatten()
}

/// The plugin of a root context, if it is configured.
pub(super) fn plugin_of_root(root_context_id: u32) -> Option<SharedPlugin> {
    PLUGINS.with(|plugins| {
        let plugins = plugins.try_borrow().ok()?;
        plugins.iter().find(|root| root.context_id == root_context_id).map(|root| root.plugin.clone())
    })
}

/// Registers (or replaces) a root context's plugin, as the newest; `plugin_name` is the
/// host's for that root. Says which other configured root has the same name, if one does.
pub(super) fn set_plugin(root_context_id: u32, plugin_name: Option<Vec<u8>>, plugin: SharedPlugin) -> Option<u32> {
    PLUGINS.with(|plugins| {
        let mut plugins = plugins.try_borrow_mut().ok()?;
        plugins.retain(|root| root.context_id != root_context_id);
        let same_name = plugins
            .iter()
            .rev()
            .find(|root| root.plugin_name.is_some() && root.plugin_name == plugin_name)
            .map(|r| r.context_id);
        plugins.push(ConfiguredRoot { context_id: root_context_id, plugin_name, plugin });
        same_name
    })
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
        plugins.retain(|root| {
            let id = root.context_id;
            let alive = id == current || host::set_effective_context(id).is_ok();
            if !alive {
                log::info!("jwt-claims-filter: root context {id} is gone (configuration replaced or removed); its state is freed");
                if let Ok(mut plugin) = root.plugin.try_borrow_mut() {
                    let now_ms = plugin.clock.read();
                    plugin.abandon_fetches(now_ms);
                }
            }
            alive
        });
        let _ = host::set_effective_context(current);
    });
}

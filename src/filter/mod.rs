//! The SDK's contexts, as the proxy-wasm Rust SDK designs them: one root context per filter
//! configuration, which configures its [`Plugin`] and drives time, and one small HTTP
//! context per stream, created by its root and holding that root's plugin. Thin: every
//! decision is the plugin's, and every host call goes through [`abi::ProxyWasm`].

mod abi;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};

use crate::config::FilterConfig;
use crate::host::Host;
use crate::plugin::{Flow, Plugin};

use abi::ProxyWasm;

type SharedPlugin = Rc<RefCell<Plugin<ProxyWasm>>>;

proxy_wasm::main! {{
    // Host calls are not allowed here; on_vm_start takes Envoy's log level.
    abi::install_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(PluginRoot { context_id, plugin: None }));
}}

/// A filter configuration's root context.
struct PluginRoot {
    context_id: u32,
    /// `None` until configured (and if the configuration was refused).
    plugin: Option<SharedPlugin>,
}

impl PluginRoot {
    /// Runs `f` on the plugin, unless there is none or it is in use (it never is: one thread,
    /// and the host does not re-enter the VM during a callback).
    fn with_plugin(&self, f: impl FnOnce(&mut Plugin<ProxyWasm>)) {
        if let Some(plugin) = &self.plugin {
            if let Ok(mut plugin) = plugin.try_borrow_mut() {
                f(&mut plugin);
            }
        }
    }
}

impl Context for PluginRoot {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        let root = self.context_id;
        self.with_plugin(|plugin| plugin.on_fetch_response(root, token_id, num_headers, body_size));
    }

}

/// The host deleted the root (its configuration was replaced or removed; the SDK drops it in
/// `proxy_on_delete`, so no `proxy_on_done` is needed): its fetches in flight will not answer,
/// so their leases end now and the configuration replacing it fetches at once.
impl Drop for PluginRoot {
    fn drop(&mut self) {
        log::info!(
            "jwt-claims-filter: root context {} is gone (configuration replaced or removed); its state is freed",
            self.context_id
        );
        self.with_plugin(|plugin| plugin.abandon_fetches());
    }
}

impl RootContext for PluginRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // Let Envoy's log level decide: nothing is formatted that Envoy would drop.
        if let Ok(level) = abi::log_level() {
            log::set_max_level(level);
        }
        log::info!("jwt-claims-filter {} starting", env!("CARGO_PKG_VERSION"));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match abi::buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!("jwt-claims-filter: cannot read the plugin configuration ({status})");
                return false;
            }
        };
        let config = match FilterConfig::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("jwt-claims-filter: invalid {e}");
                return false;
            }
        };
        if let Some(older) = self.plugin.take() {
            // Reconfigured in place: the old plugin's fetches will not be answered to it.
            if let Ok(mut older) = older.try_borrow_mut() {
                older.abandon_fetches();
            }
        }
        self.plugin = Some(Rc::new(RefCell::new(Plugin::new(ProxyWasm, config, self.context_id))));
        let name = abi::plugin_name().unwrap_or_default();
        log::info!("jwt-claims-filter configured (root context {}, plugin name '{name}')", self.context_id);
        true
    }

    fn on_tick(&mut self) {
        let root = self.context_id;
        self.with_plugin(|plugin| plugin.on_tick(root));
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestContext { context_id, plugin: self.plugin.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One stream: its root's plugin decides its request.
struct RequestContext {
    context_id: u32,
    /// `None` when the root has no configuration (Envoy does not run a filter whose
    /// configuration failed; if it ever does, the request is refused).
    plugin: Option<SharedPlugin>,
}

impl Context for RequestContext {}

/// The stream ended (the SDK drops its context in `proxy_on_delete`): if its request was still
/// waiting for keys, nobody needs the answer.
impl Drop for RequestContext {
    fn drop(&mut self) {
        if let Some(Ok(mut plugin)) = self.plugin.as_ref().map(|p| p.try_borrow_mut()) {
            plugin.forget_request(self.context_id);
        }
    }
}

impl HttpContext for RequestContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let flow = match self.plugin.as_ref().map(|p| p.try_borrow_mut()) {
            Some(Ok(mut plugin)) => plugin.on_request(self.context_id),
            // Not configured, or (cannot happen: one thread, no re-entry) in use: fail closed.
            _ => fail_closed(self.context_id),
        };
        match flow {
            Flow::Continue => Action::Continue,
            Flow::Pause => Action::Pause,
        }
    }
}

/// Answers 500 to a request the filter cannot decide.
#[cold]
fn fail_closed(context_id: u32) -> Flow {
    log::error!("request {context_id}: jwt filter not configured; answering 500");
    ProxyWasm.send_response(500, &[], b"jwt filter not configured\n");
    Flow::Pause
}

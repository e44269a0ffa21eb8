//! The only module that talks to the proxy-wasm host.
//!
//! One [`Plugin`] per VM (one per Envoy worker) holds the validated configuration, each remote
//! rule's [`KeyCache`] and the requests paused while keys are fetched. The root context owns
//! it, configures it and drives time (`on_tick`: scheduled refreshes, retries, deadlines);
//! each request's [`RequestContext`] is a thin shell that hands its headers to the plugin and
//! applies the verdict.
//!
//! Host calls go through `hostcalls` on the *effective* context, so the same code serves a
//! request in its own callback and a paused request resumed from a fetch callback (after
//! `set_effective_context`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use crate::authn::{authenticate, challenge, realm, KeyWait, KeysFor, Verdict};
use crate::config::{FilterConfig, HttpUri, KeySource, RemoteJwks};
use crate::extract::{find_tokens, is_owned_header, FoundToken};
use crate::jwks::KeySet;
use crate::keycache::{Availability, KeyCache};
use crate::verify::Rejection;

/// A JWKS or discovery document larger than this is a failed fetch, not something to parse.
const MAX_FETCH_BODY_BYTES: usize = 256 * 1024;
const TICK_PERIOD: Duration = Duration::from_millis(500);

proxy_wasm::main! {{
    // Host calls are not allowed here; on_vm_start takes Envoy's log level.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(PluginRoot { context_id, plugin: None }));
}}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters in Envoy's stats (`wasmcustom.jwt_claims_filter.*`). Defined by name in every
/// VM; Envoy keeps one counter per name, so the workers' counts add up.
struct Metrics {
    fetch_success: Option<u32>,
    fetch_failure: Option<u32>,
    unknown_kid_refetch: Option<u32>,
    allowed: Option<u32>,
    denied: Vec<(Rejection, Option<u32>)>,
}

impl Metrics {
    fn define() -> Metrics {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, &format!("jwt_claims_filter.{name}")).ok();
        Metrics {
            fetch_success: counter("jwks_fetch_success"),
            fetch_failure: counter("jwks_fetch_failure"),
            unknown_kid_refetch: counter("jwks_unknown_kid_refetch"),
            allowed: counter("requests_allowed"),
            denied: Rejection::ALL.iter().map(|r| (*r, counter(&format!("requests_denied.{}", r.reason())))).collect(),
        }
    }

    fn bump(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn denied(&self, rejection: Rejection) {
        Metrics::bump(self.denied.iter().find(|(r, _)| *r == rejection).and_then(|(_, id)| *id));
    }
}

/// A dispatched fetch: for which rule, and whether it asks for the discovery document.
#[derive(Clone, Copy)]
struct Fetch {
    rule: usize,
    discovery: bool,
}

/// A request paused until keys arrive, with what is needed to decide it again.
struct WaitingRequest {
    context_id: u32,
    found: Vec<FoundToken>,
    path: String,
    realm: String,
    deadline_ms: u64,
}

struct Plugin {
    config: FilterConfig,
    /// Per rule; `None` for rules with inline keys.
    caches: Vec<Option<KeyCache>>,
    /// Per rule: the `jwks_uri` an OpenID discovery document named.
    discovered: Vec<Option<HttpUri>>,
    fetches: HashMap<u32, Fetch>,
    waiting: Vec<WaitingRequest>,
    metrics: Metrics,
}

type SharedPlugin = Rc<RefCell<Plugin>>;

impl Plugin {
    fn new(config: FilterConfig) -> Plugin {
        let caches = config
            .rules
            .iter()
            .map(|rule| match rule.keys {
                KeySource::Remote(_) => Some(KeyCache::new(rule.jwks_cache_duration, rule.jwks_min_refetch_interval)),
                KeySource::Inline(_) => None,
            })
            .collect();
        let discovered = vec![None; config.rules.len()];
        Plugin { config, caches, discovered, fetches: HashMap::new(), waiting: Vec::new(), metrics: Metrics::define() }
    }

    /// The verdict for a request's tokens with the keys held now.
    fn decide(&self, found: &[FoundToken], path: &str, now_ms: u64) -> Verdict {
        let keys = |rule: usize| -> KeysFor<'_> {
            match (self.config.rules.get(rule).map(|r| &r.keys), self.caches.get(rule)) {
                (Some(KeySource::Inline(keys)), _) => KeysFor::Ready { keys, may_refetch: false },
                (_, Some(Some(cache))) => match cache.availability(now_ms) {
                    Availability::Keys(keys) => {
                        KeysFor::Ready { keys, may_refetch: cache.may_refetch_for_unknown_kid(now_ms) }
                    }
                    Availability::Pending => KeysFor::Pending,
                    Availability::Unavailable => KeysFor::Unavailable,
                },
                _ => KeysFor::Unavailable,
            }
        };
        authenticate(&self.config, found, &keys, path, now_ms / 1000)
    }

    /// Decides, starting the fetches a wait needs. A wait with no fetch in flight (the
    /// dispatch failed at once) is decided again, which then answers from the cache state.
    fn resolve(&mut self, found: &[FoundToken], path: &str, now_ms: u64) -> Verdict {
        let mut verdict = self.decide(found, path, now_ms);
        for _ in 0..2 {
            let Verdict::AwaitKeys(waits) = &verdict else { return verdict };
            for wait in waits.clone() {
                self.start_fetch_for(wait, now_ms);
            }
            let all_in_flight = waits.iter().all(|w| self.cache(rule_of(*w)).is_some_and(KeyCache::is_fetching));
            if all_in_flight {
                return verdict;
            }
            verdict = self.decide(found, path, now_ms);
        }
        verdict
    }

    fn cache(&self, rule: usize) -> Option<&KeyCache> {
        self.caches.get(rule).and_then(Option::as_ref)
    }

    fn start_fetch_for(&mut self, wait: KeyWait, now_ms: u64) {
        match wait {
            KeyWait::FirstKeys(rule) => {
                if self.cache(rule).is_some_and(|c| c.fetch_due(now_ms)) {
                    self.start_fetch(rule, now_ms);
                }
            }
            KeyWait::UnknownKid(rule) => {
                let start = self.caches.get_mut(rule).and_then(Option::as_mut).is_some_and(|c| c.note_unknown_kid_refetch(now_ms));
                if start {
                    Metrics::bump(self.metrics.unknown_kid_refetch);
                    log::info!("jwks: unknown kid for rule {rule}, refetching");
                    self.start_fetch(rule, now_ms);
                }
            }
        }
    }

    /// Dispatches the next fetch for a rule: the JWKS, or first the discovery document.
    fn start_fetch(&mut self, rule_index: usize, now_ms: u64) {
        let Some(rule) = self.config.rules.get(rule_index) else { return };
        let KeySource::Remote(remote) = &rule.keys else { return };
        let (uri, cluster, discovery) = match (remote.discovery, self.discovered.get(rule_index).cloned().flatten()) {
            (true, Some(jwks_uri)) => {
                let cluster = jwks_cluster_for(remote, &jwks_uri);
                (jwks_uri, cluster, false)
            }
            (true, None) => (remote.uri.clone(), remote.cluster.clone(), true),
            (false, _) => (remote.uri.clone(), remote.cluster.clone(), false),
        };
        let headers = vec![
            (":method", "GET"),
            (":path", uri.path.as_str()),
            (":authority", uri.authority.as_str()),
            (":scheme", uri.scheme.as_str()),
            ("accept", "application/json"),
        ];
        match hostcalls::dispatch_http_call(&cluster, headers, None, vec![], rule.timeout) {
            Ok(token) => {
                log::debug!("jwks: fetching {}://{}{} via cluster {cluster}", uri.scheme, uri.authority, uri.path);
                self.fetches.insert(token, Fetch { rule: rule_index, discovery });
                if let Some(cache) = self.caches.get_mut(rule_index).and_then(Option::as_mut) {
                    cache.fetch_started(now_ms);
                }
            }
            Err(status) => {
                log::warn!("jwks: cannot dispatch to cluster {cluster:?} ({status:?}); is the cluster defined?");
                self.fetch_failed(rule_index, now_ms);
            }
        }
    }

    fn fetch_failed(&mut self, rule: usize, now_ms: u64) {
        Metrics::bump(self.metrics.fetch_failure);
        if let Some(cache) = self.caches.get_mut(rule).and_then(Option::as_mut) {
            cache.fetch_failed(now_ms);
            log::info!("jwks: rule {rule} will retry in {:?}", cache.retry_delay());
        }
    }

    /// A dispatched call answered (or failed: no headers). Returns `false` for a token that
    /// is not one of ours.
    fn on_fetch_response(&mut self, token: u32, body_size: usize, now_ms: u64) -> bool {
        let Some(fetch) = self.fetches.remove(&token) else { return false };
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status").ok().flatten();
        let body = if status.as_deref() == Some("200") && body_size <= MAX_FETCH_BODY_BYTES {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten()
        } else {
            None
        };
        let outcome = match (status.as_deref(), body) {
            (None, _) => Err("no response (connection failure or timeout)".to_string()),
            (Some("200"), None) if body_size > MAX_FETCH_BODY_BYTES => {
                Err(format!("body of {body_size} bytes exceeds {MAX_FETCH_BODY_BYTES}"))
            }
            (Some("200"), None) => Err("empty body".to_string()),
            (Some("200"), Some(body)) if fetch.discovery => self.take_discovery(fetch.rule, &body),
            (Some("200"), Some(body)) => KeySet::parse(&body, false).map(Some).map_err(|e| e.to_string()),
            (Some(other), _) => Err(format!("HTTP status {other}")),
        };
        match outcome {
            Ok(Some(keys)) => {
                Metrics::bump(self.metrics.fetch_success);
                for skipped in &keys.skipped {
                    log::warn!("jwks: rule {}: skipped {skipped}", fetch.rule);
                }
                log::info!("jwks: rule {} loaded {} keys", fetch.rule, keys.len());
                if let Some(cache) = self.caches.get_mut(fetch.rule).and_then(Option::as_mut) {
                    cache.fetch_succeeded(keys, now_ms);
                }
            }
            // Discovery answered: now fetch the JWKS it names (the cache stays "fetching").
            Ok(None) => self.start_fetch(fetch.rule, now_ms),
            Err(why) => {
                log::warn!("jwks: fetch for rule {} failed: {why}", fetch.rule);
                self.fetch_failed(fetch.rule, now_ms);
            }
        }
        true
    }

    /// Reads `jwks_uri` from an OpenID discovery document.
    fn take_discovery(&mut self, rule: usize, body: &[u8]) -> Result<Option<KeySet>, String> {
        let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| "discovery document is not JSON".to_string())?;
        let uri = doc.get("jwks_uri").and_then(|v| v.as_str()).ok_or("discovery document has no jwks_uri")?;
        let uri = HttpUri::parse(uri).map_err(|e| format!("discovery jwks_uri: {e}"))?;
        if let Some(slot) = self.discovered.get_mut(rule) {
            *slot = Some(uri);
        }
        Ok(None)
    }

    /// Decides every paused request again; answers those that no longer wait or whose
    /// deadline passed. `current` is the context whose callback is running: the effective
    /// context is restored to it afterwards.
    fn wake_waiting(&mut self, now_ms: u64, current: u32) {
        if self.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting);
        for request in waiting {
            let mut verdict = self.resolve(&request.found, &request.path, now_ms);
            if matches!(verdict, Verdict::AwaitKeys(_)) {
                if now_ms < request.deadline_ms {
                    self.waiting.push(request);
                    continue;
                }
                verdict = Verdict::Deny(Rejection::KeysUnavailable);
            }
            if hostcalls::set_effective_context(request.context_id).is_err() {
                continue; // the request is gone (client went away)
            }
            if let Action::Continue = self.apply(verdict, &request.realm) {
                let _ = hostcalls::resume_http_request();
            }
        }
        let _ = hostcalls::set_effective_context(current);
    }

    /// Applies a verdict to the effective context's request.
    fn apply(&self, verdict: Verdict, realm: &str) -> Action {
        match verdict {
            Verdict::PassWithoutToken => Action::Continue,
            Verdict::Allow(grant) => {
                for name in &grant.remove_headers {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
                }
                for (name, value) in &grant.set_headers {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
                }
                if let Some(path) = &grant.new_path {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(path));
                }
                Metrics::bump(self.metrics.allowed);
                Action::Continue
            }
            Verdict::Deny(rejection) => {
                self.deny(rejection, realm);
                Action::Pause
            }
            // Only reached if a caller applies a wait; never leave a request hanging.
            Verdict::AwaitKeys(_) => {
                self.deny(Rejection::KeysUnavailable, realm);
                Action::Pause
            }
        }
    }

    fn deny(&self, rejection: Rejection, realm: &str) {
        self.metrics.denied(rejection);
        log::debug!("request denied: {} ({})", rejection.reason(), rejection.status());
        let challenge = challenge(realm, rejection);
        let body = format!("{}\n", rejection.message());
        let headers = vec![("www-authenticate", challenge.as_str()), ("content-type", "text/plain")];
        let _ = hostcalls::send_http_response(rejection.status(), headers, Some(body.as_bytes()));
    }

    /// The request path: strip owned headers, find tokens, decide, apply or pause.
    fn on_request(&mut self, context_id: u32) -> Action {
        let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        // Before anything else: no client-supplied header the filter owns survives.
        let mut stripped: Vec<&str> = Vec::new();
        for (name, _) in &headers {
            if is_owned_header(&self.config, name) && !stripped.contains(&name.as_str()) {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
                stripped.push(name);
            }
        }
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str());
        let path = header(":path");
        let found = find_tokens(&self.config.locations, &headers, path);
        if found.is_empty() && !self.config.require_token {
            return Action::Continue;
        }
        let now_ms = now_ms();
        let realm = realm(header(":scheme"), header(":authority"), path);
        match self.resolve(&found, path, now_ms) {
            Verdict::AwaitKeys(waits) => {
                let wait_for = waits
                    .iter()
                    .filter_map(|w| self.config.rules.get(rule_of(*w)))
                    .map(|r| r.timeout)
                    .max()
                    .unwrap_or_default();
                log::debug!("request {context_id} waits for keys");
                self.waiting.push(WaitingRequest {
                    context_id,
                    found,
                    path: path.to_string(),
                    realm,
                    deadline_ms: now_ms + wait_for.as_millis() as u64,
                });
                Action::Pause
            }
            verdict => self.apply(verdict, &realm),
        }
    }

    /// Background work: scheduled refreshes, retries, a watchdog for lost fetches, deadlines.
    fn on_tick(&mut self, root_id: u32) {
        let now_ms = now_ms();
        for rule in 0..self.config.rules.len() {
            let timeout = self.config.rules.get(rule).map_or(Duration::ZERO, |r| r.timeout);
            let Some(cache) = self.cache(rule) else { continue };
            // A fetch whose callback never came (its initiating request went away first).
            let lost = cache.fetching_since().is_some_and(|since| now_ms > since + timeout.as_millis() as u64 + 1000);
            if lost {
                self.fetches.retain(|_, f| f.rule != rule);
                log::warn!("jwks: fetch for rule {rule} got no answer in time");
                self.fetch_failed(rule, now_ms);
            }
            if self.cache(rule).is_some_and(|c| c.fetch_due(now_ms)) {
                self.start_fetch(rule, now_ms);
            }
        }
        self.wake_waiting(now_ms, root_id);
    }
}

fn rule_of(wait: KeyWait) -> usize {
    match wait {
        KeyWait::FirstKeys(rule) | KeyWait::UnknownKid(rule) => rule,
    }
}

/// The cluster for a discovered `jwks_uri`: the configured one when the JWKS lives on the
/// discovery host, else Istio's outbound cluster name for the JWKS host.
fn jwks_cluster_for(remote: &RemoteJwks, jwks_uri: &HttpUri) -> String {
    if jwks_uri.host == remote.uri.host && jwks_uri.port == remote.uri.port {
        remote.cluster.clone()
    } else {
        format!("outbound|{}||{}", jwks_uri.port, jwks_uri.host)
    }
}

/// Root context: configuration, the tick, and fetches it dispatched itself.
struct PluginRoot {
    context_id: u32,
    plugin: Option<SharedPlugin>,
}

impl Context for PluginRoot {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if let Some(plugin) = &self.plugin {
            if let Ok(mut plugin) = plugin.try_borrow_mut() {
                let now = now_ms();
                if plugin.on_fetch_response(token_id, body_size, now) {
                    plugin.wake_waiting(now, self.context_id);
                }
            }
        }
    }
}

impl RootContext for PluginRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // Let Envoy's log level decide: the SDK then skips formatting what Envoy would drop.
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        log::info!("jwt-claims-filter {} starting", env!("CARGO_PKG_VERSION"));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match FilterConfig::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("jwt-claims-filter: invalid {e}");
                return false;
            }
        };
        let needs_fetching = !config.all_keys_inline();
        let plugin = Rc::new(RefCell::new(Plugin::new(config)));
        if needs_fetching {
            // Fetch now so the first request finds keys; the tick retries if this fails.
            if let Ok(mut p) = plugin.try_borrow_mut() {
                let now = now_ms();
                for rule in 0..p.config.rules.len() {
                    if p.cache(rule).is_some() {
                        p.start_fetch(rule, now);
                    }
                }
            }
            let _ = hostcalls::set_tick_period(TICK_PERIOD);
        }
        log::info!("jwt-claims-filter configured");
        self.plugin = Some(plugin);
        true
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            if let Ok(mut plugin) = plugin.try_borrow_mut() {
                plugin.on_tick(self.context_id);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let plugin = self.plugin.clone()?;
        Some(Box::new(RequestContext { context_id, plugin }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: hands its headers to the plugin and, if it fetched keys, the response.
struct RequestContext {
    context_id: u32,
    plugin: SharedPlugin,
}

impl Context for RequestContext {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if let Ok(mut plugin) = self.plugin.try_borrow_mut() {
            let now = now_ms();
            if plugin.on_fetch_response(token_id, body_size, now) {
                plugin.wake_waiting(now, self.context_id);
            }
        }
    }

    fn on_done(&mut self) -> bool {
        if let Ok(mut plugin) = self.plugin.try_borrow_mut() {
            plugin.waiting.retain(|w| w.context_id != self.context_id);
        }
        true
    }
}

impl HttpContext for RequestContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.plugin.try_borrow_mut() {
            Ok(mut plugin) => plugin.on_request(self.context_id),
            Err(_) => {
                // Cannot happen (one thread, no re-entry); fail closed if it ever does.
                let _ = hostcalls::send_http_response(500, vec![], Some(b"jwt filter busy\n"));
                Action::Pause
            }
        }
    }
}

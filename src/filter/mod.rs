//! The only module that talks to the proxy-wasm host.
//!
//! One [`Plugin`] per configuration of the filter in a VM (one VM per Envoy worker, plus the
//! main thread's) holds the validated configuration, a snapshot of each remote rule's shared
//! [`KeyRecord`] with the key set parsed from it, the verified-token cache, and the requests
//! paused while keys are fetched. The root context (through the SDK) configures it and drives
//! time (`on_tick`: refreshes, retries, polling the shared record for paused requests,
//! deadlines). Requests enter through [`streams`], which finds the plugin of the request's
//! root and hands it the request: no per-stream context is kept.
//!
//! Host calls go through [`host`] (the ABI, never a panic) on the *effective* context, so the same code serves a
//! request in its own callback and a paused request resumed later (after
//! `set_effective_context`).

mod host;
mod host_signatures;
mod metrics;
mod request_headers;
mod root_entry;
mod shared_keys;
mod streams;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::authn::{
    authenticate, authenticate_looked_up, cached_alone, challenge, realm, Context as Request, Decision, Grant, KeyWait, KeysFor, RequestTime, Verdict,
};
use crate::config::{FilterConfig, HttpUri, KeySource, RemoteJwks};
use crate::extract::{add_query_tokens, scan_headers, FoundToken, FoundTokens, HeaderScan};
use crate::headermap::{text, Pairs};
use crate::jwks::KeySet;
use crate::keycache::Availability;
use crate::tokencache::TokenCache;
use crate::verify::Rejection;

use host_signatures::EnvoySignatures;
use metrics::Metrics;
use request_headers::with_request_header_buffer;
use shared_keys::RemoteKeys;

/// A JWKS or discovery document larger than this is a failed fetch, not something to parse.
const MAX_FETCH_BODY_BYTES: usize = 256 * 1024;
/// Background work (refresh, retry) needs no finer clock than this.
const IDLE_TICK: Duration = Duration::from_millis(500);
/// While requests wait for keys another worker may be fetching, poll the shared record often.
const WAITING_TICK: Duration = Duration::from_millis(20);

proxy_wasm::main! {{
    // Host calls are not allowed here; on_vm_start takes Envoy's log level.
    host::install_logger(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(PluginRoot { context_id }));
}}

fn now_ms() -> u64 {
    host::current_time_ms().unwrap_or(0)
}

/// Requests decided on one reading of the host's clock at most, whatever the ticks do.
const CLOCK_READING_USES: u32 = 256;

/// The host's clock, read as seldom as decisions allow: at every tick, every
/// [`CLOCK_READING_USES`] requests, and whenever a decision needs the exact time
/// ([`authn::RequestTime`](crate::authn::RequestTime) says when). A reading is thus well within
/// `RECENT_WITHIN_SECS` old while the worker runs at all.
struct HostClock {
    last_ms: Cell<u64>,
    uses: Cell<u32>,
}

impl HostClock {
    fn new() -> HostClock {
        let clock = HostClock { last_ms: Cell::new(0), uses: Cell::new(0) };
        clock.read();
        clock
    }

    /// The exact time, which is from now on the recent reading.
    fn read(&self) -> u64 {
        let now = now_ms();
        self.last_ms.set(now);
        self.uses.set(0);
        now
    }

    /// The recent reading, for one more request.
    fn recent(&self) -> u64 {
        let uses = self.uses.get() + 1;
        if uses > CLOCK_READING_USES || self.last_ms.get() == 0 {
            return self.read();
        }
        self.uses.set(uses);
        self.last_ms.get()
    }
}

/// A dispatched fetch: for which rule, through which cluster, and whether it asks for the
/// discovery document.
struct Fetch {
    rule: usize,
    cluster: String,
    discovery: bool,
    /// The shared record's lease this fetch holds (see [`Plugin::abandon_fetches`]).
    lease_until_ms: u64,
}

/// A request paused until keys arrive, with what is needed to decide it again.
struct WaitingRequest {
    context_id: u32,
    found: Vec<FoundToken<'static>>,
    path: Vec<u8>,
    realm: String,
    deadline_ms: u64,
}

/// Why a fetch is being started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FetchReason {
    /// First keys, scheduled refresh, or retry: only when the record says one is due.
    Due,
    /// A token named a `kid` the set lacks: throttled by `jwksMinRefetchInterval`.
    UnknownKid,
}

struct Plugin {
    config: FilterConfig,
    /// Per rule; `None` for rules with inline keys.
    remotes: Vec<Option<RemoteKeys>>,
    /// Per rule: the `jwks_uri` an OpenID discovery document named.
    discovered: Vec<Option<HttpUri>>,
    fetches: HashMap<u32, Fetch>,
    waiting: Vec<WaitingRequest>,
    tokens: TokenCache,
    signatures: EnvoySignatures,
    metrics: Metrics,
    clock: HostClock,
    /// The root context. Fetches are dispatched only in its callbacks: the SDK hands a call's
    /// response to the context that was running when it was dispatched, and drops it if that
    /// context is gone, so a fetch started by a request whose client gave up would be lost
    /// (and every request waiting for those keys with it, until the fetch lease ran out).
    root_context: u32,
    /// The context whose callback is running.
    current_context: u32,
    /// Rules whose fetch a request started: dispatched at the next tick (20 ms at most).
    dispatch_at_tick: Vec<usize>,
}

type SharedPlugin = Rc<RefCell<Plugin>>;

impl Plugin {
    fn new(config: FilterConfig, root_context: u32) -> Plugin {
        let remotes = config
            .rules
            .iter()
            .map(|rule| match &rule.keys {
                KeySource::Remote(remote) => {
                    let keys = RemoteKeys::new(rule, remote);
                    keys.ensure_record();
                    Some(keys)
                }
                KeySource::Inline(_) => None,
            })
            .collect();
        let discovered = vec![None; config.rules.len()];
        let tokens = TokenCache::new(config.token_cache_size);
        Plugin {
            config,
            remotes,
            discovered,
            fetches: HashMap::new(),
            waiting: Vec::new(),
            tokens,
            signatures: EnvoySignatures::probe(),
            metrics: Metrics::define(),
            clock: HostClock::new(),
            root_context,
            current_context: root_context,
            dispatch_at_tick: Vec::new(),
        }
    }

    fn remote(&self, rule: usize) -> Option<&RemoteKeys> {
        self.remotes.get(rule).and_then(Option::as_ref)
    }

    fn remote_mut(&mut self, rule: usize) -> Option<&mut RemoteKeys> {
        self.remotes.get_mut(rule).and_then(Option::as_mut)
    }

    /// The verdict for a request's tokens with the keys and cached tokens held now;
    /// `now_ms` is a recent reading of `self.clock`.
    fn decide(&self, found: &[FoundToken<'_>], path: &[u8], now_ms: u64) -> Decision {
        self.with_request(now_ms, |request| authenticate(request, found, path))
    }

    /// Runs `decide` on the state a request is decided against: the keys and cached tokens
    /// held now; `now_ms` is a recent reading of `self.clock`.
    fn with_request<R>(&self, now_ms: u64, decide: impl FnOnce(&Request<'_, '_>) -> R) -> R {
        let keys = |rule: usize| -> KeysFor<'_> {
            match (self.config.rules.get(rule).map(|r| &r.keys), self.remote(rule)) {
                (Some(KeySource::Inline(keys)), _) => KeysFor::Ready { keys, generation: 0, may_refetch: false },
                (_, Some(remote)) => remote.keys_for(now_ms),
                _ => KeysFor::Unavailable,
            }
        };
        let read_clock = || self.clock.read() / 1000;
        let request = Request {
            config: &self.config,
            keys: &keys,
            cache: &self.tokens,
            host: &self.signatures,
            clock: RequestTime::new(now_ms / 1000, &read_clock),
        };
        decide(&request)
    }

    /// Decides; a wait first re-reads the shared record (another worker may hold the keys
    /// already), then starts the fetches it needs. A wait with no fetch in flight (the
    /// dispatch failed, the refetch is throttled) is decided again, which then answers.
    fn resolve(&mut self, found: &[FoundToken<'_>], path: &[u8], recent_ms: u64) -> Decision {
        let decision = self.decide(found, path, recent_ms);
        if matches!(decision.verdict, Verdict::Allow(_)) && decision.newly_verified.is_empty() {
            return decision; // a cached token: nothing to wait for, nothing to remember
        }
        self.resolve_further(decision, found, path, recent_ms)
    }

    /// [`Plugin::resolve`] past a cached token, out of line (the code a cached request runs
    /// is fetched again on every request: README "Performance").
    #[inline(never)]
    fn resolve_further(&mut self, mut decision: Decision, found: &[FoundToken<'_>], path: &[u8], recent_ms: u64) -> Decision {
        if matches!(decision.verdict, Verdict::Deny(Rejection::KeysUnavailable)) {
            // This VM re-reads the shared records at its tick (0.5 s when idle); another
            // worker may have loaded keys since. Look again before answering 401.
            for remote in self.remotes.iter_mut().flatten() {
                remote.sync();
            }
            decision = self.decide(found, path, recent_ms);
        }
        // Fetch leases and retries want the exact time; only a wait gets this far.
        let now_ms = if matches!(decision.verdict, Verdict::AwaitKeys(_)) { self.clock.read() } else { recent_ms };
        for attempt in 0..3 {
            let Verdict::AwaitKeys(waits) = &decision.verdict else { break };
            let waits = waits.clone();
            for wait in &waits {
                if attempt == 0 {
                    if let Some(remote) = self.remote_mut(wait.rule()) {
                        remote.sync();
                    }
                } else {
                    self.start_fetch_for(*wait, now_ms);
                }
            }
            let all_in_flight =
                waits.iter().all(|w| self.remote(w.rule()).is_some_and(|r| r.record.is_fetching(now_ms)));
            if attempt > 0 && all_in_flight {
                break;
            }
            decision = self.decide(found, path, now_ms);
        }
        if let Verdict::Allow(_) = decision.verdict {
            for (token, verified) in std::mem::take(&mut decision.newly_verified) {
                self.tokens.insert(&token, verified);
            }
        }
        decision
    }

    fn start_fetch_for(&mut self, wait: KeyWait, now_ms: u64) {
        match wait {
            KeyWait::FirstKeys(rule) => self.start_fetch(rule, FetchReason::Due, now_ms),
            KeyWait::UnknownKid(rule) => self.start_fetch(rule, FetchReason::UnknownKid, now_ms),
        }
    }

    /// Takes the rule's fetch lease if `reason` allows it now, and dispatches the fetch.
    /// Whoever holds the lease fetches; every other worker waits for the record to change.
    fn start_fetch(&mut self, rule: usize, reason: FetchReason, now_ms: u64) {
        let Some(remote) = self.remote_mut(rule) else { return };
        let policy = remote.policy;
        let leased = remote.update(|record| match reason {
            FetchReason::Due => record.fetch_due(now_ms) && record.begin_fetch(now_ms, &policy),
            FetchReason::UnknownKid => record.begin_unknown_kid_refetch(now_ms, &policy),
        });
        if !leased {
            return;
        }
        if reason == FetchReason::UnknownKid {
            Metrics::bump(self.metrics.unknown_kid_refetch);
            log::info!("jwks: rule {rule}: a token names an unknown kid, refetching");
        }
        self.dispatch(rule, now_ms);
    }

    /// Dispatches the next request of a rule's fetch: the JWKS, or first the discovery document.
    fn dispatch(&mut self, rule_index: usize, now_ms: u64) {
        if self.current_context != self.root_context {
            if !self.dispatch_at_tick.contains(&rule_index) {
                self.dispatch_at_tick.push(rule_index);
            }
            let _ = host::set_tick_period(WAITING_TICK);
            return;
        }
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
        match host::dispatch_http_call(&cluster, headers, rule.timeout) {
            Ok(token) => {
                log::debug!("jwks: fetching {}://{}{} via cluster {cluster}", uri.scheme, uri.authority, uri.path);
                let lease_until_ms = self.remote(rule_index).and_then(|r| r.record.lease(now_ms)).unwrap_or(now_ms);
                self.fetches.insert(token, Fetch { rule: rule_index, cluster, discovery, lease_until_ms });
            }
            Err(status) => {
                log::warn!("jwks: cannot dispatch to cluster {cluster:?} ({status:?}); is the cluster defined?");
                self.fetch_failed(rule_index, now_ms);
            }
        }
    }

    /// This configuration is gone, and the host cancelled the fetches it had in flight: their
    /// leases end now, so that the configuration replacing it fetches at once.
    fn abandon_fetches(&mut self, now_ms: u64) {
        for fetch in std::mem::take(&mut self.fetches).into_values() {
            if let Some(remote) = self.remote_mut(fetch.rule) {
                if remote.update(|record| record.abandon_fetch(fetch.lease_until_ms, now_ms)) {
                    log::info!("jwks: rule {}: the fetch of a replaced configuration is abandoned", fetch.rule);
                }
            }
        }
    }

    fn fetch_failed(&mut self, rule: usize, now_ms: u64) {
        Metrics::bump(self.metrics.fetch_failure);
        if let Some(remote) = self.remote_mut(rule) {
            let policy = remote.policy;
            remote.update(|record| {
                record.fetch_failed(now_ms, &policy);
                true
            });
            log::info!("jwks: rule {rule} will retry in {:?}", remote.record.retry_delay(&policy));
        }
    }

    /// A dispatched call answered, or failed: then the host has no response for it (no
    /// headers; reading them is an error, whatever stage the call failed at). Returns `false`
    /// for a token that is not one of ours.
    fn on_fetch_response(&mut self, token: u32, num_headers: usize, body_size: usize, now_ms: u64) -> bool {
        let Some(fetch) = self.fetches.remove(&token) else { return false };
        let outcome = match fetched_body(num_headers, body_size) {
            Err(why) => Err(why),
            Ok(body) if fetch.discovery => self.take_discovery(fetch.rule, &body).map(|()| None),
            Ok(body) => match (KeySet::parse(&body, false), String::from_utf8(body)) {
                (Ok(keys), Ok(text)) => Ok(Some((keys, text))),
                (Err(e), _) => Err(e.to_string()),
                (_, Err(_)) => Err("the JWKS is not UTF-8".to_string()),
            },
        };
        match outcome {
            Ok(Some((keys, text))) => {
                Metrics::bump(self.metrics.fetch_success);
                if let Some(summary) = keys.skipped_summary() {
                    log::warn!("jwks: rule {}: {summary}", fetch.rule);
                }
                log::info!("jwks: rule {} loaded {} keys", fetch.rule, keys.usable_jwks());
                if let Some(remote) = self.remote_mut(fetch.rule) {
                    let policy = remote.policy;
                    remote.update(|record| {
                        record.fetch_succeeded(text.clone(), now_ms, &policy);
                        true
                    });
                }
            }
            // Discovery answered: now fetch the JWKS it names (the lease is still ours).
            Ok(None) => self.dispatch(fetch.rule, now_ms),
            Err(why) => {
                log::warn!("jwks: rule {}: fetch via cluster {} failed: {why}", fetch.rule, fetch.cluster);
                self.fetch_failed(fetch.rule, now_ms);
            }
        }
        true
    }

    /// Reads `jwks_uri` from an OpenID discovery document.
    fn take_discovery(&mut self, rule: usize, body: &[u8]) -> Result<(), String> {
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "discovery document is not JSON".to_string())?;
        let uri = doc.get("jwks_uri").and_then(|v| v.as_str()).ok_or("discovery document has no jwks_uri")?;
        let uri = HttpUri::parse(uri).map_err(|e| format!("discovery jwks_uri: {e}"))?;
        if let Some(slot) = self.discovered.get_mut(rule) {
            *slot = Some(uri);
        }
        Ok(())
    }

    /// Decides every paused request again; answers those that no longer wait or whose
    /// deadline passed. `current` is the context whose callback is running: the effective
    /// context is restored to it afterwards.
    fn wake_waiting(&mut self, now_ms: u64, current: u32) {
        if self.waiting.is_empty() {
            return;
        }
        for request in std::mem::take(&mut self.waiting) {
            let mut verdict = self.resolve(&request.found, &request.path, now_ms).verdict;
            if matches!(verdict, Verdict::AwaitKeys(_)) {
                if now_ms < request.deadline_ms {
                    self.waiting.push(request);
                    continue;
                }
                verdict = Verdict::Deny(Rejection::KeysUnavailable);
            }
            if host::set_effective_context(request.context_id).is_err() {
                // The host deleted the stream: its client went away while it waited.
                log::debug!("request {} ended while it waited for keys", request.context_id);
                continue;
            }
            if let Action::Continue = self.apply(verdict, &request.realm) {
                let _ = host::resume_request();
            }
            // Back to the running callback's context before the next request is decided: a
            // fetch that decision starts belongs to the effective context, and the host
            // cancels it when that context goes (a stream's, once its response is sent).
            let _ = host::set_effective_context(current);
        }
    }

    /// Poll fast while requests wait or first keys are on their way, slowly otherwise.
    fn set_tick(&self, now_ms: u64) {
        let first_keys_pending =
            self.remotes.iter().flatten().any(|r| r.record.availability(now_ms) == Availability::Pending);
        let idle = self.waiting.is_empty() && !first_keys_pending && self.dispatch_at_tick.is_empty();
        let period = if idle { IDLE_TICK } else { WAITING_TICK };
        let _ = host::set_tick_period(period);
    }

    /// Applies a verdict to the effective context's request (a woken or refused one; a
    /// request allowed at once goes straight to [`Plugin::allow`]).
    fn apply(&self, verdict: Verdict, realm: &str) -> Action {
        match verdict {
            Verdict::PassWithoutToken => Action::Continue,
            Verdict::Allow(grant) => self.allow(&grant),
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

    /// Writes a grant into the request, which goes on.
    fn allow(&self, grant: &Grant) -> Action {
        for name in &grant.remove_headers {
            let _ = host::remove_header(MapType::HttpRequestHeaders, name);
        }
        // Add, not replace: every header a grant writes is one the filter owns, removed
        // from the request on arrival, and adding spares Envoy a lookup.
        for (name, value) in &grant.set_headers {
            let _ = host::add_header(MapType::HttpRequestHeaders, name, value);
        }
        if let Some(path) = &grant.new_path {
            let _ = host::replace_header(MapType::HttpRequestHeaders, ":path", path);
        }
        self.metrics.allowed();
        Action::Continue
    }

    fn deny(&self, rejection: Rejection, realm: &str) {
        self.metrics.denied(rejection);
        log::debug!("request denied: {} ({})", rejection.reason(), rejection.status());
        let challenge = challenge(realm, rejection);
        let body = format!("{}\n", rejection.message());
        let headers = vec![("www-authenticate", challenge.as_str()), ("content-type", "text/plain")];
        let _ = host::send_response(rejection.status(), &headers, body.as_bytes());
    }

    /// The request path: strip owned headers, find tokens, decide, apply or pause.
    fn on_request(&mut self, context_id: u32) -> Action {
        self.current_context = context_id;
        with_request_header_buffer(|buffer| self.on_request_headers(context_id, buffer))
    }

    /// [`Plugin::on_request`] on the serialized header map.
    fn on_request_headers(&mut self, context_id: u32, buffer: &[u8]) -> Action {
        // Borrowed from the host's buffer: the SDK's readers copy every name and value (and
        // its string form panics on a value that is not UTF-8, which any client can send).
        // Checked as the one walk reads it, and acted on only if it read all of it: a buffer
        // that does not parse counts as no headers, never as some of them.
        let scanned = Pairs::unchecked(buffer).and_then(|headers| {
            let mut walk = headers.clone();
            let scan = scan_headers(&self.config, &mut walk);
            walk.is_complete().then_some((headers, scan))
        });
        let (headers, HeaderScan { owned, path, tokens: mut found }) = scanned.unwrap_or_else(unreadable_headers);
        // Before anything else: no client-supplied header the filter owns survives.
        for name in owned {
            // Owned names are ASCII; a name that is not UTF-8 is none of them.
            if let Ok(text) = std::str::from_utf8(name) {
                let _ = host::remove_header(MapType::HttpRequestHeaders, text);
            }
        }
        #[cfg(feature = "test-panic")]
        #[allow(clippy::panic)]
        if path.starts_with(b"/__jcf_test_panic") {
            panic!("test-panic build: aborting the VM on request");
        }
        add_query_tokens(&self.config.locations, path, &mut found);
        if found.is_empty() && !self.config.require_token {
            return Action::Continue;
        }
        let recent_ms = self.clock.recent();
        // The common request: one token, cached with the grant it earns where it was presented
        // now. The grant is written at once, with no `Decision` in between (its code is fetched
        // again on every request, README "Performance"). A cached token without such a grant
        // is decided on that lookup; a token not cached goes through `resolve`.
        let looked_up = match &*found {
            [presented] => self.with_request(recent_ms, |request| match cached_alone(request, presented) {
                Ok(grant) => Ok(self.allow(grant)),
                Err(hit) => Err(hit.map(|hit| authenticate_looked_up(request, presented, path, hit))),
            }),
            _ => Err(None),
        };
        let decision = match looked_up {
            Ok(action) => return action,
            Err(Some(decision)) => decision,
            Err(None) => self.resolve(&found, path, recent_ms),
        };
        match decision.verdict {
            Verdict::Allow(grant) => self.allow(&grant),
            Verdict::PassWithoutToken => Action::Continue,
            verdict => self.wait_or_deny(context_id, verdict, found, path, headers),
        }
    }

    /// [`Plugin::on_request_headers`] for a request that waits for keys or is denied, out of
    /// line like [`Plugin::resolve_further`].
    #[inline(never)]
    fn wait_or_deny(&mut self, context_id: u32, verdict: Verdict, found: FoundTokens<'_>, path: &[u8], headers: Pairs<'_>) -> Action {
        // The realm of the challenge.
        let realm = || {
            let header = |name: &str| {
                headers.clone().find(|(n, _)| *n == name.as_bytes()).map_or(Cow::Borrowed(""), |(_, v)| text(v))
            };
            realm(&header(":scheme"), &header(":authority"), &text(path))
        };
        match verdict {
            Verdict::AwaitKeys(waits) => {
                let now_ms = self.clock.read();
                let wait_for = waits
                    .iter()
                    .filter_map(|w| self.config.rules.get(w.rule()))
                    .map(|r| r.timeout)
                    .max()
                    .unwrap_or_default();
                log::debug!("request {context_id} waits for keys");
                self.waiting.push(WaitingRequest {
                    context_id,
                    found: found.into_vec().into_iter().map(FoundToken::into_owned).collect(),
                    path: path.to_vec(),
                    realm: realm(),
                    deadline_ms: now_ms + u64::try_from(wait_for.as_millis()).unwrap_or(u64::MAX),
                });
                self.set_tick(now_ms);
                Action::Pause
            }
            Verdict::Deny(rejection) => self.apply(Verdict::Deny(rejection), &realm()),
            verdict => self.apply(verdict, ""),
        }
    }

    /// Background work: follow the shared records, start due fetches (refresh, retry, a lease
    /// that ran out), then decide the paused requests again.
    fn on_tick(&mut self, root_id: u32) {
        self.current_context = root_id;
        self.metrics.report();
        let now_ms = self.clock.read();
        for rule in std::mem::take(&mut self.dispatch_at_tick) {
            self.dispatch(rule, now_ms);
        }
        for rule in 0..self.remotes.len() {
            if let Some(remote) = self.remote_mut(rule) {
                remote.sync();
                if remote.record.fetch_due(now_ms) {
                    self.start_fetch(rule, FetchReason::Due, now_ms);
                }
            }
        }
        self.wake_waiting(now_ms, root_id);
        self.set_tick(now_ms);
    }
}

/// The body of a fetch's response if it is a 200 the filter may read, else why not.
fn fetched_body(num_headers: usize, body_size: usize) -> Result<Vec<u8>, String> {
    const NO_RESPONSE: &str = "no response (connection refused or reset, TLS handshake failed, or timed out)";
    if num_headers == 0 {
        return Err(NO_RESPONSE.to_string());
    }
    let status = match host::header(MapType::HttpCallResponseHeaders, ":status") {
        Ok(Some(status)) => status,
        Ok(None) => return Err("a response without :status".to_string()),
        Err(_) => return Err(NO_RESPONSE.to_string()),
    };
    if status != b"200" {
        return Err(match envoy_connect_failure(&status, body_size) {
            Some(reason) => format!("no response ({reason}; check the cluster's address and TLS settings)"),
            None => format!("HTTP status {}", text(&status)),
        });
    }
    if body_size > MAX_FETCH_BODY_BYTES {
        return Err(format!("body of {body_size} bytes exceeds {MAX_FETCH_BODY_BYTES}"));
    }
    match host::buffer(BufferType::HttpCallResponseBody, 0, body_size) {
        Ok(Some(body)) if !body.is_empty() => Ok(body),
        Ok(_) => Err("empty body".to_string()),
        Err(status) => Err(format!("the body cannot be read ({status})")),
    }
}

/// Envoy's own reason when the fetch never reached the server: the router answers a
/// connection or TLS failure with a local 503 whose body starts like this.
fn envoy_connect_failure(status: &[u8], body_size: usize) -> Option<String> {
    const ENVOY_REPLY: &str = "upstream connect error or disconnect/reset before headers";
    if status != b"503" {
        return None;
    }
    let body = host::buffer(BufferType::HttpCallResponseBody, 0, body_size.min(512)).ok().flatten()?;
    let body = text(&body);
    body.starts_with(ENVOY_REPLY).then(|| body.chars().filter(|c| !c.is_control()).collect())
}

/// What a request whose header map does not parse is read as: no headers.
#[cold]
#[inline(never)]
fn unreadable_headers<'a>() -> (Pairs<'a>, HeaderScan<'a>) {
    log::warn!("request headers from the host do not parse; reading none");
    (Pairs::default(), HeaderScan::default())
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

/// Root context: configuration, the tick, and fetches it dispatched itself. Its plugin is
/// kept in [`streams`]' registry, where the request path finds it.
struct PluginRoot {
    context_id: u32,
}

impl Context for PluginRoot {
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        if let Some(plugin) = streams::plugin_of_root(self.context_id) {
            if let Ok(mut plugin) = plugin.try_borrow_mut() {
                plugin.current_context = self.context_id;
                let now = plugin.clock.read();
                if plugin.on_fetch_response(token_id, num_headers, body_size, now) {
                    plugin.wake_waiting(now, self.context_id);
                }
            }
        }
    }
}

impl RootContext for PluginRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        // Let Envoy's log level decide: the SDK then skips formatting what Envoy would drop.
        if let Ok(level) = host::log_level() {
            log::set_max_level(level);
        }
        log::info!("jwt-claims-filter {} starting", env!("CARGO_PKG_VERSION"));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match host::buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
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
        let needs_fetching = !config.all_keys_inline();
        let plugin = Rc::new(RefCell::new(Plugin::new(config, self.context_id)));
        // The first fetch starts on the first tick, not here: a call dispatched during
        // configuration can be lost (the main thread's clusters are not up yet), and a lost
        // call would hold the fetch lease until it runs out. With inline keys only, the tick
        // still keeps the clock's recent reading fresh.
        let _ = host::set_tick_period(if needs_fetching { WAITING_TICK } else { IDLE_TICK });
        let plugin_name = streams::effective_plugin_name();
        let shown_name = plugin_name.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        log::info!("jwt-claims-filter configured (root context {}, plugin name '{shown_name}')", self.context_id);
        if let Some(older) = streams::set_plugin(self.context_id, plugin_name, plugin) {
            // An update (the older one goes once drained) or two filters sharing a VM under one
            // name, which then both get this configuration: say so, it is not an error.
            log::info!(
                "jwt-claims-filter: root context {} has the same plugin name as root context {older}, and now serves its requests too (filters that share a VM need distinct names)",
                self.context_id
            );
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = streams::plugin_of_root(self.context_id) {
            if let Ok(mut plugin) = plugin.try_borrow_mut() {
                plugin.on_tick(self.context_id);
            }
        }
        streams::forget_gone_roots(self.context_id);
    }
}

//! One [`Plugin`] per configuration of the filter in a VM (one VM per Envoy worker, plus the
//! main thread's): the validated configuration, a snapshot of each remote rule's shared
//! [`KeyRecord`](crate::keycache::KeyRecord) with the key set parsed from it, the
//! verified-token cache, and the requests paused while keys are fetched.
//!
//! Generic over [`Host`]: the SDK glue (`filter`, wasm32 only) drives it with the proxy-wasm
//! host, the native tests with a fake one. Its callbacks are the root context's (configure,
//! tick, fetch responses) and each request's headers ([`Plugin::on_request`]); host calls act
//! on the *effective* context, so the same code serves a request in its own callback and a
//! paused request resumed later (after `set_effective_context`).

mod fetch;
mod host_signatures;
mod metrics;
mod request;
mod shared_keys;

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use crate::authn::{authenticate, Context as Request, Decision, KeysFor, RequestTime, Verdict};
use crate::config::{FilterConfig, HttpUri, KeySource};
use crate::extract::FoundToken;
use crate::host::Host;
use crate::keycache::Availability;
use crate::tokencache::TokenCache;
use crate::model::Rejection;

use fetch::{Fetch, FetchReason};
use host_signatures::EnvoySignatures;
use metrics::Metrics;
use shared_keys::RemoteKeys;

/// What the host does with a request after its headers: let it go on, or hold it (paused for
/// keys, or answered locally).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Background work (refresh, retry) needs no finer clock than this.
const IDLE_TICK: Duration = Duration::from_millis(500);
/// While requests wait for keys another worker may be fetching, poll the shared record often.
const WAITING_TICK: Duration = Duration::from_millis(20);

/// Requests decided on one reading of the host's clock at most, whatever the ticks do.
const CLOCK_READING_USES: u32 = 256;

/// The host's clock, read as seldom as decisions allow: at every tick, every
/// [`CLOCK_READING_USES`] requests, and whenever a decision needs the exact time
/// ([`RequestTime`] says when). A reading is thus well within `RECENT_WITHIN_SECS` old while
/// the worker runs at all.
struct HostClock<H: Host> {
    host: H,
    last_ms: Cell<u64>,
    uses: Cell<u32>,
}

impl<H: Host> HostClock<H> {
    fn new(host: H) -> HostClock<H> {
        let clock = HostClock { host, last_ms: Cell::new(0), uses: Cell::new(0) };
        clock.read();
        clock
    }

    /// The exact time, which is from now on the recent reading.
    fn read(&self) -> u64 {
        let now = self.host.now_ms();
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

/// A request paused until keys arrive, with what is needed to decide it again.
struct WaitingRequest {
    context_id: u32,
    found: Vec<FoundToken<'static>>,
    path: Vec<u8>,
    realm: String,
    deadline_ms: u64,
}

pub struct Plugin<H: Host> {
    host: H,
    config: FilterConfig,
    /// Per rule; `None` for rules with inline keys.
    remotes: Vec<Option<RemoteKeys<H>>>,
    /// Per rule: the `jwks_uri` an OpenID discovery document named.
    discovered: Vec<Option<HttpUri>>,
    fetches: HashMap<u32, Fetch>,
    waiting: Vec<WaitingRequest>,
    tokens: TokenCache,
    signatures: EnvoySignatures<H>,
    metrics: Metrics<H>,
    clock: HostClock<H>,
    /// The root context. Fetches are dispatched only in its callbacks: the host hands a call's
    /// response to the context that was running when it was dispatched, and drops it if that
    /// context is gone, so a fetch started by a request whose client gave up would be lost
    /// (and every request waiting for those keys with it, until the fetch lease ran out).
    root_context: u32,
    /// The context whose callback is running.
    current_context: u32,
    /// Rules whose fetch a request started: dispatched at the next tick (20 ms at most).
    dispatch_at_tick: Vec<usize>,
    /// The tick period last asked of the host (see [`Plugin::set_tick_period`]).
    tick_period: Cell<Duration>,
}

impl<H: Host> Plugin<H> {
    /// The plugin of the root context `root_context`, configured with `config`. The first
    /// fetch starts on the first tick, not here: a call dispatched during configuration can
    /// be lost (the main thread's clusters are not up yet), and a lost call would hold the
    /// fetch lease until it runs out.
    pub fn new(host: H, config: FilterConfig, root_context: u32) -> Plugin<H> {
        let remotes = config
            .rules
            .iter()
            .map(|rule| match &rule.keys {
                KeySource::Remote(remote) => {
                    let keys = RemoteKeys::new(host.clone(), rule, remote);
                    keys.ensure_record();
                    Some(keys)
                }
                KeySource::Inline(_) => None,
            })
            .collect();
        let discovered = vec![None; config.rules.len()];
        let tokens = TokenCache::new(config.token_cache_size);
        // With inline keys only, the tick still keeps the clock's recent reading fresh.
        let tick_period = if config.all_keys_inline() { IDLE_TICK } else { WAITING_TICK };
        host.set_tick_period(tick_period);
        Plugin {
            config,
            remotes,
            discovered,
            fetches: HashMap::new(),
            waiting: Vec::new(),
            tokens,
            signatures: EnvoySignatures::probe(host.clone()),
            metrics: Metrics::define(host.clone()),
            clock: HostClock::new(host.clone()),
            root_context,
            current_context: root_context,
            dispatch_at_tick: Vec::new(),
            tick_period: Cell::new(tick_period),
            host,
        }
    }

    fn remote(&self, rule: usize) -> Option<&RemoteKeys<H>> {
        self.remotes.get(rule).and_then(Option::as_ref)
    }

    fn remote_mut(&mut self, rule: usize) -> Option<&mut RemoteKeys<H>> {
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

    /// Asks the host for a tick period, only if it is another: the host re-arms the timer on
    /// every call (Envoy), so asking again on every paused request would put the next tick off
    /// for as long as they keep coming, and with it the fetch and every deadline.
    fn set_tick_period(&self, period: Duration) {
        if self.tick_period.replace(period) != period {
            self.host.set_tick_period(period);
        }
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
            if self.host.set_effective_context(request.context_id).is_err() {
                // The host deleted the stream: its client went away while it waited.
                log::debug!("request {} ended while it waited for keys", request.context_id);
                continue;
            }
            if let Flow::Continue = self.apply(verdict, &request.realm) {
                self.host.resume_request();
            }
            // Back to the running callback's context before the next request is decided: a
            // fetch that decision starts belongs to the effective context, and the host
            // cancels it when that context goes (a stream's, once its response is sent).
            let _ = self.host.set_effective_context(current);
        }
    }

    /// Poll fast while requests wait or first keys are on their way, slowly otherwise.
    fn set_tick(&self, now_ms: u64) {
        let first_keys_pending =
            self.remotes.iter().flatten().any(|r| r.record.availability(now_ms) == Availability::Pending);
        let idle = self.waiting.is_empty() && !first_keys_pending && self.dispatch_at_tick.is_empty();
        let period = if idle { IDLE_TICK } else { WAITING_TICK };
        self.set_tick_period(period);
    }

    /// Applies a verdict to the effective context's request (a woken or refused one; a
    /// Background work: follow the shared records, start due fetches (refresh, retry, a lease
    /// that ran out), then decide the paused requests again.
    pub fn on_tick(&mut self, root_id: u32) {
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


//! The lifecycle of one rule's remote key set, as an explicit state machine.
//!
//! Like Envoy's jwks_cache / jwks_async_fetcher: fetch before the first request needs keys,
//! refresh in the background before the cache duration runs out, keep the last good keys when
//! a fetch fails and retry soon with backoff, and refetch (throttled) when a token names a
//! `kid` the set lacks, since that is how a key rotation shows up. Time is a parameter
//! (milliseconds since the epoch) so every transition is tested natively.

use std::rc::Rc;
use std::time::Duration;

use crate::jwks::KeySet;

/// First retry after a failure; doubles per consecutive failure, capped at the cache
/// duration.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Keys that were fetched, and when they should be refreshed.
#[derive(Debug, Clone)]
pub struct CachedKeys {
    pub keys: Rc<KeySet>,
    pub fetched_at_ms: u64,
    /// When a background refresh is due (after a failure: when the retry is due).
    pub refresh_at_ms: u64,
}

/// Where a rule's key set is in its lifecycle.
#[derive(Debug, Clone)]
pub enum KeyState {
    /// Never fetched.
    Empty,
    /// A fetch is in flight; `previous` keys (if any) keep serving meanwhile.
    Fetching { since_ms: u64, previous: Option<CachedKeys> },
    /// Keys are loaded.
    Loaded(CachedKeys),
    /// No keys, and the last fetch failed; the next try is due at `retry_at_ms`.
    Unavailable { retry_at_ms: u64 },
}

/// The cache for one rule: its state plus the counters that shape retries and refetches.
#[derive(Debug, Clone)]
pub struct KeyCache {
    state: KeyState,
    cache_duration: Duration,
    min_refetch_interval: Duration,
    consecutive_failures: u32,
    last_unknown_kid_refetch_ms: Option<u64>,
}

/// What a request can use right now.
pub enum Availability<'a> {
    Keys(&'a KeySet),
    /// Nothing yet, but a fetch is in flight or due: wait for it.
    Pending,
    Unavailable,
}

impl KeyCache {
    pub fn new(cache_duration: Duration, min_refetch_interval: Duration) -> KeyCache {
        KeyCache {
            state: KeyState::Empty,
            cache_duration,
            min_refetch_interval,
            consecutive_failures: 0,
            last_unknown_kid_refetch_ms: None,
        }
    }

    pub fn state(&self) -> &KeyState {
        &self.state
    }

    /// The keys a request may use at `now_ms`.
    pub fn availability(&self, now_ms: u64) -> Availability<'_> {
        match &self.state {
            KeyState::Loaded(cached) | KeyState::Fetching { previous: Some(cached), .. } => Availability::Keys(&cached.keys),
            KeyState::Empty | KeyState::Fetching { previous: None, .. } => Availability::Pending,
            // Once the retry is due, a request starts the next try and waits for it.
            KeyState::Unavailable { retry_at_ms } if now_ms >= *retry_at_ms => Availability::Pending,
            KeyState::Unavailable { .. } => Availability::Unavailable,
        }
    }

    /// `true` when a fetch should start now: first fetch, scheduled refresh, or retry.
    pub fn fetch_due(&self, now_ms: u64) -> bool {
        match &self.state {
            KeyState::Empty => true,
            KeyState::Fetching { .. } => false,
            KeyState::Loaded(cached) => now_ms >= cached.refresh_at_ms,
            KeyState::Unavailable { retry_at_ms } => now_ms >= *retry_at_ms,
        }
    }

    pub fn is_fetching(&self) -> bool {
        matches!(self.state, KeyState::Fetching { .. })
    }

    /// When the in-flight fetch started, if there is one.
    pub fn fetching_since(&self) -> Option<u64> {
        match self.state {
            KeyState::Fetching { since_ms, .. } => Some(since_ms),
            _ => None,
        }
    }

    /// An unknown `kid` may wait for a refetch: one is in flight already (join it), or the
    /// last unknown-kid refetch is at least `min_refetch_interval` ago. Counted between
    /// unknown-kid refetches, not from the scheduled refresh, so a key published just after a
    /// refresh is still picked up at once.
    pub fn may_refetch_for_unknown_kid(&self, now_ms: u64) -> bool {
        self.is_fetching()
            || self
                .last_unknown_kid_refetch_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= self.min_refetch_interval.as_millis() as u64)
    }

    /// Records an unknown-kid refetch; returns `true` if the caller should start a fetch
    /// (none is in flight).
    pub fn note_unknown_kid_refetch(&mut self, now_ms: u64) -> bool {
        if self.is_fetching() {
            return false;
        }
        self.last_unknown_kid_refetch_ms = Some(now_ms);
        true
    }

    /// A fetch was dispatched.
    pub fn fetch_started(&mut self, now_ms: u64) {
        let previous = match std::mem::replace(&mut self.state, KeyState::Empty) {
            KeyState::Loaded(cached) => Some(cached),
            KeyState::Fetching { previous, .. } => previous,
            KeyState::Empty | KeyState::Unavailable { .. } => None,
        };
        self.state = KeyState::Fetching { since_ms: now_ms, previous };
    }

    /// A fetch returned a usable key set.
    pub fn fetch_succeeded(&mut self, keys: KeySet, now_ms: u64) {
        self.consecutive_failures = 0;
        self.state = KeyState::Loaded(CachedKeys {
            keys: Rc::new(keys),
            fetched_at_ms: now_ms,
            refresh_at_ms: now_ms + refresh_lead(self.cache_duration).as_millis() as u64,
        });
    }

    /// A fetch failed (or could not be dispatched): keep the last good keys, retry later.
    pub fn fetch_failed(&mut self, now_ms: u64) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let retry_at_ms = now_ms + self.retry_delay().as_millis() as u64;
        let previous = match std::mem::replace(&mut self.state, KeyState::Empty) {
            KeyState::Loaded(cached) => Some(cached),
            KeyState::Fetching { previous, .. } => previous,
            KeyState::Empty | KeyState::Unavailable { .. } => None,
        };
        self.state = match previous {
            Some(cached) => KeyState::Loaded(CachedKeys { refresh_at_ms: retry_at_ms, ..cached }),
            None => KeyState::Unavailable { retry_at_ms },
        };
    }

    /// Backoff after the current run of failures: 0.5 s, 1 s, 2 s, ... up to the cache duration.
    pub fn retry_delay(&self) -> Duration {
        let exponent = self.consecutive_failures.saturating_sub(1).min(20);
        FIRST_RETRY.saturating_mul(1 << exponent).min(self.cache_duration)
    }
}

/// When to refresh loaded keys: a little before the cache duration runs out, so the refresh
/// lands while the current keys are still within their duration.
fn refresh_lead(cache_duration: Duration) -> Duration {
    let margin = (cache_duration / 10).min(Duration::from_secs(30));
    cache_duration - margin
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = include_str!("../tests/fixtures/istio-samples/jwks.json");

    fn keys() -> KeySet {
        KeySet::parse(JWKS.as_bytes(), false).unwrap()
    }

    fn cache() -> KeyCache {
        KeyCache::new(Duration::from_secs(300), Duration::from_secs(30))
    }

    fn has_keys(cache: &KeyCache, now: u64) -> bool {
        matches!(cache.availability(now), Availability::Keys(_))
    }

    #[test]
    fn first_fetch_is_due_and_requests_wait_for_it() {
        let mut c = cache();
        assert!(c.fetch_due(0));
        assert!(matches!(c.availability(0), Availability::Pending));
        c.fetch_started(0);
        assert!(!c.fetch_due(1));
        assert!(matches!(c.availability(1), Availability::Pending));
        c.fetch_succeeded(keys(), 100);
        assert!(has_keys(&c, 100));
        assert!(!c.fetch_due(100));
    }

    #[test]
    fn refresh_is_due_before_the_cache_duration_ends_and_keys_serve_meanwhile() {
        let mut c = cache();
        c.fetch_started(0);
        c.fetch_succeeded(keys(), 0);
        assert!(!c.fetch_due(269_999));
        assert!(c.fetch_due(270_000));
        c.fetch_started(270_000);
        assert!(has_keys(&c, 270_001), "stale keys serve while the refresh is in flight");
    }

    #[test]
    fn failure_keeps_last_good_keys_and_backs_off() {
        let mut c = cache();
        c.fetch_started(0);
        c.fetch_succeeded(keys(), 0);
        c.fetch_started(270_000);
        c.fetch_failed(270_000);
        assert!(has_keys(&c, 270_000));
        assert!(!c.fetch_due(270_499));
        assert!(c.fetch_due(270_500), "first retry within a second");
        c.fetch_started(270_500);
        c.fetch_failed(270_500);
        assert_eq!(c.retry_delay(), Duration::from_secs(1));
        for _ in 0..30 {
            c.fetch_started(0);
            c.fetch_failed(0);
        }
        assert_eq!(c.retry_delay(), Duration::from_secs(300), "capped at the cache duration");
        assert!(has_keys(&c, 10_000_000), "stale keys never expire while fetches fail");
    }

    #[test]
    fn failure_without_keys_is_unavailable_until_the_retry() {
        let mut c = cache();
        c.fetch_started(0);
        c.fetch_failed(10);
        assert!(matches!(c.availability(11), Availability::Unavailable));
        assert!(matches!(c.availability(510), Availability::Pending));
        assert!(c.fetch_due(510));
        c.fetch_started(510);
        c.fetch_succeeded(keys(), 600);
        assert!(has_keys(&c, 600));
        assert_eq!(c.retry_delay(), FIRST_RETRY, "success resets the backoff");
    }

    #[test]
    fn unknown_kid_refetches_are_throttled_between_themselves() {
        let mut c = cache();
        c.fetch_started(0);
        c.fetch_succeeded(keys(), 0);
        assert!(c.may_refetch_for_unknown_kid(1_000));
        assert!(c.note_unknown_kid_refetch(1_000));
        c.fetch_started(1_000);
        assert!(c.may_refetch_for_unknown_kid(1_001), "joins the fetch in flight");
        assert!(!c.note_unknown_kid_refetch(1_001), "no second fetch");
        c.fetch_succeeded(keys(), 1_050);
        assert!(!c.may_refetch_for_unknown_kid(1_100));
        assert!(!c.may_refetch_for_unknown_kid(30_999));
        assert!(c.may_refetch_for_unknown_kid(31_000));
    }

    #[test]
    fn scheduled_refresh_does_not_count_against_the_unknown_kid_throttle() {
        let mut c = cache();
        c.fetch_started(0);
        c.fetch_succeeded(keys(), 0);
        c.fetch_started(270_000);
        c.fetch_succeeded(keys(), 270_000);
        assert!(c.may_refetch_for_unknown_kid(270_001));
    }
}

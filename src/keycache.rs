//! The lifecycle of one remote key set, as an explicit state machine.
//!
//! Like Envoy's jwks_cache / jwks_async_fetcher: fetch before the first request needs keys,
//! refresh in the background before the cache duration runs out, keep the last good keys when
//! a fetch fails and retry soon with backoff, and refetch (throttled) when a token names a
//! `kid` the set lacks, since that is how a key rotation shows up.
//!
//! Unlike them, the state is one [`KeyRecord`] per Envoy *process*: the filter keeps it in
//! proxy-wasm shared data and changes it only by compare-and-swap, so the worker VMs share one
//! key set and one fetch. A fetch is a lease (`Fetching { lease_until_ms }`): whoever moves the
//! record into `Fetching` fetches; everyone else waits for the record to change, and takes
//! over if the lease runs out (its VM went away, its callback was lost).
//!
//! Pure: time is a parameter (milliseconds since the epoch) and the record encodes to bytes.

use std::time::Duration;

use serde_json::{json, Value};

/// First retry after a failure; doubles per consecutive failure, capped at the cache
/// duration.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The encoding of [`KeyRecord`] in shared data. 2: version 1 without the fetch's start
/// (`since`) and the keys' fetch time (`fetched_at`), which nothing read; version 1 records
/// still decode (those members are ignored). A reader of version 1 alone takes a version 2
/// record for none and starts from an empty one.
const RECORD_VERSION: u64 = 2;

/// A fetch lease outlives the fetch's own timeout by this much before others take over.
const LEASE_GRACE: Duration = Duration::from_secs(1);

/// The rule's settings that shape the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    pub cache_duration: Duration,
    pub min_refetch_interval: Duration,
    pub fetch_timeout: Duration,
}

/// A fetched JWKS document and its schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedKeys {
    /// Bumped on every successful fetch: a VM re-parses the document only when it changes.
    pub generation: u64,
    /// The JWKS document as fetched (already checked to hold a usable key).
    pub jwks: String,
    /// When a background refresh is due (after a failure: when the retry is due).
    pub refresh_at_ms: u64,
}

/// Where a key set is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Never fetched.
    Empty,
    /// A fetch is in flight; `previous` keys (if any) keep serving meanwhile.
    Fetching { lease_until_ms: u64, previous: Option<CachedKeys> },
    /// Keys are loaded.
    Loaded(CachedKeys),
    /// No keys, and the last fetch failed; the next try is due at `retry_at_ms`.
    Unavailable { retry_at_ms: u64 },
}

/// The shared record: the state plus the counters that shape retries and refetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub state: KeyState,
    /// Successful fetches so far; the next success gets this plus one as its generation.
    pub generations: u64,
    pub consecutive_failures: u32,
    pub last_unknown_kid_refetch_ms: Option<u64>,
}

impl Default for KeyRecord {
    fn default() -> Self {
        KeyRecord { state: KeyState::Empty, generations: 0, consecutive_failures: 0, last_unknown_kid_refetch_ms: None }
    }
}

/// What a request can use right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Keys of this generation.
    Keys(u64),
    /// Nothing yet, but a fetch is in flight or due: wait for it.
    Pending,
    Unavailable,
}

impl KeyRecord {
    /// The keys currently serving, if any.
    pub fn keys(&self) -> Option<&CachedKeys> {
        match &self.state {
            KeyState::Loaded(cached) | KeyState::Fetching { previous: Some(cached), .. } => Some(cached),
            _ => None,
        }
    }

    /// What a request may use at `now_ms`.
    pub fn availability(&self, now_ms: u64) -> Availability {
        if let Some(cached) = self.keys() {
            return Availability::Keys(cached.generation);
        }
        match self.state {
            // Once the retry is due, a request starts the next try and waits for it.
            KeyState::Unavailable { retry_at_ms } if now_ms < retry_at_ms => Availability::Unavailable,
            _ => Availability::Pending,
        }
    }

    /// A fetch holds the lease at `now_ms`.
    pub fn is_fetching(&self, now_ms: u64) -> bool {
        matches!(self.state, KeyState::Fetching { lease_until_ms, .. } if now_ms < lease_until_ms)
    }

    /// `true` when a fetch should start now: first fetch, scheduled refresh, retry, or a
    /// lease that ran out.
    pub fn fetch_due(&self, now_ms: u64) -> bool {
        match &self.state {
            KeyState::Empty => true,
            KeyState::Fetching { lease_until_ms, .. } => now_ms >= *lease_until_ms,
            KeyState::Loaded(cached) => now_ms >= cached.refresh_at_ms,
            KeyState::Unavailable { retry_at_ms } => now_ms >= *retry_at_ms,
        }
    }

    /// An unknown `kid` may wait for a refetch: one is in flight already (join it), or the
    /// last unknown-kid refetch is at least `min_refetch_interval` ago. Counted between
    /// unknown-kid refetches, not from the scheduled refresh, so a key published just after a
    /// refresh is still picked up at once.
    pub fn may_refetch_for_unknown_kid(&self, now_ms: u64, policy: &KeyPolicy) -> bool {
        self.is_fetching(now_ms)
            || self
                .last_unknown_kid_refetch_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= millis(policy.min_refetch_interval))
    }

    /// Takes the fetch lease. `false` when another fetch holds it.
    pub fn begin_fetch(&mut self, now_ms: u64, policy: &KeyPolicy) -> bool {
        if self.is_fetching(now_ms) {
            return false;
        }
        let previous = self.take_keys();
        let lease_until_ms = now_ms + millis(policy.fetch_timeout) + millis(LEASE_GRACE);
        self.state = KeyState::Fetching { lease_until_ms, previous };
        true
    }

    /// Takes the lease for an unknown-kid refetch, if the throttle allows one and no fetch is
    /// in flight. `false` means: join the fetch in flight, or (throttled) refuse the token.
    pub fn begin_unknown_kid_refetch(&mut self, now_ms: u64, policy: &KeyPolicy) -> bool {
        if self.is_fetching(now_ms) || !self.may_refetch_for_unknown_kid(now_ms, policy) {
            return false;
        }
        self.last_unknown_kid_refetch_ms = Some(now_ms);
        self.begin_fetch(now_ms, policy)
    }

    /// The lease a fetch holds, while it holds it.
    pub fn lease(&self, now_ms: u64) -> Option<u64> {
        match self.state {
            KeyState::Fetching { lease_until_ms, .. } if now_ms < lease_until_ms => Some(lease_until_ms),
            _ => None,
        }
    }

    /// The fetch that took `lease_until_ms` will not answer (the configuration that started
    /// it is gone, and the host cancelled its call): its lease ends now, so the next tick of
    /// any configuration of this key set fetches at once rather than waiting the lease out.
    /// `false` if that lease is no longer the record's.
    pub fn abandon_fetch(&mut self, lease_until_ms: u64, now_ms: u64) -> bool {
        match &mut self.state {
            KeyState::Fetching { lease_until_ms: held, .. } if *held == lease_until_ms => {
                *held = now_ms;
                true
            }
            _ => false,
        }
    }

    /// A fetch returned a usable key set. Returns its generation.
    pub fn fetch_succeeded(&mut self, jwks: String, now_ms: u64, policy: &KeyPolicy) -> u64 {
        self.consecutive_failures = 0;
        self.generations += 1;
        self.state = KeyState::Loaded(CachedKeys {
            generation: self.generations,
            jwks,
            refresh_at_ms: now_ms + millis(refresh_lead(policy.cache_duration)),
        });
        self.generations
    }

    /// A fetch failed (or could not be dispatched): keep the last good keys, retry later.
    pub fn fetch_failed(&mut self, now_ms: u64, policy: &KeyPolicy) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let retry_at_ms = now_ms + millis(self.retry_delay(policy));
        self.state = match self.take_keys() {
            Some(cached) => KeyState::Loaded(CachedKeys { refresh_at_ms: retry_at_ms, ..cached }),
            None => KeyState::Unavailable { retry_at_ms },
        };
    }

    /// Backoff after the current run of failures: 0.5 s, 1 s, 2 s, ... up to the cache duration.
    pub fn retry_delay(&self, policy: &KeyPolicy) -> Duration {
        let exponent = self.consecutive_failures.saturating_sub(1).min(20);
        FIRST_RETRY.saturating_mul(1 << exponent).min(policy.cache_duration)
    }

    fn take_keys(&mut self) -> Option<CachedKeys> {
        match std::mem::replace(&mut self.state, KeyState::Empty) {
            KeyState::Loaded(cached) => Some(cached),
            KeyState::Fetching { previous, .. } => previous,
            KeyState::Empty | KeyState::Unavailable { .. } => None,
        }
    }

    /// The record as stored in shared data.
    pub fn encode(&self) -> Vec<u8> {
        let state = match &self.state {
            KeyState::Empty => json!({"state": "empty"}),
            KeyState::Fetching { lease_until_ms, previous } => json!({
                "state": "fetching", "lease_until": lease_until_ms,
                "previous": previous.as_ref().map(encode_keys),
            }),
            KeyState::Loaded(cached) => json!({"state": "loaded", "keys": encode_keys(cached)}),
            KeyState::Unavailable { retry_at_ms } => json!({"state": "unavailable", "retry_at": retry_at_ms}),
        };
        json!({
            "v": RECORD_VERSION,
            "state": state,
            "generations": self.generations,
            "failures": self.consecutive_failures,
            "last_unknown_kid_refetch": self.last_unknown_kid_refetch_ms,
        })
        .to_string()
        .into_bytes()
    }

    /// Reads a stored record, of this version or the one before. `None` for anything that is
    /// not one (then the caller starts from an empty record rather than trusting half of it).
    pub fn decode(bytes: &[u8]) -> Option<KeyRecord> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        if !(1..=RECORD_VERSION).contains(&v.get("v")?.as_u64()?) {
            return None;
        }
        let s = v.get("state")?;
        let state = match s.get("state")?.as_str()? {
            "empty" => KeyState::Empty,
            "fetching" => KeyState::Fetching {
                lease_until_ms: s.get("lease_until")?.as_u64()?,
                previous: match s.get("previous")? {
                    Value::Null => None,
                    keys => Some(decode_keys(keys)?),
                },
            },
            "loaded" => KeyState::Loaded(decode_keys(s.get("keys")?)?),
            "unavailable" => KeyState::Unavailable { retry_at_ms: s.get("retry_at")?.as_u64()? },
            _ => return None,
        };
        Some(KeyRecord {
            state,
            generations: v.get("generations")?.as_u64()?,
            consecutive_failures: u32::try_from(v.get("failures")?.as_u64()?).ok()?,
            last_unknown_kid_refetch_ms: v.get("last_unknown_kid_refetch").and_then(Value::as_u64),
        })
    }
}

fn encode_keys(cached: &CachedKeys) -> Value {
    json!({
        "generation": cached.generation, "jwks": cached.jwks, "refresh_at": cached.refresh_at_ms,
    })
}

fn decode_keys(v: &Value) -> Option<CachedKeys> {
    Some(CachedKeys {
        generation: v.get("generation")?.as_u64()?,
        jwks: v.get("jwks")?.as_str()?.to_string(),
        refresh_at_ms: v.get("refresh_at")?.as_u64()?,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

    const POLICY: KeyPolicy = KeyPolicy {
        cache_duration: Duration::from_secs(300),
        min_refetch_interval: Duration::from_secs(30),
        fetch_timeout: Duration::from_secs(5),
    };

    fn loaded_at(now: u64) -> KeyRecord {
        let mut r = KeyRecord::default();
        assert!(r.begin_fetch(now, &POLICY));
        r.fetch_succeeded("{}".into(), now, &POLICY);
        r
    }

    fn has_keys(r: &KeyRecord, now: u64) -> bool {
        matches!(r.availability(now), Availability::Keys(_))
    }

    #[test]
    fn first_fetch_is_due_and_requests_wait_for_it() {
        let mut r = KeyRecord::default();
        assert!(r.fetch_due(0));
        assert_eq!(r.availability(0), Availability::Pending);
        assert!(r.begin_fetch(0, &POLICY));
        assert!(!r.fetch_due(1));
        assert!(!r.begin_fetch(1, &POLICY), "one fetch at a time");
        assert_eq!(r.availability(1), Availability::Pending);
        assert_eq!(r.fetch_succeeded("{}".into(), 100, &POLICY), 1);
        assert_eq!(r.availability(100), Availability::Keys(1));
        assert!(!r.fetch_due(100));
    }

    #[test]
    fn a_lost_fetch_lease_runs_out_and_can_be_taken_over() {
        let mut r = KeyRecord::default();
        assert!(r.begin_fetch(0, &POLICY));
        assert!(!r.fetch_due(5_999));
        assert!(r.fetch_due(6_000), "timeout plus grace");
        assert!(r.begin_fetch(6_000, &POLICY));
    }

    #[test]
    fn refresh_is_due_before_the_cache_duration_ends_and_keys_serve_meanwhile() {
        let mut r = loaded_at(0);
        assert!(!r.fetch_due(269_999));
        assert!(r.fetch_due(270_000));
        assert!(r.begin_fetch(270_000, &POLICY));
        assert!(has_keys(&r, 270_001), "stale keys serve while the refresh is in flight");
        assert_eq!(r.fetch_succeeded("{}".into(), 270_100, &POLICY), 2);
    }

    #[test]
    fn failure_keeps_last_good_keys_and_backs_off() {
        let mut r = loaded_at(0);
        r.begin_fetch(270_000, &POLICY);
        r.fetch_failed(270_000, &POLICY);
        assert_eq!(r.availability(270_000), Availability::Keys(1));
        assert!(!r.fetch_due(270_499));
        assert!(r.fetch_due(270_500), "first retry within a second");
        r.begin_fetch(270_500, &POLICY);
        r.fetch_failed(270_500, &POLICY);
        assert_eq!(r.retry_delay(&POLICY), Duration::from_secs(1));
        for _ in 0..30 {
            r.begin_fetch(0, &POLICY);
            r.fetch_failed(0, &POLICY);
        }
        assert_eq!(r.retry_delay(&POLICY), Duration::from_secs(300), "capped at the cache duration");
        assert!(has_keys(&r, 10_000_000), "stale keys never expire while fetches fail");
    }

    #[test]
    fn failure_without_keys_is_unavailable_until_the_retry() {
        let mut r = KeyRecord::default();
        r.begin_fetch(0, &POLICY);
        r.fetch_failed(10, &POLICY);
        assert_eq!(r.availability(11), Availability::Unavailable);
        assert_eq!(r.availability(510), Availability::Pending);
        assert!(r.fetch_due(510));
        r.begin_fetch(510, &POLICY);
        r.fetch_succeeded("{}".into(), 600, &POLICY);
        assert!(has_keys(&r, 600));
        assert_eq!(r.retry_delay(&POLICY), FIRST_RETRY, "success resets the backoff");
    }

    #[test]
    fn unknown_kid_refetches_are_throttled_between_themselves() {
        let mut r = loaded_at(0);
        assert!(r.may_refetch_for_unknown_kid(1_000, &POLICY));
        assert!(r.begin_unknown_kid_refetch(1_000, &POLICY));
        assert!(r.may_refetch_for_unknown_kid(1_001, &POLICY), "joins the fetch in flight");
        assert!(!r.begin_unknown_kid_refetch(1_001, &POLICY), "no second fetch");
        r.fetch_succeeded("{}".into(), 1_050, &POLICY);
        assert!(!r.may_refetch_for_unknown_kid(1_100, &POLICY));
        assert!(!r.begin_unknown_kid_refetch(30_999, &POLICY));
        assert!(r.begin_unknown_kid_refetch(31_000, &POLICY));
    }

    #[test]
    fn scheduled_refresh_does_not_count_against_the_unknown_kid_throttle() {
        let mut r = loaded_at(0);
        r.begin_fetch(270_000, &POLICY);
        r.fetch_succeeded("{}".into(), 270_000, &POLICY);
        assert!(r.begin_unknown_kid_refetch(270_001, &POLICY));
    }

    #[test]
    fn records_round_trip_through_shared_data_bytes() {
        let mut r = loaded_at(5);
        assert_eq!(KeyRecord::decode(&r.encode()), Some(r.clone()));
        r.begin_unknown_kid_refetch(9_000, &POLICY);
        assert_eq!(KeyRecord::decode(&r.encode()), Some(r.clone()));
        let mut u = KeyRecord::default();
        u.begin_fetch(0, &POLICY);
        assert_eq!(KeyRecord::decode(&u.encode()), Some(u.clone()));
        u.fetch_failed(1, &POLICY);
        assert_eq!(KeyRecord::decode(&u.encode()), Some(u.clone()));
        for bad in [&b""[..], b"{}", b"{\"v\":2}", b"not json", b"{\"v\":1,\"state\":{\"state\":\"odd\"}}"] {
            assert_eq!(KeyRecord::decode(bad), None);
        }
        let current = br#"{"v":2,"state":{"state":"empty"},"generations":0,"failures":0}"#;
        assert_eq!(KeyRecord::decode(current), Some(KeyRecord::default()));
        let later = br#"{"v":3,"state":{"state":"empty"},"generations":0,"failures":0}"#;
        assert_eq!(KeyRecord::decode(later), None, "a later version is not read");
    }

    #[test]
    fn records_of_the_previous_version_still_decode() {
        // As version 1 wrote them: a fetch's start and the keys' fetch time, now not kept.
        let fetching = br#"{"v":1,"state":{"state":"fetching","since":9000,"lease_until":15000,
            "previous":{"generation":1,"jwks":"{}","fetched_at":5,"refresh_at":270005}},
            "generations":1,"failures":0,"last_unknown_kid_refetch":9000}"#;
        let previous = CachedKeys { generation: 1, jwks: "{}".into(), refresh_at_ms: 270_005 };
        let expected = KeyRecord {
            state: KeyState::Fetching { lease_until_ms: 15_000, previous: Some(previous.clone()) },
            generations: 1,
            consecutive_failures: 0,
            last_unknown_kid_refetch_ms: Some(9_000),
        };
        assert_eq!(KeyRecord::decode(fetching), Some(expected));
        let loaded = br#"{"v":1,"state":{"state":"loaded","keys":{"generation":1,"jwks":"{}","fetched_at":5,
            "refresh_at":270005}},"generations":1,"failures":2,"last_unknown_kid_refetch":null}"#;
        let record = KeyRecord::decode(loaded);
        assert_eq!(record.as_ref().map(|r| &r.state), Some(&KeyState::Loaded(previous)));
        assert_eq!(record.map(|r| r.consecutive_failures), Some(2));
        let written = String::from_utf8(expected_encoding()).unwrap_or_default();
        assert!(written.contains("\"v\":2") && !written.contains("since") && !written.contains("fetched_at"), "{written}");
    }

    fn expected_encoding() -> Vec<u8> {
        let mut r = loaded_at(5);
        r.begin_fetch(9_000, &POLICY);
        r.encode()
    }
}

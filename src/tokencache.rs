//! Tokens already verified, so a repeated token skips decoding and the signature check.
//!
//! Keyed by the whole token: a (randomly keyed SipHash) hash of all of its bytes finds the
//! entry, and the stored token must then equal the presented one byte for byte, so an entry
//! can only ever answer for exactly what was verified (keying on less, the signature say,
//! would let a changed payload ride on a verified signature). SipHash rather than SHA-256:
//! inside the VM a SHA-256 of a 1 KB token costs more than the rest of a cache hit, and the
//! full comparison already rules out collisions. An entry serves while the key set that verified it
//! is current (its generation) and until the token's `exp`: a hit still checks `exp` and
//! `nbf` against now. Bounded; the least recently used entry is evicted.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

/// What a verified token left behind: enough to write its headers again.
#[derive(Debug)]
pub struct CachedToken {
    pub rule: usize,
    /// The key-set generation that verified it (0 for inline keys).
    pub generation: u64,
    pub claims: Value,
    pub payload_b64: String,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
}

impl CachedToken {
    /// Still within `exp`/`nbf` at `now_secs`, allowing `clock_skew`, as `verify::check_time`.
    pub fn is_current(&self, now_secs: u64, clock_skew: Duration) -> bool {
        let skew = clock_skew.as_secs();
        self.exp.is_none_or(|exp| now_secs <= exp.saturating_add(skew))
            && self.nbf.is_none_or(|nbf| now_secs.saturating_add(skew) >= nbf)
    }
}

struct Entry {
    verified: CachedToken,
    last_used: Cell<u64>,
}

/// A bounded map from token hash to its verification result.
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<Box<str>, Entry>,
    uses: Cell<u64>,
}

impl TokenCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { capacity, entries: HashMap::with_capacity(capacity.min(1 << 16)), uses: Cell::new(0) }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `token` if it was verified by key-set generation `current(rule)`.
    /// Time is the caller's to check (`CachedToken::is_current`), with the rule's skew.
    pub fn get(&self, token: &str, current: impl Fn(usize) -> Option<u64>) -> Option<&CachedToken> {
        if self.capacity == 0 {
            return None;
        }
        let entry = self.entries.get(token)?;
        if current(entry.verified.rule) != Some(entry.verified.generation) {
            return None;
        }
        let use_count = self.uses.get() + 1;
        self.uses.set(use_count);
        entry.last_used.set(use_count);
        Some(&entry.verified)
    }

    /// Remembers a verified token, evicting the least recently used entry when full.
    pub fn insert(&mut self, token: &str, verified: CachedToken) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(token) {
            // A scan per insert: O(capacity), but only on a miss, which already paid for a
            // signature check that costs far more.
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last_used.get()).map(|(k, _)| k.clone()) {
                self.entries.remove(&oldest);
            }
        }
        let use_count = self.uses.get() + 1;
        self.uses.set(use_count);
        self.entries.insert(token.into(), Entry { verified, last_used: Cell::new(use_count) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cached(generation: u64, exp: Option<u64>) -> CachedToken {
        CachedToken { rule: 0, generation, claims: json!({}), payload_b64: String::new(), exp, nbf: None }
    }

    #[test]
    fn hit_only_for_the_same_bytes_and_key_generation() {
        let mut cache = TokenCache::new(10);
        cache.insert("a.b.c", cached(1, None));
        assert!(cache.get("a.b.c", |_| Some(1)).is_some());
        assert!(cache.get("a.b.d", |_| Some(1)).is_none());
        assert!(cache.get("a.b.c", |_| Some(2)).is_none(), "a key-set change invalidates");
        assert!(cache.get("a.b.c", |_| None).is_none());
    }

    #[test]
    fn bounded_with_least_recently_used_eviction() {
        let mut cache = TokenCache::new(2);
        cache.insert("one", cached(0, None));
        cache.insert("two", cached(0, None));
        assert!(cache.get("one", |_| Some(0)).is_some()); // "two" is now the oldest
        cache.insert("three", cached(0, None));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("two", |_| Some(0)).is_none());
        assert!(cache.get("one", |_| Some(0)).is_some());
        assert!(cache.get("three", |_| Some(0)).is_some());
    }

    #[test]
    fn zero_capacity_disables() {
        let mut cache = TokenCache::new(0);
        cache.insert("one", cached(0, None));
        assert!(cache.is_empty());
        assert!(cache.get("one", |_| Some(0)).is_none());
    }

    #[test]
    fn currency_checks_exp_and_nbf_with_skew() {
        let skew = Duration::from_secs(60);
        assert!(cached(0, Some(1000)).is_current(1060, skew));
        assert!(!cached(0, Some(1000)).is_current(1061, skew));
        let not_yet = CachedToken { nbf: Some(2000), ..cached(0, None) };
        assert!(!not_yet.is_current(1939, skew));
        assert!(not_yet.is_current(1940, skew));
    }
}

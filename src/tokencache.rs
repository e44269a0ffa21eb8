//! Tokens already verified, so a repeated token skips decoding and the signature check.
//!
//! Keyed by the whole token: a randomly keyed SipHash of all of its bytes finds the entry,
//! and the stored token must then equal the presented one byte for byte, so an entry can
//! only ever answer for exactly what was verified (keying on less, the signature say, would
//! let a changed payload ride on a verified signature). SipHash rather than SHA-256: inside
//! the VM a SHA-256 of a 1 KB token costs more than the rest of a cache hit, and the full
//! comparison already rules out collisions (two tokens with one hash share a slot: the
//! later one evicts the earlier, and a lookup of the other simply misses). The comparison is
//! word-wise: `memcmp` in a wasm32 build walks byte by byte, which on a cache hit cost as
//! much as all the rest of the filter's work in the VM. An entry serves while the key set
//! that verified it is current (its generation) and until the token's `exp`: a hit still
//! checks `exp` and `nbf` against now. Bounded; the least recently used entry is evicted.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
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
    token: Box<str>,
    verified: CachedToken,
    last_used: Cell<u64>,
}

/// The map's own hasher over keys that are already keyed SipHash values: hashing them again
/// would only spend time.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are u64); fold anything else in all the same.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// A bounded map from token hash to its verification result.
pub struct TokenCache {
    capacity: usize,
    /// Keyed by `token_hash.hash_one(token)`.
    entries: HashMap<u64, Entry, BuildHasherDefault<AlreadyHashed>>,
    /// Random keys per cache: nobody can aim tokens at one slot.
    token_hash: RandomState,
    uses: Cell<u64>,
}

impl TokenCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            entries: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), BuildHasherDefault::default()),
            token_hash: RandomState::new(),
            uses: Cell::new(0),
        }
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
        let entry = self.entries.get(&self.token_hash.hash_one(token))?;
        if !same_bytes(entry.token.as_bytes(), token.as_bytes())
            || current(entry.verified.rule) != Some(entry.verified.generation)
        {
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
        let hash = self.token_hash.hash_one(token);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&hash) {
            // A scan per insert: O(capacity), but only on a miss, which already paid for a
            // signature check that costs far more.
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last_used.get()).map(|(k, _)| *k) {
                self.entries.remove(&oldest);
            }
        }
        let use_count = self.uses.get() + 1;
        self.uses.set(use_count);
        self.entries.insert(hash, Entry { token: token.into(), verified, last_used: Cell::new(use_count) });
    }
}

/// `a == b`, eight bytes at a time, in a form the compiler does not turn back into `memcmp`
/// (no early exit: the comparison also takes the same time wherever the first difference is).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let mut differ = a_words.remainder().iter().zip(b_words.remainder()).fold(0u64, |acc, (x, y)| acc | u64::from(x ^ y));
    for (x, y) in a_words.zip(b_words) {
        let word = |bytes: &[u8]| bytes.try_into().map_or(0, u64::from_ne_bytes);
        differ |= word(x) ^ word(y);
    }
    differ == 0
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
    fn word_wise_comparison_sees_every_byte() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl-_"; // not a multiple of 8
        assert!(same_bytes(token.as_bytes(), token.as_bytes()));
        for at in 0..token.len() {
            let mut other = token.as_bytes().to_vec();
            other[at] ^= 1;
            assert!(!same_bytes(token.as_bytes(), &other), "a change at byte {at} went unseen");
        }
        assert!(!same_bytes(b"abc", b"abcd"));
        assert!(same_bytes(b"", b""));
    }

    #[test]
    fn a_hash_collision_is_a_miss_not_a_wrong_answer() {
        let mut cache = TokenCache::new(10);
        cache.insert("a.b.c", cached(1, None));
        // Force the slot of "a.b.c" to answer for another token, as a collision would.
        let hash = cache.token_hash.hash_one("x.y.z");
        if let Some(entry) = cache.entries.remove(&cache.token_hash.hash_one("a.b.c")) {
            cache.entries.insert(hash, entry);
        }
        assert!(cache.get("x.y.z", |_| Some(1)).is_none());
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

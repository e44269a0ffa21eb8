//! Tokens already verified, so a repeated token skips decoding and the signature check.
//!
//! Keyed by the whole token: a seeded hash of all of its bytes picks the slot, and the
//! stored token must then equal the presented one byte for byte, so an entry can only ever
//! answer for exactly what was verified (keying on less, the signature say, would let a
//! changed payload ride on a verified signature). Because of that comparison the hash needs
//! no cryptographic strength: two tokens with one hash share a slot (the later evicts the
//! earlier; a lookup of the other misses and verifies again), only verified tokens are ever
//! inserted, and the map is keyed by the 64-bit hash itself, so colliding inputs cannot
//! lengthen a probe chain. What matters inside the VM is speed: a SHA-256 of a 1 KB token
//! costs more than the rest of a cache hit, and SipHash took about 3,800 instructions for a
//! 700-byte token (callgrind on Envoy), of which a word-wise multiply-xor saved about
//! 1,500; four such lanes side by side halve its time again ([`token_hash`]). The comparison is word-wise too ([`same_bytes`]): `memcmp` in a wasm32 build walks
//! byte by byte, which cost about 9,000 instructions per hit. An entry serves while the key set
//! that verified it is current (its generation) and until the token's `exp`: a hit still
//! checks `exp` and `nbf` against now. Bounded; the least recently used entry is evicted.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::Duration;

use std::rc::Rc;

use serde_json::Value;

use crate::model::Grant;
use crate::bytes::same_bytes;
use crate::verify::Validity;

/// What a verified token left behind: enough to write its headers again.
#[derive(Debug)]
pub struct CachedToken {
    pub rule: usize,
    /// The key-set generation that verified it (0 for inline keys).
    pub generation: u64,
    pub claims: Value,
    pub payload_b64: String,
    /// Its `exp`/`nbf`, as `verify::decode` read them.
    pub validity: Validity,
    /// What the token earns when it is a request's only token, presented at this location
    /// (an index into the configuration's locations): rendered once, when it was verified.
    /// None where the grant depends on the request (a query parameter is cut from its path).
    pub grant_alone: Option<(usize, Rc<Grant>)>,
}

impl CachedToken {
    /// Still within `exp`/`nbf` at every moment from `earliest` to `latest` (seconds),
    /// allowing `clock_skew`: what [`CachedToken::is_current`] would say anywhere between.
    pub fn is_current_throughout(&self, earliest: u64, latest: u64, clock_skew: Duration) -> bool {
        self.is_current(earliest, clock_skew) && self.is_current(latest, clock_skew)
    }

    /// Still within `exp`/`nbf` at `now_secs`, allowing `clock_skew`: the same rule as for a
    /// token being verified ([`Validity::check`]).
    pub fn is_current(&self, now_secs: u64, clock_skew: Duration) -> bool {
        self.validity.check(now_secs, clock_skew).is_ok()
    }
}

struct Entry {
    token: Box<[u8]>,
    verified: CachedToken,
    last_used: Cell<u64>,
}

/// The map's own hasher over keys that are already hashes: hashing them again would only
/// spend time.
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
    /// Keyed by `token_hash(seed, token)`.
    entries: HashMap<u64, Entry, BuildHasherDefault<AlreadyHashed>>,
    /// Random per cache, so slots differ from one VM (and start) to the next.
    seed: u64,
    uses: Cell<u64>,
}

impl TokenCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            entries: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), BuildHasherDefault::default()),
            seed: RandomState::new().hash_one(capacity),
            uses: Cell::new(0),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `token` if it was verified by key-set generation `current(rule)`.
    /// Time is the caller's to check (`CachedToken::is_current`), with the rule's skew.
    pub fn get(&self, token: &[u8], current: impl Fn(usize) -> Option<u64>) -> Option<&CachedToken> {
        if self.capacity == 0 {
            return None;
        }
        let entry = self.entries.get(&token_hash(self.seed, token))?;
        if !same_bytes(&entry.token, token) || current(entry.verified.rule) != Some(entry.verified.generation) {
            return None;
        }
        let use_count = self.uses.get() + 1;
        self.uses.set(use_count);
        entry.last_used.set(use_count);
        Some(&entry.verified)
    }

    /// Remembers a verified token, evicting the least recently used entry when full.
    pub fn insert(&mut self, token: &[u8], verified: CachedToken) {
        if self.capacity == 0 {
            return;
        }
        let hash = token_hash(self.seed, token);
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

/// A seeded 64-bit hash of `bytes`, with 64-bit multiplies only (wasm has no 128-bit
/// product), finished with MurmurHash3's avalanche so that every output bit (the map uses the
/// low ones for the bucket, the high ones for its tags) depends on every input. Four lanes
/// take a 32-byte block a step: one lane would wait for each product before the next, and
/// the lanes side by side take 69 ns for a 900-byte token in V8 where one took 150. The loop
/// takes two blocks a turn: V8 checks the stack on every turn of a loop.
fn token_hash(seed: u64, bytes: &[u8]) -> u64 {
    let pairs = bytes.chunks_exact(64);
    let rest = pairs.remainder();
    let mut lanes = [seed ^ (bytes.len() as u64).wrapping_mul(HASH_K), seed.rotate_left(16) ^ HASH_K, seed.rotate_left(32), seed.rotate_left(48)];
    for pair in pairs {
        let (first, second) = pair.split_at(32);
        hash_block(&mut lanes, first);
        hash_block(&mut lanes, second);
    }
    let blocks = rest.chunks_exact(32);
    let rest = blocks.remainder();
    for block in blocks {
        hash_block(&mut lanes, block);
    }
    let [a, b, c, d] = lanes;
    let mut hash = a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(47);
    let words = rest.chunks_exact(8);
    let tail = tail_word(bytes, words.remainder().len());
    for word in words {
        hash = hash_step(hash, le_word(word));
    }
    hash = hash_step(hash, tail);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

const HASH_K: u64 = 0x9e37_79b9_7f4a_7c15;

fn hash_step(lane: u64, word: u64) -> u64 {
    (lane ^ word).wrapping_mul(HASH_K).rotate_left(29)
}

/// One 32-byte block, a word into each lane.
#[inline(always)]
fn hash_block(lanes: &mut [u64; 4], block: &[u8]) {
    for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
        *lane = hash_step(*lane, le_word(word));
    }
}

/// The last `len` (< 8) bytes of `bytes` as a little-endian word, zero-extended. Read as the
/// last eight bytes shifted down where there are eight: copying the few bytes into a word
/// instead is `memory.copy`, which V8 runs as a call out to C.
fn tail_word(bytes: &[u8], len: usize) -> u64 {
    match bytes.len().checked_sub(8) {
        _ if len == 0 => 0,
        Some(start) => le_word(bytes.get(start..).unwrap_or_default()) >> (8 * (8 - len.min(7))),
        None => bytes.iter().rev().take(len).fold(0, |word, &byte| word << 8 | u64::from(byte)),
    }
}

/// Eight bytes as a little-endian word (0 if fewer: callers pass exact chunks).
fn le_word(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cached(generation: u64, exp: Option<u64>) -> CachedToken {
        CachedToken {
            rule: 0,
            generation,
            claims: json!({}),
            payload_b64: String::new(),
            validity: Validity { exp, nbf: None },
            grant_alone: None,
        }
    }

    #[test]
    fn hit_only_for_the_same_bytes_and_key_generation() {
        let mut cache = TokenCache::new(10);
        cache.insert(b"a.b.c", cached(1, None));
        assert!(cache.get(b"a.b.c", |_| Some(1)).is_some());
        assert!(cache.get(b"a.b.d", |_| Some(1)).is_none());
        assert!(cache.get(b"a.b.c", |_| Some(2)).is_none(), "a key-set change invalidates");
        assert!(cache.get(b"a.b.c", |_| None).is_none());
    }

    #[test]
    fn bounded_with_least_recently_used_eviction() {
        let mut cache = TokenCache::new(2);
        cache.insert(b"one", cached(0, None));
        cache.insert(b"two", cached(0, None));
        assert!(cache.get(b"one", |_| Some(0)).is_some()); // "two" is now the oldest
        cache.insert(b"three", cached(0, None));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(b"two", |_| Some(0)).is_none());
        assert!(cache.get(b"one", |_| Some(0)).is_some());
        assert!(cache.get(b"three", |_| Some(0)).is_some());
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
    fn the_hash_covers_every_byte_and_the_seed() {
        let token = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl-_";
        let base = token_hash(7, token);
        assert_ne!(token_hash(8, token), base);
        assert_ne!(token_hash(7, &token[..token.len() - 1]), base);
        for at in 0..token.len() {
            let mut other = token.to_vec();
            other[at] ^= 1;
            assert_ne!(token_hash(7, &other), base, "byte {at}");
        }
    }

    #[test]
    fn every_lane_of_the_hash_sees_every_byte() {
        // Blocks for all four lanes, whole words after them and a tail.
        let token: Vec<u8> = (0..300u32).map(|i| b'A' + (i * 7 % 50) as u8).collect();
        let base = token_hash(7, &token);
        for at in 0..token.len() {
            for bit in [0x01, 0x20, 0x40] {
                let mut other = token.clone();
                other[at] ^= bit;
                assert_ne!(token_hash(7, &other), base, "byte {at}, bit {bit:#x}");
            }
        }
        let mut swapped = token.clone();
        swapped.swap(0, 8); // the same words in other lanes
        assert_ne!(token_hash(7, &swapped), base);
    }

    /// The hash as first written (one block a turn, the tail copied into a word): the
    /// unrolled loop and the shifted tail must not change a single value.
    fn hash_as_first_written(seed: u64, bytes: &[u8]) -> u64 {
        let step = |lane: u64, word: &[u8]| (lane ^ le_word(word)).wrapping_mul(HASH_K).rotate_left(29);
        let blocks = bytes.chunks_exact(32);
        let rest = blocks.remainder();
        let mut lanes = [seed ^ (bytes.len() as u64).wrapping_mul(HASH_K), seed.rotate_left(16) ^ HASH_K, seed.rotate_left(32), seed.rotate_left(48)];
        for block in blocks {
            for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
                *lane = step(*lane, word);
            }
        }
        let [a, b, c, d] = lanes;
        let mut hash = a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(47);
        let words = rest.chunks_exact(8);
        let mut tail = [0u8; 8];
        tail.iter_mut().zip(words.remainder()).for_each(|(to, from)| *to = *from);
        for word in words {
            hash = step(hash, word);
        }
        hash = step(hash, &tail);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }

    #[test]
    fn the_hash_is_the_same_function_at_every_length() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 131 % 251) as u8).collect();
        for len in 0..bytes.len() {
            for seed in [0, 7, u64::MAX] {
                assert_eq!(token_hash(seed, &bytes[..len]), hash_as_first_written(seed, &bytes[..len]), "length {len}");
            }
        }
    }

    #[test]
    fn a_hash_collision_is_a_miss_not_a_wrong_answer() {
        let mut cache = TokenCache::new(10);
        cache.insert(b"a.b.c", cached(1, None));
        // Force the slot of "a.b.c" to answer for another token, as a collision would.
        let hash = token_hash(cache.seed, b"x.y.z");
        if let Some(entry) = cache.entries.remove(&token_hash(cache.seed, b"a.b.c")) {
            cache.entries.insert(hash, entry);
        }
        assert!(cache.get(b"x.y.z", |_| Some(1)).is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let mut cache = TokenCache::new(0);
        cache.insert(b"one", cached(0, None));
        assert!(cache.is_empty());
        assert!(cache.get(b"one", |_| Some(0)).is_none());
    }

    #[test]
    fn currency_throughout_a_span_needs_both_ends() {
        let skew = Duration::from_secs(60);
        let token = CachedToken { validity: Validity { exp: Some(5000), nbf: Some(2000) }, ..cached(0, None) };
        assert!(token.is_current_throughout(1940, 5060, skew));
        assert!(!token.is_current_throughout(1939, 3000, skew), "not yet valid at the start");
        assert!(!token.is_current_throughout(3000, 5061, skew), "expired by the end");
    }

    #[test]
    fn currency_checks_exp_and_nbf_with_skew() {
        let skew = Duration::from_secs(60);
        assert!(cached(0, Some(1000)).is_current(1060, skew));
        assert!(!cached(0, Some(1000)).is_current(1061, skew));
        let not_yet = CachedToken { validity: Validity { exp: None, nbf: Some(2000) }, ..cached(0, None) };
        assert!(!not_yet.is_current(1939, skew));
        assert!(not_yet.is_current(1940, skew));
    }
}

//! Byte comparisons a word at a time, for the request path.
//!
//! In a wasm32 build `==` on slices calls `memcmp`, which walks byte by byte, and
//! `eq_ignore_ascii_case` lowercases each byte on its own: a cached request compared some
//! 900 token bytes and a few header names and prefixes that way, about a tenth of the
//! filter's own work in the VM. These load eight bytes at once.

/// Eight bytes from `at` as a word (0 past the end: callers stay within bounds).
fn word(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at.saturating_add(8)).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Four bytes from `at` as a word (0 past the end).
fn half_word(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at.saturating_add(4)).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

/// `a == b`. No early exit: it takes the same time wherever the first difference is. The
/// last word overlaps the one before it where the length is not a multiple of eight, so no
/// byte is compared on its own.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    if len < 8 {
        if len < 4 {
            return a.iter().zip(b).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0;
        }
        let differ = (half_word(a, 0) ^ half_word(b, 0)) | (half_word(a, len - 4) ^ half_word(b, len - 4));
        return differ == 0;
    }
    let mut differ = word(a, len - 8) ^ word(b, len - 8);
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let whole = |bytes: &[u8]| bytes.try_into().map_or(0, u64::from_le_bytes);
        differ |= whole(x) ^ whole(y);
    }
    differ == 0
}

/// `bytes` holds `byte`: eight bytes a step (`memchr` in a wasm32 build is more code than
/// this, and a plain loop takes a byte a step).
pub fn contains_byte(bytes: &[u8], byte: u8) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES.wrapping_mul(u64::from(byte));
    let words = bytes.chunks_exact(8);
    let rest = words.remainder();
    for chunk in words {
        // A byte equal to `byte` is a zero byte of `x`; this is non-zero exactly when `x` has one.
        let x = chunk.try_into().map_or(0, u64::from_le_bytes) ^ pattern;
        if x.wrapping_sub(ONES) & !x & HIGH_BITS != 0 {
            return true;
        }
    }
    // At most seven bytes: a plain loop (`contains` would call `memchr`).
    #[allow(clippy::manual_contains)]
    rest.iter().any(|&b| b == byte)
}

/// The bits that lowercase the ASCII letters of an eight-byte word (bit 5 of each letter's
/// byte). Setting bit 5 lowercases an uppercase letter and turns no other byte into a
/// lowercase letter, so comparing words with it set at the letters of the lowercase word
/// is `eq_ignore_ascii_case`, eight bytes at once.
const fn letter_case_bits(lowercase: [u8; 8]) -> u64 {
    const fn bit(byte: u8) -> u8 {
        if byte.is_ascii_lowercase() {
            0x20
        } else {
            0
        }
    }
    let [a, b, c, d, e, f, g, h] = lowercase;
    u64::from_le_bytes([bit(a), bit(b), bit(c), bit(d), bit(e), bit(f), bit(g), bit(h)])
}

/// A name that is at least eight bytes long, lowercase (no ASCII uppercase), to compare
/// with in any ASCII case: [`CaselessName::is_prefix_of`].
#[derive(Debug, Clone, Copy)]
pub struct CaselessName<const N: usize> {
    /// The first and the last eight bytes, as words, and their letters' case bits.
    head: (u64, u64),
    tail: (u64, u64),
}

impl<const N: usize> CaselessName<N> {
    /// `lowercase` must hold no ASCII uppercase letter and be at least eight bytes long: for
    /// constants, where a check that fails (or an index out of range) stops the build.
    #[allow(clippy::indexing_slicing)] // every index is below 8 <= N (the loops' conditions)
    pub const fn new(lowercase: &[u8; N]) -> CaselessName<N> {
        assert!(N >= 8);
        let mut i = 0;
        while i < N {
            assert!(!lowercase[i].is_ascii_uppercase());
            i += 1;
        }
        let mut head = [0u8; 8];
        let mut tail = [0u8; 8];
        let mut i = 0;
        while i < 8 {
            head[i] = lowercase[i];
            tail[i] = lowercase[N - 8 + i];
            i += 1;
        }
        CaselessName {
            head: (u64::from_le_bytes(head), letter_case_bits(head)),
            tail: (u64::from_le_bytes(tail), letter_case_bits(tail)),
        }
    }

    /// `bytes` starts with this name, in any ASCII case.
    pub fn is_prefix_of(&self, bytes: &[u8]) -> bool {
        let (head, head_case) = self.head;
        let (tail, tail_case) = self.tail;
        bytes.len() >= N && word(bytes, 0) | head_case == head && word(bytes, N - 8) | tail_case == tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_is_slice_equality_at_every_length() {
        let base: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..base.len() {
            let a = &base[..len];
            assert!(same_bytes(a, a));
            assert!(!same_bytes(a, &base[..len + 1]));
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x01;
                assert!(!same_bytes(a, &b), "len {len}, difference at {at}");
                b[at] ^= 0x81;
                assert!(!same_bytes(a, &b), "len {len}, difference at {at}");
            }
        }
    }

    #[test]
    fn contains_byte_finds_a_byte_anywhere() {
        for len in 0..40 {
            let mut bytes: Vec<u8> = (0..len as u8).map(|i| b'a' + i % 26).collect();
            assert!(!contains_byte(&bytes, b'?'), "len {len}");
            assert!(!contains_byte(&bytes, 0x80 | b'?'));
            for at in 0..len {
                bytes[at] = b'?';
                assert!(contains_byte(&bytes, b'?'), "len {len}, at {at}");
                bytes[at] = b'?' ^ 0x80; // only the byte itself counts, not one with the high bit
                assert!(!contains_byte(&bytes, b'?'), "len {len}, at {at}");
                bytes[at] = b'a';
            }
        }
        assert!(contains_byte(b"\x00\x01?", 0) && !contains_byte(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09", 0));
    }

    #[test]
    fn a_caseless_name_is_eq_ignore_ascii_case_on_the_prefix() {
        const NAME: CaselessName<11> = CaselessName::new(b"x-jwt-claim");
        for yes in ["x-jwt-claim", "X-JWT-CLAIM", "x-Jwt-Claim.groups", "x-jwt-claimz"] {
            assert!(NAME.is_prefix_of(yes.as_bytes()), "{yes}");
        }
        for no in ["x-jwt-clai", "x_jwt-claim", "x-jwt-claIn", "y-jwt-claim", "x\rjwt-claim", "x-jwt-cla\u{e9}m", ""] {
            assert!(!NAME.is_prefix_of(no.as_bytes()), "{no}");
        }
        // Every byte against every byte, at every position: exactly eq_ignore_ascii_case.
        let name = b"x-jwt-claim";
        for at in 0..name.len() {
            for byte in 0..=255u8 {
                let mut probe = *name;
                probe[at] = byte;
                assert_eq!(NAME.is_prefix_of(&probe), probe.eq_ignore_ascii_case(name), "byte {byte:#x} at {at}");
            }
        }
    }
}

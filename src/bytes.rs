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

/// `name` is a spelling of the header name `owned`: the same in any ASCII case, with `_` and
/// `-` taken as one character. Many upstream stacks (WSGI, PHP, Rack/Rails, CGI, FastCGI)
/// fold `_` into `-`, so a client's `x_jwt_claim_groups` reaches them as `x-jwt-claim-groups`:
/// every header the filter owns is matched this way, so that no spelling of one survives.
pub fn same_header_name(name: &[u8], owned: &[u8]) -> bool {
    name.len() == owned.len() && name.iter().zip(owned).all(|(&a, &b)| fold_header_byte(a) == fold_header_byte(b))
}

/// `name` starts with a spelling of `owned` ([`same_header_name`]).
pub fn starts_with_header_name(name: &[u8], owned: &[u8]) -> bool {
    name.get(..owned.len()).is_some_and(|head| same_header_name(head, owned))
}

fn fold_header_byte(byte: u8) -> u8 {
    match byte {
        b'_' => b'-',
        _ => byte.to_ascii_lowercase(),
    }
}

/// RFC 7230 `token`: what a header name may contain.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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
    fn header_names_match_in_any_case_and_either_separator() {
        for yes in ["x-jwt-claim", "X-JWT-CLAIM", "x_jwt_claim", "X_Jwt-Claim", "x-jwt_claim"] {
            assert!(same_header_name(yes.as_bytes(), b"x-jwt-claim"), "{yes}");
            assert!(same_header_name(yes.as_bytes(), b"x_jwt_claim"), "{yes}");
        }
        for no in ["x-jwt-clai", "x.jwt-claim", "x-jwt-claIn", "y-jwt-claim", "x\rjwt-claim", "x-jwt-cla\u{e9}m", ""] {
            assert!(!same_header_name(no.as_bytes(), b"x-jwt-claim"), "{no}");
        }
        assert!(starts_with_header_name(b"x_jwt_claim_groups", b"x-jwt-claim"));
        assert!(starts_with_header_name(b"X-JWT-CLAIM.groups", b"x-jwt-claim"));
        assert!(!starts_with_header_name(b"x-jwt-clai", b"x-jwt-claim"));
        // Every byte against every byte, at every position: case and separator folding only.
        let name = b"x-jwt-claim";
        for at in 0..name.len() {
            for byte in 0..=255u8 {
                let mut probe = *name;
                probe[at] = byte;
                let expected = probe.eq_ignore_ascii_case(name) || (name[at] == b'-' && byte == b'_');
                assert_eq!(same_header_name(&probe, name), expected, "byte {byte:#x} at {at}");
            }
        }
    }
}

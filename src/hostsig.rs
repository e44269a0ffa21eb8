//! The wire format of Envoy's `verify_signature` foreign function, and the start-up check
//! that the host's answers can be trusted before any token depends on them.
//!
//! Envoy (`source/extensions/common/wasm/foreign.cc`) takes a protobuf
//! `VerifySignatureArguments { string hash_function = 1; bytes public_key = 2 (DER);
//! bytes signature = 3; bytes text = 4; }` and answers `VerifySignatureResult { bool result
//! = 1; string error = 2; }`. Four length-delimited fields do not justify a protobuf crate.

use crate::verify::HostVerifier;

/// The arguments message.
pub fn encode_arguments(hash: &str, spki_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hash.len() + spki_der.len() + signature.len() + text.len() + 24);
    for (field, bytes) in [(1u8, hash.as_bytes()), (2, spki_der), (3, signature), (4, text)] {
        out.push(field << 3 | 2); // wire type 2: length-delimited
        let mut len = bytes.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(bytes);
    }
    out
}

/// The `result` field of the answer; anything unreadable is `false` (fail closed).
pub fn decode_result(message: &[u8]) -> bool {
    let mut rest = message;
    let mut result = false;
    while let Some((&tag, tail)) = rest.split_first() {
        match tag {
            0x08 => {
                // field 1, varint: a bool is one byte
                let Some((&value, tail)) = tail.split_first() else { return false };
                result = value == 1;
                rest = tail;
            }
            0x12 => {
                // field 2 (error text), length-delimited: skip it
                let Some((&len, tail)) = tail.split_first() else { return false };
                if len & 0x80 != 0 {
                    return result; // a long error message; the result field came first
                }
                let Some(after) = tail.get(usize::from(len)..) else { return false };
                rest = after;
            }
            _ => return false,
        }
    }
    result
}

/// A fixed P-256 SubjectPublicKeyInfo, and an ECDSA-SHA256 signature (DER) it made over
/// [`PROBE_MESSAGE`], generated once offline. Fixed rather than generated at start-up: signing
/// code would double the module's size for a check that needs no secrecy.
const PROBE_SPKI_DER: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0xdf, 0x8f, 0xc2, 0x37, 0x2d, 0x9a, 0x10, 0xaf, 0x84, 0x74, 0x97,
    0x25, 0x43, 0xdb, 0x1d, 0x95, 0xf6, 0x10, 0x24, 0x7d, 0xaf, 0xf2, 0xe9, 0x5f, 0x72, 0x74, 0x66, 0xcf, 0x4b, 0x76,
    0xb8, 0xfe, 0xc6, 0x07, 0xe8, 0xd2, 0x2c, 0x2f, 0x5d, 0x01, 0xd6, 0xb2, 0x95, 0xfd, 0x94, 0x9b, 0xd4, 0x51, 0x8f,
    0xa6, 0xd9, 0xea, 0x74, 0xfa, 0xdf, 0xc8, 0x91, 0xeb, 0xac, 0xdd, 0x48, 0x94, 0xa3, 0x57,
];
const PROBE_SIGNATURE_DER: &[u8] = &[
    0x30, 0x44, 0x02, 0x20, 0x20, 0x77, 0x21, 0xcd, 0x4b, 0xf5, 0x4a, 0xc7, 0x51, 0x21, 0xce, 0xd1, 0x60, 0x2f, 0x1d,
    0x5f, 0xa0, 0xc9, 0xb5, 0xfa, 0x2b, 0x42, 0xd0, 0x65, 0x9d, 0xe4, 0x0e, 0x02, 0xbd, 0xe0, 0x99, 0x26, 0x02, 0x20,
    0x4b, 0x1b, 0xb4, 0x3f, 0x8e, 0x5b, 0xc3, 0x5a, 0xf0, 0x4c, 0x31, 0x13, 0xfa, 0xe3, 0xaa, 0xf7, 0x1c, 0xdf, 0x0d,
    0x3e, 0x7e, 0x83, 0x74, 0xc3, 0x6a, 0x7a, 0x10, 0x9c, 0xa5, 0x0b, 0x02, 0x50,
];
const PROBE_MESSAGE: &[u8] = b"jwt-claims-filter host signature probe";

/// Asks `host` about a known-valid signature and the same signature over a changed message:
/// `true` only if it accepts the first and refuses the second. Run once per VM before the
/// host is trusted with any token.
pub fn host_answers_correctly(host: &dyn HostVerifier) -> bool {
    let valid = host.verify("sha256", PROBE_SPKI_DER, PROBE_MESSAGE, PROBE_SIGNATURE_DER);
    let mut tampered = PROBE_MESSAGE.to_vec();
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    let refused = host.verify("sha256", PROBE_SPKI_DER, &tampered, PROBE_SIGNATURE_DER);
    valid == Some(true) && refused == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_four_length_delimited_fields() {
        let long = vec![7u8; 300];
        let msg = encode_arguments("sha256", b"DER", &long, b"a.b");
        let mut expected = vec![0x0a, 6];
        expected.extend_from_slice(b"sha256");
        expected.extend_from_slice(&[0x12, 3]);
        expected.extend_from_slice(b"DER");
        expected.extend_from_slice(&[0x1a, 0xac, 0x02]); // 300 as a varint
        expected.extend_from_slice(&long);
        expected.extend_from_slice(&[0x22, 3]);
        expected.extend_from_slice(b"a.b");
        assert_eq!(msg, expected);
    }

    #[test]
    fn results_fail_closed() {
        assert!(decode_result(&[0x08, 1]));
        assert!(decode_result(&[0x08, 1, 0x12, 0]));
        assert!(!decode_result(&[]), "proto3 default: false");
        assert!(!decode_result(&[0x12, 3, b'b', b'a', b'd']));
        assert!(!decode_result(&[0x08, 0, 0x12, 3, b'b', b'a', b'd']));
        assert!(!decode_result(&[0x08]));
        assert!(!decode_result(&[0x12, 9, b'x']));
        assert!(!decode_result(&[0xff, 1]));
    }

    struct Always(Option<bool>);
    impl HostVerifier for Always {
        fn verify(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> Option<bool> {
            self.0
        }
    }

    #[test]
    fn a_host_that_does_not_discriminate_is_not_trusted() {
        assert!(!host_answers_correctly(&Always(Some(true))));
        assert!(!host_answers_correctly(&Always(Some(false))));
        assert!(!host_answers_correctly(&Always(None)));
    }
}

use super::signature::ecdsa_signature_der;
use super::*;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use crate::config::KeySource;
use crate::testkit::*;
use serde_json::json;
use std::cell::RefCell;

/// What the host was asked: hash, key, signing input, signature.
type HostCall = (String, Vec<u8>, Vec<u8>, Vec<u8>);

/// A host that answers as told and records what it was asked.
struct ScriptedHost {
    answer: Option<bool>,
    calls: RefCell<Vec<HostCall>>,
}

impl ScriptedHost {
    fn new(answer: Option<bool>) -> ScriptedHost {
        ScriptedHost { answer, calls: RefCell::new(Vec::new()) }
    }
}

impl HostVerifier for ScriptedHost {
    fn verify(&self, hash: &str, spki_der: &[u8], signing_input: &[u8], signature: &[u8]) -> Option<bool> {
        self.calls.borrow_mut().push((hash.into(), spki_der.into(), signing_input.into(), signature.into()));
        self.answer
    }
}

fn check_with(token: &str, host: &dyn HostVerifier) -> Result<(), Rejection> {
    let config = config_with(json!({}), json!({}));
    let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
    verify(&decode(token, 8192)?, &config.rules[0], keys, NOW, host)
}

#[test]
fn rs256_goes_to_the_host_with_the_spki_key_and_the_signing_input() {
    let token = GROUPS_SCOPE_JWT.trim();
    let host = ScriptedHost::new(Some(true));
    assert_eq!(check_with(token, &host), Ok(()));
    let calls = host.calls.borrow();
    assert_eq!(calls.len(), 1);
    let (hash, der, input, signature) = &calls[0];
    assert_eq!(hash, "sha256");
    let expected_der = istio_key().public_key().to_der().unwrap();
    assert_eq!(der, &expected_der);
    let (signing_input, signature_b64) = token.rsplit_once('.').unwrap();
    assert_eq!(input, signing_input.as_bytes());
    assert_eq!(signature, &URL_SAFE_NO_PAD.decode(signature_b64).unwrap());
}

#[test]
fn the_host_answer_decides_and_no_answer_falls_back() {
    let token = GROUPS_SCOPE_JWT.trim();
    assert_eq!(check_with(token, &ScriptedHost::new(Some(false))), Err(Rejection::BadSignature));
    let fallback = ScriptedHost::new(None);
    assert_eq!(check_with(token, &fallback), Ok(()), "jwt-simple decides when the host cannot");
    let tampered = with_segment(token, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
    assert_eq!(check_with(&tampered, &ScriptedHost::new(None)), Err(Rejection::BadSignature));
    assert_eq!(fallback.calls.borrow().len(), 1);
}

#[test]
fn pss_is_never_sent_to_the_host() {
    let key = PS256KeyPair::from_pem(ISTIO_KEY_PEM).unwrap().with_key_id(ISTIO_KID);
    let claims = Claims::create(jwt_simple::prelude::Duration::from_hours(1)).with_issuer(ISSUER);
    let token = key.sign(claims).unwrap();
    let host = ScriptedHost::new(Some(false));
    let config = config_with(json!({}), json!({}));
    let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
    let now = Clock::now_since_epoch().as_secs();
    assert_eq!(verify(&decode(&token, 8192).unwrap(), &config.rules[0], keys, now, &host), Ok(()));
    assert!(host.calls.borrow().is_empty());
}

#[test]
fn ecdsa_signatures_become_minimal_der() {
    let mut raw = vec![0u8; 64];
    raw[31] = 1; // r = 1
    raw[32] = 0x80; // s has its high bit set: needs a leading zero
    let der = ecdsa_signature_der(&raw, 32).unwrap();
    let mut expected = vec![0x30, 3 + 35, 0x02, 1, 1, 0x02, 33, 0];
    expected.extend_from_slice(&raw[32..]);
    assert_eq!(der, expected);
    assert_eq!(ecdsa_signature_der(&raw, 48), None, "wrong length");
    assert_eq!(ecdsa_signature_der(&[0u8; 64], 32), None, "zero r");
    let long = ecdsa_signature_der(&[0xff; 96], 48).unwrap();
    assert_eq!(&long[..4], &[0x30, 2 * (2 + 49), 0x02, 49]);
    // P-521: 66-byte components, a body over 127 bytes (long-form length).
    let mut p521 = vec![0u8; 132];
    p521[0] = 0x01;
    p521[66] = 0x01;
    let der = ecdsa_signature_der(&p521, 66).unwrap();
    assert_eq!(&der[..5], &[0x30, 0x81, 2 * (2 + 66), 0x02, 66]);
    assert_eq!(der.len(), 3 + 2 * (2 + 66));
    assert_eq!(ecdsa_signature_der(&p521, 64), None);
    // (A real P-521 signature against the p521 crate's own DER: the ES512 host test.)
}

#[test]
fn es512_goes_to_the_host_as_sha512_with_der_when_offered() {
    use p521::ecdsa::signature::Signer;
    let mut scalar = [5u8; 66];
    scalar[0] = 0;
    let key = p521::ecdsa::SigningKey::from_slice(&scalar).unwrap();
    let point = key.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    let jwk = json!({"kty": "EC", "crv": "P-521", "kid": "p",
        "x": URL_SAFE_NO_PAD.encode(&bytes[1..67]), "y": URL_SAFE_NO_PAD.encode(&bytes[67..])});
    let config = config_with(json!({"jwks": json!({"keys": [jwk]}).to_string()}), json!({}));
    let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(r#"{"alg":"ES512","kid":"p"}"#), URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"{ISSUER}"}}"#)));
    let signature: p521::ecdsa::Signature = key.sign(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    let decoded = decode(&token, 8192).unwrap();

    let host = ScriptedHost::new(Some(false));
    assert_eq!(verify(&decoded, &config.rules[0], keys, NOW, &host), Err(Rejection::BadSignature), "the host decides");
    let calls = host.calls.borrow();
    let (hash, der, text, sig) = &calls[0];
    assert_eq!(hash, "sha512");
    assert_eq!(der.len(), 158);
    assert_eq!(&der[..25], &crate::jwks::p521_spki_der(&[])[..]);
    assert_eq!(&der[25..], bytes);
    assert_eq!(text, input.as_bytes());
    assert_eq!(sig, &p521::ecdsa::DerSignature::from(signature).to_bytes().to_vec());
    drop(calls);

    // A host that failed its P-521 probe is not asked; the built-in check decides.
    struct NoP521(ScriptedHost);
    impl HostVerifier for NoP521 {
        fn offers(&self, alg: Algorithm) -> bool {
            alg != Algorithm::Es512
        }
        fn verify(&self, hash: &str, spki: &[u8], text: &[u8], sig: &[u8]) -> Option<bool> {
            self.0.verify(hash, spki, text, sig)
        }
    }
    let host = NoP521(ScriptedHost::new(Some(false)));
    assert_eq!(verify(&decoded, &config.rules[0], keys, NOW, &host), Ok(()));
    assert!(host.0.calls.borrow().is_empty());
    assert_eq!(check_with(GROUPS_SCOPE_JWT.trim(), &host), Err(Rejection::BadSignature), "RS256 still asked");
}

#[test]
fn structure_checks_match_jwt_simple() {
    let token = mint_with(json!({}));
    for header in [r#"{"alg":"RS256","typ":"JOSE"}"#, r#"{"alg":"RS256","x5c":5}"#] {
        assert_eq!(decode(&with_segment(&token, 0, header), 8192).err(), Some(Rejection::Malformed), "{header}");
    }
    for typ in ["at+jwt", "JWT", "jwt", "application/jwt", "Application/JWT", "application/at+JWT"] {
        let header = format!(r#"{{"alg":"RS256","typ":"{typ}"}}"#);
        assert!(decode(&with_segment(&token, 0, &header), 8192).is_ok(), "{typ}");
    }
    for typ in ["JOSE", "application/jose", "+jwt", "application/+jwt", "jwt+json", "application/json", "", "JWT "] {
        let header = format!(r#"{{"alg":"RS256","typ":"{typ}"}}"#);
        assert_eq!(decode(&with_segment(&token, 0, &header), 8192).err(), Some(Rejection::Malformed), "{typ:?}");
    }
    assert_eq!(decode(&with_segment(&token, 0, r#"{"alg":"RS256","typ":5}"#), 8192).err(), Some(Rejection::Malformed));
    for payload in [r#"{"iss":5}"#, r#"{"sub":[]}"#, r#"{"aud":[1]}"#, r#"{"aud":{}}"#, r#"{"jti":1}"#] {
        assert_eq!(decode(&with_segment(&token, 1, payload), 8192).err(), Some(Rejection::Malformed), "{payload}");
    }
}

use super::*;
use crate::config::KeySource;
use crate::testkit::*;
use serde_json::json;

fn rule_and_keys(extra: serde_json::Value) -> (crate::config::FilterConfig, usize) {
    (config_with(extra, json!({})), 0)
}

fn check(token: &str, extra: serde_json::Value) -> Result<(), Rejection> {
    let (config, i) = rule_and_keys(extra);
    let rule = &config.rules[i];
    let KeySource::Inline(keys) = &rule.keys else { unreachable!() };
    let decoded = decode(token, 8192)?;
    verify(&decoded, rule, keys, NOW, &BuiltinOnly)
}

#[test]
fn istio_samples_verify() {
    assert_eq!(check(GROUPS_SCOPE_JWT.trim(), json!({})), Ok(()));
    assert_eq!(check(DEMO_JWT.trim(), json!({})), Ok(()));
}

#[test]
fn time_is_checked_with_clock_skew() {
    let expired = mint_with(json!({"exp": NOW - 61}));
    assert_eq!(check(&expired, json!({})), Err(Rejection::Expired));
    let within_skew = mint_with(json!({"exp": NOW - 59}));
    assert_eq!(check(&within_skew, json!({})), Ok(()));
    assert_eq!(check(&within_skew, json!({"clockSkew": "0s"})), Err(Rejection::Expired));
    let future = mint_with(json!({"nbf": NOW + 120}));
    assert_eq!(check(&future, json!({})), Err(Rejection::NotYetValid));
    // iat in the future is not judged, as in Envoy.
    assert_eq!(check(&mint_with(json!({"iat": NOW + 9999})), json!({})), Ok(()));
}

#[test]
fn tampered_payload_fails_the_signature() {
    let token = mint_with(json!({}));
    let forged = with_segment(&token, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
    assert_eq!(check(&forged, json!({})), Err(Rejection::BadSignature));
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 5;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(check(&String::from_utf8(flipped).unwrap(), json!({})), Err(Rejection::BadSignature));
}

#[test]
fn alg_none_and_confusion_are_refused() {
    let token = mint_with(json!({}));
    let none = with_segment(&token, 0, r#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(decode(&none, 8192).unwrap_err(), Rejection::UnsupportedAlgorithm);
    let parts: Vec<&str> = none.split('.').collect();
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(decode(&unsigned, 8192).unwrap_err(), Rejection::UnsupportedAlgorithm);
    let rs_unsigned = format!("{}.", token.rsplit_once('.').unwrap().0);
    assert_eq!(decode(&rs_unsigned, 8192).unwrap_err(), Rejection::Malformed);
    // HS256 "signed" with the RSA public key: the RSA key never becomes an HMAC key.
    let hs = with_segment(&token, 0, &format!(r#"{{"alg":"HS256","kid":"{ISTIO_KID}"}}"#));
    assert_eq!(check(&hs, json!({})), Err(Rejection::AlgorithmMismatch));
    let es = with_segment(&token, 0, &format!(r#"{{"alg":"ES256","kid":"{ISTIO_KID}"}}"#));
    assert_eq!(check(&es, json!({})), Err(Rejection::AlgorithmMismatch));
    // ES512 is supported, but never with an RSA key, with or without a kid.
    let es512 = with_segment(&token, 0, r#"{"alg":"ES512"}"#);
    assert_eq!(check(&es512, json!({})), Err(Rejection::AlgorithmMismatch));
    let es512 = with_segment(&token, 0, &format!(r#"{{"alg":"ES512","kid":"{ISTIO_KID}"}}"#));
    assert_eq!(check(&es512, json!({})), Err(Rejection::AlgorithmMismatch));
    for unsupported in ["ES256K", "none", "None", "RS1", "HS1"] {
        let header = format!(r#"{{"alg":"{unsupported}"}}"#);
        assert_eq!(decode(&with_segment(&token, 0, &header), 8192).err(), Some(Rejection::UnsupportedAlgorithm));
    }
}

#[test]
fn kid_selects_the_key() {
    let token = mint_with(json!({}));
    let unknown = with_segment(&token, 0, r#"{"alg":"RS256","kid":"rotated"}"#);
    assert_eq!(check(&unknown, json!({})), Err(Rejection::UnknownKid));
    // No kid: every RS256 key is tried; the signature is over the original header so it
    // fails, but as a signature failure, not a key lookup failure.
    let no_kid = with_segment(&token, 0, r#"{"alg":"RS256"}"#);
    assert_eq!(check(&no_kid, json!({})), Err(Rejection::BadSignature));
}

#[test]
fn audiences() {
    let aud = json!({"audiences": ["api", "web"]});
    assert_eq!(check(&mint_with(json!({"aud": "web"})), aud.clone()), Ok(()));
    assert_eq!(check(&mint_with(json!({"aud": ["x", "api"]})), aud.clone()), Ok(()));
    assert_eq!(check(&mint_with(json!({"aud": "other"})), aud.clone()), Err(Rejection::AudienceNotAllowed));
    assert_eq!(check(&mint_with(json!({})), aud), Err(Rejection::AudienceNotAllowed));
    assert_eq!(Rejection::AudienceNotAllowed.status(), 403);
}

#[test]
fn hostile_structure_is_malformed_not_a_panic() {
    let token = mint_with(json!({}));
    let cases = [
        String::new(),
        "a".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!.!!.!!".into(),
        with_segment(&token, 0, "[]"),
        with_segment(&token, 0, r#"{"alg":5}"#),
        with_segment(&token, 0, r#"{"alg":"RS256","kid":7}"#),
        with_segment(&token, 1, "\"just a string\""),
        with_segment(&token, 1, r#"{"iss":"x","exp":-1}"#),
        with_segment(&token, 1, &"[".repeat(5000)),
        with_segment(&token, 1, &format!(r#"{{"iss":"{ISSUER}","x":{}{}}}"#, "[".repeat(100), "]".repeat(100))),
        with_segment(&token, 1, &format!(r#"{{"iss":"evil","iss":"{ISSUER}"}}"#)),
        with_segment(&token, 0, r#"{"alg":"RS256","alg":"RS256"}"#),
    ];
    for case in cases {
        assert_eq!(decode(&case, 1 << 20).err(), Some(Rejection::Malformed), "{case:.40}");
    }
    let crit = with_segment(&token, 0, r#"{"alg":"RS256","crit":["exp"]}"#);
    assert_eq!(decode(&crit, 8192).unwrap_err(), Rejection::CriticalHeader);
    assert_eq!(decode(&token, 10).unwrap_err(), Rejection::TooLarge);
}

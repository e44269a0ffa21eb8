use super::*;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::Value;
use crate::config::KeySource;
use crate::testkit::*;
use serde_json::json;

fn check_at(token: &str, extra: Value, now: u64) -> Result<(), Rejection> {
    let config = config_with(extra, json!({}));
    let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
    verify(&decode(token, 8192)?, &config.rules[0], keys, now, &BuiltinOnly)
}

/// A token whose payload is exactly this text, with `exp`/`nbf`/`iat` as written (its
/// signature is over other claims: for `decode` and `check_time` only).
fn unsigned_with_times(times: &str) -> String {
    let mut claims = format!(r#"{{"iss":"{ISSUER}","groups":["group1"]"#);
    if !times.is_empty() {
        claims.push(',');
        claims.push_str(times);
    }
    claims.push('}');
    with_segment(&mint_with(json!({})), 1, &claims)
}

/// A token signed (jwt-simple, the Istio key) over exactly these claims.
fn signed(claims: Value) -> String {
    let mut all = json!({"iss": ISSUER});
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    mint(all)
}

#[test]
fn numeric_dates_in_any_json_number_notation_are_accepted() {
    for (exp, expect) in [
        ("1764700000", 1_764_700_000),
        ("1764700000.0", 1_764_700_000),
        ("1764700000.5", 1_764_700_000),
        ("1.7647e9", 1_764_700_000),
        ("4.1e9", 4_100_000_000),
        ("4.1E+9", 4_100_000_000),
        ("17647000000e-1", 1_764_700_000),
        ("0", 0),
        ("-0.0", 0),
        // The largest integer below 2^64 as a double (2^64 - 2048); 2^64 - 1024 and up are
        // 2^64 as doubles, and refused (below).
        ("18446744073709549568", 18_446_744_073_709_549_568),
        ("18446744073709550591", 18_446_744_073_709_550_591),
    ] {
        let token = unsigned_with_times(&format!(r#""exp":{exp},"nbf":{exp},"iat":{exp}"#));
        let decoded = decode(&token, 8192).unwrap_or_else(|e| panic!("exp {exp}: {e:?}"));
        assert_eq!(decoded.validity.exp, Some(expect), "exp {exp}");
        assert_eq!(decoded.validity.nbf.map(|nbf| nbf - u64::from(exp.contains(".5"))), Some(expect), "nbf {exp}");
    }
    // The whole check, signature included: jwt-simple's own claim reading must not refuse
    // what `decode` accepts, and its clock must not judge (an exp beyond 2106, where its
    // fixed-point timestamps saturate, and fractions).
    for times in [
        json!({"exp": 1_800_003_600.5}),
        json!({"exp": 1.8000036e9, "nbf": 1.7e9, "iat": 1.7999e9}),
        json!({"exp": 1e19, "nbf": 0.5, "iat": 0}),
        json!({"exp": 18_446_744_073_709_549_568_u64}),
        json!({}),
    ] {
        assert_eq!(check_at(&signed(times.clone()), json!({}), NOW), Ok(()), "{times}");
    }
}

#[test]
fn numeric_dates_that_are_not_numbers_or_out_of_range_are_malformed() {
    for bad in [
        "-1",
        "-0.5",
        "-1e3",
        "18446744073709551616",
        "18446744073709551615",
        "18446744073709550592",
        "1.8446744073709552e19",
        "1e20",
        "\"1\"",
        "\"1764700000\"",
        "true",
        "null",
        "[1]",
        "{}",
    ] {
        for claim in ["exp", "nbf", "iat"] {
            let token = unsigned_with_times(&format!(r#""{claim}":{bad}"#));
            assert_eq!(decode(&token, 8192).err(), Some(Rejection::Malformed), "{claim}: {bad}");
        }
    }
    // Not JSON at all: JSON has no NaN or infinities, and 1e400 overflows a double.
    for bad in ["NaN", "Infinity", "-Infinity", "1e400"] {
        let token = unsigned_with_times(&format!(r#""exp":{bad}"#));
        assert_eq!(decode(&token, 8192).err(), Some(Rejection::Malformed), "{bad}");
    }
}

#[test]
fn fractions_never_round_a_token_into_validity() {
    let at = |times: &str, now: u64| {
        let token = unsigned_with_times(times);
        check_time(&decode(&token, 8192).unwrap(), now, Duration::from_secs(0))
    };
    assert_eq!(at(r#""exp":100.5"#, 100), Ok(()));
    assert_eq!(at(r#""exp":100.5"#, 101), Err(Rejection::Expired), "exp 100.5 is down to 100");
    assert_eq!(at(r#""exp":100.999"#, 101), Err(Rejection::Expired));
    assert_eq!(at(r#""nbf":100.5"#, 100), Err(Rejection::NotYetValid), "nbf 100.5 is up to 101");
    assert_eq!(at(r#""nbf":100.5"#, 101), Ok(()));
    assert_eq!(at(r#""nbf":100.001"#, 100), Err(Rejection::NotYetValid));
    assert_eq!(at(r#""nbf":100,"exp":100"#, 100), Ok(()), "a one-second window at its second");
    // With skew, the same rounding first.
    let skewed = |times: &str, now: u64| {
        check_time(&decode(&unsigned_with_times(times), 8192).unwrap(), now, Duration::from_secs(60))
    };
    assert_eq!(skewed(r#""exp":100.5"#, 160), Ok(()));
    assert_eq!(skewed(r#""exp":100.5"#, 161), Err(Rejection::Expired));
    assert_eq!(skewed(r#""nbf":100.5"#, 40), Err(Rejection::NotYetValid));
    assert_eq!(skewed(r#""nbf":100.5"#, 41), Ok(()));
    // iat is read (its type is checked above) but not judged.
    assert_eq!(at(r#""iat":9999999999.5"#, 100), Ok(()));
    // The same rule in the full check, signature included.
    let no_skew = json!({"clockSkew": "0s"});
    assert_eq!(check_at(&signed(json!({"exp": 1_800_000_000.5})), no_skew.clone(), NOW), Ok(()));
    assert_eq!(check_at(&signed(json!({"exp": 1_800_000_000.5})), no_skew.clone(), NOW + 1), Err(Rejection::Expired));
    assert_eq!(check_at(&signed(json!({"nbf": 1_800_000_000.5})), no_skew.clone(), NOW), Err(Rejection::NotYetValid));
    assert_eq!(check_at(&signed(json!({"nbf": 1_800_000_000.5})), no_skew, NOW + 1), Ok(()));
}

#[test]
fn the_time_rule_is_ours_alone() {
    // jwt-simple's own time checks never decide: its signature check passes tokens long
    // expired or not yet valid, whatever the real clock says...
    let config = config_with(json!({}), json!({}));
    let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
    let key = &keys.select(Some(ISTIO_KID), Algorithm::Rs256).unwrap()[0].key;
    for times in [json!({"exp": 1}), json!({"nbf": 18_446_744_073_709_549_568_u64}), json!({"iat": 1e19}), json!({"exp": 1e19})] {
        let token = signed(times.clone());
        assert_eq!(verify_signature(&decode(&token, 8192).unwrap(), key), Ok(()), "{times}");
    }
    // ...so only `Validity::check` does, before the signature, with the rule's skew.
    let soon = signed(json!({"nbf": NOW + 30}));
    assert_eq!(check_at(&soon, json!({"clockSkew": "30s"}), NOW), Ok(()));
    assert_eq!(check_at(&soon, json!({"clockSkew": "29s"}), NOW), Err(Rejection::NotYetValid));
    let validity = Validity { exp: Some(1000), nbf: Some(900) };
    assert_eq!(validity.check(1000, Duration::ZERO), Ok(()));
    assert_eq!(validity.check(1001, Duration::ZERO), Err(Rejection::Expired));
    assert_eq!(validity.check(899, Duration::ZERO), Err(Rejection::NotYetValid));
    assert_eq!(Validity { exp: Some(u64::MAX), nbf: None }.check(u64::MAX, Duration::from_secs(u64::MAX)), Ok(()));
}

/// Signed by jwt-simple with this header `typ`.
fn signed_with_typ(typ: &str, claims: JWTClaims<NoCustomClaims>) -> String {
    let options = HeaderOptions { signature_type: Some(typ.into()), ..Default::default() };
    istio_key().sign_with_options(claims, &options).unwrap()
}

#[test]
fn typ_jwt_in_its_spellings_verifies() {
    let claims = || Claims::create(jwt_simple::prelude::Duration::from_hours(1)).with_issuer(ISSUER);
    let now = Clock::now_since_epoch().as_secs();
    for typ in ["JWT", "jwt", "application/jwt", "APPLICATION/JWT", "at+jwt", "application/at+jwt", "secevent+jwt"] {
        let token = signed_with_typ(typ, claims());
        assert_eq!(check_at(&token, json!({}), now), Ok(()), "{typ}");
        let forged = with_segment(&token, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
        assert_eq!(check_at(&forged, json!({}), now), Err(Rejection::BadSignature), "{typ}");
    }
    for typ in ["JOSE", "application/jose+json", "JWS", "jwt; charset=utf-8", "+jwt"] {
        assert_eq!(check_at(&signed_with_typ(typ, claims()), json!({}), now), Err(Rejection::Malformed), "{typ}");
    }
}

#[test]
fn a_jwk_without_kid_serves_tokens_with_any_kid() {
    let kidless = ISTIO_JWKS.replace(&format!(r#""kid":"{ISTIO_KID}","#), "");
    assert!(!kidless.contains("\"kid\""), "the fixture's kid was removed");
    let rule = json!({"jwks": kidless});
    let claims = || Claims::create(jwt_simple::prelude::Duration::from_hours(1)).with_issuer(ISSUER);
    let now = Clock::now_since_epoch().as_secs();
    let pair = || RS256KeyPair::from_pem(ISTIO_KEY_PEM).unwrap();
    let with_kid = pair().with_key_id(ISTIO_KID).sign(claims()).unwrap();
    let other_kid = pair().with_key_id("anything").sign(claims()).unwrap();
    let no_kid = pair().sign(claims()).unwrap();
    assert_eq!(decode(&no_kid, 8192).unwrap().kid, None);
    for token in [&with_kid, &other_kid, &no_kid] {
        assert_eq!(check_at(token, rule.clone(), now), Ok(()));
    }
    // Still only its own algorithm, and still a real signature check.
    let hs = HS256Key::from_bytes(b"a secret of thirty-two bytes....").authenticate(claims()).unwrap();
    assert_eq!(check_at(&hs, rule.clone(), now), Err(Rejection::AlgorithmMismatch));
    // With a kid no key has, and no kid-less HS256 key: no key could fit (a refetch may help).
    let hs = HS256Key::from_bytes(b"a secret of thirty-two bytes....").with_key_id("x").authenticate(claims()).unwrap();
    assert_eq!(check_at(&hs, rule.clone(), now), Err(Rejection::UnknownKid));
    let forged = with_segment(&other_kid, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
    assert_eq!(check_at(&forged, rule, now), Err(Rejection::BadSignature));
    // A JWK with a kid serves only that kid; a token without kid tries every key.
    assert_eq!(check_at(&other_kid, json!({}), now), Err(Rejection::UnknownKid));
    assert_eq!(check_at(&no_kid, json!({}), now), Ok(()));
}

/// A fixed P-521 key: the secret scalar is `seed` repeated.
fn p521_key(seed: u8) -> p521::ecdsa::SigningKey {
    let mut scalar = [seed; 66];
    scalar[0] = 0; // below 2^520, so below the group order
    p521::ecdsa::SigningKey::from_slice(&scalar).unwrap()
}

fn p521_jwk(key: &p521::ecdsa::SigningKey, members: Value) -> Value {
    let point = key.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    let mut jwk = json!({"kty": "EC", "x": URL_SAFE_NO_PAD.encode(&bytes[1..67]), "y": URL_SAFE_NO_PAD.encode(&bytes[67..])});
    for (k, v) in members.as_object().unwrap() {
        jwk[k] = v.clone();
    }
    jwk
}

fn es512_sign(key: &p521::ecdsa::SigningKey, header: &str, payload: &str) -> String {
    use p521::ecdsa::signature::Signer;
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let signature: p521::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn es512_rule(jwks: Value) -> Value {
    json!({"jwks": jwks.to_string()})
}

#[test]
fn es512_verifies_in_pure_rust() {
    let key = p521_key(7);
    let rule = es512_rule(json!({"keys": [p521_jwk(&key, json!({"kid": "p521", "crv": "P-521"}))]}));
    let payload = format!(r#"{{"iss":"{ISSUER}","exp":{}}}"#, NOW + 60);
    let token = es512_sign(&key, r#"{"alg":"ES512","kid":"p521"}"#, &payload);
    assert_eq!(decode(&token, 8192).unwrap().alg, Algorithm::Es512);
    assert_eq!(check_at(&token, rule.clone(), NOW), Ok(()));
    assert_eq!(check_at(&token, rule.clone(), NOW + 120), Ok(()), "the default 60 s skew");
    assert_eq!(check_at(&token, rule.clone(), NOW + 121), Err(Rejection::Expired));
    let by_other = es512_sign(&p521_key(8), r#"{"alg":"ES512","kid":"p521"}"#, &payload);
    assert_eq!(check_at(&by_other, rule.clone(), NOW), Err(Rejection::BadSignature));
    let forged = with_segment(&token, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
    assert_eq!(check_at(&forged, rule.clone(), NOW), Err(Rejection::BadSignature));
    let (input, signature) = token.rsplit_once('.').unwrap();
    let raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    for bad in [&raw[..131], &[0u8; 132][..], &[0xffu8; 132][..], &[]] {
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(bad));
        assert!(matches!(check_at(&token, rule.clone(), NOW), Err(Rejection::BadSignature | Rejection::Malformed)));
    }
    // ES512 through an ES256/RS256 key is refused, and an ES256 token through the P-521 key.
    let es256 = with_segment(&token, 0, r#"{"alg":"ES256","kid":"p521"}"#);
    assert_eq!(check_at(&es256, rule, NOW), Err(Rejection::AlgorithmMismatch));
}

#[test]
fn es512_signed_by_another_implementation_verifies() {
    // PyJWT 2.15 on pyca/cryptography (OpenSSL), generated once offline.
    let jwks = r#"{"keys": [{"kty": "EC", "crv": "P-521", "x": "AC0PhJrrNBlzL1D3xc2KlVC8BHlr6al6qNtWht8DHO3SBrI8LsNYJYWhRwew4vpcKb6lOfxVJvMqvzOd4Y426vI2", "y": "AUyy3dNsC7vMpoFBntJ-EYz0InWhZMlhmX4wmofXi8sFl0l_aPRAcD8dt5oYJULoItL_1fA2Ek1vhy6d5855pFGe", "kid": "py-p521"}]}"#;
    let token = "eyJhbGciOiJFUzUxMiIsImtpZCI6InB5LXA1MjEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyIsInN1YiI6InB5IiwiZXhwIjo0MTAyNDQ0ODAwLCJncm91cHMiOlsicHkiXX0.ADHu2ZPah-vHQzmRONRadITvzlpxK6xnGmMBDkkbaIgTByM7Y6HGWA1SYIl6bT6Y0bX3AfXTgVxCJSe5W2XC8w4pAKwsIQhCpy6CjyeYiXCdhn6qCkFVnC5tm3GUUatGArHzbOMJbvPdIO3andHrXfv-SAz0crl0HU9PxffIiOndatkV";
    assert_eq!(check_at(token, json!({"jwks": jwks}), NOW), Ok(()));
    let tampered = format!("{}A", &token[..token.len() - 1]);
    assert_ne!(tampered, token);
    assert!(check_at(&tampered, json!({"jwks": jwks}), NOW).is_err());
}

#[test]
fn ec_jwks_without_crv_take_the_curve_from_alg() {
    let key = p521_key(9);
    let payload = format!(r#"{{"iss":"{ISSUER}"}}"#);
    let token = es512_sign(&key, r#"{"alg":"ES512","kid":"k"}"#, &payload);
    let with = |members: Value| es512_rule(json!({"keys": [p521_jwk(&key, members)]}));
    assert_eq!(check_at(&token, with(json!({"kid": "k", "alg": "ES512"})), NOW), Ok(()), "no crv, alg ES512");
    assert_eq!(check_at(&token, with(json!({"kid": "k", "alg": "ES512", "crv": "P-521"})), NOW), Ok(()));
    assert_eq!(check_at(&token, with(json!({"alg": "ES512"})), NOW), Ok(()), "no crv, no kid");
    // ES256/ES384 curves from alg too (jwt-simple's keys, through the JWK path).
    let p256 = ES256KeyPair::generate().with_key_id("k");
    let mut jwk: Value = serde_json::from_str(&p256.public_key().to_jwk()).unwrap();
    jwk.as_object_mut().unwrap().remove("crv");
    jwk["alg"] = json!("ES256");
    jwk["kid"] = json!("k");
    let claims = Claims::create(jwt_simple::prelude::Duration::from_hours(1)).with_issuer(ISSUER);
    let now = Clock::now_since_epoch().as_secs();
    let es256 = p256.sign(claims).unwrap();
    assert_eq!(check_at(&es256, es512_rule(json!({"keys": [jwk]})), now), Ok(()));

    let parse = |members: Value| KeySet::parse(json!({"keys": [p521_jwk(&key, members)]}).to_string().as_bytes(), false);
    let no_usable = |members: Value| match parse(members) {
        Err(crate::jwks::JwksError::NoUsableKey { skipped: Some(why) }) => why,
        other => panic!("expected a skipped key, got {other:?}"),
    };
    assert!(no_usable(json!({})).contains("no crv or alg"));
    assert!(no_usable(json!({"alg": "ES384"})).contains("must be 48 bytes"), "the curve alg fixes");
    assert!(no_usable(json!({"alg": "ES256", "crv": "P-521"})).contains("contradicts"));
    assert!(no_usable(json!({"alg": "ES512", "crv": "P-256"})).contains("contradicts"));
    assert!(no_usable(json!({"alg": "RS256"})).contains("does not fit"));
    assert!(no_usable(json!({"crv": 521})).contains("not a string"));
    assert!(no_usable(json!({"crv": "P-192"})).contains("unsupported curve"));
}

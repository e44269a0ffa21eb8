//! The verification core inside wasm: these tests run both natively (`cargo test`) and as
//! wasm32-unknown-unknown under wasm-bindgen-test on Node (`scripts/test-wasm-core.sh`).
//! The assertions are the same in both, so passing in both shows that what the filter relies
//! on inside a wasm VM gives the same answers there as natively:
//! - big integers: RSA (num-bigint-dig) on the Istio sample tokens and on keys generated
//!   here, elliptic curves (P-256, P-384, and P-521 through the `p521` crate), Ed25519;
//! - randomness: key generation and PSS salts through getrandom's JS backend (0.2 and 0.4),
//!   which must give different keys each time, not a constant;
//! - time: the real clock as jwt-simple reads it (coarsetime, the JS `Date` in wasm, where
//!   `std::time::SystemTime::now` would panic), and the `now` the core takes as a parameter.
//!
//! Only the public API is used; nothing here depends on the proxy-wasm host.

// A test crate: its helpers may fail loudly (clippy's in-test allowances cover only the
// `#[test]` functions themselves).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use jwt_claims_filter::authn::{authenticate, Context, KeysFor, RequestTime, Verdict};
use jwt_claims_filter::config::{FilterConfig, KeySource};
use jwt_claims_filter::extract::{add_query_tokens, scan_headers};
use jwt_claims_filter::jwks::{JwksError, KeyMiss, KeySet};
use jwt_claims_filter::tokencache::TokenCache;
use jwt_claims_filter::model::{Algorithm, Rejection};
use jwt_claims_filter::verify::{check_time, decode, verify, BuiltinOnly};
use jwt_simple::prelude::*;
use serde_json::{json, Value};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;

const ISTIO_JWKS: &str = include_str!("fixtures/istio-samples/jwks.json");
const ISTIO_KEY_PEM: &str = include_str!("fixtures/istio-samples/key.pem");
const DEMO_JWT: &str = include_str!("fixtures/istio-samples/demo.jwt");
const GROUPS_SCOPE_JWT: &str = include_str!("fixtures/istio-samples/groups-scope.jwt");
const ISTIO_KID: &str = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";
const ISSUER: &str = "testing@secure.istio.io";
/// A fixed "now" inside both sample tokens' validity.
const NOW: u64 = 1_800_000_000;
/// The sample tokens' `exp` claims, read from the tokens themselves.
fn exp_of(token: &str) -> u64 {
    decode(token.trim(), 8192).ok().and_then(|t| t.claims.get("exp").and_then(Value::as_u64)).unwrap_or(0)
}

/// A configuration with one rule for `issuer` whose keys are `jwks` inline.
fn config_for(issuer: &str, jwks: &str, rule_extra: Value) -> FilterConfig {
    let mut rule = json!({"issuer": issuer, "jwks": jwks});
    for (k, v) in rule_extra.as_object().into_iter().flatten() {
        rule[k] = v.clone();
    }
    let config = json!({"jwtRules": [rule], "claimHeaders": ["x-jwt-claim.groups", "x-jwt-claim.sub"]});
    FilterConfig::parse(config.to_string().as_bytes()).expect("test configuration")
}

fn inline_keys(config: &FilterConfig) -> &KeySet {
    match config.rules.first().map(|r| &r.keys) {
        Some(KeySource::Inline(keys)) => keys,
        _ => panic!("the test rule has inline keys"),
    }
}

/// Decodes `raw` and verifies it against the configuration's only rule at `now`.
fn check(config: &FilterConfig, raw: &str, now: u64) -> Result<(), Rejection> {
    let token = decode(raw, config.max_token_bytes)?;
    let rule = config.rules.first().expect("one rule");
    verify(&token, rule, inline_keys(config), now, &BuiltinOnly)
}

/// The whole request decision for `raw` presented as a bearer token.
fn decide(config: &FilterConfig, raw: &str, now: u64) -> Verdict {
    let keys = |_rule: usize| KeysFor::Ready { keys: inline_keys(config), generation: 1, may_refetch: false };
    let cache = TokenCache::new(0);
    let exact = || now;
    let clock = RequestTime::new(now, &exact);
    let ctx = Context { config, keys: &keys, cache: &cache, host: &BuiltinOnly, clock };
    let authorization = format!("Bearer {raw}");
    let headers = [(&b"authorization"[..], authorization.as_bytes()), (b":path", b"/")];
    let mut scan = scan_headers(config, headers.into_iter());
    add_query_tokens(&config.locations, scan.path, &mut scan.tokens);
    authenticate(&ctx, &scan.tokens, scan.path).verdict
}

fn claims(extra: Value) -> JWTClaims<Map<String, Value>> {
    let mut custom = json!({"iss": ISSUER, "sub": "user@example", "exp": NOW + 300});
    for (k, v) in extra.as_object().into_iter().flatten() {
        custom[k] = v.clone();
    }
    JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: serde_json::from_value(custom).expect("claims object"),
    }
}

type Map<K, V> = serde_json::Map<K, V>;

/// A one-key JWKS from jwt-simple's public JWK export, under `kid`.
fn jwks_of(public_jwk: &str, kid: &str) -> String {
    let mut jwk: Value = serde_json::from_str(public_jwk).expect("JWK JSON");
    jwk["kid"] = json!(kid);
    json!({"keys": [jwk]}).to_string()
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).expect("base64url")
}

/// `raw` with segment `index` replaced by `text`, base64url-encoded.
fn with_segment(raw: &str, index: usize, text: &str) -> String {
    let mut parts: Vec<String> = raw.split('.').map(str::to_string).collect();
    parts[index] = b64(text.as_bytes());
    parts.join(".")
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn istio_sample_tokens_verify_with_rs256() {
    let config = config_for(ISSUER, ISTIO_JWKS, json!({}));
    for sample in [DEMO_JWT, GROUPS_SCOPE_JWT] {
        let raw = sample.trim();
        let token = decode(raw, 8192).expect("the sample decodes");
        assert_eq!(token.alg, Algorithm::Rs256);
        assert_eq!(token.kid.as_deref(), Some(ISTIO_KID));
        assert_eq!(token.issuer(), Some(ISSUER));
        assert_eq!(check(&config, raw, NOW), Ok(()));
    }
    match decide(&config, GROUPS_SCOPE_JWT.trim(), NOW) {
        Verdict::Allow(grant) => {
            let header = |name: &str| grant.set_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            assert_eq!(header("x-jwt-claim.groups"), Some("group1,group2"));
            assert_eq!(header("x-jwt-claim.sub"), Some(ISSUER));
            assert_eq!(grant.remove_headers, vec!["authorization".to_string()]);
        }
        other => panic!("expected Allow, got {other:?}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn expired_tampered_and_unsigned_tokens_are_refused() {
    let config = config_for(ISSUER, ISTIO_JWKS, json!({"clockSkew": "60s"}));
    let raw = DEMO_JWT.trim();
    let exp = exp_of(raw);
    assert!(exp > NOW);

    // Expiry, at the edge of the allowed skew, with a real RSA check on the accepted side.
    assert_eq!(check(&config, raw, exp + 60), Ok(()));
    assert_eq!(check(&config, raw, exp + 61), Err(Rejection::Expired));
    assert_eq!(decide(&config, raw, exp + 61), Verdict::Deny(Rejection::Expired));

    // A changed payload, a changed signature.
    let forged = with_segment(raw, 1, &json!({"iss": ISSUER, "sub": "admin", "exp": exp}).to_string());
    assert_eq!(check(&config, &forged, NOW), Err(Rejection::BadSignature));
    let (signing_input, signature) = raw.rsplit_once('.').expect("three segments");
    let mut flipped: Vec<u8> = Base64UrlSafeNoPadding::decode_to_vec(signature, None).expect("base64url");
    flipped[10] ^= 0x01;
    let flipped = format!("{signing_input}.{}", b64(&flipped));
    assert_eq!(check(&config, &flipped, NOW), Err(Rejection::BadSignature));
    let truncated = &raw[..raw.len() - 4];
    assert!(check(&config, truncated, NOW).is_err());

    // alg: none, with and without a signature; ES512 under an RSA key's kid is a mismatch.
    let none = with_segment(raw, 0, r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{}.", none.rsplit_once('.').expect("three segments").0);
    let refused = check(&config, &unsigned, NOW);
    assert!(matches!(refused, Err(Rejection::Malformed | Rejection::UnsupportedAlgorithm)), "{refused:?}");
    assert_eq!(check(&config, &none, NOW), Err(Rejection::UnsupportedAlgorithm));
    let es512 = with_segment(raw, 0, &json!({"alg": "ES512", "kid": ISTIO_KID}).to_string());
    assert_eq!(check(&config, &es512, NOW), Err(Rejection::AlgorithmMismatch));

    // Algorithm confusion: HS256 "signed" with the RSA public key's bytes, under the RSA kid.
    let public_pem = RS256KeyPair::from_pem(ISTIO_KEY_PEM).expect("key").public_key().to_pem().expect("PEM");
    let confused = HS256Key::from_bytes(public_pem.as_bytes()).with_key_id(ISTIO_KID);
    let confused = confused.authenticate(claims(json!({}))).expect("HS256");
    assert_eq!(check(&config, &confused, NOW), Err(Rejection::AlgorithmMismatch));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn jwks_parses_and_selects_the_same() {
    let keys = KeySet::parse(ISTIO_JWKS.as_bytes(), false).expect("the Istio JWKS parses");
    assert_eq!(keys.skipped_summary(), None);
    for alg in Algorithm::RSA {
        let selected = keys.select(Some(ISTIO_KID), alg).expect("an RSA key without alg serves every RSA algorithm");
        assert!(selected
            .iter()
            .all(|jwk| jwk.key.algorithm() == alg && jwk.spki_der.is_some() == alg.name().starts_with("RS")));
    }
    assert_eq!(keys.select(Some(ISTIO_KID), Algorithm::Es256).err(), Some(KeyMiss::AlgorithmMismatch));
    assert_eq!(keys.select(Some("rotated-away"), Algorithm::Rs256).err(), Some(KeyMiss::UnknownKid));
    assert!(keys.select(None, Algorithm::Rs256).is_ok());

    // HMAC keys only where the set is trusted (inline), and never a key meant for encryption.
    let oct =
        json!({"keys": [{"kty": "oct", "kid": "h", "alg": "HS256", "k": b64(b"0123456789abcdef0123456789abcdef")}]})
            .to_string();
    assert!(matches!(KeySet::parse(oct.as_bytes(), false), Err(JwksError::NoUsableKey { .. })));
    let trusted = KeySet::parse(oct.as_bytes(), true).expect("inline oct key");
    assert!(trusted.select(Some("h"), Algorithm::Hs256).is_ok());
    let mut enc: Value = serde_json::from_str(ISTIO_JWKS).expect("JSON");
    enc["keys"][0]["use"] = json!("enc");
    assert!(KeySet::parse(enc.to_string().as_bytes(), false).is_err());
    assert_eq!(KeySet::parse(b"[]", false).err(), Some(JwksError::NotJson));
}

/// Signs with a freshly generated key and verifies through the public API; a second key
/// generated under the same `kid` must differ and must not verify the first one's tokens.
macro_rules! generated_key_round_trip {
    ($name:ident, $pair:ty, $generate:expr, $alg:expr) => {
        #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
        #[cfg_attr(not(target_arch = "wasm32"), test)]
        fn $name() {
            let generate = || -> $pair { $generate };
            let (key, other) = (generate().with_key_id("k1"), generate().with_key_id("k1"));
            let public = key.public_key().to_jwk();
            assert_ne!(public, other.public_key().to_jwk(), "two generated keys are equal: no randomness");
            let config = config_for(ISSUER, &jwks_of(&public, "k1"), json!({"audiences": ["api"]}));

            let raw = key.sign(claims(json!({"aud": "api", "groups": ["g1", "g2"]}))).expect("sign");
            let token = decode(&raw, 8192).expect("decodes");
            assert_eq!(token.alg, $alg);
            assert_eq!(check(&config, &raw, NOW), Ok(()));
            assert!(matches!(decide(&config, &raw, NOW), Verdict::Allow(_)));

            let wrong_aud = key.sign(claims(json!({"aud": "other"}))).expect("sign");
            assert_eq!(check(&config, &wrong_aud, NOW), Err(Rejection::AudienceNotAllowed));
            let by_other = other.sign(claims(json!({"aud": "api"}))).expect("sign");
            assert_eq!(check(&config, &by_other, NOW), Err(Rejection::BadSignature));
            assert_eq!(check(&config, &raw, NOW + 3600), Err(Rejection::Expired));
        }
    };
}

generated_key_round_trip!(es256_generated_key, ES256KeyPair, ES256KeyPair::generate(), Algorithm::Es256);
generated_key_round_trip!(es384_generated_key, ES384KeyPair, ES384KeyPair::generate(), Algorithm::Es384);
generated_key_round_trip!(eddsa_generated_key, Ed25519KeyPair, Ed25519KeyPair::generate(), Algorithm::EdDsa);
generated_key_round_trip!(
    ps256_generated_key,
    PS256KeyPair,
    PS256KeyPair::generate(2048).expect("RSA key generation"),
    Algorithm::Ps256
);

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn pss_signatures_are_salted() {
    // PSS draws a fresh salt per signature (getrandom 0.2 through rand_core in wasm).
    let key = PS256KeyPair::from_pem(ISTIO_KEY_PEM).expect("key").with_key_id(ISTIO_KID);
    let (a, b) = (key.sign(claims(json!({}))).expect("sign"), key.sign(claims(json!({}))).expect("sign"));
    assert_ne!(a, b, "two PSS signatures over the same claims are equal: no randomness");
    let config = config_for(ISSUER, ISTIO_JWKS, json!({}));
    assert_eq!(check(&config, &a, NOW), Ok(()));
    assert_eq!(check(&config, &b, NOW), Ok(()));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn hs256_from_inline_jwks() {
    let secret = b"an inline secret of 32 bytes....";
    let jwks = json!({"keys": [{"kty": "oct", "kid": "hs", "alg": "HS256", "k": b64(secret)}]}).to_string();
    let config = config_for(ISSUER, &jwks, json!({}));
    let raw = HS256Key::from_bytes(secret).with_key_id("hs").authenticate(claims(json!({}))).expect("HS256");
    assert_eq!(check(&config, &raw, NOW), Ok(()));
    let forged =
        HS256Key::from_bytes(b"another secret").with_key_id("hs").authenticate(claims(json!({}))).expect("HS256");
    assert_eq!(check(&config, &forged, NOW), Err(Rejection::BadSignature));
    // An HS384 token cannot use the HS256 key.
    let hs384 = HS384Key::from_bytes(secret).with_key_id("hs").authenticate(claims(json!({}))).expect("HS384");
    assert_eq!(check(&config, &hs384, NOW), Err(Rejection::AlgorithmMismatch));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn time_is_read_and_compared_the_same() {
    // The real clock, as jwt-simple reads it: in wasm through JS, not a zero or a panic.
    let now = Clock::now_since_epoch().as_secs();
    assert!((1_700_000_000..4_000_000_000).contains(&now), "clock reads {now}");

    // A token minted with the real clock's iat/exp verifies at the real now, not an hour later.
    let key = Ed25519KeyPair::generate().with_key_id("t");
    let config = config_for(ISSUER, &jwks_of(&key.public_key().to_jwk(), "t"), json!({"clockSkew": "0s"}));
    let live =
        key.sign(Claims::create(jwt_simple::prelude::Duration::from_secs(600)).with_issuer(ISSUER)).expect("sign");
    let iat = decode(&live, 8192).ok().and_then(|t| t.claims.get("iat").and_then(Value::as_u64)).expect("iat");
    // Read again: key generation and signing (a debug build in wasm) can cross a second, and
    // the token's nbf is its iat, so the earlier reading may lie before it.
    let now = Clock::now_since_epoch().as_secs();
    assert!(iat <= now && now - iat <= 5, "iat {iat} vs now {now}");
    assert_eq!(check(&config, &live, now), Ok(()));
    assert_eq!(check(&config, &live, now + 3600), Err(Rejection::Expired));

    // The injected `now`: skew both ways, and timestamps at the ends of u64.
    let at = |exp: Value, nbf: Value| {
        let raw = key.sign(claims(json!({"exp": exp, "nbf": nbf}))).expect("sign");
        move |now: u64, skew: u64| {
            let token = decode(&raw, 8192).expect("decodes");
            check_time(&token, now, std::time::Duration::from_secs(skew))
        }
    };
    let window = at(json!(NOW), json!(NOW - 100));
    assert_eq!(window(NOW, 0), Ok(()));
    assert_eq!(window(NOW + 1, 0), Err(Rejection::Expired));
    assert_eq!(window(NOW + 30, 30), Ok(()));
    assert_eq!(window(NOW - 101, 0), Err(Rejection::NotYetValid));
    assert_eq!(window(NOW - 130, 30), Ok(()));
    let far = at(json!(18_446_744_073_709_549_568_u64), json!(0));
    assert_eq!(far(u64::MAX, u64::MAX), Ok(()));
    let not_u64 = key.sign(claims(json!({"exp": 1e20}))).expect("sign");
    assert_eq!(decode(&not_u64, 8192).err(), Some(Rejection::Malformed));

    // NumericDates that are not integers: exp rounds down, nbf up, both through the real
    // signature check (jwt-simple's own claim reading must take them).
    let fractional = at(json!(NOW as f64 + 0.5), json!(NOW as f64 - 99.5));
    assert_eq!(fractional(NOW, 0), Ok(()));
    assert_eq!(fractional(NOW + 1, 0), Err(Rejection::Expired));
    assert_eq!(fractional(NOW - 100, 0), Err(Rejection::NotYetValid));
    assert_eq!(fractional(NOW - 99, 0), Ok(()));
    let raw = key.sign(claims(json!({"exp": NOW as f64 + 0.5, "nbf": 1.7e9, "iat": 1.7e9}))).expect("sign");
    assert_eq!(check(&config, &raw, NOW), Ok(()));
    assert_eq!(check(&config, &raw, NOW + 1), Err(Rejection::Expired));
    for bad in [json!(-1), json!("1"), json!(18_446_744_073_709_551_616.0), json!(true)] {
        let raw = key.sign(claims(json!({"exp": bad}))).expect("sign");
        assert_eq!(decode(&raw, 8192).err(), Some(Rejection::Malformed), "exp {bad}");
    }
}

/// ES512 in pure Rust (the `p521` crate): P-521 arithmetic inside wasm, a JWK without `crv`
/// (the curve from its `alg`) and without `kid` (it serves any `kid`).
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn es512_with_a_fixed_key() {
    use p521::ecdsa::signature::Signer;
    let signing_key = |seed: u8| {
        let mut scalar = [seed; 66];
        scalar[0] = 0;
        p521::ecdsa::SigningKey::from_slice(&scalar).expect("a scalar below the order")
    };
    let key = signing_key(3);
    let point = key.verifying_key().to_sec1_point(false);
    let point = point.as_bytes();
    let jwk = json!({"kty": "EC", "alg": "ES512", "x": b64(&point[1..67]), "y": b64(&point[67..])});
    let config = config_for(ISSUER, &json!({"keys": [jwk]}).to_string(), json!({}));
    let sign = |key: &p521::ecdsa::SigningKey, header: &str| {
        let payload = json!({"iss": ISSUER, "sub": "p521", "exp": NOW + 300}).to_string();
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let signature: p521::ecdsa::Signature = key.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    };
    let raw = sign(&key, r#"{"alg":"ES512","kid":"whatever","typ":"application/jwt"}"#);
    assert_eq!(decode(&raw, 8192).map(|t| t.alg), Ok(Algorithm::Es512));
    assert_eq!(check(&config, &raw, NOW), Ok(()));
    assert!(matches!(decide(&config, &raw, NOW), Verdict::Allow(_)));
    assert_eq!(check(&config, &sign(&signing_key(4), r#"{"alg":"ES512"}"#), NOW), Err(Rejection::BadSignature));
    assert_eq!(check(&config, &raw, NOW + 361), Err(Rejection::Expired));
}

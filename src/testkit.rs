//! Test helpers: the Istio sample key and rule, and token minting with jwt-simple.

use jwt_simple::prelude::*;
use serde_json::{json, Value};

use crate::config::FilterConfig;

pub const ISTIO_KEY_PEM: &str = include_str!("../tests/fixtures/istio-samples/key.pem");
pub const ISTIO_JWKS: &str = include_str!("../tests/fixtures/istio-samples/jwks.json");
pub const ISTIO_KID: &str = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";
pub const ISSUER: &str = "testing@secure.istio.io";
pub const GROUPS_SCOPE_JWT: &str = include_str!("../tests/fixtures/istio-samples/groups-scope.jwt");
pub const DEMO_JWT: &str = include_str!("../tests/fixtures/istio-samples/demo.jwt");
/// A fixed "now" inside every sample token's validity.
pub const NOW: u64 = 1_800_000_000;

pub fn istio_key() -> RS256KeyPair {
    RS256KeyPair::from_pem(ISTIO_KEY_PEM).unwrap().with_key_id(ISTIO_KID)
}

/// Signs `claims` (a JSON object) with the Istio sample key.
pub fn mint(claims: Value) -> String {
    let custom: serde_json::Map<String, Value> = serde_json::from_value(claims).unwrap();
    let claims = JWTClaims {
        issued_at: None,
        expires_at: None,
        invalid_before: None,
        issuer: None,
        subject: None,
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom,
    };
    istio_key().sign(claims).unwrap()
}

/// The standard sample claims plus `extra`.
pub fn mint_with(extra: Value) -> String {
    let mut claims = json!({"iss": ISSUER, "sub": ISSUER, "exp": NOW + 3600, "groups": ["group1", "group2"]});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    mint(claims)
}

/// A configuration with one rule for the Istio sample issuer using the inline sample JWKS.
pub fn config_with(rule_extra: Value, top_extra: Value) -> FilterConfig {
    let mut rule = json!({"issuer": ISSUER, "jwks": ISTIO_JWKS});
    for (k, v) in rule_extra.as_object().unwrap() {
        rule[k] = v.clone();
    }
    let mut top = json!({"jwtRules": [rule], "claimHeaders": ["x-jwt-claim.groups"]});
    for (k, v) in top_extra.as_object().unwrap() {
        top[k] = v.clone();
    }
    FilterConfig::parse(top.to_string().as_bytes()).unwrap()
}

/// Replaces one base64url segment of a token.
pub fn with_segment(token: &str, index: usize, json_text: &str) -> String {
    use base64::Engine;
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[index] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json_text);
    parts.join(".")
}

//! Keys, key sets and tokens for the scenarios: ES256 key pairs generated per test (fast, and
//! no key material is stored), their JWKS, tokens minted with jwt-simple, and configurations.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use jwt_simple::prelude::*;
use serde_json::{json, Value};

use crate::fake::START_MS;

pub const ISSUER: &str = "https://issuer.example.com";
pub const JWKS_URI: &str = "https://keys.example.com/jwks.json";
/// The cluster the filter derives for `JWKS_URI` (Istio's outbound cluster name).
pub const JWKS_CLUSTER: &str = "outbound|443||keys.example.com";
pub const GROUPS: &str = "group1,group2";

/// A signing key with its `kid`.
pub struct Signer {
    pub kid: String,
    key: ES256KeyPair,
}

impl Signer {
    pub fn new(kid: &str) -> Signer {
        Signer { kid: kid.to_string(), key: ES256KeyPair::generate().with_key_id(kid) }
    }

    /// A fresh token (each one distinct, so none is served from the token cache) for
    /// `issuer`, valid for an hour from the fake clock's start, with groups group1, group2.
    pub fn token(&self, issuer: &str) -> String {
        static SERIAL: AtomicU64 = AtomicU64::new(1);
        let now = START_MS / 1000;
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let custom: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "iss": issuer, "sub": format!("user-{serial}"), "iat": now, "exp": now + 3600,
            "groups": ["group1", "group2"],
        }))
        .expect("an object");
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
        self.key.sign(claims).expect("a signed token")
    }

    fn jwk(&self) -> Value {
        serde_json::from_str(&self.key.public_key().to_jwk()).expect("a JWK")
    }
}

/// The JWKS publishing these keys.
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

/// A configuration with one rule for `ISSUER` fetching `JWKS_URI`, plus `rule_extra`, and the
/// claim header `x-jwt-claim.groups`.
pub fn config(rule_extra: Value) -> String {
    let mut rule = json!({"issuer": ISSUER, "jwksUri": JWKS_URI});
    for (k, v) in rule_extra.as_object().expect("an object") {
        rule[k] = v.clone();
    }
    json!({"jwtRules": [rule], "claimHeaders": ["x-jwt-claim.groups"]}).to_string()
}

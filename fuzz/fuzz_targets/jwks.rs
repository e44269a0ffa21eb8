//! JWKS parsing: the input is a JWKS document as an issuer (or an attacker controlling the
//! fetch) would serve it.
//!
//! Invariants: no panic; a parsed set is never empty; a fetched set (`allow_symmetric` off)
//! never yields an HMAC key; `select` by `kid` finds every key `select` without a `kid`
//! listed, and only keys of that algorithm under that `kid` or without one;
//! fixed tokens of every algorithm verify (or are refused cleanly) against the set.
#![no_main]

use std::sync::OnceLock;

use jwt_claims_filter::jwks::KeySet;
use jwt_claims_filter::model::Algorithm;
use jwt_claims_filter::verify::{decode, verify, BuiltinOnly, DecodedToken};
use jwt_claims_filter_fuzz::{algorithms, fixture, mint, ALGORITHMS, ISTIO_ISSUER, MAX_TOKEN_BYTES, NOW};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

/// One valid token per algorithm (and one without `kid`), minted once.
fn tokens() -> &'static [String] {
    static TOKENS: OnceLock<Vec<String>> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let claims = json!({"iss": ISTIO_ISSUER, "exp": NOW + 60});
        let mut tokens: Vec<String> = ALGORITHMS
            .iter()
            .filter(|a| !matches!(**a, "HS384" | "HS512"))
            .map(|a| mint(a, claims.clone(), true))
            .collect();
        tokens.push(mint("ES256", claims, false));
        tokens
    })
}

fuzz_target!(|data: &[u8]| {
    for allow_symmetric in [false, true] {
        let Ok(set) = KeySet::parse(data, allow_symmetric) else { continue };
        assert!(!set.is_empty(), "a parsed set holds a key");
        for alg in algorithms() {
            let Ok(keys) = set.select(None, alg) else { continue };
            assert!(!keys.is_empty());
            if !allow_symmetric {
                assert!(!Algorithm::HMAC.contains(&alg), "a fetched key set yielded an {alg:?} key");
            }
            for jwk in keys {
                assert_eq!(jwk.key.algorithm(), alg);
                if let Some(kid) = jwk.kid.as_deref() {
                    let by_kid = set.select(Some(kid), alg).expect("a listed kid is selectable");
                    assert!(by_kid.iter().any(|k| std::ptr::eq(*k, jwk)), "select by kid misses a key");
                    // Keys under that kid, then kid-less keys (RFC 7517: kid is optional).
                    assert!(by_kid.iter().all(|k| k.kid.as_deref().is_none_or(|k| k == kid) && k.key.algorithm() == alg));
                }
            }
        }
        if !allow_symmetric {
            continue; // the verification below would repeat on a subset of the same keys
        }
        let rule = &fixture().config.rules[0];
        for raw in tokens() {
            let token: DecodedToken<'_> = decode(raw, MAX_TOKEN_BYTES).expect("fixture tokens decode");
            let _ = verify(&token, rule, &set, NOW, &BuiltinOnly);
        }
    }
});

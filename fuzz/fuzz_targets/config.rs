//! Configuration parsing: the input is the plugin configuration (Istio `jwtRules` shape).
//!
//! Invariants: no panic; a parsed configuration is internally consistent (rules point at
//! existing locations, claim headers belong to the `x-jwt-claim` family, the token size cap
//! is in range); the request path's walk over a serialized request finds its `:path` and the
//! tokens an iterator over the same pairs yields (the wire form loses nothing); deciding that
//! request under the configuration upholds the verdict invariants.
#![no_main]

use jwt_claims_filter::claims::is_claim_header_family;
use jwt_claims_filter::bytes::is_header_name;
use jwt_claims_filter::config::FilterConfig;
use jwt_claims_filter::extract::{add_query_tokens, scan_headers};
use jwt_claims_filter_fuzz::{authenticate_twice, mint, serialize_headers, walk_headers, FUZZ_ISSUER, ISTIO_ISSUER, NOW};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use std::sync::OnceLock;

fn request() -> &'static Vec<(String, String)> {
    static HEADERS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    HEADERS.get_or_init(|| {
        let claims = |iss: &str| {
            json!({"iss": iss, "sub": "sub", "aud": "fuzz-audience", "exp": NOW + 60,
                   "groups": ["a", "b"], "nested": {"key": "v"}, "scope": "s1 s2"})
        };
        let istio = mint("RS256", claims(ISTIO_ISSUER), true);
        let fuzz = mint("ES256", claims(FUZZ_ISSUER), true);
        vec![
            ("authorization".to_string(), format!("Bearer {istio}")),
            ("x-token".to_string(), fuzz.clone()),
            ("cookie".to_string(), format!("a=b; session={fuzz}")),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(config) = FilterConfig::parse(data) else { return };
    assert!(!config.rules.is_empty());
    assert!((64..=1 << 20).contains(&config.max_token_bytes));
    for rule in &config.rules {
        assert!(!rule.issuer.is_empty());
        assert!(!rule.locations.is_empty());
        assert!(rule.locations.iter().all(|l| *l < config.locations.len()));
    }
    for header in &config.claim_headers {
        assert!(is_claim_header_family(header.name.as_bytes()) && is_header_name(&header.name));
        assert!(!header.path.keys().is_empty());
    }
    for name in &config.owned_headers {
        assert!(is_header_name(name));
    }
    let path = "/p?access_token=x&token=y";
    let pairs: Vec<(&[u8], &[u8])> =
        request().iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).chain([(&b":path"[..], path.as_bytes())]).collect();
    let buffer = serialize_headers(&pairs);
    let Some((found, walked_path)) = walk_headers(&config, &buffer) else {
        panic!("a serialized header map the walk does not read")
    };
    assert_eq!(walked_path, path.as_bytes());
    let mut scan = scan_headers(&config, pairs.iter().copied());
    add_query_tokens(&config.locations, scan.path, &mut scan.tokens);
    assert_eq!(*scan.tokens, *found, "the walk over the wire form and over the pairs disagree");
    authenticate_twice(&config, &found, path);
});

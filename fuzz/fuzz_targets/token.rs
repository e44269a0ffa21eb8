//! Token parsing and verification: the input is the token as a client would present it.
//!
//! `decode` then `verify` against the fixed key set (every key type), then the whole request
//! decision (`authenticate`) with the token in `Authorization` (found by the request path's
//! walk over a serialized header map), with the input split on newlines into several tokens
//! at several locations, and with the input read as a serialized header map itself. Invariants: no panic, verdicts are
//! 401/403 or an allow whose headers are valid, a token `verify` accepts is allowed by
//! `authenticate`, and a cached token is decided as a fresh one.
#![no_main]

use jwt_claims_filter::authn::Verdict;
use jwt_claims_filter::extract::FoundToken;
use jwt_claims_filter::verify::{decode, verify, BuiltinOnly};
use jwt_claims_filter_fuzz::{
    authenticate_twice, fixture, serialize_headers, walk_headers, ISTIO_ISSUER, MAX_TOKEN_BYTES, NOW,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    // Header values reach the filter as strings; non-UTF-8 bytes arrive replaced.
    let input = String::from_utf8_lossy(data);
    let raw: &str = &input;

    let mut verified_for_istio = false;
    if let Ok(token) = decode(raw, MAX_TOKEN_BYTES) {
        assert!(token.claims.is_object(), "decode yields an object payload");
        assert!(raw.len() <= MAX_TOKEN_BYTES);
        for rule in &fixture.config.rules {
            let outcome = verify(&token, rule, &fixture.keys, NOW, &BuiltinOnly);
            if let Err(rejection) = outcome {
                assert!(matches!(rejection.status(), 401 | 403));
            }
            if outcome.is_ok() && rule.issuer == ISTIO_ISSUER && token.issuer() == Some(ISTIO_ISSUER) {
                verified_for_istio = true;
            }
        }
    }

    // One token in the default location of the Istio rule, in a header map as the host
    // serializes it, found by the request path's walk.
    let authorization = format!("Bearer {raw}");
    let buffer = serialize_headers(&[(b"authorization", authorization.as_bytes()), (b":path", b"/path?x=1")]);
    let Some((found, path)) = walk_headers(&fixture.config, &buffer) else {
        panic!("a serialized header map the walk does not read")
    };
    assert_eq!(path, b"/path?x=1");
    let verdict = authenticate_twice(&fixture.config, &found, "/path?x=1");
    if verified_for_istio && found.len() == 1 && found.first().is_some_and(|f| f.token.as_ref() == raw.as_bytes()) {
        assert!(matches!(verdict, Verdict::Allow(_)), "verify accepted the token but authenticate says {verdict:?}");
    }

    // Several tokens at several locations: any invalid one refuses the request.
    let several: Vec<FoundToken> = raw
        .split('\n')
        .take(4)
        .enumerate()
        .map(|(i, token)| FoundToken { location: i % fixture.config.locations.len(), token: token.as_bytes().into() })
        .collect();
    authenticate_twice(&fixture.config, &several, "/p?access_token=a&token=b&c=d");

    // The input as the host's serialized header map itself: the walk never reads past it.
    if let Some((found, path)) = walk_headers(&fixture.config, data) {
        authenticate_twice(&fixture.config, &found, &String::from_utf8_lossy(path));
    }
});

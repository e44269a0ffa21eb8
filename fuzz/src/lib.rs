//! The fixed world the fuzz targets run in: one key of every supported type (the Istio
//! sample RSA key plus fixed EC, Ed25519 and HMAC keys), a configuration with two rules, a
//! clock, and the invariants every target checks. Shared by the targets and by the seed
//! generator (`cargo run --example seeds`).
//!
//! The private keys below exist only to sign seed tokens; they protect nothing.

use std::sync::OnceLock;

use jwt_claims_filter::authn::{authenticate, Context, Decision, KeysFor, RequestTime, Verdict};
use jwt_claims_filter::claims::is_header_value;
use jwt_claims_filter::bytes::is_header_name;
use jwt_claims_filter::config::{FilterConfig, KeySource};
use jwt_claims_filter::extract::{add_query_tokens, scan_headers, FoundToken, FoundTokens};
use jwt_claims_filter::headermap::Pairs;
use jwt_claims_filter::jwks::KeySet;
use jwt_claims_filter::tokencache::TokenCache;
use jwt_claims_filter::model::Algorithm;
use jwt_claims_filter::verify::BuiltinOnly;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

pub const ISTIO_JWKS: &str = include_str!("../../tests/fixtures/istio-samples/jwks.json");
pub const ISTIO_KEY_PEM: &str = include_str!("../../tests/fixtures/istio-samples/key.pem");
pub const ISTIO_KID: &str = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";
pub const ISTIO_ISSUER: &str = "testing@secure.istio.io";
/// The second rule's issuer: it requires [`AUDIENCE`] and reads tokens from other places.
pub const FUZZ_ISSUER: &str = "https://fuzz.example";
pub const AUDIENCE: &str = "fuzz-audience";
/// A fixed "now" inside the Istio sample tokens' validity.
pub const NOW: u64 = 1_800_000_000;
pub const MAX_TOKEN_BYTES: usize = 8192;

pub const ES256_KID: &str = "fuzz-es256";
pub const ES384_KID: &str = "fuzz-es384";
pub const EDDSA_KID: &str = "fuzz-eddsa";
pub const HS256_KID: &str = "fuzz-hs256";
pub const HMAC_SECRET: &[u8] = b"fuzz-hmac-secret-thirty-two-byte";

pub const P256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTxcKx+Lh9ElVDzDA
0wuB4LsVxydmJKdSgpiN8kBtf+ehRANCAARMM8JYwM3FzsUiU7n2VcoPuOMOjxz8
nFckZl1NiG/M0cWSw0MGGXVVwdRu/D4N+ycOQK50nVBd7etTaV2NCbS6
-----END PRIVATE KEY-----";
pub const P384_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDzV1jwBBReEzTuE9mb
lk253Q7kIguc/8umySDyijf6JpQGpt1IvviwUOeIVLngL1uhZANiAAS9m/tjb90o
zlAXmDcEl493dwIhZFqtzxS+1UCwIK1NwPZqTJhJ7tL1xgSJNypP11N5Fj3ZVHG/
2GP5UNvB/g+U9mY0ZU8RZeEk2TahLhEKh12AZSv1XmoL+EvOWMNm8yY=
-----END PRIVATE KEY-----";
pub const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEINCNbM5JM/ScQzRZISpSnRoFY/bNPfS08jSCcg46szsg
-----END PRIVATE KEY-----";

/// Every algorithm the filter knows, by its JWS name.
pub const ALGORITHMS: [&str; 12] =
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512"];

pub fn algorithms() -> impl Iterator<Item = Algorithm> {
    ALGORITHMS.iter().filter_map(|name| Algorithm::from_name(name))
}

fn with_kid(jwk_json: &str, kid: &str) -> Value {
    let mut jwk: Value = serde_json::from_str(jwk_json).expect("jwt-simple exports JSON");
    jwk["kid"] = json!(kid);
    jwk
}

/// The Istio sample JWKS plus one public key of each other type and an HMAC key.
pub fn jwks_json() -> String {
    let mut doc: Value = serde_json::from_str(ISTIO_JWKS).expect("the Istio sample JWKS is JSON");
    let es256 = ES256KeyPair::from_pem(P256_PEM).expect("P-256 key").public_key().to_jwk();
    let es384 = ES384KeyPair::from_pem(P384_PEM).expect("P-384 key").public_key().to_jwk();
    let eddsa = Ed25519KeyPair::from_pem(ED25519_PEM).expect("Ed25519 key").public_key().to_jwk();
    let keys = doc["keys"].as_array_mut().expect("the Istio sample JWKS has keys");
    keys.push(with_kid(&es256, ES256_KID));
    keys.push(with_kid(&es384, ES384_KID));
    keys.push(with_kid(&eddsa, EDDSA_KID));
    keys.push(json!({"kty": "oct", "kid": HS256_KID, "alg": "HS256", "k": b64(HMAC_SECRET)}));
    doc.to_string()
}

/// Two rules over the same keys: the Istio issuer at the default locations, and
/// [`FUZZ_ISSUER`] with an audience, a custom header, a parameter and a cookie.
pub fn config_json() -> String {
    let jwks = jwks_json();
    json!({
        "jwtRules": [
            {
                "issuer": ISTIO_ISSUER,
                "jwks": jwks,
                "outputPayloadToHeader": "x-jwt-payload",
                "outputClaimToHeaders": [
                    {"header": "x-sub", "claim": "sub"},
                    {"header": "x-nested", "claim": "nested.key"}
                ]
            },
            {
                "issuer": FUZZ_ISSUER,
                "jwks": jwks,
                "audiences": [AUDIENCE, "other"],
                "fromHeaders": [{"name": "x-token"}, {"name": "authorization", "prefix": "Bearer "}],
                "fromParams": ["token"],
                "fromCookies": ["session"],
                "clockSkew": "0s"
            }
        ],
        "claimHeaders": ["x-jwt-claim.groups", "x-jwt-claim-sub", "x-jwt-claim.nested.key", "x-jwt-claim-scope"],
        "maxTokenBytes": MAX_TOKEN_BYTES
    })
    .to_string()
}

pub fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).expect("base64url")
}

/// The configuration and the key set the targets verify against, built once per process.
pub struct Fixture {
    pub config: FilterConfig,
    pub keys: KeySet,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        config: FilterConfig::parse(config_json().as_bytes()).expect("the fixture configuration is valid"),
        keys: KeySet::parse(jwks_json().as_bytes(), true).expect("the fixture JWKS is valid"),
    })
}

/// What the key cache would offer: inline sets are always ready, remote ones never fetched.
pub fn keys_of(config: &FilterConfig, rule: usize) -> KeysFor<'_> {
    match config.rules.get(rule).map(|r| &r.keys) {
        Some(KeySource::Inline(keys)) => KeysFor::Ready { keys, generation: 1, may_refetch: false },
        _ => KeysFor::Pending,
    }
}

/// Runs `authenticate` for `found`, checks the verdict's invariants, then runs it again with
/// the verified tokens cached and checks that the cache changes nothing.
pub fn authenticate_twice(config: &FilterConfig, found: &[FoundToken], path: &str) -> Verdict {
    let keys = |rule: usize| keys_of(config, rule);
    let mut cache = TokenCache::new(16);
    let decide = |cache: &TokenCache| -> Decision {
        let exact = || NOW;
        let clock = RequestTime::new(NOW, &exact);
        let ctx = Context { config, keys: &keys, cache, host: &BuiltinOnly, clock };
        authenticate(&ctx, found, path.as_bytes())
    };
    let first = decide(&cache);
    check_verdict(&first.verdict);
    if matches!(first.verdict, Verdict::Allow(_)) {
        for (token, verified) in first.newly_verified {
            cache.insert(&token, verified);
        }
        let second = decide(&cache);
        assert_eq!(first.verdict, second.verdict, "a cached token must be decided as a fresh one");
    }
    first.verdict
}

/// What holds for every verdict, whatever the input: refusals are 401/403, and every header
/// the filter writes has a valid name and a value that cannot split or truncate a header.
pub fn check_verdict(verdict: &Verdict) {
    match verdict {
        Verdict::Deny(rejection) => assert!(matches!(rejection.status(), 401 | 403)),
        Verdict::Allow(grant) => {
            for (name, value) in &grant.set_headers {
                assert!(is_header_name(name), "header name {name:?}");
                assert!(is_header_value(value), "header {name} value {value:?}");
                assert!(!value.contains(['\r', '\n', '\0']), "header {name} value {value:?}");
            }
            for name in &grant.remove_headers {
                assert!(is_header_name(name), "removed header name {name:?}");
            }
            if let Some(path) = &grant.new_path {
                assert!(!path.contains(['\r', '\n', '\0']), "new path {path:?}");
            }
        }
        Verdict::PassWithoutToken | Verdict::AwaitKeys(_) => {}
    }
}

/// Signs `claims` (a JSON object) with the key for `alg` (and its `kid` unless `kid` is false).
pub fn mint(alg: &str, claims: Value, kid: bool) -> String {
    let custom: Map<String, Value> = serde_json::from_value(claims).expect("claims are an object");
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
    macro_rules! sign {
        ($key:expr, $kid:expr) => {{
            let key = $key.expect("fixture key");
            let key = if kid { key.with_key_id($kid) } else { key };
            key.sign(claims).expect("signing")
        }};
    }
    match alg {
        "RS256" => sign!(RS256KeyPair::from_pem(ISTIO_KEY_PEM), ISTIO_KID),
        "RS384" => sign!(RS384KeyPair::from_pem(ISTIO_KEY_PEM), ISTIO_KID),
        "RS512" => sign!(RS512KeyPair::from_pem(ISTIO_KEY_PEM), ISTIO_KID),
        "PS256" => sign!(PS256KeyPair::from_pem(ISTIO_KEY_PEM), ISTIO_KID),
        "PS384" => sign!(PS384KeyPair::from_pem(ISTIO_KEY_PEM), ISTIO_KID),
        "PS512" => sign!(PS512KeyPair::from_pem(ISTIO_KEY_PEM), ISTIO_KID),
        "ES256" => sign!(ES256KeyPair::from_pem(P256_PEM), ES256_KID),
        "ES384" => sign!(ES384KeyPair::from_pem(P384_PEM), ES384_KID),
        "EdDSA" => sign!(Ed25519KeyPair::from_pem(ED25519_PEM), EDDSA_KID),
        "HS256" => {
            let key = HS256Key::from_bytes(HMAC_SECRET);
            let key = if kid { key.with_key_id(HS256_KID) } else { key };
            key.authenticate(claims).expect("signing")
        }
        other => panic!("no fixture key for {other}"),
    }
}

/// A header map in the proxy-wasm wire form the host hands the filter: the pair count
/// (u32 LE), each pair's name and value lengths (u32 LE each), then each name and value
/// followed by a NUL.
pub fn serialize_headers(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let length = |len: usize| u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
    let mut buffer = length(pairs.len()).to_vec();
    for (name, value) in pairs {
        buffer.extend(length(name.len()));
        buffer.extend(length(value.len()));
    }
    for (name, value) in pairs {
        for bytes in [name, value] {
            buffer.extend_from_slice(bytes);
            buffer.push(0);
        }
    }
    buffer
}

/// The tokens and `:path` the request path finds in a serialized header map, the way the
/// plugin walks it (src/plugin/request.rs): one walk, acted on only if it read every pair.
/// `None` for a buffer that does not parse.
pub fn walk_headers<'a>(config: &FilterConfig, buffer: &'a [u8]) -> Option<(FoundTokens<'a>, &'a [u8])> {
    let headers = Pairs::unchecked(buffer)?;
    let mut walk = headers.clone();
    let mut scan = scan_headers(config, &mut walk);
    if !walk.is_complete() {
        return None;
    }
    add_query_tokens(&config.locations, scan.path, &mut scan.tokens);
    Some((scan.tokens, scan.path))
}

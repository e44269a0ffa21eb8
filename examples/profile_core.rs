//! Times the request path's pure core (for callgrind, a quick look, or V8's profiler):
//! `cargo run --release --example profile_core [iterations]`. Per request it does what the
//! filter does between the host's calls: reads the serialized header map the host hands
//! over, checks every name for an owned header, finds the token, and decides, for the Istio
//! sample token through a warm token cache, then with the cache off (a full RS256
//! verification with jwt-simple each time).
//!
//! Inside V8, as in Envoy: build it with `--target wasm32-wasip1` and run the .wasm under
//! Node's WASI (`node --cpu-prof` names the Rust functions; any `env` import may be a stub
//! returning 0, since the filter's host glue never runs here).

use std::time::Instant;

use jwt_claims_filter::authn::{authenticate, Context, KeysFor, RequestTime};
use jwt_claims_filter::config::{FilterConfig, KeySource};
use jwt_claims_filter::extract::{add_query_tokens, scan_headers};
use jwt_claims_filter::headermap::Pairs;
use jwt_claims_filter::tokencache::TokenCache;
use jwt_claims_filter::verify::BuiltinOnly;

const JWKS: &str = include_str!("../tests/fixtures/istio-samples/jwks.json");
/// A time at which the sample token is valid.
const NOW: u64 = 1_800_000_000;
const TOKEN: &str = include_str!("../tests/fixtures/istio-samples/groups-scope.jwt");

fn main() {
    let iterations: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    // `cached` as a second argument: only the cached path (for a profile of it alone).
    let cached_only = std::env::args().nth(2).is_some_and(|a| a == "cached");
    let config_json = serde_json::json!({
        "jwtRules": [{"issuer": "testing@secure.istio.io", "jwks": JWKS}],
        "claimHeaders": ["x-jwt-claim.groups"],
    });
    let Ok(config) = FilterConfig::parse(config_json.to_string().as_bytes()) else {
        eprintln!("configuration refused");
        return;
    };
    let Some(KeySource::Inline(keys)) = config.rules.first().map(|rule| &rule.keys) else { return };
    // What Envoy hands a filter for `curl -H "Authorization: Bearer ..." host/headers`.
    let authorization = format!("Bearer {}", TOKEN.trim());
    let wire = serialize(&[
        (":authority", "httpbin.example.com"),
        (":path", "/headers"),
        (":method", "GET"),
        (":scheme", "http"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        ("authorization", &authorization),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "5f0e4f7a-1c2b-4c41-9a5e-8d1b2a3c4d5e"),
    ]);
    let keys_for = |_: usize| KeysFor::Ready { keys, generation: 0, may_refetch: false };

    for (label, capacity, rounds) in
        [("cached", 1000, iterations), ("uncached (RS256 in jwt-simple)", 0, iterations / 100)]
    {
        if cached_only && capacity == 0 {
            continue;
        }
        let mut cache = TokenCache::new(capacity);
        let started = Instant::now();
        let mut allowed = 0u32;
        for _ in 0..rounds.max(1) {
            let buffer = wire.clone(); // the host allocates a fresh one per request
            // The request path's one walk (src/plugin/request.rs), acted on if it read it all.
            let mut walk = Pairs::unchecked(&buffer).unwrap_or_default();
            let scan = scan_headers(&config, &mut walk);
            assert!(walk.is_complete(), "the wire form reads whole");
            let owned = scan.owned.len();
            let mut found = scan.tokens;
            add_query_tokens(&config.locations, scan.path, &mut found);
            let ctx = Context {
                config: &config,
                keys: &keys_for,
                cache: &cache,
                host: &BuiltinOnly,
                clock: RequestTime::new(NOW, &|| NOW),
            };
            let decision = authenticate(&ctx, &found, scan.path);
            if owned == 0 && matches!(decision.verdict, jwt_claims_filter::authn::Verdict::Allow(_)) {
                allowed += 1;
            }
            for (token, verified) in decision.newly_verified {
                cache.insert(&token, verified);
            }
        }
        let per = started.elapsed() / rounds.max(1);
        println!("{label}: {per:?} per request ({allowed} allowed)");
    }
}

/// The host's wire form of a header map (see `jwt_claims_filter::headermap`).
fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let length = |s: &str| u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = u32::try_from(pairs.len()).unwrap_or(0).to_le_bytes().to_vec();
    for (name, value) in pairs {
        out.extend(length(name));
        out.extend(length(value));
    }
    for (name, value) in pairs {
        for part in [name, value] {
            out.extend(part.as_bytes());
            out.push(0);
        }
    }
    out
}

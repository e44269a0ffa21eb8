//! Times the request path's pure core natively (for callgrind or a quick look):
//! `cargo run --release --example profile_core [iterations]`. It runs `find_tokens` and
//! `authenticate` for the Istio sample token through a warm token cache, then with the cache
//! off (a full RS256 verification with jwt-simple each time).

use std::time::Instant;

use jwt_claims_filter::authn::{authenticate, Context, KeysFor};
use jwt_claims_filter::config::{FilterConfig, KeySource};
use jwt_claims_filter::extract::find_tokens;
use jwt_claims_filter::tokencache::TokenCache;
use jwt_claims_filter::verify::BuiltinOnly;

const JWKS: &str = include_str!("../tests/fixtures/istio-samples/jwks.json");
const TOKEN: &str = include_str!("../tests/fixtures/istio-samples/groups-scope.jwt");

fn main() {
    let iterations: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let config_json = serde_json::json!({
        "jwtRules": [{"issuer": "testing@secure.istio.io", "jwks": JWKS}],
        "claimHeaders": ["x-jwt-claim.groups"],
    });
    let Ok(config) = FilterConfig::parse(config_json.to_string().as_bytes()) else {
        eprintln!("configuration refused");
        return;
    };
    let KeySource::Inline(keys) = &config.rules[0].keys else { return };
    let headers = vec![
        (":path".to_string(), "/headers".to_string()),
        ("authorization".to_string(), format!("Bearer {}", TOKEN.trim())),
        ("user-agent".to_string(), "curl/8".to_string()),
    ];
    let keys_for = |_: usize| KeysFor::Ready { keys, generation: 0, may_refetch: false };

    for (label, capacity, rounds) in
        [("cached", 1000, iterations), ("uncached (RS256 in jwt-simple)", 0, iterations / 100)]
    {
        let mut cache = TokenCache::new(capacity);
        let started = Instant::now();
        let mut allowed = 0u32;
        for _ in 0..rounds.max(1) {
            let found = find_tokens(&config.locations, &headers, "/headers");
            let ctx = Context {
                config: &config,
                keys: &keys_for,
                cache: &cache,
                host: &BuiltinOnly,
                now_secs: 1_800_000_000,
            };
            let decision = authenticate(&ctx, &found, "/headers");
            if matches!(decision.verdict, jwt_claims_filter::authn::Verdict::Allow(_)) {
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

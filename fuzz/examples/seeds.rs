//! Writes the committed seed corpus (fuzz/seeds/<target>/): inputs that reach deep into each
//! target, which random bytes would take the fuzzer long to find (valid signatures above all).
//!
//!     cd fuzz && cargo run --example seeds
//!
//! Re-running it replaces the seeds; ECDSA signatures differ between runs, nothing else does.

use std::fs;
use std::path::Path;

use jwt_claims_filter_fuzz::*;
use serde_json::{json, Value};

fn write(target: &str, name: &str, contents: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    fs::create_dir_all(&dir).expect("seed folder");
    fs::write(dir.join(name), contents).expect("seed file");
}

/// A token whose header is `header` (JSON text), signed by nobody.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.c2ln", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

fn main() {
    let claims = |iss: &str| {
        json!({"iss": iss, "sub": "user@example", "aud": AUDIENCE, "exp": NOW + 3600, "nbf": NOW - 10,
               "groups": ["group1", "group2"], "nested": {"key": "value"}, "scope": "read write"})
    };

    // token: every algorithm, both rules, and the structural edge cases.
    write("token", "istio-demo", include_bytes!("../../tests/fixtures/istio-samples/demo.jwt"));
    write("token", "istio-groups-scope", include_bytes!("../../tests/fixtures/istio-samples/groups-scope.jwt"));
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256"] {
        write("token", &format!("{alg}-istio"), mint(alg, claims(ISTIO_ISSUER), true).as_bytes());
        write("token", &format!("{alg}-fuzz"), mint(alg, claims(FUZZ_ISSUER), true).as_bytes());
        write("token", &format!("{alg}-no-kid"), mint(alg, claims(ISTIO_ISSUER), false).as_bytes());
    }
    let mut expired = claims(ISTIO_ISSUER);
    expired["exp"] = json!(NOW - 3600);
    write("token", "expired", mint("RS256", expired, true).as_bytes());
    let mut hostile = claims(ISTIO_ISSUER);
    hostile["sub"] = json!("a\r\nx-injected: 1\u{0}");
    hostile["groups"] = json!(["a,b", "c"]);
    hostile["nested"] = json!({"key": [[1], {"deep": [null]}]});
    write("token", "hostile-claims", mint("ES256", hostile, true).as_bytes());
    let two = format!("{}\n{}", mint("RS256", claims(ISTIO_ISSUER), true), mint("EdDSA", claims(FUZZ_ISSUER), true));
    write("token", "two-tokens", two.as_bytes());
    let body = claims(ISTIO_ISSUER);
    write(
        "token",
        "alg-none",
        unsigned(&json!({"alg": "none", "typ": "JWT"}), &body).trim_end_matches("c2ln").as_bytes(),
    );
    write("token", "crit", unsigned(&json!({"alg": "RS256", "kid": ISTIO_KID, "crit": ["exp"]}), &body).as_bytes());
    write("token", "es512", unsigned(&json!({"alg": "ES512", "kid": "k"}), &body).as_bytes());
    write("token", "typ-jwe", unsigned(&json!({"alg": "HS256", "typ": "JOSE+JSON"}), &body).as_bytes());
    write("token", "unknown-kid", unsigned(&json!({"alg": "RS256", "kid": "nope"}), &body).as_bytes());
    write("token", "payload-array", unsigned(&json!({"alg": "RS256"}), &json!([1, 2])).as_bytes());

    // jwks: the fixture set, the Istio set, and keys each parser branch refuses.
    write("jwks", "fixture", jwks_json().as_bytes());
    write("jwks", "istio", ISTIO_JWKS.as_bytes());
    let rsa: Value = serde_json::from_str::<Value>(ISTIO_JWKS).expect("JSON")["keys"][0].clone();
    let variants = [
        ("rsa-ps256", json!({"alg": "PS256"})),
        ("rsa-use-enc", json!({"use": "enc"})),
        ("rsa-e-3", json!({"e": "Aw"})),
        ("rsa-padded-n", json!({"n": format!("{}==", rsa["n"].as_str().unwrap_or(""))})),
        ("rsa-alg-hs256", json!({"alg": "HS256"})),
    ];
    for (name, patch) in variants {
        let mut key = rsa.clone();
        for (k, v) in patch.as_object().into_iter().flatten() {
            key[k] = v.clone();
        }
        write("jwks", name, json!({"keys": [key]}).to_string().as_bytes());
    }
    let odd = json!({"keys": [
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": "AA"},
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "unknown"},
        "not an object",
        {"kty": "RSA", "kid": "dup", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "dup", "n": rsa["n"], "e": rsa["e"]}
    ]});
    write("jwks", "odd-keys", odd.to_string().as_bytes());

    // config: the fixture configuration and Istio-shaped variants.
    write("config", "fixture", config_json().as_bytes());
    write(
        "config",
        "istio-remote",
        json!({
            "jwtRules": [{"issuer": "https://issuer.example", "jwksUri": "https://issuer.example/jwks.json",
                          "audiences": ["a"], "forwardOriginalToken": true, "timeout": "1.5s",
                          "jwksCacheDuration": "600s", "jwksMinRefetchInterval": "250ms"}],
            "requireToken": true, "tokenCacheSize": 0
        })
        .to_string()
        .as_bytes(),
    );
    write(
        "config",
        "discovery",
        json!({"jwtRules": [{"issuer": "https://accounts.example/"}],
        "claimHeaders": ["x-jwt-claim-key.1-key.2"]})
        .to_string()
        .as_bytes(),
    );
    write(
        "config",
        "inline-istio",
        json!({"jwtRules": [{"issuer": ISTIO_ISSUER, "jwks": ISTIO_JWKS,
        "fromHeaders": [{"name": "x-jwt", "prefix": ""}], "fromParams": ["t"], "fromCookies": ["c"],
        "outputClaimToHeaders": [{"header": "x-groups", "claim": "groups"}]}],
        "claimHeaders": ["x-jwt-claim.groups"], "maxTokenBytes": 64})
        .to_string()
        .as_bytes(),
    );

    // claims: header names with each separator, values of each JSON type.
    let cases: [(&str, Value); 8] = [
        ("x-jwt-claim.groups", json!(["group1", "group2"])),
        ("x-jwt-claim-nested-key", json!({"nested": {"key": "v"}})),
        ("x-jwt-claim.key.1.key.2", json!({"key": {"1": {"key": {"2": 7}}}})),
        ("x-jwt-claim_a_b", json!({"a": {"b": true}})),
        ("X-JWT-CLAIM.Sub", json!({"Sub": "Ünïcode"})),
        ("nested.key", json!({"nested": {"key": ["a", "b,c"]}})),
        ("x-jwt-claim.", json!("a\r\nb")),
        ("x-jwt-claim.n", json!({"n": 1.5e300})),
    ];
    for (i, (name, value)) in cases.iter().enumerate() {
        write("claims", &format!("case-{i}"), format!("{name}\n{value}").as_bytes());
    }
    // What the strict token JSON reader refuses and serde_json takes.
    write("claims", "duplicate-member", b"x-jwt-claim.a\n{\"a\":1,\"a\":\"two\"}");
    let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
    write("claims", "deep-101", format!("x-jwt-claim.a\n{deep}").as_bytes());
}

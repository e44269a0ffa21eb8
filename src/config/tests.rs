use super::values::parse_duration;
use super::*;

const JWKS: &str = include_str!("../../tests/fixtures/istio-samples/jwks.json");

fn parse(json: &str) -> Result<FilterConfig, ConfigError> {
    FilterConfig::parse(json.as_bytes())
}

fn err_field(json: &str) -> String {
    parse(json).unwrap_err().field
}

const URI_RULE: &str = r#"{"issuer":"testing@secure.istio.io","jwksUri":"http://127.0.0.1:8091/jwks.json"}"#;

#[test]
fn contract_example_parses_with_every_field() {
    let json = r#"{
      "jwtRules": [{
        "issuer": "testing@secure.istio.io",
        "audiences": ["optional", "any-of"],
        "jwksUri": "http://127.0.0.1:8091/jwks.json",
        "jwksCluster": "jwks",
        "timeout": "5s",
        "jwksCacheDuration": "300s",
        "jwksMinRefetchInterval": "10s",
        "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
        "fromParams": ["access_token"],
        "fromCookies": ["session"],
        "forwardOriginalToken": false,
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
        "clockSkew": "60s"
      }],
      "claimHeaders": ["x-jwt-claim.groups"],
      "requireToken": false,
      "maxTokenBytes": 4096,
      "tokenCacheSize": 0
    }"#;
    let config = parse(json).unwrap();
    let rule = &config.rules[0];
    assert_eq!(rule.audiences, vec!["optional", "any-of"]);
    let KeySource::Remote(remote) = &rule.keys else { panic!("remote expected") };
    assert_eq!(remote.cluster, "jwks");
    assert_eq!(remote.uri.authority, "127.0.0.1:8091");
    assert_eq!(remote.uri.path, "/jwks.json");
    assert_eq!(rule.jwks_min_refetch_interval, Duration::from_secs(10));
    assert_eq!(config.locations.len(), 3);
    assert_eq!(
        config.locations[0],
        TokenLocation::Header { name: "authorization".into(), prefix: "Bearer ".into() }
    );
    assert_eq!(config.owned_headers, vec!["x-jwt-sub", "x-jwt-payload"]);
    assert_eq!(config.claim_headers[0].name, "x-jwt-claim.groups");
    assert_eq!(config.max_token_bytes, 4096);
    assert_eq!(config.token_cache_size, 0);
}

#[test]
fn defaults_follow_istio() {
    let config = parse(&format!(r#"{{"jwtRules":[{URI_RULE}]}}"#)).unwrap();
    let rule = &config.rules[0];
    assert_eq!(rule.timeout, DEFAULT_TIMEOUT);
    assert_eq!(rule.jwks_cache_duration, DEFAULT_JWKS_CACHE_DURATION);
    assert_eq!(rule.clock_skew, DEFAULT_CLOCK_SKEW);
    assert!(!rule.forward_original_token);
    assert!(!config.require_token);
    assert_eq!(config.max_token_bytes, DEFAULT_MAX_TOKEN_BYTES);
    assert_eq!(config.token_cache_size, DEFAULT_TOKEN_CACHE_SIZE);
    assert_eq!(
        config.locations,
        vec![
            TokenLocation::Header { name: "authorization".into(), prefix: "Bearer ".into() },
            TokenLocation::Param("access_token".into())
        ]
    );
    let KeySource::Remote(remote) = &rule.keys else { panic!("remote expected") };
    assert_eq!(remote.cluster, "outbound|8091||127.0.0.1");
    let https = parse(r#"{"jwtRules":[{"issuer":"i","jwksUri":"https://idp.example.com/keys"}]}"#).unwrap();
    let KeySource::Remote(remote) = &https.rules[0].keys else { panic!("remote expected") };
    assert_eq!(remote.cluster, "outbound|443||idp.example.com");
}

#[test]
fn headers_only_location_drops_the_param_default() {
    let config =
        parse(r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","fromHeaders":[{"name":"x-token"}]}]}"#)
            .unwrap();
    assert_eq!(config.locations, vec![TokenLocation::Header { name: "x-token".into(), prefix: String::new() }]);
}

#[test]
fn issuer_without_keys_uses_oidc_discovery() {
    let config = parse(r#"{"jwtRules":[{"issuer":"https://idp.example.com/realms/x/"}]}"#).unwrap();
    let KeySource::Remote(remote) = &config.rules[0].keys else { panic!("remote expected") };
    assert!(remote.discovery);
    assert_eq!(remote.uri.path, "/realms/x/.well-known/openid-configuration");
    assert_eq!(err_field(r#"{"jwtRules":[{"issuer":"not-a-url"}]}"#), "jwtRules[0].jwksUri");
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("[]", ""),
        ("{}", "jwtRules"),
        (r#"{"jwtRules":[]}"#, "jwtRules"),
        (r#"{"jwtRules":{}}"#, "jwtRules"),
        (r#"{"jwtRules":[{"jwksUri":"http://h/j"}]}"#, "jwtRules[0].issuer"),
        (r#"{"jwtRules":[{"issuer":5,"jwksUri":"http://h/j"}]}"#, "jwtRules[0].issuer"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"ftp://h/j"}]}"#, "jwtRules[0].jwksUri"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h:99999/j"}]}"#, "jwtRules[0].jwksUri"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","jwks":"{}"}]}"#, "jwtRules[0].jwksUri"),
        (r#"{"jwtRules":[{"issuer":"i","jwks":"{\"keys\":[]}"}]}"#, "jwtRules[0].jwks"),
        (r#"{"jwtRules":[{"issuer":"i","jwks":"not json"}]}"#, "jwtRules[0].jwks"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","timeout":"5"}]}"#, "jwtRules[0].timeout"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","timeout":5}]}"#, "jwtRules[0].timeout"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","timeout":"0s"}]}"#, "jwtRules[0].timeout"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","clockSkew":"-1s"}]}"#, "jwtRules[0].clockSkew"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","audiences":"a"}]}"#, "jwtRules[0].audiences"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","audiences":[1]}]}"#, "jwtRules[0].audiences[0]"),
        (
            r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","fromHeaders":[{"prefix":"B "}]}]}"#,
            "jwtRules[0].fromHeaders[0].name",
        ),
        (
            r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","fromHeaders":[{"name":"a b"}]}]}"#,
            "jwtRules[0].fromHeaders[0].name",
        ),
        (
            r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","forwardOriginalToken":"no"}]}"#,
            "jwtRules[0].forwardOriginalToken",
        ),
        (
            r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","outputClaimToHeaders":[{"header":"x"}]}]}"#,
            "jwtRules[0].outputClaimToHeaders[0].claim",
        ),
        (
            r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","outputPayloadToHeader":"bad header"}]}"#,
            "jwtRules[0].outputPayloadToHeader",
        ),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","jwksCluster":""}]}"#, "jwtRules[0].jwksCluster"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","issuerr":"x"}]}"#, "jwtRules[0].issuerr"),
        (
            r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"},{"issuer":"i","jwksUri":"http://h/j"}]}"#,
            "jwtRules[1].issuer",
        ),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"claimHeaders":["x-groups"]}"#, "claimHeaders[0]"),
        (
            r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"claimHeaders":["x-jwt-claim"]}"#,
            "claimHeaders[0]",
        ),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"requireToken":1}"#, "requireToken"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"maxTokenBytes":1}"#, "maxTokenBytes"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"claimHeader":[]}"#, "claimHeader"),
        (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"tokenCacheSize":-1}"#, "tokenCacheSize"),
    ];
    for (json, field) in cases {
        assert_eq!(&err_field(json), field, "{json}");
    }
    let message =
        parse(r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","timeout":"soon"}]}"#).unwrap_err().to_string();
    assert!(message.contains("jwtRules[0].timeout") && message.contains("soon"), "{message}");
}

#[test]
fn inline_jwks_may_hold_hmac_keys() {
    let json = serde_json::json!({"jwtRules":[{"issuer":"i","jwks":r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#}]});
    let config = parse(&json.to_string()).unwrap();
    assert!(config.all_keys_inline());
    let json = serde_json::json!({"jwtRules":[{"issuer":"i","jwks": JWKS}]});
    assert!(parse(&json.to_string()).is_ok());
}

#[test]
fn durations_in_protobuf_text_form() {
    assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("0.000000001s"), Some(Duration::from_nanos(1)));
    assert_eq!(parse_duration("300s"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    for bad in ["", "s", "5", "-1s", "1.s", ".5s", "1.0000000001s", "5m", "1e3s", "5 s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn uris() {
    let u = HttpUri::parse("https://idp.example.com:8443/a/b?x=1").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.authority.as_str(), u.path.as_str()),
        ("idp.example.com", 8443, "idp.example.com:8443", "/a/b?x=1")
    );
    let u = HttpUri::parse("http://[::1]:9000").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("[::1]", 9000, "/"));
    for bad in ["idp.example.com/jwks", "http://", "http://user@h/", "http://h:0/", "http://h/#f", "http://h h/"] {
        assert!(HttpUri::parse(bad).is_err(), "{bad}");
    }
}

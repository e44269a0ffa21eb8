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

#[test]
fn conditions_and_literal_claim_paths() {
    let json = format!(
        r#"{{"jwtRules": [{{"issuer": "i", "jwks": {jwks:?},
              "outputClaimToHeaders": [{{"header": "x-simple", "claim": ["test-issuer-1@istio.io/simple", "a.b"]}}]}}],
            "claimHeaders": ["x-jwt-claim.groups", {{"header": "X-JWT-Claim-Simple", "claim": ["k.1"]}}],
            "conditions": [{{"header": "X-Jwt-Cond-0", "claim": ["a.b", "c"], "regex": "g[0-9]+"}},
                           {{"header": "x-jwt-cond-1", "principal": true, "present": true}}]}}"#,
        jwks = JWKS
    );
    let config = parse(&json).unwrap();
    assert_eq!(config.rules[0].output_claim_to_headers[0].claim.keys(), ["test-issuer-1@istio.io/simple", "a.b"]);
    assert_eq!(config.claim_headers[1].name, "x-jwt-claim-simple");
    assert_eq!(config.claim_headers[1].path.keys(), ["k.1"]);
    assert_eq!(config.conditions[0].header, "x-jwt-cond-0");
    assert_eq!(config.owned_headers, vec!["x-simple", "x-jwt-cond-0", "x-jwt-cond-1"]);
}

#[test]
fn condition_errors_name_the_field() {
    let with = |conditions: &str| {
        let json = format!(r#"{{"jwtRules": [{URI_RULE}], "conditions": {conditions}}}"#);
        let e = parse(&json).unwrap_err();
        (e.field, e.message)
    };
    let cases: &[(&str, &str, &str)] = &[
        (r#"{}"#, "conditions", "expected a list"),
        (r#"[{"claim": "g", "exact": "x"}]"#, "conditions[0].header", "is required"),
        (r#"[{"header": "x c", "claim": "g", "exact": "x"}]"#, "conditions[0].header", "not a valid header name"),
        (r#"[{"header": "x-c", "exact": "x"}]"#, "conditions[0]", "needs a subject"),
        (r#"[{"header": "x-c", "claim": "g", "principal": true, "exact": "x"}]"#, "conditions[0]", "both"),
        (r#"[{"header": "x-c", "principal": false, "exact": "x"}]"#, "conditions[0].principal", "must be true"),
        (r#"[{"header": "x-c", "claim": "g"}]"#, "conditions[0]", "exactly one of"),
        (r#"[{"header": "x-c", "claim": "g", "exact": "x", "prefix": "y"}]"#, "conditions[0]", "found 2"),
        (r#"[{"header": "x-c", "claim": "g", "regex": "("}]"#, "conditions[0].regex", ""),
        (r#"[{"header": "x-c", "claim": "g", "regex": "a)|(b"}]"#, "conditions[0].regex", ""),
        (r#"[{"header": "x-c", "claim": "g", "present": false}]"#, "conditions[0].present", "must be true"),
        (r#"[{"header": "x-c", "claim": [], "exact": "x"}]"#, "conditions[0].claim", "empty list"),
        (r#"[{"header": "x-c", "claim": ["a", 1], "exact": "x"}]"#, "conditions[0].claim[1]", "expected a string"),
        (r#"[{"header": "x-c", "claim": "a..b", "exact": "x"}]"#, "conditions[0].claim", "empty claim name"),
        (r#"[{"header": "x-c", "claim": "g", "exact": 1}]"#, "conditions[0].exact", "expected a string"),
        (r#"[{"header": "x-c", "claim": "g", "exact": "x", "extra": 1}]"#, "conditions[0].extra", "unknown field"),
        (r#"[{"header": "x-jwt-claim-g", "claim": "g", "exact": "x"}]"#, "conditions[0].header", "x-jwt-claim family"),
        (r#"[{"header": "x-c", "claim": "g", "exact": "x"}, {"header": "X-C", "claim": "h", "exact": "y"}]"#,
         "conditions[1].header", "already"),
        (r#"[{"header": "authorization", "claim": "g", "exact": "x"}]"#, "conditions[0].header", "token location"),
    ];
    for (conditions, field, message) in cases {
        let (got_field, got_message) = with(conditions);
        assert_eq!(&got_field, field, "{conditions}: {got_message}");
        assert!(got_message.contains(message), "{conditions}: {got_message}");
    }
    let json = format!(
        r#"{{"jwtRules": [{{"issuer": "i", "jwks": {JWKS:?}, "outputClaimToHeaders": [{{"header": "x-c", "claim": "g"}}]}}],
            "conditions": [{{"header": "x-c", "claim": "g", "exact": "x"}}]}}"#
    );
    assert_eq!(parse(&json).unwrap_err().field, "conditions[0].header");
    let claim_header = |entry: &str| {
        let json = format!(r#"{{"jwtRules": [{URI_RULE}], "claimHeaders": [{entry}]}}"#);
        parse(&json).unwrap_err().field
    };
    assert_eq!(claim_header(r#"{"header": "x-other", "claim": "g"}"#), "claimHeaders[0].header");
    assert_eq!(claim_header(r#"{"header": "x-jwt-claim-g"}"#), "claimHeaders[0].claim");
    assert_eq!(claim_header(r#"{"header": "x-jwt-claim-g", "claim": "g", "x": 1}"#), "claimHeaders[0].x");
}

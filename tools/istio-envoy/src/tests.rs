//! The compiler end to end on YAML text: what it writes for each emit, and what it refuses.
//! (Served through a real Envoy in tests/e2e/test_istio_*.py.)

use clap::Parser;
use serde_json::Value;

use crate::{compile, model, Cli};

const GATEWAY: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*.example.com\"]
";

const RA: &str = "
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: http://127.0.0.1:8091/jwks.json
";

fn vs(http: &str) -> String {
    format!(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs}}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http:
{http}"
    )
}

fn run(yaml: &str, args: &[&str]) -> Result<String, String> {
    let resources = model::parse(yaml, "test.yaml").map_err(|r| r.to_string())?;
    let mut argv = vec!["istio-envoy"];
    argv.extend_from_slice(args);
    argv.push("unused.yaml");
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    compile(&resources, &cli).map_err(|r| r.to_string())
}

fn bootstrap(yaml: &str) -> Value {
    let text = run(yaml, &["--upstream", "httpbin:8000=127.0.0.1:8000"]).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn hcm(b: &Value) -> &Value {
    &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

fn plugin_config(b: &Value) -> Value {
    let text = hcm(b)["http_filters"][0]["typed_config"]["config"]["configuration"]["value"].as_str().unwrap();
    serde_json::from_str(text).unwrap()
}

const TO_HTTPBIN: &str = "    route:\n    - destination: {host: httpbin, port: {number: 8000}}\n";

#[test]
fn claim_matches_become_condition_headers_removed_before_the_upstream() {
    let http = format!(
        "  - match:\n    - uri: {{prefix: /headers}}\n      headers:\n        \"@request.auth.claims.groups\": {{exact: group1}}\n      withoutHeaders:\n        \"@request.auth.claims[a.b]\": {{prefix: x}}\n        x-plain: {{exact: v}}\n{TO_HTTPBIN}"
    );
    let b = bootstrap(&format!("{GATEWAY}---{RA}---{}", vs(&http)));
    let route_config = &hcm(&b)["route_config"];
    let vhost = &route_config["virtual_hosts"][0];
    assert_eq!(vhost["domains"], serde_json::json!(["a.example.com"]));
    let headers = vhost["routes"][0]["match"]["headers"].as_array().unwrap();
    assert_eq!(headers[0], serde_json::json!({"name": "x-jwt-cond-1", "string_match": {"exact": "true"}}));
    assert_eq!(headers[1], serde_json::json!({"name": "x-jwt-cond-2", "string_match": {"exact": "false"}}));
    assert_eq!(headers[2]["invert_match"], true);
    assert_eq!(headers[2]["treat_missing_header_as_empty"], true);
    assert_eq!(route_config["request_headers_to_remove"], serde_json::json!(["x-jwt-cond-1", "x-jwt-cond-2"]));
    let config = plugin_config(&b);
    assert_eq!(config["conditions"][0], serde_json::json!({"header": "x-jwt-cond-1", "claim": ["groups"], "exact": "group1"}));
    assert_eq!(config["conditions"][1], serde_json::json!({"header": "x-jwt-cond-2", "claim": ["a.b"], "prefix": "x"}));
    let clusters: Vec<&str> = b["static_resources"]["clusters"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(clusters, ["outbound|8000||httpbin", "outbound|8091||127.0.0.1"]);
}

#[test]
fn a_route_per_match_in_order_and_hosts_intersected() {
    let http = format!("  - match:\n    - uri: {{exact: /a}}\n    - uri: {{regex: \"/b.*\"}}\n      ignoreUriCase: true\n{TO_HTTPBIN}  - directResponse: {{status: 418}}\n");
    let wildcard_vs = vs(&http).replace("hosts: [a.example.com]", "hosts: [\"*\"]");
    let b = bootstrap(&format!("{GATEWAY}---{}", wildcard_vs));
    let vhost = &hcm(&b)["route_config"]["virtual_hosts"][0];
    // `*` through a gateway host `*.example.com` serves the gateway's host.
    assert_eq!(vhost["domains"], serde_json::json!(["*.example.com"]));
    let routes = vhost["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0]["match"], serde_json::json!({"path": "/a"}));
    assert_eq!(routes[1]["match"], serde_json::json!({"safe_regex": {"regex": "/b.*"}, "case_sensitive": false}));
    assert_eq!(routes[2]["direct_response"], serde_json::json!({"status": 418}));
    // No JWT rules and no conditions: no filter, only the router.
    assert_eq!(hcm(&b)["http_filters"].as_array().unwrap().len(), 1);
}

#[test]
fn refusals_name_the_resource_and_field() {
    let cases = [
        (format!("{GATEWAY}---{}", vs(&format!("  - fault: {{}}\n{TO_HTTPBIN}"))), "VirtualService default/vs: spec.http[0].fault: is not supported: fault injection"),

        (format!("{GATEWAY}---{}", vs("  - route:\n    - destination: {host: nowhere, port: {number: 1}}\n")), "VirtualService default/vs: spec.http[0].route[0].destination.host: nowhere:1 has no ServiceEntry and no --upstream"),
        (format!("{GATEWAY}---{}", vs(&format!("  - match:\n    - uri: {{prefix: /}}\n      sourceLabels: {{a: b}}\n{TO_HTTPBIN}"))), "spec.http[0].match[0].sourceLabels: is not supported"),
        (format!("{GATEWAY}---{RA}---{}", vs(&format!("  - match:\n    - headers:\n        \"@request.auth.claims.g\": {{regex: \"(\"}}\n{TO_HTTPBIN}"))), "spec.http[0].match[0].headers.@request.auth.claims.g.regex: is not a valid RE2 regex"),
        (RA.replace("jwksUri:", "jwksUrl:"), "RequestAuthentication istio-system/jwt: spec.jwtRules[0].jwksUrl"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n".to_string(), "kind Service is not supported"),
        (format!("{GATEWAY}---{}", vs(TO_HTTPBIN).replace("[gw]", "[other]")), "spec.gateways[0]: \"other\" names no Gateway"),
    ];
    for (yaml, expected) in cases {
        let err = run(&yaml, &["--upstream", "httpbin:8000=127.0.0.1:8000"]).unwrap_err();
        assert!(err.contains(expected), "{err:?} should contain {expected:?}");
    }
}

#[test]
fn without_jwt_validation_claim_matches_hold_as_in_istio() {
    let http = format!(
        "  - match:\n    - uri: {{prefix: /never}}\n      headers:\n        \"@request.auth.claims.g\": {{exact: x}}\n    - uri: {{prefix: /always}}\n      withoutHeaders:\n        \"@request.auth.claims.g\": {{exact: x}}\n{TO_HTTPBIN}"
    );
    let b = bootstrap(&format!("{GATEWAY}---{}", vs(&http)));
    let routes = hcm(&b)["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap().clone();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["match"], serde_json::json!({"prefix": "/always"}));
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n";
    let err = run(&format!("{GATEWAY}---\n{policy}"), &[]).unwrap_err();
    assert!(err.starts_with("AuthorizationPolicy default/p: spec: tests request.auth"), "{err}");
}

#[test]
fn istio_emit_compiles_back_to_the_same_routes() {
    let http = format!("  - match:\n    - uri: {{prefix: /headers}}\n      headers:\n        x-jwt-claim.groups: {{exact: group1}}\n{TO_HTTPBIN}");
    let input = format!("{GATEWAY}---{RA}---{}", vs(&http));
    let manifests = run(&input, &["--emit", "istio"]).unwrap();
    assert!(!manifests.contains("kind: RequestAuthentication"));
    assert!(!manifests.contains("x-jwt-claim.groups"));
    let direct = bootstrap(&input);
    let again = bootstrap(&manifests);
    let routes = |b: &Value| hcm(b)["route_config"]["virtual_hosts"][0]["routes"][0]["match"].clone();
    assert_eq!(routes(&direct), routes(&again));
    assert_eq!(plugin_config(&direct), plugin_config(&again));
}

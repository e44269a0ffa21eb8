//! Scenario 4: OpenID discovery. A rule with no jwksUri and an https issuer fetches the
//! issuer's discovery document first, then the jwks_uri it names, through the cluster the
//! filter derives for it; then requests pass.

use serde_json::json;

use crate::fake::{Envoy, Outcome, Reply, Worker};
use crate::keys::{jwks, Signer, GROUPS};

const IDP: &str = "https://idp.example.com/realms/demo";

fn discovery_config(rule_extra: serde_json::Value) -> String {
    let mut rule = json!({"issuer": IDP, "timeout": "2s"});
    for (k, v) in rule_extra.as_object().unwrap() {
        rule[k] = v.clone();
    }
    json!({"jwtRules": [rule], "claimHeaders": ["x-jwt-claim.groups"]}).to_string()
}

#[test]
fn discovery_document_then_the_jwks_it_names_on_the_derived_cluster() {
    let envoy = Envoy::new();
    let key = Signer::new("idp-1");
    let mut w = Worker::start(&envoy, &discovery_config(json!({})));
    let r = w.get_with(&key.token(IDP));
    w.run_until(20);

    let doc = w.only_pending_call();
    assert_eq!(doc.cluster, "outbound|443||idp.example.com");
    assert_eq!(doc.header(":path"), "/realms/demo/.well-known/openid-configuration");
    assert_eq!(doc.header(":authority"), "idp.example.com");
    let body = json!({"issuer": IDP, "jwks_uri": "https://keys.idp-cdn.example.net:8443/demo/certs"});
    w.answer(doc.token, Reply::ok(body.to_string()));
    assert_eq!(w.outcome(r), Outcome::Waiting, "the document has no keys");

    let keys = w.only_pending_call();
    assert!(keys.token != doc.token);
    assert_eq!(keys.context, w.root, "the JWKS fetch is dispatched from the root context too");
    assert_eq!(keys.cluster, "outbound|8443||keys.idp-cdn.example.net", "Istio's cluster for the jwks_uri host");
    assert_eq!(keys.header(":path"), "/demo/certs");
    assert_eq!(keys.header(":authority"), "keys.idp-cdn.example.net:8443");
    assert_eq!(keys.header(":scheme"), "https");
    assert_eq!(keys.at_ms, doc.at_ms, "dispatched as the document is read, not at a later tick");

    w.answer(keys.token, Reply::ok(jwks(&[&key])));
    assert!(matches!(w.outcome(r), Outcome::Resumed { .. }), "{:?}", w.outcome(r));
    assert_eq!(w.header(r, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    let later = w.get_with(&key.token(IDP));
    assert_eq!(w.outcome(later), Outcome::Continued);
    assert_eq!(envoy.counter("jwt_claims_filter.jwks_fetch_success"), 1, "one key-set fetch, in two calls");
    w.assert_clean();
}

#[test]
fn a_jwks_uri_on_the_issuer_host_uses_the_configured_cluster() {
    let envoy = Envoy::new();
    let key = Signer::new("idp-1");
    let mut w = Worker::start(&envoy, &discovery_config(json!({"jwksCluster": "idp"})));
    let r = w.get_with(&key.token(IDP));
    w.run_until(20);
    let doc = w.only_pending_call();
    assert_eq!(doc.cluster, "idp");
    let body = json!({"jwks_uri": "https://idp.example.com/realms/demo/protocol/openid-connect/certs"});
    w.answer(doc.token, Reply::ok(body.to_string()));
    let keys = w.only_pending_call();
    assert_eq!(keys.cluster, "idp");
    assert_eq!(keys.header(":path"), "/realms/demo/protocol/openid-connect/certs");
    w.answer(keys.token, Reply::ok(jwks(&[&key])));
    assert!(matches!(w.outcome(r), Outcome::Resumed { .. }));
    w.assert_clean();
}

#[test]
fn a_discovery_document_without_jwks_uri_is_a_failed_fetch_retried_from_discovery() {
    let envoy = Envoy::new();
    let key = Signer::new("idp-1");
    let mut w = Worker::start(&envoy, &discovery_config(json!({})));
    let r = w.get_with(&key.token(IDP));
    w.run_until(20);
    let doc = w.only_pending_call();
    w.answer(doc.token, Reply::ok(json!({"issuer": IDP}).to_string()));
    assert!(w.pending_calls().is_empty(), "no JWKS fetch without a jwks_uri");
    assert_eq!(envoy.counter("jwt_claims_filter.jwks_fetch_failure"), 1);
    assert!(matches!(w.outcome(r), Outcome::Responded { status: 401, .. }), "{:?}", w.outcome(r));

    w.run_until(doc.at_ms + 1100);
    let retry = w.only_pending_call();
    assert_eq!(retry.header(":path"), "/realms/demo/.well-known/openid-configuration", "the retry asks discovery again");
    w.assert_clean();
}

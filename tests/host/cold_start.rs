//! Scenario 1: requests paused at cold start, resumed with their claims once the fetch is
//! answered; a request whose deadline passes first gets 401.

use serde_json::json;

use crate::fake::{CallState, Envoy, Event, Outcome, Reply, Worker};
use crate::keys::{config, jwks, Signer, GROUPS, ISSUER, JWKS_CLUSTER};

#[test]
fn requests_paused_at_cold_start_resume_with_their_claims() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    let mut w = Worker::start(&envoy, &config(json!({"timeout": "1s"})));
    assert!(w.calls().is_empty(), "no fetch is dispatched during configuration");

    let first = w.get_with(&key.token(ISSUER));
    envoy.set_now_ms(envoy.now_ms() + 5);
    let second = w.get_with(&key.token(ISSUER));
    for r in [first, second] {
        assert_eq!(w.outcome(r), Outcome::Waiting);
        // The forged claim header is gone before the request waits.
        assert_eq!(w.header(r, "x-jwt-claim.groups"), None);
        assert_eq!(w.stream(r).events.first(), Some(&Event::Removed("x-jwt-claim.groups".into())));
    }
    assert!(w.calls().is_empty(), "a request's fetch is dispatched at the root's tick, not from the stream");

    w.run_until(30);
    let call = w.only_pending_call();
    assert_eq!(call.context, w.root, "dispatched from the root context");
    assert!(call.at_ms <= 25, "dispatched at the first tick, 20 ms after the request: {}", call.at_ms);
    assert_eq!(call.cluster, JWKS_CLUSTER);
    assert_eq!(call.header(":method"), "GET");
    assert_eq!(call.header(":path"), "/jwks.json");
    assert_eq!(call.header(":authority"), "keys.example.com");
    assert_eq!(call.header(":scheme"), "https");
    assert_eq!(call.timeout.as_millis(), 1000, "the rule's timeout");
    assert_eq!(w.outcome(first), Outcome::Waiting, "still waiting while the fetch is in flight");

    w.run_until(70);
    w.answer(call.token, Reply::ok(jwks(&[&key])));
    let answered_at = envoy.elapsed_ms();
    for r in [first, second] {
        assert_eq!(w.outcome(r), Outcome::Resumed { at_ms: answered_at }, "resumed as the keys arrive");
        assert_eq!(w.header(r, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    }
    assert_eq!(w.calls().len(), 1, "one fetch for both requests");

    // With keys loaded, a request passes at once, and nothing is fetched.
    let later = w.get_with(&key.token(ISSUER));
    assert_eq!(w.outcome(later), Outcome::Continued);
    assert_eq!(w.header(later, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    w.run_until(600);
    assert_eq!(w.calls().len(), 1);
    assert_eq!(envoy.counter("jwt_claims_filter.jwks_fetch_success"), 1);
    assert_eq!(envoy.counter("jwt_claims_filter.requests_allowed"), 3, "reported at the tick");
    assert_eq!(w.host.foreign_calls(), 1, "one probe of verify_signature, then the built-in code");
    w.assert_clean();
}

#[test]
fn a_request_whose_deadline_passes_is_refused_with_keys_unavailable() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    let mut w = Worker::start(&envoy, &config(json!({"timeout": "1s"})));
    let r = w.get_with(&key.token(ISSUER));
    w.run_until(990);
    assert_eq!(w.pending_calls().len(), 1, "the fetch is in flight, never answered");
    assert_eq!(w.outcome(r), Outcome::Waiting, "not refused before its deadline");
    w.run_until(1030);
    match w.outcome(r) {
        Outcome::Responded { status, body, www_authenticate, at_ms } => {
            assert_eq!(status, 401);
            assert_eq!(body, "Jwt verification keys are unavailable\n");
            assert_eq!(www_authenticate, "Bearer realm=\"https://app.example.com/get\", error=\"invalid_token\"");
            assert!((1000..=1020).contains(&at_ms), "refused at its deadline (1 s), at {at_ms}");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(w.header(r, "x-jwt-claim.groups"), None, "no claim header on a refused request");
    assert_eq!(envoy.counter("jwt_claims_filter.requests_denied.keys_unavailable"), 1);
    assert_eq!(w.calls()[0].state, CallState::Pending);
    w.assert_clean();
}

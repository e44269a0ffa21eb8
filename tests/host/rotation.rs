//! Scenario 2: a token with a kid the set lacks (a key rotation) refetches once, however many
//! requests carry new-kid tokens; all of them go on with the rotated set.

use serde_json::json;

use crate::fake::{Envoy, Outcome, Reply, Worker};
use crate::keys::{config, jwks, Signer, GROUPS, ISSUER};

/// A worker whose keys ({k1}) are loaded, at 1 s.
fn loaded(envoy: &Envoy, key: &Signer) -> Worker {
    let mut w = Worker::start(envoy, &config(json!({"timeout": "1s"})));
    let r = w.get_with(&key.token(ISSUER));
    w.run_until(20);
    let call = w.only_pending_call();
    w.answer(call.token, Reply::ok(jwks(&[key])));
    assert!(matches!(w.outcome(r), Outcome::Resumed { .. }));
    w.run_until(1000);
    w
}

#[test]
fn unknown_kid_refetches_once_for_all_requests_and_resumes_them() {
    let envoy = Envoy::new();
    let (old, new) = (Signer::new("k1"), Signer::new("k2"));
    let mut w = loaded(&envoy, &old);
    assert_eq!(w.calls().len(), 1);

    let rotated: Vec<u32> = (0..5)
        .map(|_| {
            envoy.set_now_ms(envoy.now_ms() + 2);
            w.get_with(&new.token(ISSUER))
        })
        .collect();
    for r in &rotated {
        assert_eq!(w.outcome(*r), Outcome::Waiting, "a new kid waits for the refetch");
    }
    // Meanwhile the old key still serves.
    let current = w.get_with(&old.token(ISSUER));
    assert_eq!(w.outcome(current), Outcome::Continued);

    w.run_until(1040);
    let refetches: Vec<_> = w.calls().into_iter().skip(1).collect();
    assert_eq!(refetches.len(), 1, "one refetch for five requests: {refetches:?}");
    assert_eq!(refetches[0].context, w.root);
    assert_eq!(envoy.counter("jwt_claims_filter.jwks_unknown_kid_refetch"), 1);

    w.answer(refetches[0].token, Reply::ok(jwks(&[&old, &new])));
    for r in &rotated {
        assert!(matches!(w.outcome(*r), Outcome::Resumed { .. }), "resumed: {:?}", w.outcome(*r));
        assert_eq!(w.header(*r, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    }

    // Another unknown kid within jwksMinRefetchInterval (30 s): refused at once, no fetch.
    let stranger = Signer::new("k3");
    let r = w.get_with(&stranger.token(ISSUER));
    match w.outcome(r) {
        Outcome::Responded { status, body, .. } => {
            assert_eq!(status, 401);
            assert_eq!(body, "Jwt key id is not in the key set\n");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    w.run_until(2000);
    assert_eq!(w.calls().len(), 2, "the refetch is throttled");
    w.assert_clean();
}

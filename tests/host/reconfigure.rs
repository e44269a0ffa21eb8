//! Scenario 8: a configuration replaced while requests wait. The new configuration's plugin
//! shares the key record; the old one's `abandon_fetches` ends its lease, so the new one
//! fetches at its next tick instead of waiting the lease out.

use serde_json::json;

use crate::fake::{CallState, Envoy, Outcome, Reply, Worker};
use crate::keys::{config, jwks, Signer, GROUPS, ISSUER};

/// An old configuration whose fetch is in flight (lease taken at 0: until 0 + 5 s + 1 s), replaced at
/// 100 ms by a new one with the same rule; a request waits on the new one from 110 ms.
fn replaced(abandon: bool) -> (Envoy, Signer, Worker, Worker, u32) {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    let mut old = Worker::start(&envoy, &config(json!({"timeout": "5s"})));
    old.get_with(&key.token(ISSUER));
    old.run_until(20);
    assert_eq!(old.pending_calls().len(), 1);

    old.run_until(100);
    let mut new = old.replaced_by(&config(json!({"timeout": "5s", "forwardOriginalToken": true})));
    assert_eq!(envoy.key_records().len(), 1, "the same key set: one shared record");
    old.root_done(abandon);
    assert_eq!(old.calls()[0].state, CallState::Cancelled);

    envoy.set_now_ms(envoy.now_ms() + 10);
    let r = new.get_with(&key.token(ISSUER));
    assert_eq!(new.outcome(r), Outcome::Waiting);
    (envoy, key, old, new, r)
}

#[test]
fn the_new_configuration_fetches_at_its_next_tick_after_the_old_one_abandons() {
    let (envoy, key, old, mut new, r) = replaced(true);
    new.run_until(140);
    let calls: Vec<_> = new.calls().into_iter().skip(1).collect();
    assert_eq!(calls.len(), 1, "the new configuration fetched: {calls:?}");
    assert_eq!(calls[0].context, new.root);
    assert!(calls[0].at_ms <= 130, "at its first tick after the request, not at the lease's end: {}", calls[0].at_ms);
    new.answer(calls[0].token, Reply::ok(jwks(&[&key])));
    assert!(matches!(new.outcome(r), Outcome::Resumed { .. }), "{:?}", new.outcome(r));
    assert_eq!(new.header(r, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    assert_eq!(envoy.counter("jwt_claims_filter.jwks_fetch_success"), 1);
    old.assert_clean();
    new.assert_clean();
}

#[test]
fn without_abandoning_the_new_configuration_waits_the_old_lease_out() {
    // The control: what `abandon_fetches` prevents. The old lease holds until 6000 ms, past
    // the new request's deadline (110 + 5000), so the request is refused.
    let (_envoy, _key, _old, mut new, r) = replaced(false);
    new.run_until(5990);
    assert_eq!(new.calls().len(), 1, "only the old configuration's (cancelled) call: {:?}", new.calls());
    assert!(matches!(new.outcome(r), Outcome::Responded { status: 401, .. }), "{:?}", new.outcome(r));
    new.run_until(6100);
    assert_eq!(new.calls().len(), 2, "the new configuration fetches once the lease runs out");
}

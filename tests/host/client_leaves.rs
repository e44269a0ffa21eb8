//! Scenario 7: clients that leave while their requests wait. Nothing is sent to their
//! streams, and the fetch one of them started still completes for the others.

use serde_json::json;

use crate::fake::{CallState, Envoy, Event, Outcome, Reply, Worker};
use crate::keys::{config, jwks, Signer, GROUPS, ISSUER};

#[test]
fn a_client_that_leaves_gets_nothing_and_its_fetch_serves_the_others() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    let mut w = Worker::start(&envoy, &config(json!({"timeout": "2s"})));
    // The first request takes the fetch lease; the others join it.
    let starter = w.get_with(&key.token(ISSUER));
    let gone_unannounced = w.get_with(&key.token(ISSUER));
    let stays = w.get_with(&key.token(ISSUER));

    // The one that started the fetch leaves before the tick dispatches it (with on_done);
    // another leaves too, but the plugin is not told (its on_done has not run yet).
    w.client_leaves(starter, true);
    w.client_leaves(gone_unannounced, false);
    let events_when_left: Vec<Vec<Event>> = [starter, gone_unannounced].iter().map(|r| w.stream(*r).events).collect();

    w.run_until(20);
    let call = w.only_pending_call();
    assert_eq!(call.context, w.root, "dispatched from the root: the host does not cancel it with the stream");
    w.answer(call.token, Reply::ok(jwks(&[&key])));

    assert_eq!(w.calls()[0].state, CallState::Answered);
    assert!(matches!(w.outcome(stays), Outcome::Resumed { .. }), "{:?}", w.outcome(stays));
    assert_eq!(w.header(stays, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    for (r, before) in [starter, gone_unannounced].iter().zip(events_when_left) {
        assert_eq!(w.stream(*r).events, before, "nothing is done to a stream whose client left");
        assert_eq!(w.outcome(*r), Outcome::Waiting);
    }
    w.run_until(3000);
    assert_eq!(w.calls().len(), 1);
    assert_eq!(envoy.counter("jwt_claims_filter.requests_denied.keys_unavailable"), 0);
    w.assert_clean(); // records any call on a deleted stream, or on the root as if it were one
}

#[test]
fn a_client_that_leaves_before_its_deadline_gets_no_401() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    let mut w = Worker::start(&envoy, &config(json!({"timeout": "1s"})));
    let gone = w.get_with(&key.token(ISSUER));
    let stays = w.get_with(&key.token(ISSUER));
    w.run_until(500);
    w.client_leaves(gone, false); // the host deleted it; on_done not delivered
    w.run_until(1100); // the fetch is never answered: both deadlines pass
    assert_eq!(w.outcome(gone), Outcome::Waiting, "no 401 to a deleted stream");
    assert!(matches!(w.outcome(stays), Outcome::Responded { status: 401, .. }), "{:?}", w.outcome(stays));
    assert_eq!(envoy.counter("jwt_claims_filter.requests_denied.keys_unavailable"), 1);
    w.assert_clean();
}

//! Scenario 6: a request paused while the fetch is held gets its 401 at its own deadline
//! (its arrival plus the rule's timeout), not before, and nothing after.

use serde_json::json;

use crate::fake::{Envoy, Outcome, Reply, Worker};
use crate::keys::{config, jwks, Signer, ISSUER};

fn refused_at(w: &Worker, r: u32) -> Option<u64> {
    match w.outcome(r) {
        Outcome::Responded { status: 401, body, at_ms, .. } if body == "Jwt verification keys are unavailable\n" => {
            Some(at_ms)
        }
        Outcome::Waiting => None,
        other => panic!("expected waiting or a keys-unavailable 401, got {other:?}"),
    }
}

#[test]
fn each_waiting_request_is_refused_at_its_own_deadline() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    // Timeout 1 s: the lease (timeout + 1 s grace) outlives every deadline below.
    let mut w = Worker::start(&envoy, &config(json!({"timeout": "1s"})));
    let early = w.get_with(&key.token(ISSUER));
    w.run_until(20);
    let call = w.only_pending_call();
    w.run_until(403);
    let late = w.get_with(&key.token(ISSUER)); // joins the fetch in flight

    w.run_until(999);
    assert_eq!(refused_at(&w, early), None, "not before its deadline");
    w.run_until(1020);
    let at = refused_at(&w, early).expect("refused by its deadline");
    assert!((1000..=1020).contains(&at), "early refused at {at}");
    assert_eq!(refused_at(&w, late), None, "the later request has its own deadline");

    w.run_until(1402);
    assert_eq!(refused_at(&w, late), None, "not before 403 + 1000");
    w.run_until(1430);
    let at = refused_at(&w, late).expect("refused by its deadline");
    assert!((1403..=1423).contains(&at), "late refused at {at}");
    assert_eq!(w.calls().len(), 1, "no second fetch while the lease holds");

    // The held fetch finally answers: nothing more is sent to the refused requests, and the
    // keys serve the next one.
    w.answer(call.token, Reply::ok(jwks(&[&key])));
    let next = w.get_with(&key.token(ISSUER));
    assert_eq!(w.outcome(next), Outcome::Continued);
    for r in [early, late] {
        assert_eq!(w.stream(r).events.iter().filter(|e| !matches!(e, crate::fake::Event::Removed(_))).count(), 1);
    }
    assert_eq!(envoy.counter("jwt_claims_filter.requests_denied.keys_unavailable"), 2);
    w.assert_clean(); // would record a second answer or a resume after the 401
}

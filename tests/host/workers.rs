//! Scenario 3: two workers (two VMs, one shared-data store) contend for the fetch lease:
//! exactly one dispatches, and the other's paused requests are resumed from the shared
//! record at its tick.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;

use crate::fake::{Envoy, Outcome, Reply, Worker};
use crate::keys::{config, jwks, Signer, GROUPS, ISSUER};

#[test]
fn one_worker_fetches_and_the_other_resumes_from_the_shared_record() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    let cfg = config(json!({"timeout": "1s"}));
    let mut a = Worker::start(&envoy, &cfg);
    let mut b = Worker::start(&envoy, &cfg);
    assert_eq!(envoy.key_records().len(), 1, "one record for the key set in the process");

    let ra = a.get_with(&key.token(ISSUER));
    envoy.set_now_ms(envoy.now_ms() + 1);
    let rb: Vec<u32> = (0..3).map(|_| b.get_with(&key.token(ISSUER))).collect();

    envoy.run_until(&mut [&mut a, &mut b], 200);
    assert_eq!(a.calls().len(), 1, "the worker that took the lease fetches");
    assert!(b.calls().is_empty(), "the other one does not: {:?}", b.calls());

    let call = a.only_pending_call();
    a.answer(call.token, Reply::ok(jwks(&[&key])));
    let answered_at = envoy.elapsed_ms();
    assert!(matches!(a.outcome(ra), Outcome::Resumed { .. }));
    for r in &rb {
        assert_eq!(b.outcome(*r), Outcome::Waiting, "b learns of the keys at its tick");
    }
    envoy.run_until(&mut [&mut a, &mut b], answered_at + 25);
    for r in &rb {
        match b.outcome(*r) {
            Outcome::Resumed { at_ms } => {
                assert!(at_ms > answered_at && at_ms <= answered_at + 20, "at b's next tick: {at_ms}")
            }
            other => panic!("expected b's request resumed, got {other:?}"),
        }
        assert_eq!(b.header(*r, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    }
    assert!(b.calls().is_empty(), "b never fetched");
    assert_eq!(envoy.counter("jwt_claims_filter.jwks_fetch_success"), 1);
    a.assert_clean();
    b.assert_clean();
}

#[test]
fn a_lease_taken_between_read_and_write_is_lost_by_compare_and_swap() {
    let envoy = Envoy::new();
    let cfg = config(json!({"timeout": "1s"}));
    let a = Rc::new(RefCell::new(Worker::start(&envoy, &cfg)));
    let mut b = Worker::start(&envoy, &cfg);

    // b's first tick reads the empty record and tries to take the lease; before its write
    // lands, a runs its whole tick (takes the lease and dispatches).
    let racer = a.clone();
    b.host.before_next_shared_write(move || racer.borrow_mut().tick());
    envoy.set_now_ms(b.next_tick_ms().unwrap());
    b.tick();
    assert_eq!(a.borrow().calls().len(), 1, "a took the lease");
    assert!(b.calls().is_empty(), "b's write was refused by CAS and it did not fetch: {:?}", b.calls());

    // Neither fetches again while the lease holds.
    envoy.run_until(&mut [&mut a.borrow_mut(), &mut b], 1500);
    assert_eq!(a.borrow().calls().len(), 1);
    assert!(b.calls().is_empty());
    a.borrow().assert_clean();
    b.assert_clean();
}

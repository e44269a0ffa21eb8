//! Steady traffic at cold start. Envoy re-arms a root's tick timer on every
//! `set_tick_period` call, from any of its contexts (`Wasm::setTimerPeriod` disables and
//! re-creates the timer; `ContextBase::setTimerPeriod` uses the root's id): the fake host
//! does the same. Requests that pause must not keep pushing the tick back, or the fetch they
//! wait for (dispatched at the tick) never starts and their deadlines never pass.

use serde_json::json;

use crate::fake::{Envoy, Outcome, Worker};
use crate::keys::{config, Signer, ISSUER};

#[test]

fn paused_requests_arriving_faster_than_the_tick_do_not_starve_it() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    let mut w = Worker::start(&envoy, &config(json!({"timeout": "1s"})));
    let mut requests = Vec::new();
    // A request every 10 ms for 1.5 s (the fetch is never answered).
    for i in 0..150u64 {
        w.run_until(i * 10);
        requests.push(w.get_with(&key.token(ISSUER)));
    }
    w.run_until(1500);
    let first_dispatch = w.calls().first().map(|c| c.at_ms);
    let refused = requests.iter().filter(|r| matches!(w.outcome(**r), Outcome::Responded { .. })).count();
    eprintln!("first dispatch at {first_dispatch:?} ms; {refused} of 150 refused by 1500 ms");
    assert!(first_dispatch.is_some_and(|t| t <= 100), "the fetch starts within 100 ms of the first request: {first_dispatch:?}");
    assert!(refused >= 40, "requests older than their 1 s deadline are refused under load: {refused}");
}

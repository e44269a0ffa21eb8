//! Scenario 5: backoff after failed fetches (0.5 s, then 1 s, then 2 s), and the last good
//! keys keep serving when a refresh fails.

use serde_json::json;

use crate::fake::{Call, Envoy, Outcome, Reply, Worker};
use crate::keys::{config, jwks, Signer, GROUPS, ISSUER};

/// Runs the worker until it dispatches a new call (at most `within_ms`), and returns it.
fn next_call(w: &mut Worker, within_ms: u64) -> Call {
    let before = w.calls().len();
    let start = w.envoy.elapsed_ms();
    while w.calls().len() == before {
        let now = w.envoy.elapsed_ms();
        assert!(now <= start + within_ms, "no call within {within_ms} ms of {start}");
        w.run_until(now + 10);
    }
    assert_eq!(w.calls().len(), before + 1, "one call at a time");
    w.calls().pop().unwrap()
}

#[test]
fn failed_fetches_are_retried_after_half_a_second_then_one_then_two() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    let mut w = Worker::start(&envoy, &config(json!({"timeout": "1s"})));
    let r = w.get_with(&key.token(ISSUER));
    let first = next_call(&mut w, 100);

    // Each failure is a different way for a fetch to fail.
    let envoy_503 = "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
    let failures = [
        Reply::Http(500, "oops".into()),
        Reply::Reset,
        Reply::ok("this is not JSON"),
        Reply::Http(503, envoy_503.into()),
    ];
    let expected_backoff_ms = [500, 1000, 2000, 4000];
    let mut call = first;
    let mut gaps = Vec::new();
    for (i, failure) in failures.into_iter().enumerate() {
        w.answer(call.token, failure);
        let failed_at = envoy.elapsed_ms();
        assert_eq!(envoy.counter("jwt_claims_filter.jwks_fetch_failure"), i as i64 + 1);
        if i == 0 {
            // No keys and the fetch failed: the waiting request is refused, not left hanging.
            assert!(matches!(w.outcome(r), Outcome::Responded { status: 401, .. }), "{:?}", w.outcome(r));
        }
        // Before the retry is due, a request is refused at once and nothing is dispatched.
        w.run_until(failed_at + 100);
        let early = w.get_with(&key.token(ISSUER));
        match w.outcome(early) {
            Outcome::Responded { status: 401, body, .. } => assert_eq!(body, "Jwt verification keys are unavailable\n"),
            other => panic!("expected 401 while keys are unavailable, got {other:?}"),
        }
        call = next_call(&mut w, expected_backoff_ms[i] + 600);
        let gap = call.at_ms - failed_at;
        // The tick is 0.5 s when nothing waits: the retry lands within one tick after it is due.
        assert!(
            gap >= expected_backoff_ms[i] && gap <= expected_backoff_ms[i] + 500,
            "retry {} after {gap} ms, expected {} ms (+ up to one idle tick)",
            i + 1,
            expected_backoff_ms[i]
        );
        gaps.push(gap);
    }
    eprintln!("retry gaps after failures: {gaps:?} ms");

    // The fifth attempt succeeds: requests pass, and the backoff is reset.
    w.answer(call.token, Reply::ok(jwks(&[&key])));
    let ok = w.get_with(&key.token(ISSUER));
    assert_eq!(w.outcome(ok), Outcome::Continued);
    assert_eq!(w.header(ok, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    assert_eq!(envoy.counter("jwt_claims_filter.jwks_fetch_success"), 1);
    w.assert_clean();
}

#[test]
fn the_last_good_keys_keep_serving_when_a_refresh_fails() {
    let envoy = Envoy::new();
    let key = Signer::new("k1");
    // Cache 10 s: the refresh is due 9 s after the fetch.
    let mut w = Worker::start(&envoy, &config(json!({"timeout": "1s", "jwksCacheDuration": "10s"})));
    w.get_with(&key.token(ISSUER));
    let first = next_call(&mut w, 100);
    w.answer(first.token, Reply::ok(jwks(&[&key])));
    let loaded_at = envoy.elapsed_ms();

    let refresh = next_call(&mut w, 9600);
    assert!(
        refresh.at_ms >= loaded_at + 9000 && refresh.at_ms <= loaded_at + 9500,
        "refresh at {} (loaded at {loaded_at})",
        refresh.at_ms
    );
    // While the refresh is in flight, and after it fails, the last good keys serve.
    let during = w.get_with(&key.token(ISSUER));
    assert_eq!(w.outcome(during), Outcome::Continued);
    w.answer(refresh.token, Reply::Http(502, "bad gateway".into()));
    let failed_at = envoy.elapsed_ms();
    for _ in 0..3 {
        let r = w.get_with(&key.token(ISSUER));
        assert_eq!(w.outcome(r), Outcome::Continued, "stale keys serve after a failed refresh");
        assert_eq!(w.header(r, "x-jwt-claim.groups").as_deref(), Some(GROUPS));
    }
    // Past the cache duration, still serving; the retry comes 0.5 s after the failure (the
    // success reset the backoff).
    let retry = next_call(&mut w, 1100);
    assert!(retry.at_ms >= failed_at + 500 && retry.at_ms <= failed_at + 1000, "retry at {}", retry.at_ms);
    w.answer(retry.token, Reply::Reset);
    w.run_until(loaded_at + 12_000);
    let late = w.get_with(&key.token(ISSUER));
    assert_eq!(w.outcome(late), Outcome::Continued, "keys past their cache duration still serve while fetches fail");
    assert_eq!(envoy.counter("jwt_claims_filter.jwks_fetch_failure"), 2);
    w.assert_clean();
}

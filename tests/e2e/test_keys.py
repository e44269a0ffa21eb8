"""Key behaviour of issue 2: a request that arrives before keys are cached waits for the
fetch and succeeds; with the fetch failing and no keys cached, a token gets 401 with a body
saying keys are unavailable. Each test has its own JWKS server and Envoy (a fresh cache)."""
from __future__ import annotations

import concurrent.futures
import time

import pytest

from support.checks import echoed_headers
from support.envoy import free_port, seed_config
from support.jwks_server import JwksServer


@pytest.fixture
def fresh(launch):
    """fresh(jwks_port, rule=...) → an Envoy with the seed config and an empty key cache."""
    started = []

    def _fresh(jwks_port, **rule):
        env = launch(seed_config(f"http://127.0.0.1:{jwks_port}/jwks.json", rule=rule), jwks_port=jwks_port)
        started.append(env)
        return env

    yield _fresh
    for env in started:
        env.stop()


def test_first_request_right_after_start_succeeds(fresh, groups_token):
    with JwksServer(keyset="istio") as srv:
        env = fresh(srv.port)
        r = env.get("/headers", token=groups_token)
        assert r.status_code == 200, r.text[:300]
        assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
        assert srv.hits >= 1


def test_requests_wait_for_a_slow_first_fetch(fresh, groups_token):
    """The JWKS answers after 1.5 s, so the keys cannot be cached when the requests arrive:
    they are paused and resumed when the fetch lands, on both workers."""
    with JwksServer(keyset="istio", slow_delay=1.5) as srv:
        srv.set_mode("slow")
        env = fresh(srv.port, timeout="5s")
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: env.get("/headers", token=groups_token), range(8)))
        elapsed = time.monotonic() - t0
        assert [r.status_code for r in results] == [200] * 8, [r.text[:200] for r in results]
        for r in results:
            assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
        assert elapsed < 5, f"requests took {elapsed:.1f}s; the fetch takes 1.5s"
        assert srv.hits >= 1


def _assert_keys_unavailable(env, token, timeout_s):
    t0 = time.monotonic()
    r = env.get("/headers", token=token)
    elapsed = time.monotonic() - t0
    assert r.status_code == 401, r.text[:300]
    assert "unavailable" in r.text.lower() and "key" in r.text.lower(), f"body: {r.text!r}"
    assert token not in r.text
    assert elapsed < timeout_s + 2, f"took {elapsed:.1f}s with timeout {timeout_s}s"


def test_jwks_down_from_start_is_401_keys_unavailable(fresh, groups_token):
    port = free_port()  # nothing listens there: connection refused
    env = fresh(port, timeout="2s")
    _assert_keys_unavailable(env, groups_token, 2)
    # Requests without a token still pass (no token is not an invalid token).
    assert env.get("/status/200").status_code == 200


@pytest.mark.parametrize("mode", ["500", "garbage", "reset", "down"])
def test_failing_jwks_from_start_is_401_keys_unavailable(fresh, groups_token, mode):
    with JwksServer(keyset="istio") as srv:
        srv.set_mode(mode)
        env = fresh(srv.port, timeout="2s")
        _assert_keys_unavailable(env, groups_token, 2)
        assert srv.hits >= 1, "the filter never asked the JWKS server"


def test_slow_jwks_from_start_is_401_within_timeout(fresh, groups_token):
    with JwksServer(keyset="istio", slow_delay=6) as srv:
        srv.set_mode("slow")
        env = fresh(srv.port, timeout="1s")
        _assert_keys_unavailable(env, groups_token, 1)

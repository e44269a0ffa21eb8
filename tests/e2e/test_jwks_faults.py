"""JWKS answers that fail after their headers, end to end: a real Envoy at --concurrency 2,
each test with its own Envoy (an empty key cache) and its own JWKS server, which answers 200
with its headers (Content-Length: the whole key set) and then

  reset-after-headers   half the body, then a TCP RST
  trickle               the body a few bytes at a time, complete only after the rule's timeout
  stall-after-headers   no body at all

(tests/support/jwks_server.py). Such a fetch fails after Envoy has seen the response headers:
the host then has no response to read (`:status` of a call that failed is BadArgument), and
a filter that asks for it anyway panics and aborts its VM. Each mode must be an ordinary
failed fetch instead:

  cold start   no keys yet: valid tokens get 401 `Jwt verification keys are unavailable`
               within the rule's timeout plus a margin, on both workers; once the JWKS heals,
               tokens pass within a few seconds, same Envoy process
  warm         keys loaded, then the JWKS turns faulty and the cache (jwksCacheDuration 2s)
               refetches: fresh valid tokens keep passing with the last good keys; once the
               JWKS heals, a fetch succeeds again and tokens pass

and nowhere a 503, and no `panicked at` / `Wasm VM failed` or other VM failure in Envoy's log
(support.checks.assert_no_vm_failure).
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from typing import Callable

import pytest
import requests

from support import tokens
from support.checks import assert_invalid_token, assert_no_vm_failure, echoed_headers, wait_until, worker_connections
from support.envoy import GATEWAY_HOST, Envoy, seed_config
from support.jwks_server import JwksServer

CONCURRENCY = 2
TIMEOUT_S = 1.0  # the rule's `timeout`
MARGIN_S = 1.0  # what a 401 may take beyond it on a busy 2-core machine
TRICKLE_S = 3.0  # a trickled body completes this long after the headers (> TIMEOUT_S)
HEAL_S = 8.0  # bound on the wait for a token to pass once the JWKS answers again (backoff)
KEYS_UNAVAILABLE = "Jwt verification keys are unavailable"
PREFIX = "jwt_claims_filter_"
FAULTS = ("reset-after-headers", "trickle", "stall-after-headers")


# --- helpers ---------------------------------------------------------------------------------

def token() -> str:
    """A fresh valid token (own `sub`: the verified-token cache cannot serve it), key a,
    groups group1,group2 (the /headers route needs group1)."""
    return tokens.mint(tokens.claims(sub=f"user-{uuid.uuid4().hex[:12]}"), key="a")


class Answers:
    """Every answer a test got (status, seconds, body head), to check that none was a 503."""

    def __init__(self, env: Envoy):
        self.env = env
        self.seen: list[tuple[int, float, str]] = []

    def fetch(self, tok: str | None = None, path: str = "/headers") -> tuple[requests.Response, float]:
        """One request on a new connection (so that requests spread over the workers)."""
        headers = {"Host": GATEWAY_HOST, "Connection": "close"}
        if tok is not None:
            headers["Authorization"] = f"Bearer {tok}"
        t0 = time.monotonic()
        r = requests.get(self.env.base_url + path, headers=headers, timeout=15, allow_redirects=False)
        elapsed = time.monotonic() - t0
        self.seen.append((r.status_code, elapsed, r.text[:100]))
        return r, elapsed

    def parallel(self, n: int) -> list[tuple[requests.Response, float]]:
        toks = [token() for _ in range(n)]
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            return list(pool.map(self.fetch, toks))

    def assert_no_503(self) -> None:
        bad = [a for a in self.seen if a[0] == 503]
        assert not bad, f"{len(bad)} of {len(self.seen)} answers were 503 (a VM failed): {bad[:3]}"




def counter(env: Envoy, name: str) -> float:
    for key, value in env.stats().items():
        if key.split("{", 1)[0] == PREFIX + name:
            return value
    raise AssertionError(f"{PREFIX}{name} not in /stats/prometheus")




def on_both_workers(env: Envoy, answers: Answers, check: Callable[[requests.Response, float], None],
                    rounds: int = 6, per_round: int = 6) -> int:
    """Rounds of `per_round` parallel requests with fresh valid tokens, each answer checked,
    until every worker has accepted a connection of them (at most `rounds`). Returns how many
    were sent."""
    before = worker_connections(env, CONCURRENCY)
    sent = 0
    for _ in range(rounds):
        for r, elapsed in answers.parallel(per_round):
            check(r, elapsed)
        sent += per_round
        now = worker_connections(env, CONCURRENCY)
        if all(now[w] > before.get(w, 0) for w in now):
            return sent
    raise AssertionError(f"{sent} requests did not reach both workers: {before} → {worker_connections(env, CONCURRENCY)}")


def heal_and_pass(env: Envoy, srv: JwksServer, answers: Answers) -> float:
    """The JWKS answers again: a fresh token passes within HEAL_S (no restart), then on both
    workers. Returns the seconds it took."""
    srv.set_mode("ok")
    pid = env.proc.pid
    t_ok = time.monotonic()
    r = None
    while time.monotonic() < t_ok + HEAL_S:
        r, _ = answers.fetch(token())
        if r.status_code == 200:
            break
        assert r.status_code == 401 and KEYS_UNAVAILABLE in r.text, (r.status_code, r.text[:200])
        time.sleep(0.1)
    healed = time.monotonic() - t_ok
    assert r is not None and r.status_code == 200, \
        f"still {r.status_code if r else None} {HEAL_S}s after the JWKS answered again: " \
        f"{r.text[:120] if r else ''}\n{filter_log(env)}"
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"

    def passes(r: requests.Response, _elapsed: float) -> None:
        assert r.status_code == 200, (r.status_code, r.text[:200])

    on_both_workers(env, answers, passes)
    assert env.alive() and env.proc.pid == pid
    return healed


def filter_log(env: Envoy) -> str:
    return "\n".join(ln for ln in env.log.splitlines() if "jwks" in ln or "panicked" in ln)[-3000:]


def no_vm_failure_yet(env: Envoy, answers: Answers) -> None:
    """The checks of finish() on what Envoy has logged so far (it flushes at least once a
    second; finish() reads the whole log after it stopped)."""
    answers.assert_no_503()
    assert_no_vm_failure(env.log)


def finish(env: Envoy, answers: Answers) -> None:
    """No 503 among the answers; Envoy stopped (it flushes its log on exit); no VM failure
    in its log."""
    answers.assert_no_503()
    env.stop()
    assert_no_vm_failure(env.log)


def config(srv: JwksServer, **rule) -> dict:
    return seed_config(srv.jwks_uri, rule={"timeout": f"{TIMEOUT_S:g}s", **rule})


# --- fixtures --------------------------------------------------------------------------------

def _answer_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "process_request_thread" in t.name}


@pytest.fixture
def jwks_server():
    """A JWKS server with key set A (trickled bodies spread over TRICKLE_S). After the test
    (and after its Envoys stopped: `gateway` depends on this fixture) it is stopped, and every
    thread that answered it, a stalled or trickled answer included, must have ended."""
    before = _answer_threads()
    srv = JwksServer(keyset="A", slow_delay=TRICKLE_S).start()
    yield srv
    srv.stop()
    assert wait_until(lambda: not (_answer_threads() - before), 3), \
        f"JWKS server threads still running after the test: {sorted(t.name for t in _answer_threads() - before)}"


@pytest.fixture
def gateway(launch, jwks_server):
    """gateway(filter_config, jwks_port) → a ready Envoy at --concurrency 2, stopped after the
    test (before the JWKS server)."""
    started: list[Envoy] = []

    def _start(filter_config: dict, jwks_port: int) -> Envoy:
        env = launch(filter_config, jwks_port=jwks_port, concurrency=CONCURRENCY)
        started.append(env)
        return env

    yield _start
    for env in started:
        env.stop()


# --- cold start ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", FAULTS)
def test_cold_start_fault_after_headers_is_keys_unavailable_then_heals(gateway, jwks_server, mode):
    """No keys cached and every fetch fails after its headers: 401 keys unavailable within the
    timeout (plus a margin) on both workers; then the JWKS heals and tokens pass."""
    srv = jwks_server
    srv.set_mode(mode)
    env = gateway(config(srv), srv.port)
    answers = Answers(env)

    def keys_unavailable(r: requests.Response, elapsed: float) -> None:
        assert r.status_code == 401 and KEYS_UNAVAILABLE in r.text, \
            f"{mode}: {r.status_code} {r.text[:200]!r}\n{filter_log(env)}"
        assert_invalid_token(r)
        assert elapsed <= TIMEOUT_S + MARGIN_S, f"{mode}: a 401 took {elapsed:.2f}s with timeout {TIMEOUT_S}s"

    on_both_workers(env, answers, keys_unavailable)
    time.sleep(TIMEOUT_S)  # the first fetch has failed by now, however it fails
    no_vm_failure_yet(env, answers)
    # Wait out at least one fetch's failure, then ask again on both workers: still a prompt 401.
    assert wait_until(lambda: counter(env, "jwks_fetch_failure") >= 1, TIMEOUT_S + 2), \
        f"{mode}: no fetch failure counted\n{filter_log(env)}"
    on_both_workers(env, answers, keys_unavailable)
    assert srv.hits >= 1 and {m for _, m in srv.hit_log} == {mode}, srv.hit_log
    assert counter(env, "jwks_fetch_success") == 0

    healed = heal_and_pass(env, srv, answers)
    assert counter(env, "jwks_fetch_success") >= 1
    print(f"{mode}: cold start, healed after {healed:.2f}s")
    finish(env, answers)


# --- warm: keys loaded, then the refresh fails -----------------------------------------------

@pytest.mark.parametrize("mode", FAULTS)
def test_refresh_fault_after_headers_keeps_last_good_keys_then_heals(gateway, jwks_server, mode):
    """Keys loaded; the JWKS turns faulty. jwksCacheDuration 2s: a refresh is due 1.8 s after
    the load and fails after its headers, then retries with backoff, failing too. Fresh tokens
    pass all along with the last good keys; once the JWKS heals, a fetch succeeds again."""
    srv = jwks_server
    env = gateway(config(srv, jwksCacheDuration="2s"), srv.port)
    answers = Answers(env)
    r, _ = answers.fetch(token())
    assert r.status_code == 200, r.text[:200]
    assert srv.hits == 1
    srv.set_mode(mode)
    t_faulty = time.monotonic()

    def passes(r: requests.Response, _elapsed: float) -> None:
        assert r.status_code == 200, f"{mode}: {r.status_code} {r.text[:200]!r}\n{filter_log(env)}"

    # Traffic through the refresh (due 1.8 s after the load) and until two faulty fetches
    # have ended (each fails within TIMEOUT_S of being answered); bounded at 8 s.
    deadline = t_faulty + 8.0

    def faulty_hits() -> list[float]:
        return [t for t, m in srv.hit_log if m == mode]

    while time.monotonic() < deadline:
        for r, elapsed in answers.parallel(4):
            passes(r, elapsed)
        hits = faulty_hits()
        if len(hits) >= 2 and time.monotonic() > hits[1] + TIMEOUT_S + 0.3:
            break
        time.sleep(0.1)
    no_vm_failure_yet(env, answers)
    hits = faulty_hits()
    assert len(hits) >= 2, f"{mode}: {len(hits)} faulty fetches in 8 s: {srv.hit_log}\n{filter_log(env)}"
    assert wait_until(lambda: counter(env, "jwks_fetch_failure") >= 2, 2), \
        f"{mode}: the faulty fetches were not counted as failures\n{filter_log(env)}"
    on_both_workers(env, answers, passes)
    success_before = counter(env, "jwks_fetch_success")

    t_heal = time.monotonic()
    heal_and_pass(env, srv, answers)
    assert wait_until(lambda: counter(env, "jwks_fetch_success") > success_before,
                      HEAL_S - (time.monotonic() - t_heal)), \
        f"{mode}: no successful fetch within {HEAL_S}s of the JWKS healing\n{filter_log(env)}"
    print(f"{mode}: warm, {len(hits)} faulty fetches, a fetch succeeded "
          f"{time.monotonic() - t_heal:.2f}s after the JWKS healed")
    finish(env, answers)

"""The JWKS lifecycle of issue 3, end to end: a real Envoy at --concurrency 4 (four worker VMs
plus the main thread's), each test with its own Envoy (an empty key cache) and its own
controllable JWKS server.

  1 cold-start burst        40 concurrent requests held while the first fetch is in flight → all 200, one fetch
  2 one fetch per refresh   traffic on every worker for several cache periods → one fetch per period
  3 rotation                publish AB; B tokens → 200 on their first request, one refetch; A still 200
  4 unknown-kid flood       300 never-published kids → all 401, one refetch
  5 stale on error          500, then garbage, longer than the cache duration → still 200; counters
  6 slow fetch              no keys, JWKS slower than `timeout` → 401 within timeout + 1 s
  7 down at start, then up  401 at first, 200 once the JWKS listens, same Envoy process
  8 VM health               checked after every test (fixture teardown): no VM failure in stats or log
  + OIDC discovery          issuer = the server's URL → 200; fetches carry :authority of their URI
"""
from __future__ import annotations

import concurrent.futures
import re
import time
import uuid
from typing import Callable

import pytest
import requests

from support import tokens
from support.checks import assert_invalid_token, assert_no_vm_failure, echoed_headers, wait_until, worker_connections
from support.envoy import GATEWAY_HOST, Envoy, free_port, seed_config
from support.jwks_server import JwksServer

CONCURRENCY = 4
PREFIX = "jwt_claims_filter_"
KEYS_UNAVAILABLE = "Jwt verification keys are unavailable"
UNKNOWN_KID = "Jwt key id is not in the key set"

# Envoy's own wasm stats that must not move once the VMs are up.
VM_STABLE_STATS = ("envoy_wasm_envoy_wasm_runtime_v8_created", "envoy_wasm_envoy_wasm_runtime_v8_active",
                   "envoy_wasm_wasm_vm_count")


# --- helpers ---------------------------------------------------------------------------------

def fetch(env: Envoy, path: str = "/headers", token: str | None = None,
          timeout: float = 15) -> tuple[requests.Response, float]:
    """One request on a new connection (so that requests spread over Envoy's workers), with
    how long it took."""
    headers = {"Host": GATEWAY_HOST, "Connection": "close"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    t0 = time.monotonic()
    r = requests.get(env.base_url + path, headers=headers, timeout=timeout, allow_redirects=False)
    return r, time.monotonic() - t0


def token(key: str = "a", **claims) -> str:
    """A fresh valid token (its own `sub`, so no verified-token cache serves it) signed with
    `key`, holding groups group1,group2 (the /headers route needs group1)."""
    claims.setdefault("sub", f"user-{uuid.uuid4().hex[:12]}")
    return tokens.mint(tokens.claims(**claims), key=key)


def parallel(n: int, fn: Callable[[int], object], threads: int | None = None) -> list:
    with concurrent.futures.ThreadPoolExecutor(threads or n) as pool:
        return list(pool.map(fn, range(n)))


def counters(env: Envoy) -> dict[str, float]:
    """The filter's counters from /stats/prometheus, by name without the prefix
    (`jwks_fetch_success`, `requests_denied_unknown_kid`, ...)."""
    out = {}
    for name, value in env.stats().items():
        if name.startswith(PREFIX):
            out[name[len(PREFIX):].split("{", 1)[0]] = value
    for required in ("jwks_fetch_success", "jwks_fetch_failure", "jwks_unknown_kid_refetch",
                     "requests_allowed", "requests_denied_keys_unavailable", "requests_denied_unknown_kid"):
        assert required in out, f"{PREFIX}{required} missing from /stats/prometheus: {sorted(out)}"
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}




def stat(env: Envoy, name: str, **labels: str) -> float:
    """One Envoy stat from /stats/prometheus by name and labels (missing: an assertion)."""
    for key, value in env.stats().items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return value
    raise AssertionError(f"{name}{labels} not in /stats/prometheus")




def filter_log(env: Envoy, needle: str) -> str:
    return "\n".join(ln for ln in env.log.splitlines() if needle in ln)[-3000:]


def vm_stats(env: Envoy) -> dict[str, float]:
    return {k: v for k, v in env.stats().items() if k.startswith("envoy_wasm_")}


def assert_vm_healthy(env: Envoy) -> None:
    """Scenario 8. Envoy runs, every worker's VM answers (requests without a token pass, a
    malformed token is refused by the filter), no wasm VM failed or reloaded and none was
    created or lost since start-up, and the log shows no VM failure."""
    assert env.alive(), f"Envoy exited with status {env.proc.returncode}\n{env.log_tail(40)}"
    before = worker_connections(env, CONCURRENCY)
    no_token = [fetch(env, "/status/200")[0] for _ in range(16)]
    assert [r.status_code for r in no_token] == [200] * 16, [(r.status_code, r.text[:80]) for r in no_token]
    for _ in range(4):
        r, _ = fetch(env, "/status/200", token="not.a.jwt")
        assert_invalid_token(r)
        assert "not well formed" in r.text, r.text
    stats = vm_stats(env)
    failures = {k: v for k, v in stats.items() if re.search(r"fail|crash|reload", k) and v > 0}
    assert failures == {}, f"wasm VM failure stats: {failures}"
    for name in VM_STABLE_STATS:
        now = [v for k, v in stats.items() if k.split("{", 1)[0] == name]
        was = [v for k, v in env.vm_baseline.items() if k.split("{", 1)[0] == name]  # type: ignore[attr-defined]
        assert now and now == was, f"{name}: {was} at start-up, {now} now (a VM was lost or replaced)"
    served = delta(worker_connections(env, CONCURRENCY), before)
    assert served, "the health requests reached no worker"
    # Envoy flushes its log file on exit: read it after stopping.
    env.stop()
    log = env.log
    assert_no_vm_failure(log)


def config(jwks_port: int, **rule) -> dict:
    """The seed configuration (one rule, issuer testing@secure.istio.io, cluster `jwks`) with
    the JWKS on `jwks_port` and `rule` fields overridden."""
    return seed_config(f"http://127.0.0.1:{jwks_port}/jwks.json", rule=rule)


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def jwks_servers():
    """jwks_servers(**JwksServer kwargs) → a started server; all are stopped after the test."""
    servers: list[JwksServer] = []

    def _make(**kw) -> JwksServer:
        srv = JwksServer(**kw).start()
        servers.append(srv)
        return srv

    yield _make
    for srv in servers:
        srv.stop()


@pytest.fixture
def gateway(launch, jwks_servers):
    """gateway(filter_config, jwks_port) → a ready Envoy at --concurrency 4. After the test
    (scenario 8) each one must still be healthy; then it is stopped."""
    started: list[Envoy] = []

    def _start(filter_config: dict, jwks_port: int) -> Envoy:
        env = launch(filter_config, jwks_port=jwks_port, concurrency=CONCURRENCY)
        env.vm_baseline = vm_stats(env)  # type: ignore[attr-defined]
        started.append(env)
        return env

    yield _start
    try:
        for env in started:
            assert_vm_healthy(env)
    finally:
        for env in started:
            env.stop()


# --- 1. cold-start burst ---------------------------------------------------------------------

def test_cold_start_burst_waits_for_one_fetch(gateway, jwks_servers):
    """The JWKS answer is held until all 40 requests are inside Envoy, so none of them can find
    keys cached: every one is paused, and all resume with 200 when the single fetch lands."""
    srv = jwks_servers(keyset="A")
    srv.hold(max_wait=8)
    env = gateway(config(srv.port, timeout="5s"), srv.port)
    toks = [token() for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(fetch, env, "/headers", t) for t in toks]

        def active() -> float:
            return stat(env, "envoy_http_downstream_rq_active", envoy_http_conn_manager_prefix="ingress_http")

        all_in = wait_until(lambda: active() >= 40, timeout=4, interval=0.05)
        in_envoy, hits_while_held = active(), srv.hits
        srv.release()
        results = [f.result() for f in futures]
    elapsed = time.monotonic() - t0
    assert all_in, f"only {in_envoy} of 40 requests were open in Envoy while the JWKS was held"
    assert hits_while_held == 1, f"{hits_while_held} fetches in flight for one cold start"
    statuses = [r.status_code for r, _ in results]
    assert statuses == [200] * 40, [(r.status_code, r.text[:80]) for r, _ in results if r.status_code != 200]
    for r, _ in results:
        assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    assert elapsed < 5, f"the burst took {elapsed:.1f}s (timeout 5s)"
    assert srv.hits == 1, f"{srv.hits} JWKS fetches for one cold start (4 workers + main thread)"
    # Allowed requests are reported at each tick (0.5 s), not one host call each.
    wait_until(lambda: counters(env)["requests_allowed"] >= 40, timeout=2)
    c = counters(env)
    assert (c["jwks_fetch_success"], c["jwks_fetch_failure"], c["requests_allowed"]) == (1, 0, 40), c
    workers = worker_connections(env, CONCURRENCY)
    assert all(v > 0 for v in workers.values()), f"the burst did not reach every worker: {workers}"


# --- 2. one fetch per refresh ----------------------------------------------------------------

def test_one_fetch_per_refresh_with_traffic_on_all_workers(gateway, jwks_servers):
    """jwksCacheDuration 2s: a refresh is due every 1.8 s (90 %). Five VMs tick and serve
    traffic; still the JWKS sees one fetch per period, never two close together."""
    srv = jwks_servers(keyset="A")
    env = gateway(config(srv.port, jwksCacheDuration="2s", timeout="1s"), srv.port)
    r, _ = fetch(env, "/headers", token())
    assert r.status_code == 200, r.text
    pool_tokens = [token() for _ in range(12)]
    cx_before = worker_connections(env, CONCURRENCY)
    window = 8.0
    t_start = time.monotonic()
    t_end = t_start + window

    def client(i: int) -> list[int]:
        codes = []
        n = i
        while time.monotonic() < t_end:
            codes.append(fetch(env, "/headers", pool_tokens[n % len(pool_tokens)])[0].status_code)
            n += 1
            time.sleep(0.03)
        return codes

    codes = [c for per_client in parallel(8, client) for c in per_client]
    t_stop = time.monotonic()
    assert len(codes) >= 80, f"only {len(codes)} requests in {window}s"
    assert set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
    served = delta(worker_connections(env, CONCURRENCY), cx_before)
    assert len(served) == CONCURRENCY, f"traffic did not reach every worker: {served}"

    times = [t for t, _ in srv.hit_log]
    in_window = [t for t in times if t_start <= t <= t_stop]
    lead = 1.8  # refresh at 90 % of the cache duration
    assert len(in_window) <= int((t_stop - t_start) / lead) + 1, \
        f"{len(in_window)} fetches in {t_stop - t_start:.1f}s with a refresh every {lead}s: " \
        f"{[round(t - t_start, 2) for t in in_window]}"
    assert len(in_window) >= 2, f"no background refresh: fetches at {[round(t - t_start, 2) for t in times]}"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 1.4, \
        f"two fetches {min(gaps):.3f}s apart (one per {lead}s expected): gaps {[round(g, 2) for g in gaps]}"
    assert wait_until(lambda: counters(env)["jwks_fetch_success"] == srv.hits, timeout=2), \
        (counters(env), srv.hits)
    c = counters(env)
    assert c["jwks_fetch_failure"] == 0 and c["jwks_unknown_kid_refetch"] == 0, c


# --- 3. rotation -----------------------------------------------------------------------------

def test_rotation_new_key_accepted_on_first_request(gateway, jwks_servers):
    """Keys A cached; the issuer publishes AB. Eight B tokens sent at once, on several
    workers, each pass on their first request: one unknown-kid refetch serves them all."""
    srv = jwks_servers(keyset="A")
    env = gateway(config(srv.port), srv.port)
    old = token("a")
    r, _ = fetch(env, "/headers", old)
    assert r.status_code == 200, r.text
    assert srv.hits == 1
    before = counters(env)

    srv.set_keyset("AB")
    new_tokens = [token("b") for _ in range(8)]
    results = parallel(8, lambda i: fetch(env, "/headers", new_tokens[i])[0])
    assert [r.status_code for r in results] == [200] * 8, \
        [(r.status_code, r.text[:80]) for r in results] + [filter_log(env, "jwks:")]
    for r in results:
        assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    d = delta(counters(env), before)
    assert d.get("jwks_unknown_kid_refetch") == 1, d
    assert srv.hits == 2, f"{srv.hits - 1} refetches for one rotation (coalesced: 1 expected)"
    assert d.get("jwks_fetch_success") == 1 and "requests_denied_unknown_kid" not in d, d

    # Key A stays published (AB): old and new A tokens pass, without another fetch.
    for t in (old, token("a"), new_tokens[0]):
        r, _ = fetch(env, "/headers", t)
        assert r.status_code == 200, r.text
    assert srv.hits == 2
    assert counters(env)["jwks_unknown_kid_refetch"] == before["jwks_unknown_kid_refetch"] + 1


# --- 4. unknown-kid flood --------------------------------------------------------------------

def test_unknown_kid_flood_costs_one_refetch(gateway, jwks_servers):
    """300 well-formed tokens, each with its own never-published kid, 24 at a time: all 401,
    and one refetch (jwksMinRefetchInterval 30s) for the whole flood."""
    srv = jwks_servers(keyset="A")
    env = gateway(config(srv.port), srv.port)  # jwksMinRefetchInterval: default 30s
    r, _ = fetch(env, "/headers", token())
    assert r.status_code == 200, r.text
    hits0, before = srv.hits, counters(env)

    flood = [tokens.mint(tokens.claims(sub=f"flood-{i}"), key="never", kid=f"never-{uuid.uuid4().hex}")
             for i in range(300)]
    t0 = time.monotonic()
    results = parallel(300, lambda i: fetch(env, "/headers", flood[i])[0], threads=24)
    elapsed = time.monotonic() - t0
    wrong = [(r.status_code, r.text[:60]) for r in results if r.status_code != 401 or UNKNOWN_KID not in r.text]
    assert not wrong, f"{len(wrong)} of 300 not 401 '{UNKNOWN_KID}': {wrong[:5]}"
    for r, t in zip(results[:20], flood):
        assert_invalid_token(r, t)
    assert srv.hits - hits0 <= 3, f"{srv.hits - hits0} JWKS fetches during the flood ({elapsed:.1f}s)"
    d = delta(counters(env), before)
    assert d.get("jwks_unknown_kid_refetch") == 1, d
    assert d.get("requests_denied_unknown_kid") == 300, d
    assert srv.hits - hits0 == 1, f"{srv.hits - hits0} fetches; the refetch counter says 1"

    r, _ = fetch(env, "/headers", token())
    assert r.status_code == 200, r.text


# --- 5. stale on error -----------------------------------------------------------------------

def test_stale_keys_serve_while_fetches_fail(gateway, jwks_servers):
    """Cache duration 2s; the JWKS answers 500 for 2.6 s, then garbage for 2.6 s. Fresh tokens
    (no token-cache hits) are verified with the last good keys all along."""
    srv = jwks_servers(keyset="A")
    env = gateway(config(srv.port, jwksCacheDuration="2s", timeout="1s"), srv.port)
    r, _ = fetch(env, "/headers", token())
    assert r.status_code == 200, r.text
    # Counters are reported at ticks: the first request must be counted before the baseline.
    assert wait_until(lambda: counters(env)["requests_allowed"] >= 1, timeout=2)
    before, n0 = counters(env), len(srv.hit_log)

    answers = []
    for mode in ("500", "garbage"):
        srv.set_mode(mode)
        end = time.monotonic() + 2.6
        while time.monotonic() < end:
            r, _ = fetch(env, "/headers", token())
            answers.append((mode, r.status_code, r.text[:80]))
            time.sleep(0.1)
    failing_until = time.monotonic()
    refused = [a for a in answers if a[1] != 200]
    assert not refused, f"{len(refused)} of {len(answers)} refused during the outage: {refused[:5]}"

    failed = [(t, m) for t, m in srv.hit_log[n0:] if t <= failing_until]
    modes = [m for _, m in failed]
    assert "500" in modes and "garbage" in modes, f"fetches during the outage: {modes}"
    assert set(modes) <= {"500", "garbage"}, modes
    assert wait_until(lambda: counters(env)["jwks_fetch_failure"] - before["jwks_fetch_failure"] >= len(failed), 3)
    d = delta(counters(env), before)
    assert d.get("jwks_fetch_failure") == len(failed), (d, modes)
    assert "jwks_fetch_success" not in d, d
    # Backoff, not a hot loop: first retry within a second (plus a tick), then doubling.
    assert len(failed) <= 8, f"{len(failed)} fetches in 5.2 s of failures: {modes}"
    assert failed[1][0] - failed[0][0] <= 1.5, f"first retry {failed[1][0] - failed[0][0]:.2f}s after the failure"

    srv.set_mode("ok")
    assert wait_until(lambda: counters(env)["jwks_fetch_success"] > before["jwks_fetch_success"], 5), \
        f"no successful fetch within 5s of the JWKS recovering\n{filter_log(env, 'jwks:')}"
    r, _ = fetch(env, "/headers", token())
    assert r.status_code == 200, r.text
    expected = before["requests_allowed"] + len(answers) + 1
    wait_until(lambda: counters(env)["requests_allowed"] >= expected, timeout=2)  # reported at ticks
    d = delta(counters(env), before)
    assert d.get("requests_allowed") == len(answers) + 1, d
    assert not [k for k in d if k.startswith("requests_denied")], d


# --- 6. slow fetch ---------------------------------------------------------------------------

def test_slow_first_fetch_answers_within_timeout(gateway, jwks_servers):
    """No keys cached, the JWKS takes 5 s, timeout 1s: requests on every worker get 401 keys
    unavailable within timeout + 1 s; once the JWKS is fast again, tokens pass."""
    srv = jwks_servers(keyset="A", slow_delay=5)
    srv.set_mode("slow")
    env = gateway(config(srv.port, timeout="1s"), srv.port)
    results = parallel(8, lambda i: fetch(env, "/headers", token()))
    for r, elapsed in results:
        assert r.status_code == 401 and KEYS_UNAVAILABLE in r.text, (r.status_code, r.text)
        assert elapsed <= 2.0, f"a request took {elapsed:.2f}s with timeout 1s"
    assert_invalid_token(results[0][0])
    assert wait_until(lambda: counters(env)["jwks_fetch_failure"] >= 1, 3), \
        f"the timed-out fetch was not counted as a failure: {counters(env)}"
    c = counters(env)
    assert c["requests_denied_keys_unavailable"] == 8 and c["requests_allowed"] == 0, c
    assert c["jwks_fetch_success"] == 0, c

    srv.set_mode("ok")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        r, elapsed = fetch(env, "/headers", token())
        assert elapsed <= 2.0, f"a request took {elapsed:.2f}s with timeout 1s"
        if r.status_code == 200:
            break
        assert KEYS_UNAVAILABLE in r.text, (r.status_code, r.text)
        time.sleep(0.2)
    assert r.status_code == 200, f"still {r.status_code} 8s after the JWKS became fast\n{filter_log(env, 'jwks:')}"


def test_a_waiting_request_whose_client_leaves_is_forgotten(launch, jwks_servers):
    """A request paused for keys whose client hangs up is dropped from the waiting list when
    its stream ends (the stream context is dropped in `proxy_on_delete`).
    The fetch it started is the root context's, so it is not
    cancelled with the request: once the JWKS answers, the next request passes at once (one
    worker, so it meets the same VM; a fetch lost with the request would keep it waiting until
    the fetch lease ran out, 6 s)."""
    srv = jwks_servers(keyset="A")
    srv.hold(max_wait=8)
    env = launch(config(srv.port, timeout="6s"), jwks_port=srv.port, concurrency=1)
    try:
        with pytest.raises(requests.exceptions.Timeout):
            fetch(env, "/headers", token(), timeout=1)
        # Let Envoy see the client's close and delete the stream before the keys arrive (else
        # the keys could win the race and the request be answered to nobody).
        time.sleep(0.5)
        srv.release()
        r, elapsed = fetch(env, "/headers", token())
        assert r.status_code == 200, r.text
        assert elapsed < 3, f"the next request took {elapsed:.1f}s: the fetch died with the request"
        assert srv.hits == 1, f"{srv.hits} fetches: the first one was lost"
        assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    finally:
        env.stop()  # Envoy flushes its log file on exit
    log = env.log
    waited = re.findall(r"request (\d+) waits for keys", log)
    ended = re.findall(r"request (\d+) ended while it waited for keys", log)
    # The abandoned request ended while waiting; the later one (which may also have waited,
    # on a worker whose VM had not seen the keys yet) was answered instead.
    assert len(ended) == 1 and ended[0] in waited, (waited, ended, filter_log(env, "keys"))
    assert_no_vm_failure(log)


def test_a_fetch_started_while_waking_requests_outlives_the_request_answered_before_it(launch, jwks_servers):
    """Two requests wait for the first keys: one signed with key a, then one with key b. The
    first fetch answers with key a only; by then the issuer also publishes b. Waking them, the
    first is answered, the second names an unknown kid and starts a refetch, held until the
    first request's stream is over. The refetch is dispatched with the root context effective
    again (not the stream woken just before it, whose calls the host may cancel with it), and
    the second request passes as soon as it answers."""
    srv = jwks_servers(keyset="A")
    srv.hold(max_wait=8)
    env = launch(config(srv.port, timeout="6s", jwksMinRefetchInterval="0s"), jwks_port=srv.port,
                 concurrency=1)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(fetch, env, "/headers", token("a"))
            deadline = time.monotonic() + 5
            while srv.hits < 1 and time.monotonic() < deadline:  # the first fetch is held
                time.sleep(0.05)
            time.sleep(0.3)  # the first request is waiting
            second = pool.submit(fetch, env, "/headers", token("b"))
            time.sleep(0.5)  # so is the second, behind it
            srv.set_keyset("AB")  # for the refetch; the held fetch answers with A
            srv.release()
            srv.hold()  # the refetch waits until the first request's stream is over
            r1, _ = first.result()
            time.sleep(0.3)
            srv.release()
            r2, elapsed2 = second.result()
        assert r1.status_code == 200, r1.text
        assert r2.status_code == 200 and elapsed2 < 4, (r2.status_code, f"{elapsed2:.1f}s", r2.text)
        assert srv.hits == 2, srv.hits
    finally:
        env.stop()
    assert_no_vm_failure(env.log)


# --- 7. down at start, then up ---------------------------------------------------------------

def test_jwks_down_at_start_then_up_without_restart(gateway, jwks_servers):
    """Nothing listens on the JWKS port for the first 2 s (connection refused): tokens get a
    prompt 401 keys unavailable. Then the server starts there: within the backoff (first
    retry 0.5 s, doubling) tokens pass, in the same Envoy process."""
    port = free_port()  # nothing listens: connection refused
    env = gateway(config(port, timeout="2s"), port)
    pid = env.proc.pid
    down_until = time.monotonic() + 2.0
    while time.monotonic() < down_until:
        r, elapsed = fetch(env, "/headers", token())
        assert r.status_code == 401 and KEYS_UNAVAILABLE in r.text, (r.status_code, r.text)
        assert elapsed <= 3.0, f"a request took {elapsed:.2f}s with timeout 2s"
        time.sleep(0.2)
    c = counters(env)
    assert c["jwks_fetch_failure"] >= 2 and c["jwks_fetch_success"] == 0, c

    srv = jwks_servers(port=port, keyset="A")
    t_up = time.monotonic()
    status = None
    while time.monotonic() < t_up + 10:
        r, _ = fetch(env, "/headers", token())
        status = r.status_code
        if status == 200:
            break
        assert status == 401 and KEYS_UNAVAILABLE in r.text, (status, r.text)
        time.sleep(0.2)
    recovered_after = time.monotonic() - t_up
    assert status == 200, f"still {status} 10s after the JWKS came up\n{filter_log(env, 'jwks:')}"
    assert env.alive() and env.proc.pid == pid
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    assert srv.hits >= 1 and counters(env)["jwks_fetch_success"] >= 1
    results = parallel(8, lambda i: fetch(env, "/headers", token())[0])
    assert [r.status_code for r in results] == [200] * 8, recovered_after


# --- OIDC discovery --------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "idp.example.test"])
def test_oidc_discovery_and_authority_of_fetches(gateway, jwks_servers, host):
    """Issuer http://<host>:<port>, no jwksUri: the filter reads jwks_uri from the discovery
    document and fetches it, both through cluster `jwks` (127.0.0.1), each with :authority
    from its own URI."""
    srv = jwks_servers(keyset="A", public_host=host)
    issuer = srv.public_url
    env = gateway(seed_config("", rule={"issuer": issuer, "jwksUri": None, "jwksCluster": "jwks"}), srv.port)
    r, _ = fetch(env, "/headers", token(issuer=issuer))
    assert r.status_code == 200, r.text
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    results = parallel(8, lambda i: fetch(env, "/headers", token(issuer=issuer))[0])
    assert [r.status_code for r in results] == [200] * 8
    assert (srv.discovery_hits, srv.hits) == (1, 1), srv.status()
    authority = f"{host}:{srv.port}"
    assert [h.get("host") for h in srv.discovery_request_headers] == [authority]
    assert [h.get("host") for h in srv.request_headers] == [authority]
    # A token of the seed issuer has no rule here.
    r, _ = fetch(env, "/headers", token(issuer=tokens.ISTIO_ISSUER))
    assert_invalid_token(r)
    assert "issuer" in r.text

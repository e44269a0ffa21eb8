"""A VM that fails comes back: Envoy's `failure_policy: FAIL_RELOAD` (envoy.yaml; Istio's
WasmPlugin `failStrategy: FAIL_RELOAD`) starts a new VM for the next request after one aborted.

It takes a VM that aborts on demand: the test-only build of the filter (cargo feature
`test-panic`, written by `scripts/build.sh --test-panic` to
wasm/jwt_claims_filter.test-panic.wasm; JWT_FILTER_TEST_PANIC_WASM names another file), in
which a request whose :path starts with /__jcf_test_panic panics. One worker, so every
request meets the VM that panicked (or its successor):

  FAIL_RELOAD   a valid token passes; the panic request; valid tokens pass again, measured
                from the panic's answer, polling every 20 ms (bounded)
  FAIL_CLOSED   the same, but the VM stays dead: requests keep failing (the policy matters)
  shipped module  /__jcf_test_panic is an ordinary path: no panic, the VM keeps serving
"""
from __future__ import annotations

import os
import time
import uuid

import pytest
import requests
import yaml

from support import tokens
from support.checks import assert_no_vm_failure, echoed_headers
from support.envoy import GATEWAY_HOST, ROOT, WASM, Envoy, seed_config
from support.jwks_server import JwksServer

TEST_PANIC_WASM = os.environ.get("JWT_FILTER_TEST_PANIC_WASM",
                                 str(ROOT / "wasm" / "jwt_claims_filter.test-panic.wasm"))
PANIC_PATH = "/__jcf_test_panic"
PANIC_LOG = "test-panic build: aborting the VM on request"
POLL_S = 0.02  # between two requests while waiting for the VM to come back
RELOAD_BOUND_S = 10.0  # the longest the FAIL_RELOAD test waits for a 200
CLOSED_WATCH_S = 3.0  # how long the FAIL_CLOSED test watches requests keep failing


def token() -> str:
    """A fresh valid token (own `sub`: no verified-token cache serves it), key a."""
    return tokens.mint(tokens.claims(sub=f"user-{uuid.uuid4().hex[:12]}"), key="a")


def fetch(env: Envoy, path: str = "/headers", tok: str | None = None,
          timeout: float = 5) -> requests.Response:
    headers = {"Host": GATEWAY_HOST, "Connection": "close"}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    return requests.get(env.base_url + path, headers=headers, timeout=timeout, allow_redirects=False)


def with_policy(policy: str):
    """A rewrite that sets the wasm filter's PluginConfig failure_policy."""
    def rewrite(cfg: dict) -> None:
        for listener in cfg["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                for f in chain["filters"]:
                    for hf in f.get("typed_config", {}).get("http_filters", []):
                        if hf["name"] == "envoy.filters.http.wasm":
                            hf["typed_config"]["config"]["failure_policy"] = policy
    return rewrite


def rendered_policy(env: Envoy) -> list[str]:
    cfg = yaml.safe_load(env.cfg_path.read_text())
    out = []
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for hf in f.get("typed_config", {}).get("http_filters", []):
                    if hf["name"] == "envoy.filters.http.wasm":
                        out.append(hf["typed_config"]["config"].get("failure_policy"))
    return out


@pytest.fixture(scope="module")
def panic_wasm() -> str:
    if not os.path.isfile(TEST_PANIC_WASM):
        pytest.fail(f"the test-panic module is missing: {TEST_PANIC_WASM} "
                    "(run scripts/build.sh --test-panic)", pytrace=False)
    return TEST_PANIC_WASM


@pytest.fixture
def jwks():
    with JwksServer(keyset="A") as srv:
        yield srv


def start(launch, jwks: JwksServer, wasm: str, policy: str | None = None) -> Envoy:
    """One worker, the seed configuration; envoy.yaml's failure_policy unless `policy`."""
    kw = {"rewrite": with_policy(policy)} if policy else {}
    return launch(seed_config(jwks.jwks_uri), jwks_port=jwks.port, concurrency=1, wasm=wasm, **kw)


def serves(env: Envoy) -> None:
    r = fetch(env, tok=token())
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


def panic(env: Envoy) -> requests.Response:
    """The request that aborts the VM; whatever Envoy answers it, never a 200 from httpbin."""
    r = fetch(env, PANIC_PATH, tok=token())
    assert r.status_code != 200, f"the panic request passed: {r.status_code} {r.text[:200]}"
    return r


def panicked(env: Envoy) -> bool:
    return PANIC_LOG in env.log


def test_fail_reload_brings_the_vm_back(launch, jwks, panic_wasm, record_property):
    env = start(launch, jwks, panic_wasm)
    assert rendered_policy(env) == ["FAIL_RELOAD"], \
        f"envoy.yaml's wasm filter should carry failure_policy FAIL_RELOAD: {rendered_policy(env)}"
    serves(env)
    first = panic(env)
    t_panic = time.monotonic()
    failed: list[int] = []
    r = None
    while time.monotonic() < t_panic + RELOAD_BOUND_S:
        r = fetch(env, tok=token())
        if r.status_code == 200:
            break
        failed.append(r.status_code)
        time.sleep(POLL_S)
    recovery = time.monotonic() - t_panic
    record_property("fail_reload_recovery_s", round(recovery, 3))
    print(f"\nFAIL_RELOAD: panic answered {first.status_code}; {len(failed)} requests failed "
          f"{sorted(set(failed))} before the first 200, {recovery * 1000:.0f} ms after the panic")
    assert r is not None and r.status_code == 200, \
        f"the VM did not come back within {RELOAD_BOUND_S}s: last {r.status_code if r else None} " \
        f"{r.text[:120] if r else ''}, {len(failed)} failures"
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    for _ in range(5):  # and it stays back
        serves(env)
    assert env.alive()
    env.stop()
    log = env.log
    assert PANIC_LOG in log, "the test-panic module did not panic (is it the test-panic build?)"
    # The only VM failure in the log is the one provoked: nothing after the reload failed.
    after = log[log.rindex(PANIC_LOG):].splitlines()[1:]
    others = [ln for ln in after if "panicked" in ln and PANIC_LOG not in ln]
    assert not others, "\n".join(others[:10])


def test_fail_closed_keeps_the_vm_dead(launch, jwks, panic_wasm):
    """Without FAIL_RELOAD the aborted VM is not replaced: every later request fails."""
    env = start(launch, jwks, panic_wasm, policy="FAIL_CLOSED")
    assert rendered_policy(env) == ["FAIL_CLOSED"]
    serves(env)
    panic(env)
    statuses = []
    end = time.monotonic() + CLOSED_WATCH_S
    while time.monotonic() < end:
        statuses.append(fetch(env, tok=token()).status_code)
        time.sleep(0.05)
    print(f"\nFAIL_CLOSED: {len(statuses)} requests in {CLOSED_WATCH_S}s after the panic: "
          f"{ {s: statuses.count(s) for s in set(statuses)} }")
    assert len(statuses) >= 10, statuses
    assert 200 not in statuses, \
        f"a request passed after the VM aborted under FAIL_CLOSED: {statuses.count(200)} of {len(statuses)}"
    assert env.alive()
    env.stop()
    assert panicked(env), "the test-panic module did not panic (is it the test-panic build?)"


def test_shipped_module_does_not_panic_on_the_test_path(launch, jwks):
    """The module that ships (built without the feature) treats /__jcf_test_panic as any path."""
    env = start(launch, jwks, str(WASM))
    serves(env)
    r = fetch(env, PANIC_PATH, tok=token())
    assert r.status_code not in (500, 503), (r.status_code, r.text[:200])
    serves(env)
    env.stop()
    assert not panicked(env)
    assert_no_vm_failure(env.log)

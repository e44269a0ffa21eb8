"""Several configurations of the filter in one VM. Envoy runs one VM per worker for every
filter that has the same vm_config, with one root context per configuration: two filters in
one chain, or the old and the new configuration while a listener is updated. Each root
context holds its own plugin and creates its streams' contexts (the SDK's shape): each
request must meet its own configuration, and a configuration the host deletes must be freed
(its root context is dropped when the host deletes it)."""
from __future__ import annotations

import copy
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import requests
import yaml

from support import tokens
from support.checks import assert_invalid_token, assert_no_vm_failure, echoed_headers
from support.envoy import GATEWAY_HOST, seed_config


def wasm_filters(cfg: dict) -> list:
    filters = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return filters["typed_config"]["http_filters"]


def second_filter_first(second_config: dict):
    """A rewrite that puts a second wasm filter, same vm_config (so the same VM), another
    plugin name and configuration, before the seed's."""
    def rewrite(cfg: dict) -> None:
        http_filters = wasm_filters(cfg)
        seed = next(f for f in http_filters if f["name"] == "envoy.filters.http.wasm")
        second = copy.deepcopy(seed)
        second["name"] = "jwt-second"
        second["typed_config"]["config"]["name"] = "jwt_claims_filter_second"
        second["typed_config"]["config"]["configuration"]["value"] = json.dumps(second_config)
        http_filters.insert(http_filters.index(seed), second)
    return rewrite


def second_config() -> dict:
    """Tokens from x-second-token, keys inline, sub into x-second-sub; no token passes."""
    return {"jwtRules": [{"issuer": tokens.ISTIO_ISSUER, "jwks": tokens.jwks_json("istio"),
                          "fromHeaders": [{"name": "x-second-token"}],
                          "outputClaimToHeaders": [{"header": "x-second-sub", "claim": "sub"}]}]}


def test_two_configurations_in_one_chain_each_meet_their_own_requests(launch, seed_jwks, groups_token):
    env = launch(seed_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port, concurrency=1,
                 rewrite=second_filter_first(second_config()))
    second_token = tokens.mint(tokens.claims(sub="second-subject"))
    both = echoed_headers(env.get("/headers", token=groups_token, headers={"x-second-token": second_token}))
    assert both["x-second-sub"] == "second-subject", both
    assert both["x-jwt-claim.groups"] == "group1,group2", both
    assert "authorization" not in both and "x-second-token" not in both, both

    # Each filter answers for its own token location only.
    assert_invalid_token(env.get("/headers", token=groups_token, headers={"x-second-token": "not.a.token"}))
    assert_invalid_token(env.get("/headers", token="not.a.token", headers={"x-second-token": second_token}))
    neither = echoed_headers(env.get("/delay/0"))
    assert "x-second-sub" not in neither and "x-jwt-claim.groups" not in neither, neither

    # Many streams in flight at once, on few connections: none meets the other's configuration.
    def one(i: int) -> tuple[int, int, str | None]:
        second = second_token if i % 2 else "not.a.token"
        r = requests.get(env.base_url + "/headers", timeout=15,
                         headers={"Host": GATEWAY_HOST, "Authorization": f"Bearer {groups_token}",
                                  "x-second-token": second})
        sub = r.json()["headers"].get("X-Second-Sub") if r.status_code == 200 else None
        return i, r.status_code, sub
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200)))
    wrong = [(i, status, sub) for i, status, sub in results
             if (status, sub) != ((200, "second-subject") if i % 2 else (401, None))]
    assert not wrong, wrong[:10]

    env.stop()  # Envoy flushes its log file on exit
    log = env.log
    assert_no_vm_failure(log)
    # What made this a test of a shared VM: a thread that created one VM and configured two
    # root contexts in it.
    by_thread: dict[str, list[str]] = {}
    for line in log.splitlines():
        m = re.match(r"\[[^]]*\]\[(\d+)\]", line)
        if m:
            by_thread.setdefault(m.group(1), []).append(line)
    shared = [lines for lines in by_thread.values()
              if sum("Thread-Local Wasm created" in ln for ln in lines) == 1
              and len({m.groups() for ln in lines for m in [CONFIGURED.search(ln)] if m}) == 2]
    assert shared, "no thread configured both plugins in one VM:\n" + "\n".join(
        ln for ln in log.splitlines() if "Wasm created" in ln or "configured" in ln)


CONFIGURED = re.compile(r"jwt-claims-filter configured \(root context (\d+), plugin name '([^']*)'\)")


def test_two_filters_sharing_a_vm_under_one_name_keep_their_own_configurations(launch, seed_jwks, groups_token):
    """Each root context has its own plugin, and each stream the context its root creates:
    two filters under one name in one VM keep their own configurations."""
    def same_name(cfg: dict) -> None:
        second_filter_first(second_config())(cfg)
        for f in wasm_filters(cfg):
            if f["name"] in ("jwt-second", "envoy.filters.http.wasm"):
                f["typed_config"]["config"]["name"] = "jwt_claims_filter"
    env = launch(seed_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port, concurrency=1, rewrite=same_name)
    second_token = tokens.mint(tokens.claims(sub="second-subject"))
    headers = echoed_headers(env.get("/delay/0", headers={"x-second-token": second_token}))
    assert headers.get("x-second-sub") == "second-subject", headers
    seed = echoed_headers(env.get("/headers", token=groups_token))
    assert seed["x-jwt-claim.groups"] == "group1,group2" and "x-second-sub" not in seed, seed
    assert_invalid_token(env.get("/headers", token="not.a.token"))
    env.stop()
    assert_no_vm_failure(env.log)


def lds_resources(cfg: dict) -> dict:
    listeners = []
    for listener in cfg["static_resources"]["listeners"]:
        listener = copy.deepcopy(listener)
        listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
        listeners.append(listener)
    return {"resources": listeners}


class ListenerFromFile:
    """A rewrite that serves the gateway listener from an LDS file (`rewrite=lds.to_lds`), and
    replaces it the way Envoy's documentation prescribes: written beside it, moved into place."""

    def __init__(self, workdir):
        self.path = workdir / f"lds-{time.monotonic_ns()}.yaml"
        self.rendered: dict = {}

    def to_lds(self, cfg: dict) -> None:
        self.rendered.update(copy.deepcopy(cfg))
        self.path.write_text(yaml.safe_dump(lds_resources(cfg), sort_keys=False))
        cfg["static_resources"]["listeners"] = []
        cfg["node"] = {"id": "gateway", "cluster": "gateway"}  # dynamic resources need both
        cfg["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(self.path)},
                                                   "resource_api_version": "V3"}}

    def replace_filter_config(self, filter_config: dict) -> None:
        updated = copy.deepcopy(self.rendered)
        wasm = next(f for f in wasm_filters(updated) if f["name"] == "envoy.filters.http.wasm")
        wasm["typed_config"]["config"]["configuration"]["value"] = json.dumps(filter_config)
        staged = self.path.with_suffix(".next")
        staged.write_text(yaml.safe_dump(lds_resources(updated), sort_keys=False))
        os.rename(staged, self.path)  # Envoy watches for the file being moved into place


def test_a_replaced_configuration_is_freed_and_new_requests_meet_the_new_one(launch, seed_jwks, groups_token,
                                                                           workdir):
    """The listener comes from a file (LDS); rewriting the file replaces the filter's
    configuration. Envoy starts a new root context in the same VMs, drains the old listener
    (1 s), then deletes the old root: the filter frees its state on a later tick."""
    lds = ListenerFromFile(workdir)
    env = launch(seed_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port, concurrency=1,
                 rewrite=lds.to_lds, extra_args=["--drain-time-s", "1"])

    def fresh_get(path: str, **headers) -> requests.Response:
        return requests.get(env.base_url + path, timeout=15,
                            headers={"Host": GATEWAY_HOST, "Connection": "close", **headers})

    before = echoed_headers(fresh_get("/headers", Authorization=f"Bearer {groups_token}"))
    assert before["x-jwt-claim.groups"] == "group1,group2" and "x-jwt-sub" not in before, before

    lds.replace_filter_config(
        seed_config(seed_jwks.jwks_uri, rule={"outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}))

    deadline = time.monotonic() + 20
    after: dict = {}
    while time.monotonic() < deadline:
        after = echoed_headers(fresh_get("/headers", Authorization=f"Bearer {groups_token}"))
        if "x-jwt-sub" in after:
            break
        time.sleep(0.2)
    assert after.get("x-jwt-sub") == tokens.payload_of(groups_token)["sub"], after
    assert after["x-jwt-claim.groups"] == "group1,group2", after
    assert_invalid_token(fresh_get("/headers", Authorization="Bearer not.a.token"))

    # The old root is deleted once its listener drained; the next tick in each VM frees it.
    freed: list = []
    while time.monotonic() < deadline + 10:
        freed = re.findall(r"root context (\d+) is gone", env.log)
        if len(freed) >= 2:  # the main thread's VM and the worker's
            break
        time.sleep(0.3)
    assert len(freed) >= 2, env.log_tail(40)
    again = echoed_headers(fresh_get("/headers", Authorization=f"Bearer {groups_token}"))
    assert again.get("x-jwt-sub") == tokens.payload_of(groups_token)["sub"], again

    env.stop()
    assert_no_vm_failure(env.log)


def test_a_configuration_replaced_during_its_first_fetch_lets_the_new_one_fetch_at_once(launch, workdir):
    """The old configuration's first fetch is in flight (the JWKS server holds it) when the
    configuration is replaced. Once the old root is deleted (its listener drained, 1 s), the
    host has cancelled that fetch: its lease ends at once, and the new configuration fetches
    on its next tick rather than waiting out the lease (`timeout` + 1 s, here 9 s)."""
    from support.jwks_server import JwksServer

    lds = ListenerFromFile(workdir)

    with JwksServer(keyset="istio") as jwks, ThreadPoolExecutor(max_workers=2) as pool:
        jwks.hold(max_wait=30)
        rule = {"timeout": "8s"}
        env = launch(seed_config(jwks.jwks_uri, rule=rule), jwks_port=jwks.port, concurrency=1,
                     rewrite=lds.to_lds, extra_args=["--drain-time-s", "1", "--file-flush-interval-msec", "50"])

        def get(**headers) -> requests.Response:
            return requests.get(env.base_url + "/headers", timeout=20,
                                headers={"Host": GATEWAY_HOST, "Connection": "close", **headers})

        bearer = {"Authorization": f"Bearer {tokens.GROUPS_SCOPE_JWT}"}
        waiting = pool.submit(get, **bearer)  # starts the old configuration's first fetch
        deadline = time.monotonic() + 5
        while jwks.hits < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert jwks.hits == 1, "the first fetch did not reach the JWKS server"

        lds.replace_filter_config(
            seed_config(jwks.jwks_uri, rule={**rule, "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}))

        deadline = time.monotonic() + 8  # well before the old lease (8 s + 1 s) runs out
        while len(re.findall(r"root context \d+ is gone", env.log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the main thread's VM and the worker's free the old root
        assert len(re.findall(r"root context \d+ is gone", env.log)) >= 2, env.log_tail(40)
        jwks.release()  # answer whatever is held; fetches from now on are answered at once

        started = time.monotonic()
        after = get(**bearer)
        took = time.monotonic() - started
        assert after.status_code == 200, (after.status_code, after.text)
        assert echoed_headers(after).get("x-jwt-sub") == tokens.payload_of(tokens.GROUPS_SCOPE_JWT)["sub"]
        assert took < 2.0, f"the new configuration waited {took:.1f} s for keys (the old lease?)"
        assert "fetch of a replaced configuration is abandoned" in env.log
        # The paused request belongs to the drained listener: Envoy may close its connection
        # when the drain ends. Either way it is answered or closed, never left hanging.
        try:
            waiting.result(timeout=20)
        except requests.ConnectionError:
            pass
        env.stop()
        assert_no_vm_failure(env.log)

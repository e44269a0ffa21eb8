"""A `pluginConfig` change delivered by a file-based LDS update, under load.

Envoy reads the gateway listener (envoy.yaml's, unchanged but for ports and the module path)
from an LDS file: `dynamic_resources.lds_config.path_config_source` with `watched_directory`.
The update is made as Envoy's documentation prescribes: the new file is written elsewhere on
the same file system and renamed into the watched directory (an atomic `mv`).

Version 1 is the seed (claimHeaders x-jwt-claim.groups); version 2 adds x-jwt-claim.scope.
While four clients send requests with valid tokens for a bounded time (LOAD_SECONDS, at most
MAX_PER_CLIENT requests each) — two on keep-alive connections with the sample token (cached
by the filter), one on a new connection per request, one on a keep-alive connection with a
freshly minted token per request — the file is swapped. Asserted:

  - no request fails: every one is 200 from httpbin with x-jwt-claim.groups, none errors;
  - the update is taken: config_dump's listeners reach version_info "2" with the gateway
    listener's active state updated and nothing warming, and
    listener_manager.lds.update_success counts it;
  - requests that ended before the swap see version 1 (no x-jwt-claim.scope);
  - every request on a connection opened after the update was acknowledged (so in
    config_dump) sees version 2 at once (x-jwt-claim.scope: scope1,scope2), cached token or
    not; keep-alive connections opened before the swap stay on the filter chain they were
    accepted on (version 1) until Envoy drains them, as with Envoy's own filters, and keep
    succeeding (the local port of each request's connection is recorded); the update was an
    in-place filter-chain update (listener_manager.listener_in_place_updated).
"""
from __future__ import annotations

import copy
import http.client
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest
import requests
import yaml

from support import tokens
from support.checks import assert_no_vm_failure
from support.envoy import GATEWAY_HOST, Envoy, seed_config

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
LOAD_SECONDS = 4.0
SWAP_AT = 1.5  # seconds into the load
MAX_PER_CLIENT = 1500
NEW_HEADER = "x-jwt-claim.scope"


class Sent(NamedTuple):
    client: int
    start: float
    end: float
    outcome: object  # the status, or the exception's text
    claims: dict  # the x-jwt-claim* headers httpbin echoed
    port: int | None  # the connection's local port


def wasm_config(listener: dict) -> dict:
    for chain in listener["filter_chains"]:
        for f in chain["filters"]:
            for hf in f.get("typed_config", {}).get("http_filters", []):
                if hf["name"] == "envoy.filters.http.wasm":
                    return hf["typed_config"]["config"]
    raise AssertionError("the listener has no wasm filter")


def lds_document(listener: dict, version: str) -> str:
    return yaml.safe_dump({"version_info": version,
                           "resources": [{"@type": LISTENER_TYPE, **listener}]}, sort_keys=False)


class LdsFiles:
    """The watched directory and its lds.yaml; `listener` is version 1's listener."""

    def __init__(self, root: Path):
        self.root = root
        self.watched = root / "lds"
        self.watched.mkdir(parents=True, exist_ok=True)
        self.path = self.watched / "lds.yaml"
        self.listener: dict | None = None

    def rewrite(self, cfg: dict) -> None:
        """rewrite= for start_envoy: move the static listener into the LDS file."""
        listeners = cfg["static_resources"].pop("listeners")
        assert len(listeners) == 1, listeners
        self.listener = listeners[0]
        self.path.write_text(lds_document(self.listener, "1"))
        # A ConfigSource other than static needs a node identity.
        cfg.setdefault("node", {"id": "lds-test", "cluster": "lds-test"})
        cfg["dynamic_resources"] = {"lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": str(self.path),
                                   "watched_directory": {"path": str(self.watched)}},
        }}

    def swap(self, listener: dict, version: str) -> None:
        """Write the new document beside the watched directory, then rename it into place."""
        staged = self.root / f"lds.yaml.{version}.tmp"
        staged.write_text(lds_document(listener, version))
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        os.rename(staged, self.path)


def lds_state(env: Envoy) -> tuple[str | None, str | None, bool]:
    """From admin /config_dump: (the LDS version Envoy has accepted, when the gateway
    listener's active state was last updated, whether a new one is still warming).

    Envoy 1.40 keeps the listener's own `active_state.version_info` at the version that
    created it across an in-place filter-chain update; the ListenersConfigDump's top-level
    `version_info` and the listener's `last_updated` are what move."""
    r = requests.get(env.admin_url + "/config_dump", timeout=5)
    r.raise_for_status()
    for dump in r.json().get("configs", []):
        if dump.get("@type", "").endswith("ListenersConfigDump"):
            for item in dump.get("dynamic_listeners", []):
                if item.get("name") == "ingress_http":
                    return (dump.get("version_info"), (item.get("active_state") or {}).get("last_updated"),
                            "warming_state" in item)
            return dump.get("version_info"), None, False
    return None, None, False


def lds_updates(env: Envoy) -> float:
    return env.stats().get("envoy_listener_manager_lds_update_success{}", 0.0)


@pytest.fixture
def lds_gateway(launch, seed_jwks, tmp_path):
    files = LdsFiles(tmp_path)
    # The old filter chain's connections drain gradually over --drain-time-s: at 30 s most
    # keep-alive connections outlive the test's load, so requests on them after the swap
    # show which configuration serves a connection opened before it.
    env = launch(seed_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port, rewrite=files.rewrite,
                 extra_args=["--drain-time-s", "30"])
    yield env, files
    env.stop()


def test_plugin_config_change_by_lds_file_under_load(lds_gateway):
    env, files = lds_gateway
    version, updated_v1, warming = lds_state(env)
    assert (version, warming) == ("1", False) and updated_v1, lds_state(env)
    updates_before = lds_updates(env)
    first = env.get("/headers", token=tokens.GROUPS_SCOPE_JWT)
    assert first.status_code == 200, first.text
    seen = {k.lower() for k in first.json()["headers"]}
    assert "x-jwt-claim.groups" in seen and NEW_HEADER not in seen, seen

    v2 = copy.deepcopy(files.listener)
    cfg2 = json.loads(wasm_config(v2)["configuration"]["value"])
    cfg2["claimHeaders"] = ["x-jwt-claim.groups", NEW_HEADER]
    wasm_config(v2)["configuration"]["value"] = json.dumps(cfg2)

    records: list[Sent] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    t_end = t0 + LOAD_SECONDS

    def client(i: int) -> None:
        # http.client, not requests: the local port of each request's connection tells
        # whether it went over a connection opened before the swap.
        conn = http.client.HTTPConnection("127.0.0.1", env.listener_port, timeout=10)
        n = 0
        while time.monotonic() < t_end and n < MAX_PER_CLIENT:
            n += 1
            tok = tokens.GROUPS_SCOPE_JWT
            headers = {"Host": GATEWAY_HOST}
            if i == 2:
                headers["Connection"] = "close"
            if i == 3:
                tok = tokens.mint(tokens.claims(sub=f"lds-{uuid.uuid4().hex[:10]}", scope=["scope1", "scope2"]))
            headers["Authorization"] = f"Bearer {tok}"
            start, port = time.monotonic(), None
            try:
                conn.request("GET", "/headers", headers=headers)
                port = conn.sock.getsockname()[1] if conn.sock else None
                resp = conn.getresponse()
                body = resp.read()
                outcome: object = resp.status
                claims = {k.lower(): v for k, v in json.loads(body)["headers"].items()
                          if k.lower().startswith("x-jwt-claim")} if resp.status == 200 else {}
                if resp.will_close:
                    conn.close()
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                outcome, claims = f"{type(e).__name__}: {e}", {}
                conn.close()
            with lock:
                records.append(Sent(i, start, time.monotonic(), outcome, claims, port))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(SWAP_AT)
    t_swap = time.monotonic()
    files.swap(v2, "2")
    t_ack = None
    while time.monotonic() < t_end + 5:
        version, updated, warming = lds_state(env)
        if version == "2" and updated != updated_v1 and not warming:
            t_ack = time.monotonic()
            break
        time.sleep(0.02)
    for t in threads:
        t.join(timeout=LOAD_SECONDS + 15)
    assert not any(t.is_alive() for t in threads), "a load client did not finish"

    assert t_ack is not None, f"config_dump never showed version 2 active: {lds_state(env)}\n{env.log_tail(30)}"
    assert lds_updates(env) - updates_before >= 1, "listener_manager.lds.update_success did not move"

    at = lambda r: round(r.start - t0, 3)  # noqa: E731
    failed = [(r.client, at(r), r.outcome) for r in records if r.outcome != 200]
    assert not failed, f"{len(failed)} of {len(records)} requests failed during the swap: {failed[:10]}"
    no_groups = [(r.client, at(r), r.claims) for r in records if r.claims.get("x-jwt-claim.groups") != "group1,group2"]
    assert not no_groups, f"requests without their groups claim header: {no_groups[:10]}"

    before = [r for r in records if r.end < t_swap]
    after = [r for r in records if r.start > t_ack]
    assert len(before) >= 20 and len(after) >= 20, \
        f"too little load around the swap: {len(before)} before, {len(after)} after ({len(records)} in all)"
    early_new = [(r.client, at(r)) for r in before if NEW_HEADER in r.claims]
    assert not early_new, f"version 2 seen before the swap: {early_new[:5]}"
    # A connection is bound to the filter chain it was accepted on, as with Envoy's own
    # filters: connections opened before the update keep version 1 until Envoy drains them
    # (they must keep succeeding, checked above); every connection opened after it sees 2.
    pre_ack_ports = {r.port for r in records if r.start <= t_ack}
    on_new = [r for r in after if r.port not in pre_ack_ports]
    assert len(on_new) >= 10, f"too few requests on connections opened after the swap: {len(on_new)}"
    stale = [(r.client, at(r), r.port) for r in on_new if r.claims.get(NEW_HEADER) != "scope1,scope2"]
    assert not stale, (f"{len(stale)} of {len(on_new)} requests on connections opened after version 2 was "
                       f"active (ack {t_ack - t0:.3f}s) still saw version 1: {stale[:10]}")
    old_ports = {r.port for r in before if r.client != 2}
    on_old = [r for r in after if r.client != 2 and r.port in old_ports]
    assert on_old, "no request after the swap used a connection opened before it (all reconnected)"
    first_new = min((r.start for r in records if NEW_HEADER in r.claims), default=t_end)
    print(f"lds swap: {len(records)} requests, ack {1000 * (t_ack - t_swap):.0f} ms after the rename, "
          f"first version-2 request started {1000 * (first_new - t_swap):.0f} ms after it; "
          f"{len(before)} before, {len(after)} after the ack, {len(on_old)} of those on pre-swap connections")
    assert env.stats().get("envoy_listener_manager_listener_in_place_updated{}", 0) >= 1, \
        "the update was not an in-place filter-chain update"
    env.stop()
    assert_no_vm_failure(env.log)

"""HTTP/2 with prior knowledge (h2c) at the gateway, through a real h2 client (httpx + h2).

envoy.yaml's HttpConnectionManager leaves `codec_type` at its default, AUTO, which takes
HTTP/1.1 or, on the client's connection preface, HTTP/2 without an upgrade: the listener is
used as shipped (the test checks that no `codec_type` other than AUTO is set). Every
assertion also checks, from the connection manager's stats, that the requests arrived as
HTTP/2 on the number of connections expected.

  routing     one connection: groups token → /headers 200 with x-jwt-claim.groups; demo token
              → 404; `some.invalid.token` and a bad signature → 401
  forgery     forged `x-jwt-claim.groups` / `X-JWT-Claim-Groups` (h2 sends names lower-case)
              with a valid, a demo or no token → never echoed by httpbin, never routed
  100 streams one connection, 100 distinct valid tokens in flight at once (the JWKS answer
              is held until all 100 streams are open in Envoy), all 200 with their own `sub`
  1 MiB body  POST /anything (a route the test adds: envoy.yaml exposes only /status, /delay
              and /headers; httpbin's /anything echoes the body) with a valid token → the
              body arrives intact (sha256 of what httpbin echoes); with an invalid token →
              401 and the httpbin cluster sends nothing (upstream_rq_total and
              upstream_cx_tx_bytes_total unchanged)
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import uuid

import httpx
import pytest

from support import tokens
from support.checks import assert_invalid_token, assert_no_vm_failure, claim_headers, echoed_headers, wait_until
from support.envoy import GATEWAY_HOST, Envoy, seed_config
from support.jwks_server import JwksServer

HCM = "ingress_http"
BODY_BYTES = 1 << 20
STREAMS = 100


def minted(sub: str | None = None, **claims) -> str:
    return tokens.mint(tokens.claims(sub=sub or f"user-{uuid.uuid4().hex[:12]}", **claims))


def bad_signature() -> str:
    head, payload, sig = minted().split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    return f"{head}.{payload}.{flipped}"


def add_anything_route(cfg: dict) -> None:
    """rewrite=: route /anything to httpbin (before the catch-all 404), so that a request body
    can be echoed back; and check the shipped listener negotiates HTTP/2 (codec AUTO)."""
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm.get("codec_type", "AUTO") == "AUTO", f"envoy.yaml sets codec_type {hcm['codec_type']}"
    vhost = next(v for v in hcm["route_config"]["virtual_hosts"] if v["name"] == "httpbin")
    vhost["routes"].insert(0, {"match": {"prefix": "/anything"}, "route": {"cluster": "httpbin"}})


def h2_client(env: Envoy, **kw) -> httpx.Client:
    """HTTP/2 only: over http:// that is prior knowledge (no HTTP/1.1 Upgrade)."""
    return httpx.Client(http1=False, http2=True, base_url=env.base_url,
                        headers={"Host": GATEWAY_HOST}, timeout=20, **kw)


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def stat(env: Envoy, name: str, **labels: str) -> float:
    for key, value in env.stats().items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return value
    return 0.0


def hcm_stat(env: Envoy, name: str) -> float:
    return stat(env, f"envoy_http_{name}", envoy_http_conn_manager_prefix=HCM)


def httpbin_stat(env: Envoy, name: str) -> float:
    return stat(env, f"envoy_cluster_{name}", envoy_cluster_name="httpbin")


def connections(env: Envoy) -> tuple[float, float]:
    """(HTTP/2, HTTP/1.1) downstream connections so far."""
    return hcm_stat(env, "downstream_cx_http2_total"), hcm_stat(env, "downstream_cx_http1_total")




@pytest.fixture(scope="module")
def gateway(launch, seed_jwks):
    env = launch(seed_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port, rewrite=add_anything_route)
    yield env
    env.stop()
    assert_no_vm_failure(env.log)


def test_claims_route_over_one_h2_connection(gateway):
    h2_before, h1_before = connections(gateway)
    with h2_client(gateway) as c:
        r = c.get("/headers", headers=bearer(tokens.GROUPS_SCOPE_JWT))
        assert r.http_version == "HTTP/2", r.http_version
        assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
        assert "authorization" not in echoed_headers(r)
        assert c.get("/headers", headers=bearer(tokens.DEMO_JWT)).status_code == 404
        assert c.get("/headers").status_code == 404
        for bad in ("some.invalid.token", bad_signature()):
            r = c.get("/headers", headers=bearer(bad))
            assert_invalid_token(r, bad)
        # A minted token with another group list: its own claims, not a cached neighbour's.
        r = c.get("/headers", headers=bearer(minted(groups=["group9", "group1"])))
        assert echoed_headers(r)["x-jwt-claim.groups"] == "group9,group1"
        assert c.get("/status/200", headers=bearer(tokens.DEMO_JWT)).status_code == 200
    h2_after, h1_after = connections(gateway)
    assert (h2_after - h2_before, h1_after - h1_before) == (1, 0), \
        f"HTTP/2 connections +{h2_after - h2_before}, HTTP/1.1 +{h1_after - h1_before} (one h2 expected)"


def test_forged_claim_headers_are_stripped_over_h2(gateway):
    forged = [("x-jwt-claim.groups", "group1,admin"), ("X-JWT-Claim-Groups", "group1"),
              ("x-jwt-claim.sub", "root")]
    h2_before, _ = connections(gateway)
    with h2_client(gateway) as c:
        # Valid token: only the filter's value is echoed.
        r = c.get("/headers", headers=httpx.Headers([*forged, ("authorization", f"Bearer {tokens.GROUPS_SCOPE_JWT}")]))
        assert claim_headers(echoed_headers(r)) == {"x-jwt-claim.groups": "group1,group2"}, echoed_headers(r)
        # Valid token without group1, or no token: a forged group1 must not open /headers.
        r = c.get("/headers", headers=httpx.Headers([*forged, ("authorization", f"Bearer {tokens.DEMO_JWT}")]))
        assert r.status_code == 404, f"forged claim routed a demo token: {r.status_code} {r.text[:200]}"
        r = c.get("/headers", headers=httpx.Headers(forged))
        assert r.status_code == 404, f"forged claim routed a request without a token: {r.status_code}"
        # And nothing of them reaches the upstream on an open route (demo.jwt has no groups
        # claim, so no claim header at all is expected with it either).
        assert "groups" not in tokens.payload_of(tokens.DEMO_JWT)
        for auth in ([], [("authorization", f"Bearer {tokens.DEMO_JWT}")]):
            r = c.get("/anything", headers=httpx.Headers([*forged, *auth]))
            assert r.http_version == "HTTP/2"
            got = claim_headers(echoed_headers(r))
            assert got == {}, f"forged claim headers reached httpbin: {got}"
    assert connections(gateway)[0] - h2_before == 1


def test_100_concurrent_streams_each_with_its_own_token(launch):
    """A fresh Envoy and JWKS server whose answer is held: every stream waits for the first
    keys inside the filter, so all 100 are open at once on the one connection (Envoy's
    downstream_rq_active says so) before the keys land."""
    with JwksServer(keyset="istio") as srv:
        srv.hold(max_wait=15)
        env = launch(seed_config(srv.jwks_uri, rule={"timeout": "15s"}), jwks_port=srv.port)
        try:
            subs = [f"stream-{i}-{uuid.uuid4().hex[:8]}" for i in range(STREAMS)]
            toks = [minted(sub=s, groups=["group1", f"g{i}"]) for i, s in enumerate(subs)]
            results: dict[str, object] = {}

            async def run() -> None:
                async with httpx.AsyncClient(http1=False, http2=True, base_url=env.base_url,
                                             headers={"Host": GATEWAY_HOST}, timeout=30) as c:
                    async def one(i: int):
                        cfg = {"x-sub-probe": subs[i], **bearer(toks[i])}
                        return await c.get("/headers", headers=cfg)
                    results["responses"] = await asyncio.gather(*(one(i) for i in range(STREAMS)),
                                                                return_exceptions=True)

            h2_before, h1_before = connections(env)
            t = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
            t.start()
            all_open = wait_until(lambda: hcm_stat(env, "downstream_rq_active") >= STREAMS, timeout=10)
            open_streams, cx_active = hcm_stat(env, "downstream_rq_active"), hcm_stat(env, "downstream_cx_active")
            hits_held = srv.hits
            srv.release()
            t.join(timeout=30)
            assert not t.is_alive(), "the h2 client did not finish within 30 s"
            assert all_open, f"only {open_streams} of {STREAMS} streams open in Envoy while the keys were held"
            assert cx_active == 1, f"{cx_active} downstream connections active (one h2 connection expected)"
            assert hits_held == 1, f"{hits_held} JWKS fetches in flight"
            responses = results["responses"]
            errors = [r for r in responses if isinstance(r, BaseException)]
            assert not errors, f"{len(errors)} streams failed: {errors[:3]!r}"
            bad = [(i, r.status_code, r.text[:80]) for i, r in enumerate(responses) if r.status_code != 200]
            assert not bad, f"{len(bad)} of {STREAMS} not 200: {bad[:5]}"
            for i, r in enumerate(responses):
                assert r.http_version == "HTTP/2"
                seen = echoed_headers(r)
                assert seen["x-sub-probe"] == subs[i]
                assert seen["x-jwt-claim.groups"] == f"group1,g{i}", (i, seen.get("x-jwt-claim.groups"))
            h2_after, h1_after = connections(env)
            assert (h2_after - h2_before, h1_after - h1_before) == (1, 0), (h2_after, h1_after)
            assert srv.hits == 1, f"{srv.hits} JWKS fetches for one cold start"
        finally:
            env.stop()
        assert_no_vm_failure(env.log)


def test_1mib_body_reaches_upstream_only_with_a_valid_token(gateway):
    body = os.urandom(BODY_BYTES // 2).hex().encode()  # ASCII: httpbin echoes it as text
    assert len(body) == BODY_BYTES
    digest = hashlib.sha256(body).hexdigest()
    with h2_client(gateway) as c:
        r = c.post("/anything", content=body,
                   headers={**bearer(minted()), "content-type": "application/octet-stream"})
        assert r.http_version == "HTTP/2"
        assert r.status_code == 200, f"{r.status_code} {r.text[:200]}"
        echoed = r.json()
        got = echoed["data"].encode()
        assert len(got) == BODY_BYTES and hashlib.sha256(got).hexdigest() == digest, \
            f"httpbin received {len(got)} bytes, sha256 {hashlib.sha256(got).hexdigest()} (sent {digest})"
        assert {k.lower(): v for k, v in echoed["headers"].items()}["x-jwt-claim.groups"] == "group1,group2"

        # The same body with an invalid token: refused before the upstream sees any of it.
        rq0, tx0 = httpbin_stat(gateway, "upstream_rq_total"), httpbin_stat(gateway, "upstream_cx_tx_bytes_total")
        for bad in (bad_signature(), "some.invalid.token"):
            r = c.post("/anything", content=body,
                       headers={**bearer(bad), "content-type": "application/octet-stream"})
            assert_invalid_token(r, bad)
        # The stats are flushed to the admin view at once for counters, but give the
        # upstream side a moment in case a request was (wrongly) in flight.
        time.sleep(0.5)
        rq1, tx1 = httpbin_stat(gateway, "upstream_rq_total"), httpbin_stat(gateway, "upstream_cx_tx_bytes_total")
        assert rq1 == rq0, f"{rq1 - rq0} requests reached httpbin with an invalid token"
        assert tx1 == tx0, f"{tx1 - tx0} bytes sent to httpbin for requests with an invalid token"
        # The connection is still usable after the refused uploads.
        r = c.get("/headers", headers=bearer(tokens.GROUPS_SCOPE_JWT))
        assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    assert rq0 > 0, "the httpbin cluster counted no request at all: is the stat name right?"

"""The JWKS fetched over HTTPS, as from a real IdP: the filter's plain `dispatch_http_call`
goes through an Envoy cluster whose `UpstreamTlsContext` originates TLS (SNI, CA, SAN match).

A throwaway CA (tests/support/tls.py) signs a server certificate for `idp.test`; the JWKS
server serves it and records the SNI name of every handshake. The rule's `jwksUri` is
`https://idp.test:<port>/jwks.json`, `jwksCluster` the TLS cluster `jwks_tls` (127.0.0.1).

  good     trusted CA = the signing CA, sni idp.test, SAN match idp.test
           → a valid token gets 200 with its claim header; the server saw SNI idp.test and
             :authority idp.test:<port>; one fetch, counted as a success
  wrong CA trusted CA = another CA                     (Envoy: ssl.fail_verify_error)
  wrong SAN the server's certificate names other.test  (Envoy: ssl.fail_verify_san)
           → valid tokens get 401 `Jwt verification keys are unavailable`, no HTTP request
             reaches the server, the fetch is counted as failed, the filter logs the failed
             fetch with `no response` and the cluster name, no VM fails
"""
from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from support import tls, tokens
from support.checks import assert_invalid_token, assert_no_vm_failure, echoed_headers, wait_until
from support.envoy import Envoy, free_port, seed_config
from support.jwks_server import JwksServer

IDP = "idp.test"
CLUSTER = "jwks_tls"
KEYS_UNAVAILABLE = "Jwt verification keys are unavailable"
PREFIX = "jwt_claims_filter_"


def valid_token() -> str:
    """A fresh token (own `sub`: no verified-token cache serves it) with groups group1,group2."""
    return tokens.mint(tokens.claims(sub=f"user-{uuid.uuid4().hex[:12]}"))


def tls_cluster(trusted_ca: Path, sni: str = IDP, san: str = IDP):
    """rewrite= for start_envoy: the extra cluster CLUSTER originates TLS to the JWKS server,
    sending `sni`, trusting only `trusted_ca` and requiring a DNS SAN equal to `san`."""
    def rewrite(cfg: dict) -> None:
        cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == CLUSTER)
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": sni,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": str(trusted_ca)},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": san}}],
                }},
            },
        }
    return rewrite


def counters(env: Envoy) -> dict[str, float]:
    return {k[len(PREFIX):].split("{", 1)[0]: v for k, v in env.stats().items() if k.startswith(PREFIX)}


def cluster_stat(env: Envoy, name: str) -> float:
    """envoy_cluster_<name>{envoy_cluster_name="jwks_tls"} (0 when Envoy has not made it)."""
    for key, value in env.stats().items():
        base, _, labels = key.partition("{")
        if base == f"envoy_cluster_{name}" and f'envoy_cluster_name="{CLUSTER}"' in labels:
            return value
    return 0.0




@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The test CA, an unrelated CA, and two certificates from the test CA: one for idp.test
    and one for other.test."""
    d = tmp_path_factory.mktemp("pki")
    ca = tls.TestCA("jwt-claims-filter test CA", stem="test-ca").write(d)
    other_ca = tls.TestCA("unrelated test CA", stem="other-ca").write(d)
    return {"ca": ca, "other_ca": other_ca,
            "idp": ca.issue(IDP).write(d), "other_name": ca.issue("other.test").write(d)}


@pytest.fixture
def tls_setup(launch, pki):
    """tls_setup(server_cert, trusted_ca) → (JWKS server over TLS, its SSLContext, Envoy).
    Both are stopped after the test."""
    made: list[tuple[JwksServer, Envoy | None]] = []

    def _make(server_cert: tls.ServerCert, trusted_ca: tls.TestCA):
        ctx = tls.server_context(server_cert)
        srv = JwksServer(keyset="istio", ssl_context=ctx).start()
        made.append((srv, None))
        cfg = seed_config(f"https://{IDP}:{srv.port}/jwks.json",
                          rule={"jwksCluster": CLUSTER, "timeout": "2s"})
        # The seed's plain `jwks` cluster points at a port nobody listens on: a fetch that
        # went anywhere but the TLS cluster would fail.
        env = launch(cfg, jwks_port=free_port(), extra_clusters={CLUSTER: srv.port},
                     rewrite=tls_cluster(trusted_ca.cert_path))
        made[-1] = (srv, env)
        return srv, ctx, env

    yield _make
    for srv, env in made:
        if env is not None:
            env.stop()
        srv.stop()


def test_jwks_over_https_sends_sni_and_verifies_the_server(tls_setup, pki):
    srv, ctx, env = tls_setup(pki["idp"], pki["ca"])
    tok = valid_token()
    r = env.get("/headers", token=tok)
    assert r.status_code == 200, f"{r.status_code} {r.text[:200]}\n{env.log_tail(30)}"
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    assert "authorization" not in echoed_headers(r)
    # The demo token (valid, no group1) is verified with the same keys: 404, not 401.
    assert env.get("/headers", token=tokens.DEMO_JWT).status_code == 404

    assert srv.hits == 1, f"{srv.hits} JWKS fetches (one expected)"
    assert ctx.sni_names, "no TLS handshake reached the JWKS server"
    assert set(ctx.sni_names) == {IDP}, f"SNI sent by Envoy: {ctx.sni_names} (expected {IDP!r})"
    assert srv.request_headers[0].get("host") == f"{IDP}:{srv.port}", srv.request_headers[0]
    assert wait_until(lambda: counters(env).get("jwks_fetch_success") == 1, timeout=2), counters(env)
    assert counters(env).get("jwks_fetch_failure", 0) == 0, counters(env)
    assert cluster_stat(env, "ssl_handshake") >= 1, "no TLS handshake counted on the cluster"
    env.stop()
    assert_no_vm_failure(env.log)


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_san"])
def test_jwks_tls_verification_failure_is_keys_unavailable(tls_setup, pki, case):
    """Envoy refuses the server (unknown CA, or a certificate for another name): the fetch
    gets no response, valid tokens are refused 401 until a fetch succeeds, and the filter
    says which cluster failed."""
    if case == "wrong_ca":
        srv, ctx, env = tls_setup(pki["idp"], pki["other_ca"])
        reason_stat = "ssl_fail_verify_error"
    else:
        srv, ctx, env = tls_setup(pki["other_name"], pki["ca"])
        reason_stat = "ssl_fail_verify_san"

    t0 = time.monotonic()
    first = env.get("/headers", token=valid_token())
    elapsed = time.monotonic() - t0
    assert_invalid_token(first)
    assert KEYS_UNAVAILABLE in first.text, first.text
    assert elapsed < 4, f"the 401 took {elapsed:.1f}s (rule timeout 2s)"
    # Later requests (retries with backoff fail the same way) are refused alike.
    for _ in range(3):
        r = env.get("/status/200", token=valid_token())
        assert r.status_code == 401 and KEYS_UNAVAILABLE in r.text, (r.status_code, r.text)
    # Without a token the gateway still serves: only the keys are missing.
    assert env.get("/status/200").status_code == 200

    assert ctx.sni_names, "Envoy never attempted a TLS handshake with the JWKS server"
    assert srv.hits == 0, f"{srv.hits} HTTP requests reached the JWKS server over a refused TLS session"
    assert wait_until(lambda: cluster_stat(env, reason_stat) >= 1, timeout=2), \
        f"envoy_cluster_{reason_stat} did not count the refusal " \
        f"({ {k: v for k, v in env.stats().items() if 'ssl' in k and CLUSTER in k} })"
    c = counters(env)
    assert c.get("jwks_fetch_failure", 0) >= 1 and c.get("jwks_fetch_success", 0) == 0, c
    assert c.get("requests_denied_keys_unavailable", 0) >= 4, c
    assert env.alive()
    env.stop()
    log = env.log
    assert_no_vm_failure(log)
    failed = [ln for ln in log.splitlines() if "jwks" in ln and "failed" in ln]
    assert failed, "the filter logged no failed fetch:\n" + env.log_tail(30)
    named = [ln for ln in failed if "no response" in ln and re.search(rf"\b{CLUSTER}\b", ln)]
    assert named, ("no failed-fetch line names `no response` and the cluster "
                   f"{CLUSTER}:\n" + "\n".join(failed[:5]))

"""Istio's own claim-routing cases through the compiler (issue 21), a real Envoy and the built
module: tests/fixtures/istio-cases/claims compiled by scripts/istio-envoy.sh, every case for
both emits, (a) `--emit envoy` of the input and (b) `--emit istio` of it compiled again with
`--emit envoy`, which must answer the same.

The cases are those of Istio's integration test tests/integration/pilot/common/routing.go
(jwtClaimRoute) and of the task "JWT claim based routing", with Istio's answers: 200 when the
route matches, 404 when no route does, 401 for an invalid token. One route per case
(virtualservice.yaml): /c/<case>/ goes to httpbin's /anything/<case>/, so a 200 names the route
that answered, and a 404 without x-envoy-upstream-service-time comes from no route at all.

Forgery: the filter writes every condition header as `true`/`false` on every request it lets
through, after stripping any client spelling of it, so no client header can satisfy a claim
route, and the upstream never sees a condition header (raw.yaml: the recording upstream).
"""
from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
import yaml

from support import tokens
from support.istio import compile, start_compiled
from support.raw_upstream import RawUpstream

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "fixtures" / "istio-cases" / "claims"
HOST = "claims.example.com"
RAW_HOST = "raw.claims.example.com"
JWKS_AUTHORITY = "jwks.claims.example.com:80"
EMITS = ["envoy", "istio"]


# --- tokens: Istio's test tokens' claims, signed with the Istio sample key -------------------

def _token(lifetime: int = 3600, **claims) -> str:
    body = tokens.claims(groups=None, lifetime=lifetime)
    body.update(claims)
    return tokens.mint(body)


NESTED_CLAIMS = {"sub": "sub-1", "nested": {"key1": "valueA", "nested-2": {"key2": "valueC"}}}
TOKENS = {
    "none": None,
    # Istio's TokenIssuer1WithNestedClaims1: sub sub-1, nested.key1 valueA.
    "nested": _token(**NESTED_CLAIMS),
    # Istio's TokenExpired: the same claims, expired an hour ago.
    "expired": _token(lifetime=-3600, **NESTED_CLAIMS),
    # Istio's TokenIssuer1WithCollisionResistantName.
    "collision": _token(sub="sub-1", **{"test-issuer-1@istio.io/simple": "valueC",
                                        "test-issuer-1@istio.io/nested": {"key1": "valueC"}}),
    "groups": _token(groups=["group1", "group2"]),
    "group10": _token(groups=["group10"]),
    # One string holding a comma is not the list [group1, group2].
    "groups-string": _token(groups="group1,group2"),
    "dotted": _token(**{"key.1": "literal", "key": {"1": "nested"}}),
}

# (route, token, expected status). A valid token without the claim the route tests is
# "groups" on the nested routes and "nested" on the groups routes.
CASES_TABLE = [
    ("nested", "nested", 200),
    ("nested", "none", 404),
    ("nested", "expired", 401),
    ("nested", "groups", 404),
    ("single-prefix", "nested", 200),
    ("single-prefix", "none", 404),
    ("multi-regex", "nested", 200),
    ("multi-regex", "collision", 404),  # sub-1 matches, nested.key1 is absent
    ("multi", "nested", 200),
    ("without-matched", "nested", 200),
    ("without-matched", "groups", 200),  # the claim absent: it does not match, so "without" holds
    ("without-matched", "none", 200),
    ("without-unmatched", "nested", 404),
    ("without-unmatched", "groups", 200),
    ("without-unmatched", "none", 200),
    ("with-and-without-regex", "nested", 200),
    ("with-and-without-regex", "none", 404),
    ("multi-unmatched", "nested", 404),
    ("sub-unmatched", "nested", 404),
    ("u2-nested", "nested", 200),
    ("u2-nested", "none", 404),
    ("u2-nested", "expired", 401),
    ("u2-single-prefix", "nested", 200),
    ("u2-multi-regex", "nested", 200),
    ("u2-without-matched", "nested", 200),
    ("u2-without-unmatched", "nested", 404),
    ("collision-simple", "collision", 200),
    ("collision-simple", "nested", 404),
    ("collision-simple-unmatched", "collision", 404),
    ("collision-nested", "collision", 200),
    ("collision-nested", "none", 404),
    ("collision-nested-unmatched", "collision", 404),
    ("dotted-literal", "dotted", 200),
    ("dotted-nested", "dotted", 200),
    ("dotted-literal", "nested", 404),
    ("groups", "groups", 200),
    ("groups", "group10", 404),
    ("groups", "groups-string", 404),
    ("groups", "nested", 404),
    ("groups", "none", 404),
    ("groups", "expired", 401),
    ("legacy", "groups", 200),
    ("legacy", "group10", 404),
    ("legacy", "groups-string", 404),
    ("legacy", "none", 404),
]


# --- the gateway, compiled both ways ---------------------------------------------------------

@pytest.fixture(scope="module")
def recorder():
    with RawUpstream() as up:
        yield up


def _upstreams(httpbin, seed_jwks, recorder) -> dict[str, str]:
    return {"httpbin:8000": f"127.0.0.1:{httpbin.port}",
            "recorder:9000": f"127.0.0.1:{recorder.port}",
            JWKS_AUTHORITY: f"127.0.0.1:{seed_jwks.port}"}


def istio_output(tmp: Path) -> tuple[Path, str]:
    """The cases' `--emit istio` manifests, written into a folder of `tmp`, and the stderr."""
    out = compile([CASES], emit="istio")
    assert out.returncode == 0, out.stderr
    folder = tmp / "istio-out"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compiled.yaml").write_text(out.stdout)
    return folder, out.stderr


@pytest.fixture(scope="module", params=EMITS)
def gateway(request, httpbin, seed_jwks, recorder, tmp_path_factory):
    """Envoy serving the cases: (a) compiled directly, (b) through --emit istio."""
    tmp = tmp_path_factory.mktemp(f"istio-claims-{request.param}")
    inputs, first_stderr = [CASES], None
    if request.param == "istio":
        folder, first_stderr = istio_output(tmp)
        inputs = [folder]
    env = start_compiled(inputs, upstreams=_upstreams(httpbin, seed_jwks, recorder), workdir=tmp)
    env.first_stderr = env.compiled.stderr if first_stderr is None else first_stderr  # type: ignore[attr-defined]
    yield env
    env.stop()


def filter_config(env) -> dict:
    """The filter's JSON configuration in the bootstrap Envoy runs."""
    cfg = yaml.safe_load(env.compiled.stdout)
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for hf in f["typed_config"]["http_filters"]:
                    if hf["name"] == "envoy.filters.http.wasm":
                        return json.loads(hf["typed_config"]["config"]["configuration"]["value"])
    raise AssertionError("the bootstrap has no Wasm filter")


def condition_headers(env) -> list[str]:
    return [c["header"] for c in filter_config(env)["conditions"]]


def call(env, case: str, token: str | None = None, headers: dict | None = None, host: str = HOST):
    return env.get(f"/c/{case}/", token=token, headers=headers, host=host)


def assert_no_route(r) -> None:
    """404 from Envoy itself: no route matched, nothing went upstream."""
    assert r.status_code == 404, (r.status_code, r.text[:300])
    assert "x-envoy-upstream-service-time" not in r.headers, dict(r.headers)


def assert_routed(r, case: str) -> None:
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.json()["url"].endswith(f"/anything/{case}/"), r.json()["url"]


# --- Istio's cases ---------------------------------------------------------------------------

@pytest.mark.parametrize("case,token,expected", CASES_TABLE,
                         ids=[f"{c}-{t}-{s}" for c, t, s in CASES_TABLE])
def test_istio_claim_route(gateway, case, token, expected):
    r = call(gateway, case, token=TOKENS[token])
    if expected == 200:
        assert_routed(r, case)
    elif expected == 404:
        assert_no_route(r)
    else:
        assert r.status_code == expected, (r.status_code, r.text[:300])
        assert "x-envoy-upstream-service-time" not in r.headers


def test_no_token_but_a_header_named_like_the_claim(gateway):
    # Istio's "unmatched with no token but same header": a header carrying the claim's
    # name and value is just a header. (`@request.auth.claims...` itself is no header name.)
    r = call(gateway, "nested", headers={"request.auth.claims.nested.key1": "valueA"})
    assert_no_route(r)
    # `[` is no token character (RFC 9110): Envoy refuses the request outright.
    r = call(gateway, "u2-nested", headers={"request.auth.claims[nested][key1]": "valueA"})
    assert r.status_code == 400, (r.status_code, r.text[:200])


def test_the_task_spelling_warns(gateway):
    warnings = [ln for ln in gateway.first_stderr.splitlines() if ln.startswith("istio-envoy: warning:")]
    legacy = [ln for ln in warnings if "x-jwt-claim.groups" in ln]
    assert len(legacy) == 1, gateway.first_stderr
    assert "@request.auth.claims" in legacy[0]
    assert legacy[0].startswith("istio-envoy: warning: VirtualService default/claims: spec.http[")


def test_the_list_claim_and_the_task_spelling_share_one_condition(gateway):
    conditions = filter_config(gateway)["conditions"]
    groups = [c for c in conditions if c.get("claim") == ["groups"]]
    assert groups == [{"header": groups[0]["header"], "claim": ["groups"], "exact": "group1"}], conditions
    # Identical conditions share a header: no two entries differ only in their header.
    bodies = [json.dumps({k: v for k, v in c.items() if k != "header"}, sort_keys=True) for c in conditions]
    assert len(bodies) == len(set(bodies)), conditions


# --- forgery ---------------------------------------------------------------------------------

FORGED_ROUTES = ["nested", "u2-nested", "collision-simple", "groups", "legacy", "with-and-without-regex"]


@pytest.mark.parametrize("token", ["none", "group10"])
@pytest.mark.parametrize("spelling", ["lower", "upper"])
def test_forged_condition_headers_do_not_route(gateway, token, spelling):
    names = condition_headers(gateway)
    assert names, "the compile made no condition"
    forged = {(n if spelling == "lower" else n.upper()): "true" for n in names}
    for case in FORGED_ROUTES:
        assert_no_route(call(gateway, case, token=TOKENS[token], headers=forged))


def test_forged_claim_headers_do_not_route(gateway):
    forged = {"x-jwt-claim.groups": "group1", "x-jwt-claim-groups": "group1",
              "request.auth.claims.groups": "group1"}
    for token in ("none", "group10", "groups-string"):
        assert_no_route(call(gateway, "legacy", token=TOKENS[token], headers=forged))
        assert_no_route(call(gateway, "groups", token=TOKENS[token], headers=forged))


def test_underscore_spelling_is_refused(gateway):
    # headers_with_underscores_action REJECT_REQUEST: an app stack that folds `_` into `-`
    # could otherwise take x_jwt_cond_1 for the filter's header.
    name = condition_headers(gateway)[0].replace("-", "_")
    r = call(gateway, "groups", headers={name: "true"})
    assert r.status_code == 400, (r.status_code, r.text[:200])
    r = call(gateway, "groups", token=TOKENS["groups"], headers={name: "true"})
    assert r.status_code == 400, (r.status_code, r.text[:200])


def _cond_names(req) -> list[str]:
    return [n for n in req.names() if n.lower().replace("_", "-").startswith("x-jwt-cond-")]


@pytest.mark.parametrize("token,route", [("groups", "matched"), ("none", "catch-all"),
                                         ("group10", "catch-all"), ("nested", "catch-all")])
def test_condition_headers_never_reach_the_upstream(gateway, recorder, token, route):
    forged = {n: "true" for n in condition_headers(gateway)}
    for headers in ({}, forged, {k.upper(): v for k, v in forged.items()}):
        recorder.clear()
        r = gateway.get("/matched", token=TOKENS[token], headers=headers, host=RAW_HOST)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        (req,) = recorder.requests
        assert req.values("x-route") == [route], req.headers
        assert _cond_names(req) == [], req.headers


def _raw_get(env, host: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """GET with headers exactly as listed (repeats kept), which requests cannot send."""
    conn = http.client.HTTPConnection("127.0.0.1", env.listener_port, timeout=15)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_repeated_forged_condition_headers(gateway, recorder):
    names = condition_headers(gateway)
    repeated = [(n, "true") for n in names] + [(n.title(), "true") for n in names] + [(names[0], "true,true")]
    for case in FORGED_ROUTES:
        status, body = _raw_get(gateway, HOST, f"/c/{case}/", repeated)
        assert (status, body) == (404, b""), (case, status, body[:200])
    recorder.clear()
    status, _ = _raw_get(gateway, RAW_HOST, "/matched", repeated)
    assert status == 200
    (req,) = recorder.requests
    assert req.values("x-route") == ["catch-all"], req.headers
    assert _cond_names(req) == [], req.headers

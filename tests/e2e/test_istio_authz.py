"""AuthorizationPolicy at the gateway through the compiler (issue 21): the policies of
tests/fixtures/istio-cases/authz compiled by scripts/istio-envoy.sh into Envoy RBAC filters
after the Wasm filter, for both emits: (a) `--emit envoy` of the input, (b) `--emit istio` of
it (request.auth rewritten to the filter's condition headers) compiled again with
`--emit envoy`.

Istio's rules: DENY policies first (any match: 403), then ALLOW (when one exists, a request
must match one); the denial is 403 `RBAC: access denied`. What Istio reads from request.auth
(principals, claims, audiences, presenter) is a claim condition the filter evaluates, so a
client header cannot stand in for it.
"""
from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
import yaml

from support import tokens
from support.istio import compile, start_compiled

ROOT = Path(__file__).resolve().parents[2]
AUTHZ = ROOT / "tests" / "fixtures" / "istio-cases" / "authz"
HOST = "authz.example.com"
OTHER_HOST = "other.authz.example.com"
JWKS_AUTHORITY = "jwks.authz.example.com:80"
DENIED = "RBAC: access denied"
PRINCIPAL_SUB = tokens.ISTIO_ISSUER  # the task's principal: testing@secure.istio.io/testing@secure.istio.io


def _token(lifetime: int = 3600, **claims) -> str:
    body = tokens.claims(groups=None, lifetime=lifetime)
    body.update(claims)
    return tokens.mint(body)


TOKENS = {
    "none": None,
    "valid": _token(),
    "expired": _token(lifetime=-3600),
    "principal": _token(sub=PRINCIPAL_SUB),
    "group1": _token(groups=["group2", "group1"]),
    "group10": _token(groups=["group10"]),
    "groups-string": _token(groups="group1,group2"),
    "banned": _token(groups=["group1", "banned"]),
    "aud": _token(aud="api.example.com"),
    "aud-list": _token(aud=["other.example.com", "api.example.com"]),
    "aud-other": _token(aud="other.example.com"),
    "azp": _token(azp="web-client"),
    "azp-other": _token(azp="cli"),
    "other-issuer-principal": _token(sub=PRINCIPAL_SUB, iss="https://elsewhere"),
}


def _serve(scenario: str, emit: str, httpbin, seed_jwks, tmp: Path):
    inputs = [AUTHZ / "base", AUTHZ / scenario]
    if emit == "istio":
        out = compile(inputs, emit="istio")
        assert out.returncode == 0, out.stderr
        folder = tmp / "istio-out"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "compiled.yaml").write_text(out.stdout)
        inputs = [folder]
    return start_compiled(inputs, workdir=tmp, upstreams={
        "httpbin:8000": f"127.0.0.1:{httpbin.port}", JWKS_AUTHORITY: f"127.0.0.1:{seed_jwks.port}"})


@pytest.fixture(scope="module", params=["envoy", "istio"])
def task_deny(request, httpbin, seed_jwks, tmp_path_factory):
    env = _serve("task-deny", request.param, httpbin, seed_jwks,
                 tmp_path_factory.mktemp(f"authz-task-{request.param}"))
    yield env
    env.stop()


@pytest.fixture(scope="module", params=["envoy", "istio"])
def policies(request, httpbin, seed_jwks, tmp_path_factory):
    env = _serve("policies", request.param, httpbin, seed_jwks,
                 tmp_path_factory.mktemp(f"authz-policies-{request.param}"))
    yield env
    env.stop()


def rbac_filters(env) -> list[dict]:
    cfg = yaml.safe_load(env.compiled.stdout)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"]


def condition_headers(env) -> list[str]:
    (wasm,) = [f for f in rbac_filters(env) if f["name"] == "envoy.filters.http.wasm"]
    config = json.loads(wasm["typed_config"]["config"]["configuration"]["value"])
    return [c["header"] for c in config.get("conditions", [])]


def assert_allowed(r) -> None:
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.json()["url"].startswith("http"), r.text[:300]


def assert_denied(r) -> None:
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert r.text == DENIED


# --- the task's DENY policy ------------------------------------------------------------------

def test_filter_order_wasm_then_rbac_then_router(task_deny):
    names = [f["name"] for f in rbac_filters(task_deny)]
    assert names == ["envoy.filters.http.wasm", "envoy.filters.http.rbac", "envoy.filters.http.router"], names
    rbac = rbac_filters(task_deny)[1]["typed_config"]["rules"]
    assert rbac["action"] == "DENY"


def test_task_missing_jwt_is_403(task_deny):
    assert_denied(task_deny.get("/headers", host=HOST))
    assert_denied(task_deny.get("/status/200", host=OTHER_HOST))


def test_task_valid_jwt_is_200(task_deny):
    assert_allowed(task_deny.get("/headers", token=TOKENS["valid"], host=HOST))
    assert_allowed(task_deny.get("/x", token=TOKENS["group10"], host=OTHER_HOST))


def test_task_invalid_jwt_is_401_before_policy(task_deny):
    r = task_deny.get("/headers", token=TOKENS["expired"], host=HOST)
    assert r.status_code == 401, (r.status_code, r.text[:200])


@pytest.mark.parametrize("spelling", ["lower", "upper"])
def test_task_forged_condition_headers_do_not_pass(task_deny, spelling):
    names = condition_headers(task_deny)
    assert names
    forged = {(n if spelling == "lower" else n.upper()): "true" for n in names}
    assert_denied(task_deny.get("/headers", headers=forged, host=HOST))
    forged_false = {n: "false" for n in names}
    assert_denied(task_deny.get("/headers", headers=forged_false, host=HOST))


# --- ALLOW and DENY together -----------------------------------------------------------------

# (path, token, host, method, allowed)
POLICY_CASES = [
    # requestPrincipals: <iss>/<sub>, exactly
    ("/principal/a", "principal", HOST, "GET", True),
    ("/principal/a", "valid", HOST, "GET", False),
    ("/principal/a", "other-issuer-principal", HOST, "GET", False),  # not a known issuer: 401 below
    ("/principal/a", "none", HOST, "GET", False),
    # when request.auth.claims[groups] values [group1]: one element of the list
    ("/groups/a", "group1", HOST, "GET", True),
    ("/groups/a", "group10", HOST, "GET", False),
    ("/groups/a", "groups-string", HOST, "GET", False),
    ("/groups/a", "none", HOST, "GET", False),
    # notValues [banned] (with a request principal, so that a token is needed)
    ("/not-banned/a", "group1", HOST, "GET", True),
    ("/not-banned/a", "valid", HOST, "GET", True),  # no groups claim: none of its values is banned
    ("/not-banned/a", "banned", HOST, "GET", False),
    ("/not-banned/a", "none", HOST, "GET", False),
    # request.auth.audiences: the aud string, or one element of the aud list
    ("/audience/a", "aud", HOST, "GET", True),
    ("/audience/a", "aud-list", HOST, "GET", True),
    ("/audience/a", "aud-other", HOST, "GET", False),
    ("/audience/a", "none", HOST, "GET", False),
    # request.auth.presenter: azp
    ("/presenter/a", "azp", HOST, "GET", True),
    ("/presenter/a", "azp-other", HOST, "GET", False),
    # operation: paths /status/* (a prefix), methods GET, hosts authz.example.com
    ("/status/200", "none", HOST, "GET", True),
    ("/status/418", "valid", HOST, "GET", True),
    ("/status", "none", HOST, "GET", False),
    ("/status/200", "none", HOST, "POST", False),
    ("/status/200", "none", OTHER_HOST, "GET", False),
    # notPaths
    ("/open/door", "none", HOST, "GET", True),
    ("/open/secret", "none", HOST, "GET", False),
    ("/open/secrets/x", "valid", HOST, "GET", False),
    # DENY wins over ALLOW: `claims` allows /groups/* for group1, `denied` refuses /groups/denied*
    ("/groups/denied", "group1", HOST, "GET", False),
    ("/groups/denied/x", "group1", HOST, "GET", False),
    # ALLOW policies exist and none names the path: 403 for everyone
    ("/nothing", "principal", HOST, "GET", False),
    ("/nothing", "none", HOST, "GET", False),
]


@pytest.mark.parametrize("path,token,host,method,allowed", POLICY_CASES,
                         ids=[f"{m}-{h.split('.')[0]}{p}-{t}" for p, t, h, m, _ in POLICY_CASES])
def test_policy(policies, path, token, host, method, allowed):
    headers = {"Host": host}
    if TOKENS[token] is not None:
        headers["Authorization"] = f"Bearer {TOKENS[token]}"
    r = policies.session.request(method, policies.base_url + path, headers=headers, timeout=15,
                                 allow_redirects=False)
    if token == "other-issuer-principal":
        # The filter knows one issuer: a token of another is invalid, refused before RBAC.
        assert r.status_code == 401, (r.status_code, r.text[:200])
    elif allowed:
        assert_allowed(r)
    else:
        assert_denied(r)


def test_deny_filter_comes_before_allow(policies):
    names = [f["name"] for f in rbac_filters(policies)]
    assert names == ["envoy.filters.http.wasm", "envoy.filters.http.rbac", "envoy.filters.http.rbac",
                     "envoy.filters.http.router"], names
    actions = [f["typed_config"]["rules"]["action"] for f in rbac_filters(policies)[1:3]]
    assert actions == ["DENY", "ALLOW"]


@pytest.mark.parametrize("token", ["none", "group10", "valid"])
@pytest.mark.parametrize("spelling", ["lower", "upper"])
def test_forged_condition_headers_do_not_pass_a_policy(policies, token, spelling):
    names = condition_headers(policies)
    assert len(names) >= 5, names
    forged = {(n if spelling == "lower" else n.upper()): "true" for n in names}
    for path in ("/principal/a", "/groups/a", "/audience/a", "/presenter/a"):
        r = policies.get(path, token=TOKENS[token], headers=forged, host=HOST)
        assert_denied(r)
    # Forged `false` does not make the notValues rule hold for a banned token.
    r = policies.get("/not-banned/a", token=TOKENS["banned"], headers={n: "false" for n in names}, host=HOST)
    assert_denied(r)


def test_underscore_spelling_is_refused(policies):
    name = condition_headers(policies)[0].replace("-", "_")
    r = policies.get("/principal/a", headers={name: "true"}, host=HOST)
    assert r.status_code == 400, (r.status_code, r.text[:200])


@pytest.mark.parametrize("host", ["AUTHZ.example.com", "authz.example.com:80", "authz.example.com:8080"])
def test_operation_hosts_ignore_case_and_port(policies, host):
    # Istio matches hosts without case, and the gateway strips the port before anything reads
    # :authority (strip_any_host_port), so `hosts: [authz.example.com]` covers these.
    assert_allowed(policies.get("/status/200", host=host))
    assert_denied(policies.get("/status/200", host="other." + host))


@pytest.mark.parametrize("path", ["/status/../principal/a", "/status/%2e%2e/principal/a",
                                  "/open/%73ecret", "/open/./secret"])
def test_paths_are_normalized_before_the_policy(policies, path):
    # The raw request target, not what a client library would make of it: dot segments and
    # percent-encoded unreserved characters are resolved before RBAC sees the path.
    conn = http.client.HTTPConnection("127.0.0.1", policies.listener_port, timeout=15)
    try:
        conn.request("GET", path, headers={"Host": HOST})
        r = conn.getresponse()
        body = r.read().decode()
    finally:
        conn.close()
    assert (r.status, body) == (403, DENIED), (r.status, body[:200])

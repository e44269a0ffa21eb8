"""Istio's "Ingress Gateways" task, step by step, through real Envoy serving what the compiler
(scripts/istio-envoy.sh) makes of the task's own YAML, for both of its outputs:

  envoy   `--emit envoy` of the resources, served;
  istio   `--emit istio` of them (the manifests a real gateway would get), written out, then
          compiled again with `--emit envoy` and served.

The steps are the task's: the Gateway with its first VirtualService (taken from the task's
text), the claim section (deploy/istio), the browser section (deploy/istio/browser). The
task's jwksUri is https://raw.githubusercontent.com/...: it is served locally over HTTPS with a
certificate for that name from a test CA, which a DestinationRule written into the test's
folder makes Envoy trust (--upstream sends the host there).

Last, the hand-written envoy.yaml and envoy-browser.yaml are held to the compiler's answers:
the same requests, the same status codes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from support import istio, tokens
from support.checks import echoed_headers
from support.envoy import ROOT, Envoy

ENVOY_YAML = ROOT / "envoy.yaml"
BROWSER_YAML = ROOT / "envoy-browser.yaml"
EMITS = ["envoy", "istio"]
OTHER_HOST = "other.example.com"
CLAIM_WARNING = "x-jwt-claim is the task's older spelling"


# --- serving the task -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("istio-task")


@pytest.fixture(scope="module")
def jwks(task_dir):
    srv = istio.start_https_jwks(task_dir / "jwks")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def upstreams(httpbin, jwks) -> dict[str, str]:
    return {"httpbin:8000": f"127.0.0.1:{httpbin.port}", **jwks.upstream}


@pytest.fixture(scope="module")
def gateway_only() -> Path:
    """The task's first step: deploy/istio/gateway-only, its Gateway and first VirtualService
    as the task prints them (test_manifests checks the text), and the ServiceEntry that says
    where httpbin is."""
    return istio.DEPLOY / "gateway-only"


class Served:
    """An Envoy serving compiled resources and the stderr of every compile that made it."""

    def __init__(self, env: Envoy, stderr: str):
        self.env, self.stderr = env, stderr


@pytest.fixture(scope="module")
def serve(task_dir, upstreams):
    """serve(inputs, emit) → Served; every Envoy is stopped at the end of the module."""
    started: list[Envoy] = []

    def _serve(inputs: list[Path], emit: str) -> Served:
        work = task_dir / f"{emit}-{len(started)}"
        work.mkdir()
        stderr = ""
        if emit == "istio":
            result = istio.compile(inputs, emit="istio")
            assert result.returncode == 0, result.stderr
            manifests = work / "istio.yaml"
            manifests.write_text(result.stdout)
            stderr, inputs = result.stderr, [manifests]
        env = istio.start_compiled(inputs, upstreams=upstreams, workdir=work)
        started.append(env)
        return Served(env, stderr + env.compiled.stderr)

    yield _serve
    for env in started:
        env.stop()


@pytest.fixture(scope="module", params=EMITS)
def first_step(request, serve, gateway_only) -> Served:
    return serve([gateway_only], request.param)


@pytest.fixture(scope="module", params=EMITS)
def claims(request, serve, jwks) -> Served:
    return serve([istio.DEPLOY, jwks.destination_rule], request.param)


@pytest.fixture(scope="module", params=EMITS)
def browser(request, serve, jwks) -> Served:
    return serve([istio.DEPLOY / "browser", jwks.destination_rule], request.param)


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


# --- the task's first step: a Gateway and routes for /status and /delay ---------------------

def test_first_step_exposes_status_only(first_step):
    env = first_step.env
    assert env.get("/status/200").status_code == 200
    r = env.get("/headers")
    assert r.status_code == 404, r.text[:300]
    # "All other external requests will be rejected with a 404 response."
    assert env.get("/status/200", host=OTHER_HOST).status_code == 404


# --- "Configuring ingress routing based on JWT claims" --------------------------------------

def test_claim_step_warns_about_x_jwt_claim(claims):
    warnings = [ln for ln in claims.stderr.splitlines() if ln.startswith("istio-envoy: warning:")]
    assert any(CLAIM_WARNING in ln and "x-jwt-claim.groups" in ln for ln in warnings), claims.stderr


def test_claim_step_status_needs_no_token(claims):
    assert claims.env.get("/status/200").status_code == 200


def test_claim_step_headers_without_token_is_404(claims):
    assert claims.env.get("/headers").status_code == 404


def test_claim_step_invalid_token_is_401(claims):
    r = claims.env.get("/headers", token="some.invalid.token")
    assert r.status_code == 401, r.text[:300]


def test_claim_step_group1_token_is_routed(claims, jwks):
    r = claims.env.get("/headers", token=tokens.GROUPS_SCOPE_JWT)
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}\n{claims.env.log_tail(30)}"
    seen = echoed_headers(r)
    assert seen.get("x-jwt-claim.groups") == "group1,group2", seen
    # The condition header decided the route and stayed at the gateway.
    assert not [h for h in seen if h.startswith("x-jwt-cond")], seen
    # The keys came over TLS from "raw.githubusercontent.com" (the SNI Envoy sent).
    assert istio.TASK_JWKS_HOST in jwks.server.ssl_context.sni_names


def test_claim_step_token_without_group1_is_404(claims):
    assert claims.env.get("/headers", token=tokens.DEMO_JWT).status_code == 404


def test_claim_step_unknown_host_is_404(claims):
    assert claims.env.get("/headers", token=tokens.GROUPS_SCOPE_JWT, host=OTHER_HOST).status_code == 404


@pytest.mark.parametrize("forged", [
    {"x-jwt-claim.groups": "group1"},
    {"x-jwt-cond-1": "true"},
    {"X-JWT-Cond-1": "true"},
    {"x-jwt-claim.groups": "group1", "x-jwt-cond-1": "true"},
], ids=["claim-header", "condition-header", "condition-header-cased", "both"])
def test_claim_step_forged_headers_without_token_are_404(claims, forged):
    r = claims.env.get("/headers", headers=forged)
    assert r.status_code == 404, r.text[:300]


def test_claim_step_forged_headers_do_not_reach_httpbin(claims):
    """With a valid token, forged values neither change the route nor reach httpbin."""
    forged = {"x-jwt-cond-1": "false", "x-jwt-claim.groups": "admin"}
    r = claims.env.get("/headers", token=tokens.GROUPS_SCOPE_JWT, headers=forged)
    assert r.status_code == 200, r.text[:300]
    seen = echoed_headers(r)
    assert "x-jwt-cond-1" not in seen, seen
    assert seen.get("x-jwt-claim.groups") == "group1,group2", seen


# --- "Accessing ingress services using a browser" --------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "httpbin.example.com", "anything.test:8080"])
def test_browser_headers_with_any_host(browser, host):
    r = browser.env.get("/headers", host=host, headers={"X-Task-Probe": "browser"})
    assert r.status_code == 200, r.text[:300]
    seen = lower(r.json()["headers"])
    # The Host httpbin sees may have lost its port (the compiled gateway strips it).
    assert seen.get("host") in (host, host.split(":")[0]), seen
    assert seen.get("x-task-probe") == "browser", seen


def test_browser_exposes_headers_only(browser):
    assert browser.env.get("/status/200", host="127.0.0.1").status_code == 404


def test_browser_still_validates_tokens(browser):
    """The browser section is applied over the claim section: the RequestAuthentication stays."""
    env = browser.env
    assert env.get("/headers", host="127.0.0.1", token="some.invalid.token").status_code == 401
    r = env.get("/headers", host="127.0.0.1", token=tokens.GROUPS_SCOPE_JWT)
    assert r.status_code == 200
    assert echoed_headers(r).get("x-jwt-claim.groups") == "group1,group2"


# --- envoy.yaml and envoy-browser.yaml answer as the compiler's output -----------------------

# (name, path, host, token, headers)
CLAIM_TABLE = [
    ("status", "/status/200", None, None, {}),
    ("delay", "/delay/0", None, None, {}),
    ("headers-no-token", "/headers", None, None, {}),
    ("headers-invalid-token", "/headers", None, "some.invalid.token", {}),
    ("headers-group1", "/headers", None, tokens.GROUPS_SCOPE_JWT, {}),
    ("headers-no-group", "/headers", None, tokens.DEMO_JWT, {}),
    ("headers-other-host", "/headers", OTHER_HOST, tokens.GROUPS_SCOPE_JWT, {}),
    ("status-other-host", "/status/200", OTHER_HOST, None, {}),
    ("forged-claim", "/headers", None, None, {"x-jwt-claim.groups": "group1"}),
    ("forged-condition", "/headers", None, None, {"x-jwt-cond-1": "true"}),
    ("unexposed", "/get", None, tokens.GROUPS_SCOPE_JWT, {}),
    ("underscore-header", "/status/200", None, None, {"x_jwt_claim_groups": "group1"}),
]
BROWSER_TABLE = [
    ("headers-ip-host", "/headers", "127.0.0.1", None, {}),
    ("headers-named-host", "/headers", OTHER_HOST, None, {}),
    ("headers-group1", "/headers", "127.0.0.1", tokens.GROUPS_SCOPE_JWT, {}),
    ("headers-invalid-token", "/headers", "127.0.0.1", "some.invalid.token", {}),
    ("status", "/status/200", "127.0.0.1", None, {}),
    ("favicon", "/favicon.ico", "127.0.0.1", None, {}),
]


def _statuses(env: Envoy, table) -> dict[str, int]:
    out = {}
    for name, path, host, token, headers in table:
        kw = {"host": host} if host else {}
        out[name] = env.get(path, token=token, headers=headers, **kw).status_code
    return out


def _hand_written(path: Path, launch, seed_jwks) -> Envoy:
    """`path` as it is, its filter configuration too, with the harness's ports and the seed
    JWKS server's address in jwksUri (the only field that names a place)."""
    cfg = json.loads(_filter_json(path))
    for rule in cfg["jwtRules"]:
        rule["jwksUri"] = seed_jwks.jwks_uri
    return launch(cfg, jwks_port=seed_jwks.port, config_path=path)


def _filter_json(path: Path) -> str:
    cfg = yaml.safe_load(path.read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return wasm["typed_config"]["config"]["configuration"]["value"]


@pytest.mark.parametrize("emit", EMITS)
def test_envoy_yaml_answers_as_the_compiled_task(emit, serve, jwks, launch, seed_jwks):
    compiled = serve([istio.DEPLOY, jwks.destination_rule], emit).env
    hand = _hand_written(ENVOY_YAML, launch, seed_jwks)
    want, got = _statuses(compiled, CLAIM_TABLE), _statuses(hand, CLAIM_TABLE)
    assert got == want
    # The table means something: each answer of the task is in it.
    assert {want["status"], want["headers-group1"], want["headers-no-token"],
            want["headers-invalid-token"]} == {200, 404, 401}


@pytest.mark.parametrize("emit", EMITS)
def test_envoy_browser_yaml_answers_as_the_compiled_browser_section(emit, serve, jwks, launch, seed_jwks):
    compiled = serve([istio.DEPLOY / "browser", jwks.destination_rule], emit).env
    hand = _hand_written(BROWSER_YAML, launch, seed_jwks)
    want, got = _statuses(compiled, BROWSER_TABLE), _statuses(hand, BROWSER_TABLE)
    assert got == want
    assert (want["headers-ip-host"], want["status"], want["headers-invalid-token"]) == (200, 404, 401)

"""Header names the filter owns, in every spelling (issue 19): a client's `x_jwt_claim_groups`
must not reach the upstream, because WSGI, PHP, Rack and CGI fold `_` into `-` and the app
would read it as the filter's own `x-jwt-claim-groups`.

Owned: the `x-jwt-claim` family (any case, either separator) and the names a rule writes
(`outputClaimToHeaders[].header`, `outputPayloadToHeader`), with `_` and `-` alike.

Two layers, both through real Envoy and the built module, the upstream being
support/raw_upstream.py (it records header names as received; httpbin/gunicorn drops
underscore names and would hide the bug):

  (a) the shipped gateway configs (envoy.yaml, envoy-browser.yaml) set
      `headers_with_underscores_action: REJECT_REQUEST`: Envoy answers 400 to any such name
      and nothing reaches the upstream;
  (b) the same config with `ALLOW` (as a gateway that leaves Envoy's default would run): the
      filter alone must strip every spelling of its names, token or not, write its own
      headers once, and leave names it does not own (`x_custom`) alone.
"""
from __future__ import annotations

import re

import pytest
import requests
import yaml

from support import tokens
from support.envoy import ENVOY_YAML, GATEWAY_HOST, ROOT, seed_config, start_envoy
from support.raw_upstream import RawUpstream

BROWSER_YAML = ROOT / "envoy-browser.yaml"

# Spellings of owned names a client may send. The `-` ones are the controls the filter already
# strips; every other one folds onto an owned name once `_` reads as `-`.
FAMILY = ["x_jwt_claim_groups", "x_jwt_claim.groups", "X_JWT_CLAIM_SCOPE", "X_Jwt_Claim_Groups",
          "x-jwt_claim-groups", "x_jwt-claim.groups", "x-jwt-claim_groups", "x_jwt_claim_sub"]
CONFIGURED = ["x_user", "X_User", "x_jwt_payload", "X_JWT_PAYLOAD", "x-jwt_payload", "x_jwt-payload"]
DASH_CONTROLS = ["x-jwt-claim-groups", "X-JWT-CLAIM.GROUPS", "x-user", "x-jwt-payload"]
UNDERSCORED = FAMILY + CONFIGURED
OWNED_SPELLINGS = UNDERSCORED + DASH_CONTROLS
# Not owned: must pass untouched (a filter that strips every underscore name, or every name
# starting with a configured one, would be wrong).
NOT_OWNED = {"x_custom": "kept-custom", "x_user_id": "kept-user-id"}

SUB = "spelling@example.com"


class Token(str):
    """A token that pytest's tracebacks (which print call arguments) show as `<token>`."""

    def __repr__(self) -> str:
        return "<token>"


def redact(text: str) -> str:
    """`text` for an assertion message: long base64url runs (tokens, their segments) hidden."""
    return re.sub(r"[A-Za-z0-9_-]{24,}", "<redacted>", text)


def rule_config(jwks_uri: str) -> dict:
    return seed_config(jwks_uri, rule={"outputClaimToHeaders": [{"header": "x-user", "claim": "sub"}],
                                       "outputPayloadToHeader": "x-jwt-payload"})


def forged(name: str) -> str:
    """A value only a client could have written, unique per spelling."""
    return f"group1,forged-{name.lower().replace('.', 'dot')}"


def folds_to_owned(name: str) -> bool:
    """`name` read as a WSGI/CGI stack reads it (`_` → `-`, any case) is one the filter owns."""
    folded = name.lower().replace("_", "-")
    return folded.startswith("x-jwt-claim") or folded in ("x-user", "x-jwt-payload")


def _hcm(cfg: dict) -> dict:
    hcms = [f["typed_config"] for listener in cfg["static_resources"]["listeners"]
            for chain in listener["filter_chains"] for f in chain["filters"]
            if f["name"] == "envoy.filters.network.http_connection_manager"]
    assert len(hcms) == 1, "the gateway config should hold one HTTP connection manager"
    return hcms[0]


def underscores_action(cfg: dict) -> str | None:
    return _hcm(cfg).get("common_http_protocol_options", {}).get("headers_with_underscores_action")


def allow_underscores(cfg: dict) -> None:
    assert underscores_action(cfg) == "REJECT_REQUEST"
    _hcm(cfg)["common_http_protocol_options"]["headers_with_underscores_action"] = "ALLOW"


def valid_token() -> Token:
    return Token(tokens.mint(tokens.claims(groups=["group1", "group2"], sub=SUB)))


def send(env, path: str, headers: dict[str, str], token: str | None) -> requests.Response:
    """One request on a connection of its own (Envoy closes the connection after a 400)."""
    h = {"Host": GATEWAY_HOST, "Connection": "close", **headers}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return requests.get(env.base_url + path, headers=h, timeout=15, allow_redirects=False)


@pytest.fixture(scope="module")
def upstream():
    with RawUpstream() as up:
        yield up


def _start(workdir, seed_jwks, upstream, **kw):
    # The httpbin cluster points at the raw upstream: the routes stay those users run.
    return start_envoy(rule_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port,
                       httpbin_port=upstream.port, workdir=workdir, concurrency=1, **kw)


@pytest.fixture(scope="module", params=[ENVOY_YAML, BROWSER_YAML], ids=["envoy.yaml", "envoy-browser.yaml"])
def shipped(request, workdir, seed_jwks, upstream):
    env = _start(workdir, seed_jwks, upstream, config_path=request.param)
    yield env
    env.stop()


@pytest.fixture(scope="module")
def allowing(workdir, seed_jwks, upstream):
    env = _start(workdir, seed_jwks, upstream, rewrite=allow_underscores)
    yield env
    env.stop()


# --- (a) the shipped configs refuse underscore names ---------------------------------------

@pytest.mark.parametrize("path", [ENVOY_YAML, BROWSER_YAML], ids=["envoy.yaml", "envoy-browser.yaml"])
def test_shipped_configs_reject_underscore_names(path):
    assert underscores_action(yaml.safe_load(path.read_text())) == "REJECT_REQUEST"


def _rejected_count(env) -> float:
    return sum(v for k, v in env.stats().items() if "requests_rejected_with_underscores_in_headers" in k)


def _exposed_path(env) -> str:
    """A path the file routes to the upstream: envoy.yaml exposes /status, the browser
    variant (the task's browser section) only /headers."""
    return "/headers" if env.cfg_path.read_text().count("/status") == 0 else "/status/200"


def test_shipped_config_control_passes(shipped, upstream):
    before = upstream.count
    r = send(shipped, _exposed_path(shipped), {"x-custom": "dash"}, valid_token())
    assert r.status_code == 200, redact(r.text)[:300]
    assert upstream.count == before + 1
    assert upstream.requests[-1].values("x-jwt-claim.groups") == ["group1,group2"]


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
@pytest.mark.parametrize("name", UNDERSCORED + list(NOT_OWNED))
def test_shipped_config_answers_400_to_underscore_names(shipped, upstream, name, with_token):
    before, rejected = upstream.count, _rejected_count(shipped)
    r = send(shipped, "/status/200", {name: forged(name)}, valid_token() if with_token else None)
    assert r.status_code == 400, f"{name}: {r.status_code} {r.text[:200]}"
    assert upstream.count == before, f"{name}: the request reached the upstream"
    # Envoy's HTTP/1 codec refused it (not the filter, not a route).
    assert _rejected_count(shipped) == rejected + 1


# --- (b) with underscores allowed, the filter strips every spelling it owns -----------------

def _check_received(resp, upstream, sent: dict[str, str], token: str | None) -> None:
    assert resp.status_code == 200, redact(resp.text)[:300]
    got = upstream.requests[-1]
    this_request = resp.json()["headers"] == [list(h) for h in got.headers]
    assert this_request, "the upstream's last record is not the request this answer is for"
    names = got.names()
    owned = sorted(n for n in names if folds_to_owned(n))
    expected = sorted(["x-jwt-claim.groups", "x-user", "x-jwt-payload"]) if token else []
    assert owned == expected, f"owned names that reached the upstream: {owned} (expected {expected})"
    values = [v for _, v in got.headers]
    leaked = [n for n, v in sent.items() if n not in NOT_OWNED and any(forged(n) in x for x in values)]
    assert not leaked, f"forged values reached the upstream under {leaked}"
    if token:
        assert got.values("x-jwt-claim.groups") == ["group1,group2"]
        assert got.values("x-user") == [SUB]
        payload_ok = got.values("x-jwt-payload") == [token.split(".")[1]]
        assert payload_ok, "x-jwt-payload should be the token's payload segment, once"
    for n, v in NOT_OWNED.items():
        if n in sent:
            assert got.values(n) == [v], f"{n} (not owned) should pass as sent; names received: {names}"


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
@pytest.mark.parametrize("name", OWNED_SPELLINGS)
def test_owned_spelling_is_stripped(allowing, upstream, name, with_token):
    token = valid_token() if with_token else None
    sent = {name: forged(name), **NOT_OWNED}
    _check_received(send(allowing, "/status/200", sent, token), upstream, sent, token)


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
def test_every_spelling_at_once(allowing, upstream, with_token):
    token = valid_token() if with_token else None
    sent = {**{n: forged(n) for n in OWNED_SPELLINGS}, **NOT_OWNED}
    _check_received(send(allowing, "/status/200", sent, token), upstream, sent, token)


def test_claim_route_sees_only_the_filters_header(allowing, upstream):
    """The /headers route (group1 only) with a valid token: the upstream gets the filter's
    header once, with the token's value, next to forged spellings that must be gone."""
    token = valid_token()
    sent = {n: forged(n) for n in FAMILY}
    _check_received(send(allowing, "/headers", sent, token), upstream, sent, token)


def test_unowned_underscore_names_pass(allowing, upstream):
    r = send(allowing, "/status/200", dict(NOT_OWNED), valid_token())
    assert r.status_code == 200
    got = upstream.requests[-1]
    for n, v in NOT_OWNED.items():
        assert got.values(n) == [v]

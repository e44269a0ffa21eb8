"""Configuration options end to end (issue 2): forwardOriginalToken, token locations,
outputPayloadToHeader, outputClaimToHeaders, claim paths and values, requireToken,
audiences and clockSkew. One Envoy per distinct configuration, shared by its tests."""
from __future__ import annotations

import json
import re
import time

import pytest

from support.checks import assert_invalid_token, claim_headers, echoed_headers
from support import tokens
from support.envoy import free_port, seed_config
from support.jwks_server import JwksServer

# --- forwardOriginalToken, token locations, output headers -------------------------------


@pytest.fixture(scope="module")
def forward_envoy(launch, seed_jwks):
    cfg = seed_config(seed_jwks.jwks_uri, rule={
        "forwardOriginalToken": True,
        "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}, {"name": "x-token"}],
        "fromParams": ["tok"],
        "fromCookies": ["session"],
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"},
                                 {"header": "x-jwt-iss", "claim": "iss"}],
    })
    env = launch(cfg, jwks_port=seed_jwks.port)
    yield env
    env.stop()


def test_forward_original_token_keeps_authorization(forward_envoy, groups_token):
    h = echoed_headers(forward_envoy.get("/headers", token=groups_token))
    assert h["authorization"] == f"Bearer {groups_token}"
    assert h["x-jwt-claim.groups"] == "group1,group2"


def test_forward_original_token_keeps_custom_header(forward_envoy, groups_token):
    h = echoed_headers(forward_envoy.get("/headers", headers={"x-token": groups_token}))
    assert h["x-token"] == groups_token
    assert h["x-jwt-claim.groups"] == "group1,group2"


def test_from_params_custom_name(forward_envoy, groups_token):
    r = forward_envoy.get(f"/headers?tok={groups_token}")
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


def test_from_cookies(forward_envoy, groups_token):
    r = forward_envoy.get("/headers", headers={"Cookie": f"a=b; session={groups_token}"})
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


def test_access_token_param_not_a_location_when_locations_given(forward_envoy, groups_token):
    # Defaults apply only when neither fromHeaders nor fromParams is given; here the
    # access_token parameter is not a token location, so the request has no claims.
    assert forward_envoy.get(f"/headers?access_token={groups_token}").status_code == 404


def test_invalid_token_in_custom_header_is_401(forward_envoy):
    assert_invalid_token(forward_envoy.get("/status/200", headers={"x-token": "a.b.c"}), "a.b.c")


def test_output_payload_and_claim_headers(forward_envoy):
    claims = tokens.claims(groups=["group1"], sub="alice@example.com")
    tok = tokens.mint(claims)
    h = echoed_headers(forward_envoy.get("/headers", token=tok))
    payload = h["x-jwt-payload"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+=*", payload), f"not base64url: {payload!r}"
    assert json.loads(tokens.b64url_decode(payload.rstrip("="))) == claims
    assert h["x-jwt-sub"] == "alice@example.com"
    assert h["x-jwt-iss"] == tokens.ISTIO_ISSUER


FORGED_OUTPUTS = {"x-jwt-payload": "eyJmb3JnZWQiOnRydWV9", "x-jwt-sub": "admin", "X-JWT-Iss": "me"}


def test_forged_output_headers_without_token_are_removed(forward_envoy):
    h = echoed_headers(forward_envoy.get("/delay/0", headers=FORGED_OUTPUTS))
    assert not {"x-jwt-payload", "x-jwt-sub", "x-jwt-iss"} & h.keys(), h


def test_forged_output_headers_with_token_are_replaced(forward_envoy):
    claims = tokens.claims(groups=["group1"], sub="bob@example.com")
    h = echoed_headers(forward_envoy.get("/headers", token=tokens.mint(claims), headers=FORGED_OUTPUTS))
    assert h["x-jwt-sub"] == "bob@example.com"
    assert h["x-jwt-iss"] == tokens.ISTIO_ISSUER
    assert json.loads(tokens.b64url_decode(h["x-jwt-payload"].rstrip("="))) == claims


def test_output_claim_header_absent_when_claim_missing(forward_envoy):
    claims = tokens.claims(groups=["group1"], sub=None)
    h = echoed_headers(forward_envoy.get("/headers", token=tokens.mint(claims),
                                         headers={"x-jwt-sub": "forged"}))
    assert "x-jwt-sub" not in h


# --- claim paths and values ------------------------------------------------------------

CLAIM_HEADERS = [
    "x-jwt-claim.groups",
    "x-jwt-claim-groups",          # `-` separator, same claim
    "x-jwt-claim.key1.key2",       # nested
    "x-jwt-claim-key.1-key.2",     # `-` separator: keys "key.1" and "key.2"
    "x-jwt-claim.num", "x-jwt-claim.float", "x-jwt-claim.flag", "x-jwt-claim.nope",
    "x-jwt-claim.obj", "x-jwt-claim.mixed", "x-jwt-claim.missing", "x-jwt-claim.key1.missing",
    "x-jwt-claim.newline", "x-jwt-claim.ctl", "x-jwt-claim.nulled",
]


@pytest.fixture(scope="module")
def claims_envoy(launch, seed_jwks):
    env = launch(seed_config(seed_jwks.jwks_uri, claimHeaders=CLAIM_HEADERS), jwks_port=seed_jwks.port)
    yield env
    env.stop()


@pytest.fixture(scope="module")
def claims_echo(claims_envoy):
    tok = tokens.mint(tokens.claims(
        groups=["group1", "group3"], key1={"key2": "v"}, **{"key.1": {"key.2": "w"}},
        num=42, float=1.5, flag=True, nope=False, obj={"a": 1}, mixed=["a", 1],
        newline="line\nbreak", ctl="a\u0001b") | {"nulled": None})
    r = claims_envoy.get("/headers", token=tok)
    assert r.status_code == 200, r.text[:300]
    return echoed_headers(r)


def test_claim_headers_both_separators(claims_echo):
    assert claims_echo["x-jwt-claim.groups"] == "group1,group3"
    assert claims_echo["x-jwt-claim-groups"] == "group1,group3"


def test_nested_claim_dot_separator(claims_echo):
    assert claims_echo["x-jwt-claim.key1.key2"] == "v"


def test_nested_claim_dash_separator_keys_with_dots(claims_echo):
    assert claims_echo["x-jwt-claim-key.1-key.2"] == "w"


def test_number_and_boolean_claims_as_json_text(claims_echo):
    assert claims_echo["x-jwt-claim.num"] == "42"
    assert claims_echo["x-jwt-claim.float"] == "1.5"
    assert claims_echo["x-jwt-claim.flag"] == "true"
    assert claims_echo["x-jwt-claim.nope"] == "false"


@pytest.mark.parametrize("name", ["x-jwt-claim.obj", "x-jwt-claim.mixed", "x-jwt-claim.missing",
                                  "x-jwt-claim.key1.missing", "x-jwt-claim.nulled"])
def test_unrenderable_or_missing_claims_not_set(claims_echo, name):
    assert name not in claims_echo


@pytest.mark.parametrize("name", ["x-jwt-claim.newline", "x-jwt-claim.ctl"])
def test_claim_value_with_forbidden_characters_not_emitted(claims_echo, name):
    assert name not in claims_echo


def test_exactly_the_expected_claim_headers(claims_echo):
    assert claim_headers(claims_echo) == {
        "x-jwt-claim.groups": "group1,group3", "x-jwt-claim-groups": "group1,group3",
        "x-jwt-claim.key1.key2": "v", "x-jwt-claim-key.1-key.2": "w",
        "x-jwt-claim.num": "42", "x-jwt-claim.float": "1.5",
        "x-jwt-claim.flag": "true", "x-jwt-claim.nope": "false",
    }


def test_forged_nested_claim_header_replaced(claims_envoy):
    tok = tokens.mint(tokens.claims(groups=["group1"], key1={"key2": "real"}))
    h = echoed_headers(claims_envoy.get("/headers", token=tok, headers={
        "x-jwt-claim.key1.key2": "forged", "x-jwt-claim-key.1-key.2": "forged"}))
    assert h["x-jwt-claim.key1.key2"] == "real"
    assert "x-jwt-claim-key.1-key.2" not in h


# --- requireToken ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def require_envoy(launch, seed_jwks):
    env = launch(seed_config(seed_jwks.jwks_uri, requireToken=True), jwks_port=seed_jwks.port)
    yield env
    env.stop()


@pytest.mark.parametrize("path", ["/status/200", "/headers", "/nowhere"])
def test_require_token_without_token_is_401(require_envoy, path):
    r = require_envoy.get(path)
    assert r.status_code == 401, r.text[:300]
    www = r.headers.get("www-authenticate", "")
    assert re.match(r'^Bearer realm="[^"]*"', www), f"WWW-Authenticate: {www!r}"
    assert "error=" not in www, f"no token is not an invalid token: {www!r}"


def test_require_token_forged_header_is_still_401(require_envoy):
    assert require_envoy.get("/headers", headers={"x-jwt-claim.groups": "group1"}).status_code == 401


def test_require_token_with_valid_token(require_envoy, groups_token):
    assert require_envoy.get("/status/200", token=groups_token).status_code == 200
    assert echoed_headers(require_envoy.get("/headers", token=groups_token))["x-jwt-claim.groups"] == "group1,group2"


def test_require_token_with_invalid_token_is_invalid_token(require_envoy):
    assert_invalid_token(require_envoy.get("/status/200", token="x.y.z"), "x.y.z")


# --- audiences and clockSkew -------------------------------------------------------------

@pytest.fixture(scope="module")
def audience_envoy(launch, seed_jwks):
    cfg = seed_config(seed_jwks.jwks_uri, rule={"audiences": ["aud-a", "aud-b"], "clockSkew": "60s"})
    env = launch(cfg, jwks_port=seed_jwks.port)
    yield env
    env.stop()


def _aud_token(aud, **kw):
    return tokens.mint(tokens.claims(aud=aud, **kw))


@pytest.mark.parametrize("path", ["/headers", "/status/200", "/nowhere"])
def test_wrong_audience_is_403(audience_envoy, path):
    tok = _aud_token("other")
    r = audience_envoy.get(path, token=tok)
    assert r.status_code == 403, r.text[:300]
    assert tok not in r.text


def test_wrong_audience_list_is_403(audience_envoy):
    assert audience_envoy.get("/headers", token=_aud_token(["x", "y"])).status_code == 403


def test_missing_audience_is_403(audience_envoy, groups_token):
    # Envoy jwt_authn: audiences configured and the token has none → "Audiences in Jwt are
    # not allowed" (403).
    assert audience_envoy.get("/headers", token=groups_token).status_code == 403


@pytest.mark.parametrize("aud", ["aud-b", ["x", "aud-a"], "aud-a"])
def test_allowed_audience_is_200(audience_envoy, aud):
    r = audience_envoy.get("/headers", token=_aud_token(aud))
    assert r.status_code == 200, r.text[:300]
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


def test_clock_skew_tolerates_recent_expiry(audience_envoy):
    now = int(time.time())
    r = audience_envoy.get("/headers", token=_aud_token("aud-a", iat=now - 600, exp=now - 20))
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


def test_clock_skew_expired_beyond_is_401(audience_envoy):
    now = int(time.time())
    tok = _aud_token("aud-a", iat=now - 600, exp=now - 180)
    assert_invalid_token(audience_envoy.get("/status/200", token=tok), tok)


def test_clock_skew_tolerates_near_nbf(audience_envoy):
    now = int(time.time())
    r = audience_envoy.get("/headers", token=_aud_token("aud-a", nbf=now + 20))
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


def test_clock_skew_nbf_beyond_is_401(audience_envoy):
    now = int(time.time())
    tok = _aud_token("aud-a", nbf=now + 180)
    assert_invalid_token(audience_envoy.get("/status/200", token=tok), tok)


# --- jwksCluster default ---------------------------------------------------------------

OTHER_ISSUER = "other@test"


@pytest.fixture(scope="module")
def default_cluster_envoy(launch):
    """Rules without jwksCluster: the filter must use Istio's cluster name for the URI's
    host, `outbound|<port>||<host>` (port 80 when the URI has none)."""
    with JwksServer(keyset="istio") as srv:
        cfg = seed_config(f"http://jwks.internal:{srv.port}/jwks.json", rule={"jwksCluster": None})
        cfg["jwtRules"].append({"issuer": OTHER_ISSUER, "jwksUri": "http://jwks.internal/jwks.json"})
        clusters = {f"outbound|{srv.port}||jwks.internal": srv.port, "outbound|80||jwks.internal": srv.port}
        env = launch(cfg, jwks_port=free_port(), extra_clusters=clusters)
        yield env, srv
        env.stop()


def test_default_jwks_cluster_with_port(default_cluster_envoy, groups_token):
    env, srv = default_cluster_envoy
    r = env.get("/headers", token=groups_token)
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    hosts = {h.get("host", "").lower() for h in srv.request_headers}
    assert f"jwks.internal:{srv.port}" in hosts, f"Host/:authority of the JWKS fetches: {hosts}"


def test_default_jwks_cluster_port_80(default_cluster_envoy):
    env, srv = default_cluster_envoy
    r = env.get("/headers", token=tokens.mint(tokens.claims(issuer=OTHER_ISSUER)))
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
    hosts = {h.get("host", "").lower() for h in srv.request_headers}
    assert hosts & {"jwks.internal", "jwks.internal:80"}, f"Host/:authority of the JWKS fetches: {hosts}"


# --- a cached token reaching its exp --------------------------------------------------------

def test_a_cached_token_is_refused_once_it_expires(launch, seed_jwks):
    """A verified token is served from the token cache, judged on a recent clock reading while
    its exp is far; near exp the filter reads the exact time, so with clockSkew 0s the same
    token turns into a 401 within a second of its exp, through the cache."""
    env = launch(seed_config(seed_jwks.jwks_uri, rule={"clockSkew": "0s"}), jwks_port=seed_jwks.port)
    try:
        exp = int(time.time()) + 4
        tok = tokens.mint(tokens.claims(exp=exp, sub="cached-expiry@example.com"))
        for _ in range(20):  # verified once, then answered from the cache
            r = env.get("/headers", token=tok)
            assert r.status_code == 200, r.text[:300]
            assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"
        time.sleep(max(0.0, exp + 1.2 - time.time()))
        assert_invalid_token(env.get("/headers", token=tok), tok)
        # Another token of the same issuer, far from its exp, still passes.
        fresh = tokens.mint(tokens.claims(sub="far-from-expiry@example.com"))
        assert env.get("/headers", token=fresh).status_code == 200
    finally:
        env.stop()

"""The seed scenario (issue 2): the Istio Ingress Gateways task with RequestAuthentication,
on plain Envoy with the filter, in its envoy.yaml configuration."""
from __future__ import annotations

import time

import pytest

from support.checks import assert_invalid_token, claim_headers, echoed_headers
from support import tokens

INVALID = "some.invalid.token"


# --- the seed's steps ----------------------------------------------------------------

def test_status_200_without_token(seed_envoy):
    assert seed_envoy.get("/status/200").status_code == 200


def test_status_418_passes_through(seed_envoy):
    # httpbin's own status, so we know /status really reached upstream.
    assert seed_envoy.get("/status/418").status_code == 418


def test_headers_without_token_is_404(seed_envoy):
    assert seed_envoy.get("/headers").status_code == 404


def test_invalid_token_is_401_on_headers(seed_envoy):
    assert_invalid_token(seed_envoy.get("/headers", token=INVALID), INVALID)


def test_invalid_token_is_401_on_status(seed_envoy):
    # "This holds on every route, not only the claim routes."
    assert_invalid_token(seed_envoy.get("/status/200", token=INVALID), INVALID)


def test_groups_scope_jwt_reaches_headers(seed_envoy, groups_token):
    r = seed_envoy.get("/headers", token=groups_token)
    assert r.status_code == 200, r.text[:300]
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


def test_demo_jwt_is_404_on_headers(seed_envoy):
    # Valid token, but no groups claim: the /headers route does not match.
    assert seed_envoy.get("/headers", token=tokens.DEMO_JWT).status_code == 404


def test_demo_jwt_passes_on_status(seed_envoy):
    assert seed_envoy.get("/status/200", token=tokens.DEMO_JWT).status_code == 200


@pytest.mark.parametrize("path", ["/get", "/anything", "/", "/ip"])
def test_unexposed_path_is_404_even_with_valid_token(seed_envoy, groups_token, path):
    assert seed_envoy.get(path, token=groups_token).status_code == 404


def test_unknown_host_is_404(seed_envoy, groups_token):
    assert seed_envoy.get("/status/200", token=groups_token, host="other.example.com").status_code == 404


def test_access_token_query_parameter(seed_envoy, groups_token):
    r = seed_envoy.get(f"/headers?access_token={groups_token}")
    assert r.status_code == 200, r.text[:300]
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


def test_invalid_access_token_query_parameter_is_401(seed_envoy):
    assert_invalid_token(seed_envoy.get(f"/status/200?access_token={INVALID}"), INVALID)


# --- what httpbin receives -----------------------------------------------------------

def test_exact_headers_upstream_for_valid_token(seed_envoy, groups_token):
    h = echoed_headers(seed_envoy.get("/headers", token=groups_token))
    assert claim_headers(h) == {"x-jwt-claim.groups": "group1,group2"}
    assert h["host"] == "httpbin.example.com"
    # forwardOriginalToken defaults to false: the token's header is removed once validated.
    assert "authorization" not in h
    assert "x-jwt-payload" not in h


def test_no_claim_headers_upstream_without_token(seed_envoy):
    h = echoed_headers(seed_envoy.get("/delay/0"))
    assert claim_headers(h) == {}


def test_group_element_match(seed_envoy):
    """The route matches the element group1 in the comma list, not a substring."""
    ok = tokens.mint(tokens.claims(groups=["group0", "group1"]))
    r = seed_envoy.get("/headers", token=ok)
    assert r.status_code == 200
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group0,group1"
    for groups in (["group10"], ["group2"], ["xgroup1"], []):
        tok = tokens.mint(tokens.claims(groups=groups))
        assert seed_envoy.get("/headers", token=tok).status_code == 404, groups


def test_group_element_with_comma_cannot_smuggle_group1(seed_envoy):
    """An element "evil,group1" joined as is would read as the element group1; such a
    value must not be emitted, so the request cannot reach /headers."""
    tok = tokens.mint(tokens.claims(groups=["evil,group1"]))
    assert seed_envoy.get("/headers", token=tok).status_code == 404
    assert claim_headers(echoed_headers(seed_envoy.get("/delay/0", token=tok))) == {}


def test_single_string_groups_claim(seed_envoy):
    tok = tokens.mint(tokens.claims(groups=None) | {"groups": "group1"})
    r = seed_envoy.get("/headers", token=tok)
    assert r.status_code == 200
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1"


# --- forged claim headers --------------------------------------------------------------

FORGED_NAMES = ["x-jwt-claim.groups", "X-JWT-Claim.Groups", "x-jwt-claim-groups"]


@pytest.mark.parametrize("name", FORGED_NAMES)
def test_forged_header_without_token_does_not_route(seed_envoy, name):
    assert seed_envoy.get("/headers", headers={name: "group1"}).status_code == 404


@pytest.mark.parametrize("name", FORGED_NAMES)
def test_forged_header_without_token_never_reaches_upstream(seed_envoy, name):
    h = echoed_headers(seed_envoy.get("/delay/0", headers={name: "group1"}))
    assert claim_headers(h) == {}


@pytest.mark.parametrize("name", FORGED_NAMES)
def test_forged_header_with_valid_token_is_replaced(seed_envoy, groups_token, name):
    r = seed_envoy.get("/headers", token=groups_token, headers={name: "group1,forged"})
    h = echoed_headers(r)
    assert claim_headers(h) == {"x-jwt-claim.groups": "group1,group2"}


@pytest.mark.parametrize("name", FORGED_NAMES)
def test_forged_header_with_token_without_group1_does_not_route(seed_envoy, name):
    assert seed_envoy.get("/headers", token=tokens.DEMO_JWT, headers={name: "group1"}).status_code == 404
    no_group1 = tokens.mint(tokens.claims(groups=["group2"]))
    assert seed_envoy.get("/headers", token=no_group1, headers={name: "group1"}).status_code == 404


@pytest.mark.parametrize("name", FORGED_NAMES)
def test_forged_header_with_token_without_groups_never_reaches_upstream(seed_envoy, name):
    h = echoed_headers(seed_envoy.get("/delay/0", token=tokens.DEMO_JWT, headers={name: "group1"}))
    assert claim_headers(h) == {}


def test_forged_headers_all_at_once(seed_envoy, groups_token):
    forged = {"x-jwt-claim.groups": "group1", "x-jwt-claim-groups": "group1",
              "X-Jwt-Claim.Other": "x", "x-jwt-claim-sub": "admin", "x-jwt-claim": "x"}
    assert claim_headers(echoed_headers(seed_envoy.get("/delay/0", headers=forged))) == {}
    h = echoed_headers(seed_envoy.get("/headers", token=groups_token, headers=forged))
    assert claim_headers(h) == {"x-jwt-claim.groups": "group1,group2"}


def test_forged_header_with_invalid_token_is_401(seed_envoy):
    r = seed_envoy.get("/headers", token=INVALID, headers={"x-jwt-claim.groups": "group1"})
    assert_invalid_token(r, INVALID)


# --- invalid tokens ----------------------------------------------------------------------

def _reject(seed_envoy, token):
    for path in ("/headers", "/status/200"):
        assert_invalid_token(seed_envoy.get(path, token=token), token)


def test_expired_token_is_401(seed_envoy):
    now = int(time.time())
    _reject(seed_envoy, tokens.mint(tokens.claims(iat=now - 7200, exp=now - 3600)))


def test_not_yet_valid_token_is_401(seed_envoy):
    now = int(time.time())
    _reject(seed_envoy, tokens.mint(tokens.claims(nbf=now + 3600)))


def test_issuer_without_rule_is_401(seed_envoy):
    _reject(seed_envoy, tokens.mint(tokens.claims(issuer="someone-else@example.com")))


def test_token_without_issuer_is_401(seed_envoy):
    _reject(seed_envoy, tokens.mint(tokens.claims(iss=None)))


def test_alg_none_is_401(seed_envoy):
    tok = tokens.forge({"alg": "none", "typ": "JWT", "kid": tokens.ISTIO_KID}, tokens.claims())
    _reject(seed_envoy, tok)


def test_alg_none_without_signature_separator_is_401(seed_envoy):
    tok = tokens.forge({"alg": "none", "typ": "JWT"}, tokens.claims())
    _reject(seed_envoy, tok.rstrip("."))


def test_hs256_with_rsa_public_key_is_401(seed_envoy):
    """RS256→HS256 key confusion: HMAC keyed with the published RSA public key."""
    pem = tokens.key("istio").public_pem()
    tok = tokens.forge_hmac({"alg": "HS256", "typ": "JWT", "kid": tokens.ISTIO_KID}, tokens.claims(), pem)
    _reject(seed_envoy, tok)


def test_kid_not_in_key_set_is_401(seed_envoy):
    _reject(seed_envoy, tokens.mint(tokens.claims(), key="never"))


def test_known_kid_signed_by_other_key_is_401(seed_envoy):
    _reject(seed_envoy, tokens.mint(tokens.claims(), key="never", kid=tokens.ISTIO_KID))


def test_tampered_payload_is_401(seed_envoy, groups_token):
    head, _, sig = groups_token.split(".")
    claims = tokens.payload_of(groups_token) | {"groups": ["group1", "admin"]}
    forged = tokens.forge({"alg": "RS256", "kid": tokens.ISTIO_KID, "typ": "JWT"}, claims).split(".")[1]
    _reject(seed_envoy, f"{head}.{forged}.{sig}")


def test_truncated_signature_is_401(seed_envoy, groups_token):
    _reject(seed_envoy, groups_token[:-10])


@pytest.mark.parametrize("token", ["abc", "a.b", "a.b.c.d", "..", "e30.e30.", "!!!.???.***"])
def test_malformed_token_is_401(seed_envoy, token):
    _reject(seed_envoy, token)

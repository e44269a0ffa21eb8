"""Signature algorithms (issue 2): RS256/384/512, PS256/384/512, ES256, ES384, EdDSA, and
HS256/384/512 only with keys inlined in `jwks`; an alg that does not match the key is 401."""
from __future__ import annotations

import json

import pytest

from support.checks import assert_invalid_token, echoed_headers
from support import tokens
from support.envoy import seed_config
from support.jwks_server import JwksServer

INLINE_ISSUER = "inline@test"
REMOTE_ISSUER = "remote@test"
HMAC_ANY_KID = "key-hmac-any-alg"


@pytest.fixture(scope="module")
def remote_jwks():
    """A JWKS server publishing key B and an HMAC (oct) key: HS* must not be accepted
    from a fetched key set."""
    body = tokens.jwks("b", tokens.key("hmac").jwk(), tokens.key("hmac").jwk(alg=None, kid=HMAC_ANY_KID))
    with JwksServer(body=body) as srv:
        yield srv


@pytest.fixture(scope="module")
def algs_envoy(launch, remote_jwks):
    inline = tokens.jwks("ec256", "ec384", "ed25519", "hmac", "a",
                         tokens.key("hmac").jwk(alg=None, kid=HMAC_ANY_KID))
    cfg = seed_config(remote_jwks.jwks_uri)
    cfg["jwtRules"] = [
        {"issuer": INLINE_ISSUER, "jwks": json.dumps(inline)},
        {"issuer": REMOTE_ISSUER, "jwksUri": remote_jwks.jwks_uri, "jwksCluster": "jwks", "timeout": "5s"},
    ]
    env = launch(cfg, jwks_port=remote_jwks.port)
    yield env
    env.stop()


def _ok(env, token):
    r = env.get("/headers", token=token)
    assert r.status_code == 200, r.text[:300]
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1,group2"


@pytest.mark.parametrize("alg", tokens.RSA_ALGS)
def test_rsa_algorithms_with_istio_key(seed_envoy, alg):
    # The sample JWK has no "alg", so every RSA algorithm may use it.
    _ok(seed_envoy, tokens.mint(tokens.claims(), key="istio", alg=alg))


@pytest.mark.parametrize("key,alg", [("ec256", "ES256"), ("ec384", "ES384"), ("ed25519", "EdDSA"),
                                     ("hmac", "HS256"), ("a", "RS256")])
def test_inline_key_algorithms(algs_envoy, key, alg):
    _ok(algs_envoy, tokens.mint(tokens.claims(issuer=INLINE_ISSUER), key=key, alg=alg))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_inline_hmac_without_jwk_alg(algs_envoy, alg):
    _ok(algs_envoy, tokens.mint(tokens.claims(issuer=INLINE_ISSUER), key="hmac", alg=alg, kid=HMAC_ANY_KID))


def test_remote_rsa_key_accepted(algs_envoy):
    _ok(algs_envoy, tokens.mint(tokens.claims(issuer=REMOTE_ISSUER), key="b"))


@pytest.mark.parametrize("kid,alg", [("key-hmac", "HS256"), (HMAC_ANY_KID, "HS256"), (HMAC_ANY_KID, "HS512")])
def test_hmac_from_fetched_jwks_is_401(algs_envoy, kid, alg):
    tok = tokens.mint(tokens.claims(issuer=REMOTE_ISSUER), key="hmac", alg=alg, kid=kid)
    for path in ("/headers", "/status/200"):
        assert_invalid_token(algs_envoy.get(path, token=tok), tok)


@pytest.mark.parametrize("alg", ["PS256", "RS384", "RS512"])
def test_alg_not_matching_jwk_alg_is_401(algs_envoy, alg):
    # key-a is published with "alg": "RS256"; a valid signature under another RSA alg
    # with the same key material must still be refused.
    tok = tokens.mint(tokens.claims(issuer=INLINE_ISSUER), key="a", alg=alg)
    assert_invalid_token(algs_envoy.get("/headers", token=tok), tok)


def test_hs256_keyed_with_rsa_public_key_is_401(algs_envoy):
    pem = tokens.key("a").public_pem()
    tok = tokens.forge_hmac({"alg": "HS256", "typ": "JWT", "kid": "key-a"},
                            tokens.claims(issuer=INLINE_ISSUER), pem)
    assert_invalid_token(algs_envoy.get("/headers", token=tok), tok)


def test_ec_token_with_other_curve_alg_is_401(algs_envoy):
    # Header says ES384 but names the P-256 key.
    tok = tokens.mint(tokens.claims(issuer=INLINE_ISSUER), key="ec384", alg="ES384", kid="key-ec256")
    assert_invalid_token(algs_envoy.get("/headers", token=tok), tok)


def test_rsa_token_naming_ec_key_is_401(algs_envoy):
    tok = tokens.mint(tokens.claims(issuer=INLINE_ISSUER), key="a", alg="RS256", kid="key-ec256")
    assert_invalid_token(algs_envoy.get("/headers", token=tok), tok)


def test_inline_issuer_token_signed_with_unpublished_key_is_401(algs_envoy):
    tok = tokens.mint(tokens.claims(issuer=INLINE_ISSUER), key="never")
    assert_invalid_token(algs_envoy.get("/headers", token=tok), tok)

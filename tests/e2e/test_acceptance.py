"""Acceptance (issue 19): what jwt_authn and the RFCs accept, the filter accepts too, through a
real Envoy with the filter alone, httpbin behind it and a JWKS served over HTTP.

  - ES512 (P-521): a valid token gets 200 and its claim header; another P-521 key's signature,
    a forged payload and an ES512 token under a P-256 key's kid get 401
  - NumericDates in any JSON number notation (`now+3600.0`, `4.1e9`, `4.1E+9`, `now+3600.5`):
    accepted; `exp` is rounded down and `nbf` up, so a fraction never makes a token valid:
    `exp` now-60.5 / now-61.5 (beyond the 60 s skew) is expired, `nbf` now+60.5 not yet valid,
    and the controls just inside (exp now-59.5, nbf now+59.5) pass; negative, >= 2^64, strings
    and booleans are 401 `Jwt is not well formed`
  - `typ`: JWT / application/jwt in any case and `*+jwt` pass; JOSE is refused
  - a JWK without `kid` verifies tokens of its algorithm whatever their kid (with no refetch),
    and only with a real signature
  - EC JWKs without `crv` take the curve from `alg` (P-256, P-521); one with neither is skipped
  - a JWKS of 500 unusable keys and one good key: the good key works, and each fetch logs ONE
    `skipped 500 of 501 keys` warning with the counts by reason, and no key material

Tests that depend on the wall clock's second (a token at the rounding boundary is valid in one
second and not the next) start early in a second, mint, send, and retry if the second ended
before the answer came.
"""
from __future__ import annotations

import json
import random
import re
import time
from typing import Callable

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from support import tokens
from support.checks import assert_invalid_token, assert_no_vm_failure, echoed_headers
from support.envoy import seed_config
from support.jwks_server import JwksServer

GROUPS = "x-jwt-claim.groups"
ISSUER = tokens.ISTIO_ISSUER
RS256 = {"alg": "RS256", "typ": "JWT", "kid": tokens.ISTIO_KID}
SKEW = 60  # the rule's default clockSkew

# A P-521 key published nowhere, under the published key's kid.
OTHER_P521 = tokens.Key("other-p521", "key-ec521", ec.derive_private_key(7, ec.SECP521R1()), "ES512", None)


def without(jwk: dict, *members: str) -> dict:
    return {k: v for k, v in jwk.items() if k not in members}


def acceptance_jwks() -> dict:
    """The Istio key, P-521 (with crv), RSA key a without kid, and EC keys without crv (P-256
    and P-521, with alg) and with neither crv nor alg (skipped)."""
    ec256, ec521 = tokens.key("ec256"), tokens.key("ec521")
    return tokens.jwks(
        "istio", "ec256", ec521,
        without(tokens.key("a").jwk(), "kid"),
        without(ec256.jwk(kid="ec256-no-crv"), "crv"),
        without(ec521.jwk(kid="ec521-no-crv"), "crv"),
        without(ec256.jwk(alg=None, kid="ec256-bare"), "crv"),
    )


@pytest.fixture(scope="module")
def jwks():
    with JwksServer(body=acceptance_jwks()) as srv:
        yield srv


@pytest.fixture(scope="module")
def env(launch, jwks):
    e = launch(seed_config(jwks.jwks_uri), jwks_port=jwks.port)
    yield e
    e.stop()


def body(resp: requests.Response) -> str:
    return resp.text.strip()


def groups_of(resp: requests.Response) -> str | None:
    """The token's marker group, from the claim header httpbin received. envoy.yaml routes
    /headers only for `groups` holding group1, so every token here has group1 first."""
    value = echoed_headers(resp).get(GROUPS)
    assert value is not None and value.startswith("group1,"), f"{GROUPS}: {value!r}"
    return value.removeprefix("group1,")


def claims(group: str, **kw) -> dict:
    return tokens.claims(groups=["group1", group], **kw)


def signed_payload(payload_text: str, header: dict = RS256) -> str:
    """A token over exactly this payload JSON text (numbers as written), Istio key, RS256."""
    return tokens.sign_text(header, payload_text)


def payload_text(group: str, times: str) -> str:
    return f'{{"iss":"{ISSUER}","sub":"acceptance","groups":["group1","{group}"],{times}}}'


def refused(resp: requests.Response, token: str, message: str) -> None:
    assert_invalid_token(resp, token)
    assert body(resp) == message, body(resp)


def start_of_a_second() -> int:
    """Waits until the wall clock is at most 0.3 s into a second; returns that second."""
    frac = time.time() % 1
    if frac > 0.3:
        time.sleep(1.02 - frac)
    return int(time.time())


def within_one_second(check: Callable[[int], requests.Response], attempts: int = 5) -> requests.Response:
    """check(S) with S the current second, minted and answered within S; retried otherwise."""
    for _ in range(attempts):
        second = start_of_a_second()
        resp = check(second)
        if int(time.time()) == second:
            return resp
    pytest.fail(f"no answer within one wall-clock second in {attempts} attempts")


# --- ES512 -----------------------------------------------------------------------------------

def test_es512_token_gets_200_with_its_claim_header(env):
    token = tokens.mint(claims("es512-group"), key="ec521")
    assert tokens.payload_of(token)["groups"] == ["group1", "es512-group"]
    r = env.get("/headers", token=token)
    assert r.status_code == 200, body(r)
    assert groups_of(r) == "es512-group"
    assert "authorization" not in echoed_headers(r), "the token is not forwarded"
    # Again, from the token cache.
    assert groups_of(env.get("/headers", token=token)) == "es512-group"
    # Without kid: the keys of its algorithm are tried.
    r = env.get("/headers", token=tokens.mint(claims("es512-no-kid"), key="ec521", kid=None))
    assert groups_of(r) == "es512-no-kid"


def test_es512_needs_the_right_key_and_an_untouched_payload(env):
    by_other = tokens.mint(claims("es512-group"), key=OTHER_P521)
    refused(env.get("/headers", token=by_other), by_other, "Jwt verification fails")
    good = tokens.mint(claims("es512-group"), key="ec521")
    h, _, s = good.split(".")
    forged = f"{h}.{tokens.b64url(json.dumps(claims('admin')).encode())}.{s}"
    refused(env.get("/headers", token=forged), forged, "Jwt verification fails")
    # An ES512 token under the P-256 key's kid: that key serves ES256 only.
    wrong_type = tokens.mint(claims("es512-group"), key="ec521", kid="key-ec256")
    refused(env.get("/headers", token=wrong_type), wrong_type, "Jwt algorithm does not match the key")


# --- NumericDates ----------------------------------------------------------------------------

@pytest.mark.parametrize("notation", ["now+3600.0", "4.1e9", "4.1E+9", "now+3600.5", "now+3600"])
def test_exp_in_any_number_notation_is_accepted(env, notation):
    exp = notation.replace("now+3600", str(int(time.time()) + 3600))
    token = signed_payload(payload_text(f"exp-{notation}", f'"exp":{exp},"iat":{int(time.time())}.25'))
    assert f'"exp":{exp},' in tokens.b64url_decode(token.split(".")[1]).decode(), "the notation as written"
    r = env.get("/headers", token=token)
    assert r.status_code == 200, body(r)
    assert groups_of(r) == f"exp-{notation}"


@pytest.mark.parametrize("delta", ["-60.5", "-61.5", "-3600.25"])
def test_exp_beyond_the_skew_by_a_fraction_is_expired(env, delta):
    """exp + 60 s is before now, by half a second or more: expired (exp is rounded down,
    never up to a second at which the token would still pass)."""
    exp = repr(int(time.time()) + float(delta))
    assert "." in exp
    token = signed_payload(payload_text("late", f'"exp":{exp}'))
    refused(env.get("/headers", token=token), token, "Jwt is expired")


def test_exp_rounding_boundary(env):
    """exp now-59.5 is still valid within the second (rounded down to now-60, the skew's
    edge); exp now-60.5 is already expired in that same second."""
    def send(exp_delta: float) -> Callable[[int], requests.Response]:
        def check(second: int) -> requests.Response:
            token = signed_payload(payload_text("edge", f'"exp":{second + exp_delta}'))
            return env.get("/headers", token=token)
        return check

    r = within_one_second(send(-(SKEW - 0.5)))
    assert r.status_code == 200, body(r)
    assert groups_of(r) == "edge"
    r = within_one_second(send(-(SKEW + 0.5)))
    assert r.status_code == 401 and body(r) == "Jwt is expired", (r.status_code, body(r))


def test_nbf_by_a_fraction_beyond_the_skew_is_not_yet_valid(env):
    """nbf now+60.5: in this second, now + 60 s is before nbf, so not yet valid (nbf is
    rounded up; rounded down, as jwt_authn truncates it, the token would pass). nbf now+59.5
    is valid in the same second, and now+3600.5 stays not yet valid."""
    def send(nbf_delta: float, group: str) -> Callable[[int], requests.Response]:
        def check(second: int) -> requests.Response:
            token = signed_payload(payload_text(group, f'"nbf":{second + nbf_delta},"exp":{second + 7200}'))
            return env.get("/headers", token=token)
        return check

    r = within_one_second(send(SKEW + 0.5, "early"))
    assert r.status_code == 401, body(r)
    assert body(r) == "Jwt not yet valid"
    r = within_one_second(send(SKEW - 0.5, "just-in"))
    assert r.status_code == 200, body(r)
    assert groups_of(r) == "just-in"
    token = signed_payload(payload_text("far", f'"nbf":{int(time.time()) + 3600}.5'))
    refused(env.get("/headers", token=token), token, "Jwt not yet valid")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["-1", "-0.5", "1e20", "18446744073709551616", '"4100000000"', "true"])
def test_numeric_dates_that_are_not_numeric_dates_are_not_well_formed(env, claim, value):
    times = f'"{claim}":{value}' if claim == "exp" else f'"exp":{int(time.time()) + 3600},"{claim}":{value}'
    token = signed_payload(payload_text("bad-date", times))
    refused(env.get("/headers", token=token), token, "Jwt is not well formed")


# --- typ -------------------------------------------------------------------------------------

@pytest.mark.parametrize("typ", ["JWT", "jwt", "application/jwt", "APPLICATION/JWT", "at+jwt", "application/at+jwt"])
def test_jwt_types_are_accepted(env, typ):
    token = tokens.mint(claims(f"typ-{typ}"), headers={"typ": typ})
    r = env.get("/headers", token=token)
    assert r.status_code == 200, body(r)
    assert groups_of(r) == f"typ-{typ}"


@pytest.mark.parametrize("typ", ["JOSE", "application/jose+json", "+jwt"])
def test_other_types_are_refused(env, typ):
    token = tokens.mint(claims("typ"), headers={"typ": typ})
    refused(env.get("/headers", token=token), token, "Jwt is not well formed")


# --- key selection ---------------------------------------------------------------------------

def test_a_jwk_without_kid_verifies_tokens_with_any_kid(env, jwks):
    env.get("/headers", token=tokens.GROUPS_SCOPE_JWT)  # keys cached
    hits = jwks.hits
    # A kid nobody published, the Istio key's kid (that key fails, the kid-less one passes),
    # and no kid.
    for i, kid in enumerate(("a-kid-nobody-published", tokens.ISTIO_KID, None)):
        token = tokens.mint(claims(f"kidless-{i}"), key="a", kid=kid)
        r = env.get("/headers", token=token)
        assert r.status_code == 200, (kid, body(r))
        assert groups_of(r) == f"kidless-{i}"
    assert jwks.hits == hits, "a token a kid-less key verifies costs no unknown-kid refetch"
    # Still a real signature check, and only for the key's algorithm family.
    for token in (tokens.mint(claims("x"), key="never", kid="a-kid-nobody-published"),
                  tokens.mint(claims("x"), key="never", kid=None)):
        refused(env.get("/headers", token=token), token, "Jwt verification fails")


def test_ec_jwks_without_crv_take_the_curve_from_alg(env):
    for key, kid in (("ec256", "ec256-no-crv"), ("ec521", "ec521-no-crv")):
        token = tokens.mint(claims(f"no-crv-{key}"), key=key, kid=kid)
        r = env.get("/headers", token=token)
        assert r.status_code == 200, (kid, body(r))
        assert groups_of(r) == f"no-crv-{key}"
    # The same P-256 key with neither crv nor alg is skipped: its kid is unknown.
    token = tokens.mint(claims("bare"), key="ec256", kid="ec256-bare")
    refused(env.get("/headers", token=token), token, "Jwt key id is not in the key set")


# --- the skipped-keys summary ----------------------------------------------------------------

def unusable_keys(rnd: random.Random) -> tuple[list[dict], list[str]]:
    """500 JWKs the filter skips, with random key material, in blocks by reason; and every
    key value among them."""
    def b64(n: int) -> str:
        return tokens.b64url(rnd.randbytes(n))

    keys: list[dict] = []
    keys += [{"kty": "RSA", "kid": f"enc-{i}", "use": "enc", "n": b64(256), "e": "AQAB"} for i in range(200)]
    keys += [{"kty": "oct", "kid": f"oct-{i}", "k": b64(32)} for i in range(150)]
    keys += [{"kty": "EC", "kid": f"p192-{i}", "crv": "P-192", "x": b64(24), "y": b64(24)} for i in range(100)]
    keys += [{"kty": "EC", "kid": f"bare-{i}", "x": b64(32), "y": b64(32)} for i in range(30)]
    keys += [{"kty": "XYZ", "kid": f"xyz-{i}", "x": b64(32)} for i in range(20)]
    values = [v for k in keys for m, v in k.items() if m in ("n", "k", "x", "y")]
    return keys, values


EXPECTED_SUMMARY = (
    'jwks: rule 0: skipped 500 of 501 keys: 200 use is not sig, 150 symmetric key in a fetched '
    'set, 100 unsupported curve, 30 no crv or alg, 20 unsupported kty '
    '(first: keys[0] kid "enc-0": "use" is "enc", not "sig")')


def test_skipped_keys_are_one_warning_per_fetch_without_key_material(launch, groups_token):
    bad, values = unusable_keys(random.Random(19))
    good = json.loads(tokens.ISTIO_JWKS_PATH.read_text())["keys"][0]
    values.append(good["n"])
    doc = {"keys": bad + [good]}
    assert len(json.dumps(doc)) < 256 * 1024, "under the filter's JWKS body limit"
    with JwksServer(body=doc) as srv:
        env = launch(seed_config(srv.jwks_uri), jwks_port=srv.port)
        try:
            r = env.get("/headers", token=groups_token)
            assert r.status_code == 200, body(r)
            assert groups_of(r) == "group2"
            # A kid no key has: one refetch (the first one is not rate limited), then 401.
            unknown = tokens.mint(claims("x"), key="never", kid="rotated-kid")
            refused(env.get("/headers", token=unknown), unknown, "Jwt key id is not in the key set")
            assert env.get("/headers", token=groups_token).status_code == 200
            fetches = srv.hits
        finally:
            env.stop()  # Envoy flushes its log file at exit
        log = env.log
    assert fetches == 2, f"expected the first fetch and one unknown-kid refetch, got {fetches}"
    skipped = [ln for ln in log.splitlines() if "skipped" in ln]
    assert len(skipped) == fetches, "one skipped-keys line per fetch:\n" + "\n".join(skipped[:10])
    for line in skipped:
        assert "[warning]" in line, line
        assert line.endswith(EXPECTED_SUMMARY), line
        assert len(line) < 600, f"{len(line)} bytes"
    assert sum("loaded 1 keys" in ln for ln in log.splitlines()) == fetches, "the good key loads on each fetch"
    leaked = [v for v in values if v in log or v[:24] in log]
    assert not leaked, f"{len(leaked)} key values in Envoy's log, e.g. {leaked[0][:24]}..."
    for kid in ("enc-1", "oct-0", "p192-0", "bare-0", "xyz-0"):
        assert f'"{kid}"' not in log, f"a skipped key beyond the first is named in the log: {kid}"
    assert_no_vm_failure(log)

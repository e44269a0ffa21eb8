"""Differential test (issue 4): one corpus of tokens and key sets through Envoy's own
`envoy.filters.http.jwt_authn` and through this filter, each in a real Envoy built from the
repository's envoy.yaml (same listener, routes and clusters; only the auth filter differs).

Both gateways get the same three issuers:

  remote  issuer testing@secure.istio.io, audiences [diff.example.com], keys fetched from a
          JWKS server: the Istio sample RSA key (no "alg": every RS*/PS*), P-256, P-384,
          Ed25519 and a P-521 key (for ES512)
  inline  issuer inline@diff.test, no audiences, one HMAC (oct, alg HS256) key inline
  keys    issuer keys@diff.test, no audiences, an unusual key set from a second JWKS server
          (keys_issuer_jwks(): use enc, key_ops, duplicate kids, a 1024-bit RSA key, an oct key
          in a fetched set, a JWK without alg, broken and unknown keys, JWKs without kid (RSA,
          Ed25519), EC JWKs without crv (P-256, P-384, P-521; with alg, and one with neither)
          and one whose crv contradicts its alg)

Tokens come from `Authorization: Bearer <token>` only, the token is not forwarded, the clock
skew is 60 s, and a request without a token passes (jwt_authn: `requires_any` of the three
providers or `allow_missing`; the filter: requireToken false).

Every case is sent to `/status/200` on both gateways and reduced to a verdict class: allow
(2xx, or 404 from a route), 401 or 403. The classes must be equal, except for the cases in
DELIBERATE, whose pair of classes must be exactly the one listed. DELIBERATE is the test's
copy of README's "Deliberate differences from Envoy's jwt_authn"; test_deliberate_table_
matches_readme keeps the two in step. A case where the filter allows what jwt_authn denies is
never acceptable, listed or not.

Set DIFF_MATRIX=1 to print the full matrix (case, native, filter) at the end of the module.
"""
from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from support import tokens
from support.envoy import ROOT, seed_config
from support.jwks_server import JwksServer

REMOTE_ISSUER = tokens.ISTIO_ISSUER
INLINE_ISSUER = "inline@diff.test"
KEYS_ISSUER = "keys@diff.test"
AUDIENCE = "diff.example.com"
BEARER = {"name": "Authorization", "prefix": "Bearer "}
PATH = "/status/200"
CLOCK_SKEW = 60

ALLOW, DENY_401, DENY_403 = "allow", "401", "403"


# --- deliberate differences (README "Deliberate differences from Envoy's jwt_authn") -------

@dataclass(frozen=True)
class Deliberate:
    native: str
    filter: str
    why: str
    readme: str  # a phrase of the README bullet this row is an instance of


DELIBERATE: dict[str, Deliberate] = {
    "forged-signature-wrong-audience": Deliberate(
        DENY_403, DENY_401,
        "the filter checks the signature before the audience; jwt_authn checks audiences first",
        "Time, then signature, then audience"),
    "typ-JOSE": Deliberate(
        ALLOW, DENY_401, "typ other than JWT / application/jwt / *+jwt is refused; jwt_authn ignores typ",
        "A `typ` header other than `JWT`"),
    "typ-application-jose+json": Deliberate(
        ALLOW, DENY_401, "typ other than JWT / application/jwt / *+jwt is refused; jwt_authn ignores typ",
        "A `typ` header other than `JWT`"),
    "crit-header": Deliberate(
        ALLOW, DENY_401, "crit header parameters are refused; jwt_authn ignores crit",
        "`crit` header parameters are refused"),
    "over-maxTokenBytes": Deliberate(
        ALLOW, DENY_401, "a valid token longer than maxTokenBytes (8192) is refused",
        "so are tokens over `maxTokenBytes`"),
    "keys-use-enc": Deliberate(
        ALLOW, DENY_401, "a JWK with use: enc is skipped; jwt_authn uses it for signatures",
        "JWKs whose `use` is not `sig`"),
    "keys-key-ops-encrypt": Deliberate(
        ALLOW, DENY_401, "a JWK whose key_ops lack verify is skipped",
        "JWKs whose `use` is not `sig`"),
    "keys-RSA-1024": Deliberate(
        ALLOW, DENY_401, "RSA keys under 2048 bits are skipped (jwt-simple refuses them)",
        "RSA keys under 2048 bits"),
    "keys-HS256-oct-in-fetched-set": Deliberate(
        ALLOW, DENY_401, "HMAC keys are accepted only from an inline jwks, never from a fetched one",
        "HMAC (`oct`) keys only from an inline `jwks`"),
    "RS256-flip-signature-341-bit0": Deliberate(
        ALLOW, DENY_401, "a flipped padding bit makes the base64url non-canonical",
        "Base64url must be canonical"),
    "ES256-flip-signature-85-bit0": Deliberate(
        ALLOW, DENY_401, "a flipped padding bit makes the base64url non-canonical",
        "Base64url must be canonical"),
    "padded-signature": Deliberate(
        ALLOW, DENY_401, "= padding is not base64url as JWS defines it",
        "Base64url must be canonical"),
    "padded-segments-signed": Deliberate(
        ALLOW, DENY_401, "= padding is not base64url as JWS defines it",
        "Base64url must be canonical"),
    "exp-zero": Deliberate(
        ALLOW, DENY_401, "an exp of 0 is expired (1970); jwt_authn reads exp 0 as no exp",
        "An `exp` below 1 (`0`, `0.5`, `-0.0`) is expired"),
    "exp-below-one": Deliberate(
        ALLOW, DENY_401, "exp 0.5 is expired; jwt_authn truncates it to 0, which it reads as no exp",
        "An `exp` below 1 (`0`, `0.5`, `-0.0`) is expired"),
    "exp-negative-zero": Deliberate(
        ALLOW, DENY_401, "exp -0.0 is 0, expired; jwt_authn reads it as 0, no exp",
        "An `exp` below 1 (`0`, `0.5`, `-0.0`) is expired"),
    "keys-ES256-jwk-without-crv-or-alg": Deliberate(
        ALLOW, DENY_401, "an EC JWK with neither crv nor alg is skipped; jwt_authn assumes P-256",
        "An EC JWK with neither `crv` nor `alg` is skipped"),
    "nonce-number": Deliberate(
        ALLOW, DENY_401, "nonce must be a string",
        "Registered claims must have their registered types"),
    "bearer-uppercase-invalid": Deliberate(
        ALLOW, DENY_401, "the Bearer prefix matches in any case, so the (invalid) token is judged; jwt_authn matches case-sensitively and sees no token",
        "The `Bearer ` prefix matches in any case"),
    "bearer-lowercase-invalid": Deliberate(
        ALLOW, DENY_401, "the Bearer prefix matches in any case, so the (invalid) token is judged; jwt_authn matches case-sensitively and sees no token",
        "The `Bearer ` prefix matches in any case"),
}

# README bullets that cannot change a verdict class (they are about claim headers), so no
# row of DELIBERATE stands for them.
README_WITHOUT_VERDICT_EFFECT = (
    "List claims are written as `a,b`",
    "Claim headers are stripped from every request",
)


# --- keys ---------------------------------------------------------------------------------

def remote_jwks() -> dict:
    return tokens.jwks("istio", "ec256", "ec384", "ed25519", "ec521")


def inline_jwks() -> dict:
    return tokens.jwks("hmac")


@functools.lru_cache(maxsize=None)
def rsa1024() -> tokens.Key:
    return tokens.Key("rsa1024", "rsa-1024", tokens._deterministic_rsa("rsa-1024", bits=1024), "RS256", None)


@functools.lru_cache(maxsize=None)
def kidless_rsa() -> tokens.Key:
    """An RSA-2048 key published without kid in the keys issuer's set (its Key.kid is only
    the default kid of the tokens it signs)."""
    return tokens.Key("kidless-rsa", "kidless-rsa", tokens._deterministic_rsa("kidless-rsa"), "RS256", "RS256")


def keys_issuer_jwks() -> dict:
    """The third issuer's key set: what a JWKS may hold besides plain signing keys."""
    a, b, ec256, ec384, ec521, ed, hmac_ = (
        tokens.key(n) for n in ("a", "b", "ec256", "ec384", "ec521", "ed25519", "hmac"))

    def with_(jwk: dict, **members) -> dict:
        out = {**jwk, **members}
        return {k: v for k, v in out.items() if v is not None}
    return {"keys": [
        with_(a.jwk(kid="use-enc"), use="enc"),
        with_(a.jwk(kid="ops-encrypt"), use=None, key_ops=["encrypt"]),
        with_(a.jwk(kid="ops-verify"), use=None, key_ops=["verify"]),
        b.jwk(kid="dup-rsa"), a.jwk(kid="dup-rsa"),            # same kid, same type: b first
        ec256.jwk(kid="dup-mixed"), a.jwk(kid="dup-mixed"),      # same kid, EC then RSA
        ec384.jwk(alg=None, kid="ec384-no-alg"),
        rsa1024().jwk(alg=None),
        hmac_.jwk(kid="oct-remote"),                               # HMAC in a fetched set
        {"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"},
        {"kty": "XYZ", "kid": "unknown-kty"},
        b.jwk(kid="plain-b"),
        # Without kid: serves tokens of its algorithm whatever their kid.
        with_(kidless_rsa().jwk(), kid=None),
        with_(ed.jwk(), kid=None),
        # EC without crv: the curve from alg; with neither, or contradicting, skipped.
        with_(ec256.jwk(kid="ec256-no-crv"), crv=None),
        with_(ec384.jwk(kid="ec384-no-crv"), crv=None),
        with_(ec521.jwk(kid="ec521-no-crv"), crv=None),
        with_(ec256.jwk(alg=None, kid="ec256-no-crv-no-alg"), crv=None),
        with_(ec256.jwk(kid="ec256-crv-contradicts-alg"), alg="ES384"),
    ]}


# --- the two gateways -----------------------------------------------------------------------

def filter_config(jwks_uri: str, keys_jwks_uri: str) -> dict:
    rule = {"fromHeaders": [BEARER], "forwardOriginalToken": False, "clockSkew": f"{CLOCK_SKEW}s"}
    cfg = seed_config(jwks_uri)
    cfg["jwtRules"] = [
        {**cfg["jwtRules"][0], **rule, "audiences": [AUDIENCE]},
        {"issuer": INLINE_ISSUER, "jwks": json.dumps(inline_jwks()), **rule},
        {**cfg["jwtRules"][0], **rule, "issuer": KEYS_ISSUER, "jwksUri": keys_jwks_uri,
         "jwksCluster": "jwks_keys"},
    ]
    return cfg


def native_jwt_authn(jwks_uri: str, keys_jwks_uri: str) -> dict:
    """A jwt_authn filter whose providers mirror filter_config()'s rules."""
    common = {"from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
              "forward": False, "clock_skew_seconds": CLOCK_SKEW}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "remote": {"issuer": REMOTE_ISSUER, "audiences": [AUDIENCE],
                           "remote_jwks": {"http_uri": {"uri": jwks_uri, "cluster": "jwks",
                                                        "timeout": "5s"},
                                           "cache_duration": "300s"},
                           **common},
                "inline": {"issuer": INLINE_ISSUER,
                           "local_jwks": {"inline_string": json.dumps(inline_jwks())},
                           **common},
                "keys": {"issuer": KEYS_ISSUER,
                         "remote_jwks": {"http_uri": {"uri": keys_jwks_uri, "cluster": "jwks_keys",
                                                      "timeout": "5s"},
                                         "cache_duration": "300s"},
                         **common},
            },
            # No token passes (the filter's requireToken: false); a presented token must be
            # valid for one of the providers.
            "rules": [{"match": {"prefix": "/"},
                       "requires": {"requires_any": {"requirements": [
                           {"provider_name": "remote"}, {"provider_name": "inline"},
                           {"provider_name": "keys"}, {"allow_missing": {}}]}}}],
        },
    }


def swap_in_jwt_authn(jwks_uri: str, keys_jwks_uri: str):
    def rewrite(cfg: dict) -> None:
        swapped = 0
        for listener in cfg["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                for f in chain["filters"]:
                    hfs = f.get("typed_config", {}).get("http_filters", [])
                    for i, hf in enumerate(hfs):
                        if hf["name"] == "envoy.filters.http.wasm":
                            hfs[i] = native_jwt_authn(jwks_uri, keys_jwks_uri)
                            swapped += 1
        assert swapped == 1, "envoy.yaml should hold exactly one wasm filter"
    return rewrite


@pytest.fixture(scope="module")
def diff_jwks():
    with JwksServer(body=remote_jwks()) as srv:
        yield srv


@pytest.fixture(scope="module")
def keys_jwks():
    with JwksServer(body=keys_issuer_jwks()) as srv:
        yield srv


@pytest.fixture(scope="module")
def filter_gw(launch, diff_jwks, keys_jwks):
    env = launch(filter_config(diff_jwks.jwks_uri, keys_jwks.jwks_uri), jwks_port=diff_jwks.port,
                 extra_clusters={"jwks_keys": keys_jwks.port})
    yield env
    env.stop()


@pytest.fixture(scope="module")
def native_gw(launch, diff_jwks, keys_jwks):
    env = launch(filter_config(diff_jwks.jwks_uri, keys_jwks.jwks_uri), jwks_port=diff_jwks.port,
                 extra_clusters={"jwks_keys": keys_jwks.port},
                 rewrite=swap_in_jwt_authn(diff_jwks.jwks_uri, keys_jwks.jwks_uri))
    assert "envoy.filters.http.wasm" not in env.cfg_path.read_text()
    yield env
    env.stop()


# --- the corpus -----------------------------------------------------------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip(token: str, segment: int, index: int, bit: int) -> str:
    """`token` with bit `bit` of the 6-bit value of character `index` of `segment` flipped:
    the result is still base64url text, one bit of the encoded data changed (or, in a
    segment's last character, possibly only a padding bit)."""
    parts = token.split(".")
    s = parts[segment]
    c = B64URL[B64URL.index(s[index]) ^ (1 << bit)]
    parts[segment] = s[:index] + c + s[index + 1:]
    return ".".join(parts)


def enc(obj) -> str:
    return tokens.b64url(json.dumps(obj, separators=(",", ":")).encode())


@dataclass
class Case:
    name: str
    token: str | None = None                  # sent as "Authorization: Bearer <token>"
    headers: dict = field(default_factory=dict)  # or these headers as they are
    raw: list = field(default_factory=list)   # or these (name, value) pairs, repeats kept

    def request_headers(self) -> list[tuple[str, str]]:
        if self.raw:
            return list(self.raw)
        out = list(self.headers.items())
        if self.token is not None:
            out.insert(0, ("Authorization", f"Bearer {self.token}"))
        return out


def remote_claims(**kw) -> dict:
    kw.setdefault("aud", AUDIENCE)
    kw.setdefault("issuer", REMOTE_ISSUER)
    return tokens.claims(**kw)


def inline_claims(**kw) -> dict:
    return tokens.claims(issuer=INLINE_ISSUER, **kw)


def build_corpus() -> list[Case]:
    """The cases, in a fixed order, with times relative to now."""
    now = int(time.time())
    mint = tokens.mint
    rs256 = mint(remote_claims())
    es256 = mint(remote_claims(), key="ec256")
    cases: list[Case] = []

    def add(name: str, token: str | None = None, **headers: str) -> None:
        cases.append(Case(name, token, {k.replace("_", "-"): v for k, v in headers.items()}))

    # Every algorithm, valid.
    for alg in tokens.RSA_ALGS:
        add(f"{alg}-valid", mint(remote_claims(), key="istio", alg=alg))
    add("ES256-valid", es256)
    add("ES384-valid", mint(remote_claims(), key="ec384"))
    add("EdDSA-valid", mint(remote_claims(), key="ed25519"))
    es512 = mint(remote_claims(), key="ec521")
    add("ES512-valid", es512)
    add("HS256-valid", mint(inline_claims(), key="hmac"))

    # Every algorithm, signed by a key the set does not hold (under the set's kid).
    for alg in tokens.RSA_ALGS:
        add(f"{alg}-wrong-key", mint(remote_claims(), key="never", alg=alg, kid=tokens.ISTIO_KID))
    wrong_ec256 = tokens.Key("x", "key-ec256", ec.derive_private_key(7, ec.SECP256R1()), "ES256", None)
    wrong_ec384 = tokens.Key("x", "key-ec384", ec.derive_private_key(7, ec.SECP384R1()), "ES384", None)
    wrong_ec521 = tokens.Key("x", "key-ec521", ec.derive_private_key(7, ec.SECP521R1()), "ES512", None)
    add("ES256-wrong-key", mint(remote_claims(), key=wrong_ec256))
    add("ES384-wrong-key", mint(remote_claims(), key=wrong_ec384))
    add("ES512-wrong-key", mint(remote_claims(), key=wrong_ec521))
    add("ES512-no-kid", mint(remote_claims(), key="ec521", kid=None))
    add("ES512-no-kid-wrong-key", mint(remote_claims(), key=wrong_ec521, kid=None))
    add("ES512-signature-of-other-token", ".".join(
        es512.split(".")[:2] + mint(remote_claims(sub="someone-else"), key="ec521").split(".")[2:]))
    add("ES512-flip-payload", flip(es512, 1, 20, 2))
    add("ES512-flip-signature", flip(es512, 2, 60, 3))
    add("ES512-truncated-signature", es512[:-4])
    add("ES256-on-P-521-key", mint(remote_claims(), key="ec256", kid="key-ec521"))
    add("ES512-on-P-256-key", mint(remote_claims(), key="ec521", kid="key-ec256"))
    wrong_ed = tokens.Key("x", "key-ed25519", ed25519.Ed25519PrivateKey.from_private_bytes(b"\x07" * 32),
                          "EdDSA", None)
    add("EdDSA-wrong-key", mint(remote_claims(), key=wrong_ed))
    add("HS256-wrong-secret", tokens.forge_hmac({"alg": "HS256", "typ": "JWT", "kid": "key-hmac"},
                                                inline_claims(), b"not the secret" * 4))

    # Signature of another token: header and payload valid, signature valid for other input.
    other = mint(remote_claims(sub="someone-else"))
    add("RS256-signature-of-other-token", ".".join(rs256.split(".")[:2] + other.split(".")[2:]))

    # Without kid: every key of the algorithm is tried.
    add("RS256-no-kid", mint(remote_claims(), kid=None))
    add("ES256-no-kid", mint(remote_claims(), key="ec256", kid=None))
    add("HS256-no-kid", mint(inline_claims(), key="hmac", kid=None))
    add("RS256-no-kid-wrong-key", mint(remote_claims(), key="never", kid=None))

    # Key selection.
    add("unknown-kid", mint(remote_claims(), kid="no-such-kid"))
    add("unknown-kid-inline", mint(inline_claims(), key="hmac", kid="no-such-kid"))
    add("RS256-kid-of-EC-key", mint(remote_claims(), key="istio", kid="key-ec256"))
    add("ES384-header-on-P-256-key", mint(remote_claims(), key="ec384", kid="key-ec256"))
    add("HS512-on-HS256-jwk", mint(inline_claims(), key="hmac", alg="HS512"))

    # The third issuer's key set.
    kc = tokens.claims(issuer=KEYS_ISSUER)
    add("keys-plain", mint(kc, key="b", kid="plain-b"))
    add("keys-use-enc", mint(kc, key="a", kid="use-enc"))
    add("keys-key-ops-encrypt", mint(kc, key="a", kid="ops-encrypt"))
    add("keys-key-ops-verify", mint(kc, key="a", kid="ops-verify"))
    add("keys-dup-kid-first-key", mint(kc, key="b", kid="dup-rsa"))
    add("keys-dup-kid-second-key", mint(kc, key="a", kid="dup-rsa"))
    add("keys-dup-kid-mixed-ES256", mint(kc, key="ec256", kid="dup-mixed"))
    add("keys-dup-kid-mixed-RS256", mint(kc, key="a", kid="dup-mixed"))
    add("keys-ES384-jwk-without-alg", mint(kc, key="ec384", kid="ec384-no-alg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns about 1024-bit keys
        add("keys-RSA-1024", mint(kc, key=rsa1024()))
    add("keys-HS256-oct-in-fetched-set", mint(kc, key="hmac", kid="oct-remote"))
    add("keys-broken-key-named", mint(kc, key="a", kid="broken"))
    add("keys-unknown-kty-named", mint(kc, key="a", kid="unknown-kty"))
    add("keys-no-kid-signed-by-a", mint(kc, key="a", kid=None))
    add("keys-no-kid-ES256", mint(kc, key="ec256", kid=None))
    # JWKs without kid (kidless-rsa, ed25519): tried for a token of their algorithm whatever
    # its kid, after the keys under that kid.
    add("keys-kidless-RSA-jwk-token-kid", mint(kc, key=kidless_rsa(), kid="kid-nobody-has"))
    add("keys-kidless-RSA-jwk-token-kid-of-other-key", mint(kc, key=kidless_rsa(), kid="plain-b"))
    add("keys-kidless-RSA-jwk-token-without-kid", mint(kc, key=kidless_rsa(), kid=None))
    add("keys-kidless-RSA-jwk-PS256", mint(kc, key=kidless_rsa(), alg="PS256", kid="kid-nobody-has"))
    add("keys-kidless-EdDSA-jwk-token-kid", mint(kc, key="ed25519", kid="kid-nobody-has"))
    add("keys-kidless-EdDSA-jwk-token-without-kid", mint(kc, key="ed25519", kid=None))
    add("keys-kidless-jwk-wrong-key", mint(kc, key="never", kid="kid-nobody-has"))
    add("keys-kidless-jwk-forged-payload", flip(mint(kc, key=kidless_rsa(), kid="kid-nobody-has"), 1, 12, 1))
    add("keys-kidless-EdDSA-jwk-wrong-key", mint(kc, key=wrong_ed, kid="kid-nobody-has"))
    add("keys-kidless-jwk-other-alg-ES384", mint(kc, key="ec384", kid="kid-nobody-has"))
    # EC JWKs without crv.
    add("keys-ES256-jwk-without-crv", mint(kc, key="ec256", kid="ec256-no-crv"))
    add("keys-ES384-jwk-without-crv", mint(kc, key="ec384", kid="ec384-no-crv"))
    add("keys-ES512-jwk-without-crv", mint(kc, key="ec521", kid="ec521-no-crv"))
    add("keys-ES512-jwk-without-crv-wrong-key", mint(kc, key=wrong_ec521, kid="ec521-no-crv"))
    add("keys-ES256-jwk-without-crv-or-alg", mint(kc, key="ec256", kid="ec256-no-crv-no-alg"))
    add("keys-ES256-jwk-crv-contradicts-alg", mint(kc, key="ec256", kid="ec256-crv-contradicts-alg"))

    # Time.
    add("expired", mint(remote_claims(iat=now - 7200, exp=now - 3600)))
    add("expired-within-skew", mint(remote_claims(iat=now - 7200, exp=now - 20)))
    add("not-yet-valid", mint(remote_claims(nbf=now + 3600)))
    add("nbf-within-skew", mint(remote_claims(nbf=now + 20)))
    add("no-exp", mint(remote_claims(exp=None)))
    add("HS256-expired", mint(inline_claims(iat=now - 7200, exp=now - 3600), key="hmac"))

    # Issuer and audience.
    add("wrong-issuer", mint(remote_claims(issuer="evil@example.com")))
    add("no-issuer", mint(remote_claims(iss=None)))
    add("inline-issuer-signed-with-rsa", mint(inline_claims(), key="istio"))
    add("remote-issuer-signed-with-hmac", mint(remote_claims(), key="hmac"))
    add("wrong-audience", mint(remote_claims(aud="other.example.com")))
    add("audience-in-list", mint(remote_claims(aud=["other.example.com", AUDIENCE])))
    add("no-audience", mint(remote_claims(aud=None)))
    forged = mint(remote_claims(aud="other.example.com"))
    add("forged-signature-wrong-audience", flip(forged, 2, 10, 3))

    # alg confusion: HS256 keyed with the RSA public key.
    pem = tokens.key("istio").public_pem()
    jwk_bytes = json.dumps(tokens.jwks("istio")["keys"][0]).encode()
    hs_hdr = {"alg": "HS256", "typ": "JWT", "kid": tokens.ISTIO_KID}
    add("alg-confusion-HS256-rsa-pem", tokens.forge_hmac(hs_hdr, remote_claims(), pem))
    add("alg-confusion-HS256-rsa-jwk", tokens.forge_hmac(hs_hdr, remote_claims(), jwk_bytes))
    add("alg-confusion-HS256-rsa-pem-no-kid",
        tokens.forge_hmac({"alg": "HS256", "typ": "JWT"}, remote_claims(), pem))
    add("alg-confusion-HS256-rsa-pem-inline-issuer",
        tokens.forge_hmac({"alg": "HS256", "typ": "JWT"}, inline_claims(), pem))

    # alg none.
    none_hdr = {"alg": "none", "typ": "JWT"}
    add("alg-none-empty-signature", tokens.forge(none_hdr, remote_claims()))
    add("alg-none-with-signature", f"{enc(none_hdr)}.{enc(remote_claims())}.{rs256.split('.')[2]}")
    add("alg-none-two-segments", f"{enc(none_hdr)}.{enc(remote_claims())}")
    add("alg-None-capitalised", tokens.forge({"alg": "None"}, remote_claims(), b"x"))
    add("alg-missing", tokens.forge({"typ": "JWT", "kid": tokens.ISTIO_KID}, remote_claims(), b"x" * 256))

    # Truncated.
    h, p, s = rs256.split(".")
    add("truncated-1-char", rs256[:-1])
    add("truncated-4-chars", rs256[:-4])
    add("truncated-half-signature", f"{h}.{p}.{s[: len(s) // 2]}")
    add("truncated-empty-signature", f"{h}.{p}.")
    add("truncated-two-segments", f"{h}.{p}")
    add("truncated-header-only", h)
    add("truncated-mid-payload", f"{h}.{p[: len(p) // 2]}")
    add("ES256-truncated-1-char", es256[:-1])

    # Flipped bits: deterministic positions in each segment, several bits.
    for base_name, base in (("RS256", rs256), ("ES256", es256)):
        for seg, seg_name in enumerate(("header", "payload", "signature")):
            n = len(base.split(".")[seg])
            for index in sorted({0, n // 3, n // 2, (2 * n) // 3, n - 2, n - 1}):
                for bit in (0, 5):
                    add(f"{base_name}-flip-{seg_name}-{index}-bit{bit}", flip(base, seg, index, bit))

    # Encoding variants.
    add("padded-signature", rs256 + "=" * (-len(s) % 4))
    add("standard-base64-signature",
        f"{h}.{p}." + base64.b64encode(tokens.b64url_decode(s)).decode().rstrip("="))
    add("four-segments", rs256 + ".AAAA")
    # Header and payload segments padded with "=", and signed that way.
    hdr = {"alg": "RS256", "typ": "JWT", "kid": tokens.ISTIO_KID}
    add("padded-segments-signed", tokens.sign_text(hdr, remote_claims(x="1"), pad_segments=True))

    # Header and payload shapes.
    add("typ-JOSE", mint(remote_claims(), headers={"typ": "JOSE"}))
    add("typ-at+jwt", mint(remote_claims(), headers={"typ": "at+jwt"}))
    add("typ-jwt-lowercase", mint(remote_claims(), headers={"typ": "jwt"}))
    add("typ-application-jwt", mint(remote_claims(), headers={"typ": "application/jwt"}))
    add("typ-APPLICATION-JWT", mint(remote_claims(), headers={"typ": "APPLICATION/JWT"}))
    add("typ-application-at+jwt", mint(remote_claims(), headers={"typ": "application/at+jwt"}))
    add("typ-application-jose+json", mint(remote_claims(), headers={"typ": "application/jose+json"}))
    add("crit-header", mint(remote_claims(), headers={"crit": ["exp"]}))
    add("header-not-object", f"{tokens.b64url(b'[1]')}.{p}.{s}")
    add("payload-not-object", tokens.forge({"alg": "RS256", "kid": tokens.ISTIO_KID}, [1, 2], b"x"))
    add("payload-not-json", f"{h}.{tokens.b64url(b'not json')}.{s}")
    add("over-maxTokenBytes", tokens.sized(8193, lambda pad: mint(remote_claims(pad=pad))))
    add("exactly-maxTokenBytes", tokens.sized(8192, lambda pad: mint(remote_claims(pad=pad))))

    # Claim shapes in tokens the issuer signed (RS256, Istio key): JSON edge cases.
    iss, aud = json.dumps(REMOTE_ISSUER), json.dumps(AUDIENCE)

    def signed_text(payload_text: str) -> str:
        return tokens.sign_text(hdr, payload_text)

    later = now + 3600
    add("duplicate-aud-wrong-then-right", signed_text(
        f'{{"iss":{iss},"aud":"other.example.com","aud":{aud},"exp":{later}}}'))
    add("duplicate-aud-right-then-wrong", signed_text(
        f'{{"iss":{iss},"aud":{aud},"aud":"other.example.com","exp":{later}}}'))
    add("duplicate-exp-expired-then-valid", signed_text(
        f'{{"iss":{iss},"aud":{aud},"exp":{now - 3600},"exp":{later}}}'))
    add("duplicate-exp-valid-then-expired", signed_text(
        f'{{"iss":{iss},"aud":{aud},"exp":{later},"exp":{now - 3600}}}'))
    add("duplicate-iss-other-then-ours", signed_text(
        f'{{"iss":"evil@example.com","iss":{iss},"aud":{aud},"exp":{later}}}'))
    add("duplicate-alg-header-HS256-then-RS256", tokens.sign_text(
        f'{{"alg":"HS256","alg":"RS256","kid":"{tokens.ISTIO_KID}"}}', remote_claims()))
    add("duplicate-kid-header-unknown-then-ours", tokens.sign_text(
        f'{{"alg":"RS256","kid":"nope","kid":"{tokens.ISTIO_KID}"}}', remote_claims()))
    add("iss-unicode-escaped", signed_text(
        f'{{"iss":"testing\\u0040secure.istio.io","aud":{aud},"exp":{later}}}'))
    add("exp-float", mint(remote_claims(exp=later + 0.5)))
    add("iat-float", mint(remote_claims(iat=now + 0.25)))
    add("exp-float-expired", mint(remote_claims(exp=now - 3600 + 0.5)))
    add("exp-string", mint(remote_claims(exp=str(later))))
    add("nbf-string", mint(remote_claims(nbf=str(now - 10))))
    add("iat-string", mint(remote_claims(iat=str(now))))
    add("exp-negative", mint(remote_claims(exp=-1)))
    add("exp-huge", mint(remote_claims(exp=2 ** 70)))
    # NumericDates in every JSON number notation, as written (json.dumps would normalise).
    def with_times(times: str) -> str:
        return signed_text(f'{{"iss":{iss},"aud":{aud},{times}}}')

    for name, times in (
        ("exp-dot-zero", f'"exp":{later}.0'),
        ("exp-non-integer", f'"exp":{later}.5'),
        ("exp-exponent", '"exp":4.1e9'),
        ("exp-exponent-upper-plus", '"exp":4.1E+9'),
        ("exp-exponent-negative", f'"exp":{later}0e-1'),
        ("exp-exponent-expired", '"exp":1.5e9'),
        ("exp-non-integer-expired-beyond-skew", f'"exp":{now - CLOCK_SKEW - 30}.5'),
        ("exp-1e19", '"exp":1e19'),
        ("exp-1e20", '"exp":1e20'),
        ("exp-2-pow-64", '"exp":18446744073709551616'),
        ("exp-2-pow-64-as-double", '"exp":1.8446744073709552e19'),
        # 2^64 - 1 and 2^64 - 1024 are 2^64 as doubles (jwt_authn refuses them); 2^64 - 1025
        # is 2^64 - 2048.
        ("exp-u64-max", '"exp":18446744073709551615'),
        ("exp-2-pow-64-minus-1024", '"exp":18446744073709550592'),
        ("exp-2-pow-64-minus-1025", '"exp":18446744073709550591'),
        ("iat-u64-max", f'"exp":{later},"iat":18446744073709551615'),
        ("nbf-u64-max", f'"exp":{later},"nbf":18446744073709551615'),
        ("exp-1e400", '"exp":1e400'),
        ("exp-negative-fraction", '"exp":-0.5'),
        ("exp-negative-exponent", '"exp":-4.1e9'),
        ("exp-negative-zero", '"exp":-0.0'),
        ("exp-zero", '"exp":0'),
        ("exp-below-one", '"exp":0.5'),
        ("exp-one", '"exp":1'),
        ("exp-true", '"exp":true'),
        ("exp-null", '"exp":null'),
        ("exp-string-float", f'"exp":"{later}.0"'),
        ("iat-non-integer", f'"exp":{later},"iat":{now}.75'),
        ("iat-exponent", f'"exp":{later},"iat":1.7e9'),
        ("iat-negative", f'"exp":{later},"iat":-1'),
        ("iat-1e20", f'"exp":{later},"iat":1e20'),
        ("iat-true", f'"exp":{later},"iat":true'),
        ("nbf-non-integer-past", f'"exp":{later},"nbf":{now - 10}.5'),
        ("nbf-non-integer-future", f'"exp":{later},"nbf":{now + 3600}.5'),
        ("nbf-exponent-past", f'"exp":{later},"nbf":1e9'),
        ("nbf-exponent-future", f'"exp":{later},"nbf":4.1e9'),
        ("nbf-negative", f'"exp":{later},"nbf":-1'),
        ("nbf-1e20", f'"exp":{later},"nbf":1e20'),
        ("nbf-false", f'"exp":{later},"nbf":false'),
    ):
        add(name, with_times(times))
    add("aud-number", mint(remote_claims(aud=5)))
    add("aud-list-with-number", mint(remote_claims(aud=[AUDIENCE, 5])))
    add("sub-number", mint(remote_claims(sub=5)))
    add("jti-number", mint(remote_claims(jti=5)))
    add("nonce-number", mint(remote_claims(nonce=5)))
    add("kid-number", tokens.sign_text({"alg": "RS256", "kid": 5}, remote_claims()))
    # Nesting (JSON parsers have depth limits: serde_json 128, protobuf's JSON parser 100).
    def with_member(obj: dict, depth: int) -> str:  # obj plus "x": [[[...]]] as JSON text
        return json.dumps(obj)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"

    for depth in (20, 50, 99, 100, 101, 127, 129, 2000):
        add(f"nested-claim-depth-{depth}", tokens.sign_text(hdr, with_member(remote_claims(), depth)))
    for depth in (50, 99, 100, 101, 2000):
        add(f"nested-header-member-depth-{depth}", tokens.sign_text(with_member(hdr, depth), remote_claims()))

    # A key embedded in the header (jwk / jku) is never trusted.
    attacker = tokens.key("never")
    add("embedded-jwk-header", mint(remote_claims(), key=attacker, kid=None,
                                    headers={"jwk": attacker.jwk()}))
    add("jku-header", mint(remote_claims(), key=attacker, kid=None,
                           headers={"jku": "http://127.0.0.1:1/jwks.json"}))

    # Where the token sits in the header.
    add("bearer-double-space-valid", None, Authorization=f"Bearer  {rs256}")
    add("bearer-tab-valid", None, Authorization=f"Bearer\t{rs256}")
    add("bearer-uppercase-valid", None, Authorization=f"BEARER {rs256}")
    add("bearer-uppercase-invalid", None, Authorization="BEARER a.b.c")
    add("bearer-inside-word-invalid", None, Authorization="XBearer a.b.c")
    add("bearer-lowercase-valid", None, Authorization=f"bearer {rs256}")
    add("bearer-lowercase-invalid", None, Authorization="bearer a.b.c")
    add("valid-then-space-junk", None, Authorization=f"Bearer {rs256} junk")
    add("valid-then-comma-invalid", None, Authorization=f"Bearer {rs256},Bearer a.b.c")
    add("invalid-then-comma-valid", None, Authorization=f"Bearer a.b.c,Bearer {rs256}")
    add("bearer-after-other-scheme-invalid", None, Authorization="Basic dXNlcjpwYXNz Bearer a.b.c")
    add("bearer-after-other-scheme-valid", None, Authorization=f"Basic dXNlcjpwYXNz Bearer {rs256}")
    cases.append(Case("two-headers-valid-valid", raw=[("Authorization", f"Bearer {rs256}"),
                                                     ("Authorization", f"Bearer {es256}")]))
    cases.append(Case("two-headers-valid-invalid", raw=[("Authorization", f"Bearer {rs256}"),
                                                       ("Authorization", "Bearer a.b.c")]))
    cases.append(Case("two-headers-invalid-valid", raw=[("Authorization", "Bearer a.b.c"),
                                                       ("Authorization", f"Bearer {rs256}")]))

    # Garbage and no token.
    add("no-token")
    add("garbage-word", "garbage")
    add("garbage-dots", "a.b.c")
    add("garbage-three-dots", "...")
    add("garbage-non-base64", "!!!.@@@.###")
    add("basic-auth", None, Authorization="Basic dXNlcjpwYXNz")
    add("bearer-no-token", None, Authorization="Bearer ")
    return cases


# Names at collection; tokens again when the module runs (times such as "expired 20 s ago,
# within the skew" must be fresh).
CASE_NAMES = [c.name for c in build_corpus()]
assert len(set(CASE_NAMES)) == len(CASE_NAMES), "case names must be unique"


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    built = {c.name: c for c in build_corpus()}
    assert list(built) == CASE_NAMES
    return built


def verdict(status: int) -> str:
    if 200 <= status < 300 or status == 404:
        return ALLOW
    if status in (401, 403):
        return str(status)
    return f"unexpected {status}"


def send(env, case: Case) -> str:
    """GET PATH with the case's headers, repeated names kept (http.client, not requests)."""
    conn = http.client.HTTPConnection("127.0.0.1", env.listener_port, timeout=15)
    try:
        conn.putrequest("GET", PATH, skip_host=True)
        conn.putheader("Host", "httpbin.example.com")
        for name, value in case.request_headers():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return verdict(resp.status)
    finally:
        conn.close()


_MATRIX: dict[str, tuple[str, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def matrix_report():
    """DIFF_MATRIX=1 (and -s): print every case's pair of verdicts after the module."""
    yield
    if os.environ.get("DIFF_MATRIX") and _MATRIX:
        width = max(map(len, _MATRIX))
        print("\n" + "\n".join(f"{n:<{width}}  native {a:<7} filter {b}" + ("   <-- differs" if a != b else "")
                               for n, (a, b) in _MATRIX.items()))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_same_verdict_as_jwt_authn(native_gw, filter_gw, cases, name):
    case = cases[name]
    native, filt = send(native_gw, case), send(filter_gw, case)
    _MATRIX[name] = (native, filt)
    assert not (filt == ALLOW and native != ALLOW), (
        f"SECURITY: the filter allows what jwt_authn denies: {name}: native {native}, filter {filt}")
    expected = DELIBERATE.get(name)
    if expected is None:
        assert native == filt, (f"undocumented difference: {name}: native {native}, filter {filt} "
                                f"(not in DELIBERATE / README)")
    else:
        assert (native, filt) == (expected.native, expected.filter), (
            f"{name}: expected the deliberate difference native {expected.native} / filter "
            f"{expected.filter} ({expected.why}), got native {native} / filter {filt}")


def test_positive_controls():
    """The corpus is not trivially denied: every valid token of a supported algorithm passed
    both gateways (checked per case above), and the denials are not all one kind."""
    valid = [n for n in CASE_NAMES if re.fullmatch(r"(RS|PS|ES|HS)\d+-valid|EdDSA-valid", n)
             and n not in DELIBERATE]
    assert len(valid) >= 10
    got = {n: _MATRIX.get(n) for n in valid}
    if None in got.values():
        pytest.skip("run with the per-case tests")
    assert all(v == (ALLOW, ALLOW) for v in got.values()), got
    assert {v[0] for v in _MATRIX.values()} >= {ALLOW, DENY_401, DENY_403}


def test_deliberate_rows_are_corpus_cases():
    assert set(DELIBERATE) <= set(CASE_NAMES), set(DELIBERATE) - set(CASE_NAMES)
    for name, row in DELIBERATE.items():
        assert row.native != row.filter, name
        assert not (row.filter == ALLOW and row.native != ALLOW), \
            f"{name}: a deliberate difference may never make the filter looser"


def readme_deliberate_bullets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Deliberate differences from Envoy's jwt_authn\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, "README has no section 'Deliberate differences from Envoy's jwt_authn'"
    bullets, current = [], None
    for line in m.group(1).splitlines():
        if line.startswith("- "):
            current = line[2:]
            bullets.append(current)
        elif line.startswith("  ") and current is not None:
            bullets[-1] += " " + line.strip()
    return bullets


def test_deliberate_table_matches_readme():
    bullets = readme_deliberate_bullets()
    for name, row in DELIBERATE.items():
        assert any(row.readme in b for b in bullets), \
            f"DELIBERATE[{name!r}] cites {row.readme!r}, which no README bullet says"
    for b in bullets:
        covered = any(row.readme in b for row in DELIBERATE.values()) or \
            any(phrase in b for phrase in README_WITHOUT_VERDICT_EFFECT)
        assert covered, f"README bullet without a DELIBERATE row (or an entry in " \
                        f"README_WITHOUT_VERDICT_EFFECT): {b!r}"


def test_both_gateways_healthy(native_gw, filter_gw):
    for env in (native_gw, filter_gw):
        assert env.alive()
        log = env.log
        for bad in ("panicked", "Function: proxy_on_", "wasm trap", "Segmentation fault"):
            assert bad not in log, bad
        failed = {k: v for k, v in env.stats().items() if re.search(r"wasm.*(fail|crash)", k) and v > 0}
        assert failed == {}, failed

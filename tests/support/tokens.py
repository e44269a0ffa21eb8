"""Signing keys and token minting for the end-to-end tests.

Keys are deterministic (derived from fixed seeds), so the JWKS server running as a separate
script and the tests agree on key sets A and B without sharing files. The "istio" key is the
Istio sample key in tests/fixtures/istio-samples/key.pem, published by the sample jwks.json.

    from support import tokens
    tok = tokens.mint(tokens.claims(groups=["group1"]))            # istio key, RS256
    tok = tokens.mint(tokens.claims(issuer="x"), key="a", alg="PS256")
    jwks = tokens.jwks_json("A", "B")                               # JWKS text for A and B
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import random
import time
from pathlib import Path
from typing import Any, Iterable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "istio-samples"
ISTIO_ISSUER = "testing@secure.istio.io"
ISTIO_KID = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ"
ISTIO_JWKS_PATH = FIXTURES / "jwks.json"
GROUPS_SCOPE_JWT = (FIXTURES / "groups-scope.jwt").read_text().strip()
DEMO_JWT = (FIXTURES / "demo.jwt").read_text().strip()

RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64(value: int, length: int | None = None) -> str:
    length = length or (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(length, "big"))


# --- deterministic key generation -------------------------------------------------------

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p ** 0.5) + 1))]


def _is_probable_prime(n: int, rnd: random.Random, rounds: int = 40) -> bool:
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(rnd.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _deterministic_rsa(seed: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key derived from `seed`: the same key in every process, no key files needed."""
    rnd = random.Random(seed)
    e = 65537

    def prime(nbits: int) -> int:
        while True:
            # Top two bits set so that p*q has exactly `bits` bits.
            c = rnd.getrandbits(nbits) | (3 << (nbits - 2)) | 1
            if c % e != 1 and _is_probable_prime(c, rnd):
                return c

    p = prime(bits // 2)
    q = prime(bits // 2)
    while q == p:
        q = prime(bits // 2)
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=d % (p - 1), dmq1=d % (q - 1), iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


def _seed_bytes(seed: str) -> bytes:
    return hashlib.sha256(("jwt-claims-filter-tests/" + seed).encode()).digest()


def _deterministic_ec(seed: str, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    order = {"secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
             "secp384r1": int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
                              "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16)}[curve.name]
    material = _seed_bytes(seed) + _seed_bytes(seed + "/2")
    return ec.derive_private_key(int.from_bytes(material, "big") % (order - 1) + 1, curve)


class Key:
    """A signing key with its kid and the JWK that publishes its public half."""

    def __init__(self, name: str, kid: str, private: Any, default_alg: str, jwk_alg: str | None):
        self.name = name
        self.kid = kid
        self.private = private
        self.default_alg = default_alg
        self.jwk_alg = jwk_alg  # the JWK's "alg" member, or None to leave it out

    def jwk(self, alg: str | None = "default", kid: str | None = None) -> dict:
        """The public JWK. `alg` overrides the published "alg" (None: omit it)."""
        alg = self.jwk_alg if alg == "default" else alg
        k = self.private
        if isinstance(k, rsa.RSAPrivateKey):
            pub = k.public_key().public_numbers()
            out = {"kty": "RSA", "n": _int_b64(pub.n), "e": _int_b64(pub.e)}
        elif isinstance(k, ec.EllipticCurvePrivateKey):
            pub = k.public_key().public_numbers()
            size = (k.curve.key_size + 7) // 8
            crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[k.curve.name]
            out = {"kty": "EC", "crv": crv, "x": _int_b64(pub.x, size), "y": _int_b64(pub.y, size)}
        elif isinstance(k, ed25519.Ed25519PrivateKey):
            raw = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            out = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        elif isinstance(k, bytes):
            out = {"kty": "oct", "k": b64url(k)}
        else:  # pragma: no cover
            raise TypeError(type(k))
        out["kid"] = self.kid if kid is None else kid
        out["use"] = "sig"
        if alg:
            out["alg"] = alg
        return out

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@functools.lru_cache(maxsize=None)
def key(name: str) -> Key:
    """Keys by name:
    istio  the Istio sample RSA key (key.pem), kid ISTIO_KID, published without "alg";
    a, b   RSA-2048, kids key-a / key-b, published with alg RS256 (key sets A and B);
    never  RSA-2048, kid key-never, never published anywhere;
    ec256, ec384, ed25519, hmac  keys for ES256, ES384, EdDSA and HS256 (inline jwks);
    ec521  a P-521 key for ES512, kid key-ec521 (the key test_differential.py publishes)."""
    if name == "istio":
        pem = (FIXTURES / "key.pem").read_bytes()
        return Key(name, ISTIO_KID, serialization.load_pem_private_key(pem, None), "RS256", None)
    if name in ("a", "b", "never"):
        return Key(name, f"key-{name}", _deterministic_rsa("key-" + name), "RS256", "RS256")
    if name == "ec256":
        return Key(name, "key-ec256", _deterministic_ec(name, ec.SECP256R1()), "ES256", "ES256")
    if name == "ec384":
        return Key(name, "key-ec384", _deterministic_ec(name, ec.SECP384R1()), "ES384", "ES384")
    if name == "ec521":
        # 512 bits of seed: below the P-521 group order, so a valid scalar as it is.
        secret = int.from_bytes(hashlib.sha512(b"jwt-claims-filter-tests/ec521").digest(), "big")
        return Key(name, "key-ec521", ec.derive_private_key(secret, ec.SECP521R1()), "ES512", "ES512")
    if name == "ed25519":
        return Key(name, "key-ed25519",
                   ed25519.Ed25519PrivateKey.from_private_bytes(_seed_bytes(name)), "EdDSA", "EdDSA")
    if name == "hmac":
        # 64 bytes: long enough for HS512 too.
        return Key(name, "key-hmac", _seed_bytes(name) + _seed_bytes(name + "/2"), "HS256", "HS256")
    raise KeyError(name)


# --- key sets ----------------------------------------------------------------------------

KEYSETS = {"A": ("a",), "B": ("b",), "AB": ("a", "b")}


def jwks(*keys: str | Key | dict) -> dict:
    """A JWKS object. Each argument is a key name, a Key, a ready JWK dict, or one of the
    key-set names "A", "B", "AB", "istio"."""
    out: list[dict] = []
    for k in keys:
        if isinstance(k, dict):
            out.append(k)
        elif isinstance(k, Key):
            out.append(k.jwk())
        elif k in KEYSETS:
            out.extend(key(n).jwk() for n in KEYSETS[k])
        elif k == "istio":
            out.extend(json.loads(ISTIO_JWKS_PATH.read_text())["keys"])
        else:
            out.append(key(k).jwk())
    return {"keys": out}


def jwks_json(*keys: str | Key | dict) -> str:
    return json.dumps(jwks(*keys))


# --- tokens ------------------------------------------------------------------------------

def claims(issuer: str = ISTIO_ISSUER, groups: Iterable[str] | None = ("group1", "group2"),
           lifetime: int = 3600, sub: str = "tester@example.com", **extra: Any) -> dict:
    """Registered claims valid from now for `lifetime` seconds, plus `groups` and `extra`.
    A value of None in `extra` removes that claim."""
    now = int(time.time())
    out: dict[str, Any] = {"iss": issuer, "sub": sub, "iat": now, "exp": now + lifetime}
    if groups is not None:
        out["groups"] = list(groups)
    for k, v in extra.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def mint(payload: dict, key: str | Key = "istio", alg: str | None = None,
         headers: dict | None = None, kid: str | None = "default") -> str:
    """A signed JWT. `alg` defaults to the key's algorithm; `kid` defaults to the key's kid
    (None: no kid header); `headers` adds or overrides header members."""
    k = globals()["key"](key) if isinstance(key, str) else key
    alg = alg or k.default_alg
    hdr: dict[str, Any] = {}
    if kid == "default":
        hdr["kid"] = k.kid
    elif kid is not None:
        hdr["kid"] = kid
    hdr.update(headers or {})
    return jwt.encode(payload, k.private, algorithm=alg, headers=hdr)


def forge(header: dict, payload: dict, signature: bytes = b"") -> str:
    """A token assembled by hand, for what PyJWT refuses to make (alg none, wrong alg)."""
    enc = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    return f"{enc(header)}.{enc(payload)}.{b64url(signature)}"


def forge_hmac(header: dict, payload: dict, secret: bytes) -> str:
    """An HS256-signed token over `header`/`payload` with `secret` (e.g. an RSA public key
    PEM, for the RS256→HS256 key-confusion attack)."""
    enc = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    signing_input = f"{enc(header)}.{enc(payload)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(sig)}"


def payload_of(token: str) -> dict:
    return json.loads(b64url_decode(token.split(".")[1]))


def sign_text(header: dict | str, payload: Any, key: str | Key = "istio", alg: str = "RS256",
              pad_segments: bool = False) -> str:
    """A token over exactly this header and payload: dicts/lists are JSON-encoded compactly, a
    str is used verbatim as the JSON text (for duplicate keys, deep nesting, non-objects).
    `pad_segments` keeps base64 "=" padding on header and payload (signed that way)."""
    from jwt.algorithms import get_default_algorithms
    k = globals()["key"](key) if isinstance(key, str) else key

    def seg(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        out = b64url(text.encode())
        return out + "=" * (-len(out) % 4) if pad_segments else out

    algorithm = get_default_algorithms()[alg]
    signing_input = f"{seg(header)}.{seg(payload)}"
    return f"{signing_input}.{b64url(algorithm.sign(signing_input.encode(), algorithm.prepare_key(k.private)))}"


def sized(length: int, make) -> str:
    """make(pad) → a token; returns the token of exactly `length` characters, growing the
    string `pad` (which `make` puts in a claim). Raises if base64 steps skip `length`."""
    lo, hi = 0, length
    while lo < hi:  # smallest pad whose token is at least `length` long
        mid = (lo + hi) // 2
        if len(make("x" * mid)) < length:
            lo = mid + 1
        else:
            hi = mid
    for pad in (lo, lo + 1, lo + 2):
        tok = make("x" * pad)
        if len(tok) == length:
            return tok
    raise ValueError(f"no token of exactly {length} characters")

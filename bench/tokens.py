"""Key sets and tokens for scripts/bench.sh, minted once and cached under bench/.cache/.

Per algorithm there is one key set (a JWKS file the bench's JWKS server publishes), one
"repeated" token and a pool of distinct tokens, all valid for 30 days from minting:

    RS256  the Istio sample key (tests/fixtures/istio-samples/key.pem, kid DHFbpoIU...),
           published by the sample jwks.json itself: the seed's key set
    ES256  a P-256 key generated on first use (bench/.cache/keys/ES256.pem)
    EdDSA  an Ed25519 key generated on first use (bench/.cache/keys/EdDSA.pem)
    PS256  an RSA 2048 key generated on first use (bench/.cache/keys/PS256.pem): RSA-PSS, which
           the filter verifies in the VM (Envoy's `verify_signature` has no PSS padding)

Every token has the claims of the seed's groups-scope.jwt (iss testing@secure.istio.io,
groups [group1, group2], scope [scope1, scope2]) plus a distinct `jti`/`sub`, so all tokens
of one algorithm have the same size and cost the same to verify.

    python bench/tokens.py --alg RS256 --count 20000     # mint (or top up) and print paths
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
FIXTURES = ROOT / "tests" / "fixtures" / "istio-samples"
ISSUER = "testing@secure.istio.io"
ISTIO_KID = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ"
ALGS = ("RS256", "ES256", "EdDSA", "PS256")
LIFETIME = 30 * 86400   # tokens are valid this long after minting
MIN_LEFT = 2 * 86400    # re-mint when less than this is left

# Bumped when the token format changes, so that old caches are re-minted.
FORMAT = 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int, length: int) -> str:
    return _b64(value.to_bytes(length, "big"))


def _thumbprint(jwk: dict) -> str:
    """RFC 7638 JWK thumbprint, used as the kid of the generated keys."""
    members = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
    canon = {k: jwk[k] for k in members[jwk["kty"]]}
    return _b64(hashlib.sha256(json.dumps(canon, separators=(",", ":"), sort_keys=True).encode()).digest())


def _load_or_create_key(alg: str):
    if alg == "RS256":
        return serialization.load_pem_private_key((FIXTURES / "key.pem").read_bytes(), None)
    path = CACHE / "keys" / f"{alg}.pem"
    if not path.exists():
        if alg == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "PS256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        tmp.replace(path)
    return serialization.load_pem_private_key(path.read_bytes(), None)


def keyset(alg: str) -> tuple[object, str, dict]:
    """(private key, kid, JWKS dict) for `alg`."""
    key = _load_or_create_key(alg)
    if alg == "RS256":
        jwks = json.loads((FIXTURES / "jwks.json").read_text())
        return key, ISTIO_KID, jwks
    if alg == "ES256":
        pub = key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": _int_b64(pub.x, 32), "y": _int_b64(pub.y, 32)}
    elif alg == "PS256":
        pub = key.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _int_b64(pub.n, (pub.n.bit_length() + 7) // 8), "e": _int_b64(pub.e, 3)}
    else:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    kid = _thumbprint(jwk)
    jwk.update({"kid": kid, "use": "sig", "alg": alg})
    return key, kid, {"keys": [jwk]}


def _claims(n: int | str, iat: int, exp: int) -> dict:
    return {"iss": ISSUER, "sub": f"bench-{n}@example.com", "jti": f"bench-{n}",
            "groups": ["group1", "group2"], "scope": ["scope1", "scope2"], "iat": iat, "exp": exp}


# Worker state for the minting pool (the key is loaded once per process).
_W: dict = {}


def _init_worker(alg: str) -> None:
    # A forked worker inherits the bench's SIGTERM handler (procs.py), which raises inside the
    # worker's exit finalizers when the pool terminates it: the worker then never exits and
    # the pool's terminate() waits for it forever. Workers just die.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    key, kid, _ = keyset(alg)
    _W.update(alg=alg, key=key, kid=kid)


def _mint_range(args: tuple[int, int, int, int]) -> list[str]:
    start, stop, iat, exp = args
    return [jwt.encode(_claims(i, iat, exp), _W["key"], algorithm=_W["alg"], headers={"kid": _W["kid"]})
            for i in range(start, stop)]


class Tokens:
    """The cached material of one algorithm."""

    def __init__(self, alg: str):
        self.alg = alg
        self.dir = CACHE / alg
        self.jwks_path = self.dir / "jwks.json"
        self.pool_path = self.dir / "distinct.txt"
        self.meta_path = self.dir / "meta.json"

    def _meta(self) -> dict | None:
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return None

    def ensure(self, count: int, log=print) -> "Tokens":
        """Makes sure there are at least `count` distinct tokens with enough life left."""
        key, kid, jwks = keyset(self.alg)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jwks_path.write_text(json.dumps(jwks))
        meta = self._meta()
        now = int(time.time())
        fresh = (meta is not None and meta.get("format") == FORMAT and meta.get("kid") == kid
                 and meta.get("exp", 0) - now > MIN_LEFT and self.pool_path.exists())
        if not fresh:
            iat, exp = now, now + LIFETIME
            repeated = jwt.encode(_claims("repeated", iat, exp), key, algorithm=self.alg, headers={"kid": kid})
            probe = jwt.encode(_claims("probe", iat, exp), key, algorithm=self.alg, headers={"kid": kid})
            meta = {"format": FORMAT, "alg": self.alg, "kid": kid, "iat": iat, "exp": exp,
                    "count": 0, "repeated": repeated, "probe": probe}
            self.pool_path.write_text("")
        have = meta["count"]
        if have < count:
            log(f"minting {count - have} {self.alg} tokens into {self.pool_path.relative_to(ROOT)} "
                f"(once; later runs reuse them)")
            t0 = time.monotonic()
            step = 2000
            chunks = [(s, min(s + step, count), meta["iat"], meta["exp"]) for s in range(have, count, step)]
            procs = max(1, min(os.cpu_count() or 1, 4))
            with multiprocessing.get_context("fork").Pool(procs, _init_worker, (self.alg,)) as pool, \
                    self.pool_path.open("a") as out:
                for toks in pool.imap(_mint_range, chunks):
                    out.write("\n".join(toks) + "\n")
            meta["count"] = count
            log(f"  minted in {time.monotonic() - t0:.1f}s")
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.meta_path)
        self.meta = meta
        return self

    @property
    def repeated(self) -> str:
        return self.meta["repeated"]

    @property
    def probe(self) -> str:
        """A valid token that is neither the repeated one nor in the distinct pool."""
        return self.meta["probe"]

    def distinct(self, start: int, stop: int) -> list[str]:
        """Pool tokens [start, stop)."""
        out = []
        with self.pool_path.open() as f:
            for i, line in enumerate(f):
                if i >= stop:
                    break
                if i >= start:
                    out.append(line.rstrip("\n"))
        if len(out) != stop - start:
            raise RuntimeError(f"{self.pool_path}: wanted tokens {start}..{stop}, found {len(out)}")
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alg", choices=ALGS + ("all",), default="all")
    ap.add_argument("--count", type=int, default=20000)
    args = ap.parse_args(argv)
    for alg in ALGS if args.alg == "all" else (args.alg,):
        t = Tokens(alg).ensure(args.count)
        print(f"{alg}: {t.meta['count']} tokens in {t.pool_path}, key set {t.jwks_path}, kid {t.meta['kid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

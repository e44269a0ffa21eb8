"""Several valid tokens on one request (issue 19): the claims and headers come from the first
token presented, whatever the token cache holds.

"First" is in location order, then in the order within a location: a rule's locations are its
`fromHeaders`, then its `fromParams`, then its `fromCookies` (the defaults: `Authorization:
Bearer`, then `access_token`), rules in configuration order; within one location, tokens in
the order the request presents them (`?access_token=A&access_token=B`: A first).

The token cache is per Envoy worker, so the Envoy here has one worker (`concurrency=1`) and
every cache state is set up by requests: a token is warmed (verified and cached) by a request
that presents it alone, at the location the two-token request will present it. Every case
mints fresh tokens (a unique `sub`), so no case sees another's cache entries.

A's groups hold group1 and B's do not, so which token won shows twice: in the claim headers
httpbin echoes (/delay/0 routes to httpbin whatever the claims), and in the route outcome
(/headers only with group1: 200 when A's claims won, 404 when B's did). The first two-token
request caches both tokens, so each outcome is checked on a case of its own.
"""
from __future__ import annotations

import itertools
import uuid

import pytest

from support import tokens
from support.checks import echoed_headers
from support.envoy import seed_config

STATES = ["none-cached", "A-cached", "B-cached", "both-cached"]

# How the two tokens are presented, first to last; each entry: (token, where).
SHAPES = {
    "param-A-then-param-B": (("A", "param"), ("B", "param")),
    "param-B-then-param-A": (("B", "param"), ("A", "param")),
    "header-A-then-param-B": (("A", "header"), ("B", "param")),
    "header-B-then-param-A": (("B", "header"), ("A", "param")),
}

GROUPS = {"A": ["group1", "group2"], "B": ["group2", "group3"]}
_serial = itertools.count()


class Token(str):
    """A token that pytest's tracebacks (which print call arguments) show as `<token>`."""

    def __repr__(self) -> str:
        return "<token>"


@pytest.fixture(scope="module")
def one_worker(launch, seed_jwks):
    cfg = seed_config(seed_jwks.jwks_uri, rule={"outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]})
    env = launch(cfg, jwks_port=seed_jwks.port, concurrency=1)
    yield env
    env.stop()


def fresh_pair() -> dict[str, tuple[str, str]]:
    """{"A": (token, sub), "B": (token, sub)}, never minted before."""
    run = f"{next(_serial)}-{uuid.uuid4().hex[:8]}"
    out = {}
    for name in ("A", "B"):
        sub = f"{name.lower()}-{run}@example.com"
        out[name] = (Token(tokens.mint(tokens.claims(groups=GROUPS[name], sub=sub))), sub)
    return out


def request(env, path: str, presented: list[tuple[str, str]]):
    """GET `path` presenting (token, where) in this order: a header token goes in
    Authorization, param tokens in ?access_token= in the order given."""
    header = [t for t, where in presented if where == "header"]
    params = [t for t, where in presented if where == "param"]
    assert len(header) <= 1
    query = "&".join(f"access_token={t}" for t in params)
    return env.get(Token(path + (f"?{query}" if query else "")), token=header[0] if header else None)


def warm(env, pair, shape, state) -> None:
    """Caches the tokens `state` names: each presented alone where `shape` presents it."""
    where = {name: loc for name, loc in SHAPES[shape]}
    for name in {"none-cached": [], "A-cached": ["A"], "B-cached": ["B"], "both-cached": ["A", "B"]}[state]:
        r = request(env, "/status/200", [(pair[name][0], where[name])])
        assert r.status_code == 200, f"warming {name}: {r.status_code} {r.text[:200]}"


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("shape", SHAPES)
def test_claims_come_from_the_first_token(one_worker, shape, state):
    pair = fresh_pair()
    warm(one_worker, pair, shape, state)
    order = SHAPES[shape]
    first = order[0][0]
    h = echoed_headers(request(one_worker, "/delay/0", [(pair[name][0], where) for name, where in order]))
    got = (h.get("x-jwt-claim.groups"), h.get("x-jwt-sub"))
    expected = (",".join(GROUPS[first]), pair[first][1])
    winner = next((n for n in "AB" if got == (",".join(GROUPS[n]), pair[n][1])), "neither")
    assert got == expected, f"{shape}, {state}: claims came from {winner} {got}, not from the first token {first}"


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("shape", SHAPES)
def test_route_follows_the_first_token(one_worker, shape, state):
    pair = fresh_pair()
    warm(one_worker, pair, shape, state)
    order = SHAPES[shape]
    first = order[0][0]
    r = request(one_worker, "/headers", [(pair[name][0], where) for name, where in order])
    expected = 200 if "group1" in GROUPS[first] else 404
    assert r.status_code == expected, (
        f"{shape}, {state}: /headers answered {r.status_code}; the first token ({first}, groups "
        f"{GROUPS[first]}) should give {expected}")
    if expected == 200:
        assert echoed_headers(r)["x-jwt-sub"] == pair[first][1]

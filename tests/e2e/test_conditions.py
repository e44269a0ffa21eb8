"""Claim conditions (issue 21), through real Envoy and the built module, with routes written by
hand as an Envoy user would: each condition header is `true` or `false` on every request the
filter lets on, Envoy routes on `exact: "true"` / `exact: "false"`, and a client can never set one.

Istio's matching rules are the filter's: a list claim matches when one element does, a string
holding a comma is not a list, a regex matches one whole element, keys may hold `.` `/` `@`.
"""
from __future__ import annotations

import pytest

from support import tokens
from support.checks import echoed_headers
from support.envoy import seed_config

CONDITIONS = [
    {"header": "x-jwt-cond-0", "claim": ["groups"], "exact": "group1"},
    {"header": "x-jwt-cond-1", "claim": ["test-issuer-1@istio.io/simple"], "regex": "grp[0-9]+"},
    {"header": "x-jwt-cond-2", "claim": ["csv"], "exact": "a,b"},
    {"header": "x-jwt-cond-3", "principal": True, "prefix": f"{tokens.ISTIO_ISSUER}/"},
]
NAMES = [c["header"] for c in CONDITIONS]


def route(prefix: str, conditions: dict[str, str]) -> dict:
    """A route to httpbin for `prefix` when each named condition header has the value given."""
    headers = [{"name": n, "string_match": {"exact": v}} for n, v in conditions.items()]
    return {"match": {"prefix": prefix, "headers": headers}, "route": {"cluster": "httpbin"}}


def with_condition_routes(cfg: dict) -> None:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    # This file checks what the filter writes, so the upstream must see the condition headers
    # that envoy.yaml removes before it.
    hcm["route_config"].pop("request_headers_to_remove", None)
    vhost = hcm["route_config"]["virtual_hosts"][0]
    vhost["routes"] = [
        # /anything/group1: only for tokens whose `groups` holds the element group1.
        route("/anything/group1", {"x-jwt-cond-0": "true"}),
        # /anything/not-group1: Istio's withoutHeaders, the claim absent or not matching.
        route("/anything/not-group1", {"x-jwt-cond-0": "false"}),
        route("/anything/simple", {"x-jwt-cond-1": "true"}),
        route("/anything/csv", {"x-jwt-cond-2": "true"}),
        route("/anything/principal", {"x-jwt-cond-3": "true"}),
        # Everything else under /anything reaches httpbin, which echoes the request headers.
        {"match": {"prefix": "/anything/echo"}, "route": {"cluster": "httpbin"}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
    ]


@pytest.fixture(scope="module")
def envoy(launch, seed_jwks):
    cfg = seed_config(seed_jwks.jwks_uri, conditions=CONDITIONS)
    env = launch(cfg, jwks_port=seed_jwks.port, rewrite=with_condition_routes)
    yield env
    env.stop()


def mint(**claims) -> str:
    """A valid token with these claims; no `groups` unless given (and then as given: a
    string stays a string)."""
    body = tokens.claims(groups=None)
    body.update(claims)
    return tokens.mint(body)


def status(envoy, path: str, token: str | None = None, headers: dict | None = None) -> int:
    return envoy.get(path, token=token, headers=headers).status_code


def test_every_condition_is_written_on_every_request(envoy):
    anonymous = echoed_headers(envoy.get("/anything/echo"))
    assert {n: anonymous.get(n) for n in NAMES} == {n: "false" for n in NAMES}
    token = mint(groups=["group1", "group2"], csv="a,b", **{"test-issuer-1@istio.io/simple": ["x", "grp7"]})
    signed_in = echoed_headers(envoy.get("/anything/echo", token=token))
    assert {n: signed_in.get(n) for n in NAMES} == {n: "true" for n in NAMES}


def test_a_list_matches_on_one_element_and_a_comma_string_is_not_a_list(envoy):
    assert status(envoy, "/anything/group1", mint(groups=["group2", "group1"])) == 200
    assert status(envoy, "/anything/group1", mint(groups=["group10"])) == 404
    assert status(envoy, "/anything/group1", mint(groups="group1,group2")) == 404
    assert status(envoy, "/anything/group1", mint(groups="group1")) == 200
    assert status(envoy, "/anything/csv", mint(csv=["a", "b"])) == 404
    assert status(envoy, "/anything/csv", mint(csv="a,b")) == 200


def test_without_headers_holds_for_an_absent_or_other_claim_and_no_token(envoy):
    assert status(envoy, "/anything/not-group1") == 200
    assert status(envoy, "/anything/not-group1", mint()) == 200
    assert status(envoy, "/anything/not-group1", mint(groups=["group2"])) == 200
    assert status(envoy, "/anything/not-group1", mint(groups=["group1"])) == 404


def test_a_regex_matches_one_whole_element_of_a_literal_key(envoy):
    key = "test-issuer-1@istio.io/simple"
    assert status(envoy, "/anything/simple", mint(**{key: ["grp12"]})) == 200
    assert status(envoy, "/anything/simple", mint(**{key: "xgrp12"})) == 404
    assert status(envoy, "/anything/simple", mint(**{key: 12})) == 404
    # The dotted reading of that key is a different claim.
    assert status(envoy, "/anything/simple", mint(**{"test-issuer-1@istio": {"io/simple": "grp1"}})) == 404


def test_principal_is_issuer_slash_subject(envoy):
    assert status(envoy, "/anything/principal", mint(sub="alice")) == 200
    no_sub = tokens.claims()
    no_sub.pop("sub", None)
    assert status(envoy, "/anything/principal", tokens.mint(no_sub)) == 404


@pytest.mark.parametrize("spelling", ["x-jwt-cond-0", "X-JWT-COND-0", "X-Jwt-Cond-0"])
def test_a_client_cannot_set_a_condition(envoy, spelling):
    assert status(envoy, "/anything/group1", headers={spelling: "true"}) == 404
    assert status(envoy, "/anything/group1", mint(groups=["other"]), headers={spelling: "true"}) == 404
    echoed = echoed_headers(envoy.get("/anything/echo", token=mint(groups=["group1"]),
                                      headers={spelling: "forged"}))
    assert echoed["x-jwt-cond-0"] == "true"

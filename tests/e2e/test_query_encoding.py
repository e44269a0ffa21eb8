"""Percent-encoded query parameters (issue 19). RFC 6750 §2.3 puts the token in a form-encoded
query, and Envoy's jwt_authn reads parameter names and values percent-decoded: `access%5Ftoken`
is `access_token`, `%61ccess_token` too, and a token whose dots are written `%2E` is the same
token. A filter that compares the raw bytes lets such a request pass with an unvalidated token
in it (jwt_authn answers 401 to `?access%5Ftoken=garbage`).

Expected: names and values are decoded when looking for tokens; a token found in any spelling
is validated (garbage → 401), and with `forwardOriginalToken: false` (the default) its
parameter, as spelled, is gone from the `:path` the upstream receives; other parameters are
forwarded exactly as sent (`b=%20x` stays `b=%20x`).

The upstream is support/raw_upstream.py behind the httpbin cluster: it records the request
target exactly as Envoy forwards it. Requests go out through http.client with the target
verbatim: `requests` would "requote" the URL and turn `%5F`, `%61`, `%2E` (unreserved
characters) back into `_`, `a`, `.` before Envoy ever saw them.
"""
from __future__ import annotations

import http.client
import json
import re

import pytest

from support import tokens
from support.envoy import GATEWAY_HOST, seed_config, start_envoy
from support.raw_upstream import RawUpstream

SUB = "encoded@example.com"


class Token(str):
    """A token that pytest's tracebacks (which print call arguments) show as `<token>`."""

    def __repr__(self) -> str:
        return "<token>"


@pytest.fixture(scope="module")
def upstream():
    with RawUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gateway(workdir, seed_jwks, upstream):
    cfg = seed_config(seed_jwks.jwks_uri, rule={"outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]})
    env = start_envoy(cfg, jwks_port=seed_jwks.port, httpbin_port=upstream.port, workdir=workdir)
    yield env
    env.stop()


def redact(text: str) -> str:
    """`text` for an assertion message: long base64url runs (tokens, their segments) hidden."""
    return re.sub(r"[A-Za-z0-9_-]{24,}", "<redacted>", text)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace").strip()

    def upstream_saw(self) -> dict:
        """The raw upstream's record of this request (its JSON answer)."""
        assert self.status == 200, f"expected 200 from the upstream, got {self.status}: {redact(self.text)[:300]}"
        return json.loads(self.body)


def get(env, target: str) -> Answer:
    target = Token(target)
    conn = http.client.HTTPConnection("127.0.0.1", env.listener_port, timeout=15)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", GATEWAY_HOST)
        conn.endheaders()
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def valid() -> Token:
    return Token(tokens.mint(tokens.claims(groups=["group1", "group2"], sub=SUB)))


def header(saw: dict, name: str) -> list[str]:
    return [v for n, v in saw["headers"] if n.lower() == name]


def assert_401_invalid(answer: Answer, target: str) -> None:
    target = Token(target)
    assert answer.status == 401, (f"{redact(target)}: expected 401, got {answer.status}: "
                                  f"{redact(answer.text)[:200]}")
    assert 'error="invalid_token"' in answer.headers.get("www-authenticate", "")


def assert_granted(answer: Answer, forwarded_path: str) -> None:
    saw = answer.upstream_saw()
    assert header(saw, "x-jwt-claim.groups") == ["group1,group2"]
    assert header(saw, "x-jwt-sub") == [SUB]
    path = saw["path"]
    same = path == forwarded_path  # not compared in the assert: pytest would print the token
    assert same, f"the upstream saw {redact(path)!r}, not {forwarded_path!r}"


# --- an encoded parameter name holding garbage is a token, and it is invalid ------------------

@pytest.mark.parametrize("name", ["access%5Ftoken", "access%5ftoken", "%61ccess_token",
                                  "%61%63%63%65%73%73%5F%74%6F%6B%65%6E"])
def test_encoded_name_with_garbage_is_401(gateway, upstream, name):
    target = f"/status/200?{name}=garbage"
    before = upstream.count
    r = get(gateway, target)
    assert_401_invalid(r, target)
    assert r.text == "Jwt is not well formed"
    assert upstream.count == before


def test_encoded_garbage_next_to_a_valid_token_is_401(gateway):
    target = f"/status/200?access_token={valid()}&access%5Ftoken=garbage"
    assert_401_invalid(get(gateway, target), target)


def test_plain_garbage_is_401_control(gateway):
    r = get(gateway, "/status/200?access_token=garbage")
    assert_401_invalid(r, "access_token=garbage")
    assert r.text == "Jwt is not well formed"


# --- a valid token in an encoded spelling is validated, used and removed -----------------------

@pytest.mark.parametrize("name", ["access_token", "access%5ftoken", "access%5Ftoken", "%61ccess_token",
                                  "%61%63%63%65%73%73%5F%74%6F%6B%65%6E"])
def test_encoded_name_with_valid_token(gateway, name):
    assert_granted(get(gateway, f"/headers?{name}={valid()}"), "/headers")


@pytest.mark.parametrize("dot", ["%2E", "%2e"])
def test_token_with_encoded_dots(gateway, dot):
    encoded = valid().replace(".", dot)
    assert_granted(get(gateway, f"/headers?access_token={encoded}"), "/headers")


def test_encoded_dots_in_an_invalid_token_are_still_401(gateway):
    """Decoding does not make a bad signature good: the decoded token is judged."""
    tok = valid()
    head, _, sig = tok.split(".")
    forged = tokens.b64url(json.dumps({**tokens.payload_of(tok), "groups": ["admin"]}).encode())
    target = f"/headers?access_token={head}%2E{forged}%2E{sig}"
    r = get(gateway, target)
    assert_401_invalid(r, target)
    assert r.text == "Jwt verification fails"


# --- other parameters are forwarded exactly as sent -------------------------------------------

@pytest.mark.parametrize("name", ["access_token", "access%5Ftoken", "%61ccess_token"])
def test_other_parameters_preserved(gateway, name):
    target = f"/headers?a=1&{name}={valid()}&b=%20x"
    assert_granted(get(gateway, target), "/headers?a=1&b=%20x")


def test_no_token_parameters_untouched(gateway):
    r = get(gateway, "/status/200?a=1&b=%20x&access_tokens=x&c=%5F")
    assert r.upstream_saw()["path"] == "/status/200?a=1&b=%20x&access_tokens=x&c=%5F"

"""Hostile input (issue 4): none of these causes a panic (a VM failure), unbounded memory, or a
token in the logs.

  - tokens over maxTokenBytes (default 8192, and a custom 32768) → 401 "Jwt is too large"
  - headers that are not base64url, JSON that is not an object → 401
  - deeply nested JSON (thousands of `[`), payloads just under the cap
  - `crit` headers → 401
  - non-UTF-8 bytes in request headers (raw bytes over a socket)
  - several tokens on one request (header + access_token, two access_token): any invalid →
    401, all valid → 200; two Authorization headers → 401 even when both are valid, because
    Envoy joins them into one value ("Bearer A,Bearer B") before any filter runs
  - claim values carrying CR, LF or NUL (signed with key.pem) → the header is not emitted

The Envoys here log at `-l debug --component-log-level wasm:debug` (the RSS one at info with
wasm:debug, see there). test_logs_hold_no_tokens_or_keys runs after the rest: no token sent (its
signature or payload segment) and no key material (the sample key's modulus `n`) appears in
any of their logs (Rust byte-list dumps such as a FromUtf8Error's are decoded first), apart
from Envoy's own debug dump of the request headers as received ("request headers complete"),
which prints the client's Authorization header by design.

Memory: Envoy's VmRSS (/proc/<pid>/status) may grow by at most RSS_BOUND_MIB over 2000 hostile
requests sent after a warm-up. The bound is generous on purpose: it is far above the noise
of allocator arenas and V8 code caches (a few MiB) and above what the bounded caches may hold
(tokenCacheSize 1000 per worker; the unique valid tokens in the mix are ~1 KiB), yet a leak
of even 25 KiB per request (one token copy kept per request) would exceed it.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import random
import re
import time
from pathlib import Path

import pytest

from support import tokens
from support.checks import assert_invalid_token, claim_headers, echoed_headers
from support.envoy import Envoy, seed_config

RSS_BOUND_MIB = 50
CUSTOM_CAP = 32768
DEBUG = dict(log_level="debug", component_log_level="wasm:debug")
KID = tokens.ISTIO_KID
RS256 = {"alg": "RS256", "typ": "JWT", "kid": KID}
ISTIO_N = json.loads(tokens.ISTIO_JWKS_PATH.read_text())["keys"][0]["n"]

# Every Envoy of this module, for the final log check. Each gets `.sent`: the tokens sent to it.
ENVOYS: list[Envoy] = []


def hostile_config(jwks_uri: str, **top) -> dict:
    """The seed (token in Authorization: Bearer or ?access_token=) plus a claim header for a
    string claim and an outputClaimToHeaders entry, so that CR/LF/NUL claims have somewhere to
    go."""
    return seed_config(jwks_uri, rule={"outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]},
                       claimHeaders=["x-jwt-claim.groups", "x-jwt-claim.note"], **top)


def _track(env: Envoy) -> Envoy:
    env.sent = []
    ENVOYS.append(env)
    return env


@pytest.fixture(scope="module")
def hostile(launch, seed_jwks):
    env = _track(launch(hostile_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port, **DEBUG))
    yield env
    env.stop()


@pytest.fixture(scope="module")
def custom_cap(launch, seed_jwks):
    env = _track(launch(hostile_config(seed_jwks.jwks_uri, maxTokenBytes=CUSTOM_CAP),
                        jwks_port=seed_jwks.port, **DEBUG))
    yield env
    env.stop()


def get(env: Envoy, path: str = "/status/200", token: str | None = None, **kw):
    if token is not None:
        env.sent.append(token)
    for value in list((kw.get("headers") or {}).values()) + [path]:
        for m in re.finditer(r"[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_.=-]+", value):
            env.sent.append(m.group(0))
    return env.get(path, token=token, **kw)


def raw_get(env: Envoy, headers: list[tuple[str, bytes]], path: str = "/status/200"):
    """A request with header values as raw bytes (http.client passes them through)."""
    conn = http.client.HTTPConnection("127.0.0.1", env.listener_port, timeout=15)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", "httpbin.example.com")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def valid(**claims) -> str:
    return tokens.mint(tokens.claims(**claims))


def body(resp) -> str:
    return resp.text.strip()


# --- size ------------------------------------------------------------------------------------

def sized_valid(length: int) -> str:
    return tokens.sized(length, lambda pad: valid(pad=pad, groups=["group1"]))


@pytest.mark.parametrize("make", [
    lambda: sized_valid(8193),                      # a valid token one byte too long
    lambda: "a" * 20000,                            # no structure at all
    lambda: "e" * 9000 + "." + "f" * 9000 + "." + "g" * 9000,
], ids=["valid-8193", "flat-20000", "three-segments-27002"])
def test_over_default_cap_is_too_large(hostile, make):
    tok = make()
    r = get(hostile, "/headers", token=tok)
    assert_invalid_token(r, tok)
    assert body(r) == "Jwt is too large"


def test_exactly_default_cap_passes_with_claims(hostile):
    tok = sized_valid(8192)
    r = get(hostile, "/headers", token=tok)
    assert echoed_headers(r)["x-jwt-claim.groups"] == "group1"


def test_custom_cap(custom_cap):
    over = sized_valid(CUSTOM_CAP + 1)
    r = get(custom_cap, "/headers", token=over)
    assert_invalid_token(r, over)
    assert body(r) == "Jwt is too large"
    # Between the default and the custom cap: a valid token passes.
    for length in (8193, CUSTOM_CAP):
        tok = sized_valid(length)
        r = get(custom_cap, "/headers", token=tok)
        assert echoed_headers(r)["x-jwt-claim.groups"] == "group1", length


def test_header_maps_growing_and_shrinking_are_each_read_whole(hostile):
    """The filter reads every request's headers into one buffer it keeps from request to
    request, and grows when a request's headers do not fit (src/filter/request_headers.rs).
    Requests whose header maps grow and shrink (the token, and a large header of no interest),
    each with claims of its own, on one connection and on several at once, each get exactly
    their own claims: nothing of an earlier request is read, nothing is cut short."""
    pads = [0, 5600, 40, 3000, 5600, 0, 1500]  # tokens from ~0.9 to ~8.1 KB (under the cap)
    cases = []
    for i, pad in enumerate(pads):
        group = f"group1,size{i}"  # group1: the seed routes /headers only for it
        tok = valid(pad="p" * pad, groups=group.split(","))
        assert len(tok) <= 8192
        # Not a base64url character: no part of any token sent in this module looks like it.
        filler = {"x-filler": "~" * (7000 if i % 3 == 1 else 10)}  # under gunicorn's 8190
        cases.append((tok, group, filler))
    for _ in range(2):
        for tok, group, filler in cases:
            r = get(hostile, "/headers", token=tok, headers=filler)
            assert r.status_code == 200, (r.status_code, r.text[:200])
            echoed = echoed_headers(r)
            assert echoed["x-jwt-claim.groups"] == group
            assert echoed["x-filler"] == filler["x-filler"]

    def one(case):
        tok, group, filler = case
        r = get(hostile, "/headers", token=tok, headers=filler)
        return r.status_code, echoed_headers(r).get("x-jwt-claim.groups") if r.status_code == 200 else None, group

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, cases * 6))
    assert all(status == 200 and got == want for status, got, want in results), results


# --- structure -------------------------------------------------------------------------------

NOT_BASE64URL = {
    "bang-header": "!!!!.eyJpc3MiOiJ4In0.c2ln",
    "standard-alphabet": "eyJhbGciOiJSUzI1NiJ9+/+/.eyJpc3MiOiJ4In0.c2ln",
    "percent": "%7B%7D.eyJpc3MiOiJ4In0.c2ln",
    "space-inside": "eyJhbGci OiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln",
    "one-char-segments": "a.b.c",
    "high-unicode-escape": "\u00e9\u00e9.\u00e9.\u00e9",
    "empty-segments": "..",
    "only-dots": "." * 5000,
}


@pytest.mark.parametrize("name", list(NOT_BASE64URL))
def test_segments_not_base64url_are_401(hostile, name):
    tok = NOT_BASE64URL[name]
    if not tok.isascii():  # requests would encode it as latin-1: send the UTF-8 bytes raw
        status, headers, text = raw_get(hostile, [("Authorization", b"Bearer " + tok.encode())])
        assert status == 401, (status, text)
        return
    r = get(hostile, token=tok)
    assert_invalid_token(r, tok)
    assert body(r) == "Jwt is not well formed"


NOT_OBJECTS = ["[]", "[1,2]", "1", '"text"', "null", "true", "{", '{"alg":"RS256"', ""]


@pytest.mark.parametrize("text", NOT_OBJECTS, ids=[f"json-{i}" for i in range(len(NOT_OBJECTS))])
def test_header_json_not_an_object_is_401(hostile, text):
    tok = tokens.sign_text(text, tokens.claims())
    r = get(hostile, token=tok)
    assert_invalid_token(r, tok)


@pytest.mark.parametrize("text", NOT_OBJECTS, ids=[f"json-{i}" for i in range(len(NOT_OBJECTS))])
def test_payload_json_not_an_object_is_401_even_when_signed(hostile, text):
    tok = tokens.sign_text(RS256, text)
    r = get(hostile, token=tok)
    assert_invalid_token(r, tok)
    assert body(r) == "Jwt is not well formed"


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize("payload", [
    lambda: "[" * 5500,                                          # unterminated
    lambda: nested(2700),
    lambda: '{"iss":"testing@secure.istio.io","x":' + nested(2700) + "}",
    lambda: '{"a":' * 900 + "1" + "}" * 900,
], ids=["open-5500", "closed-2700", "in-claim-2700", "objects-900"])
def test_deeply_nested_payload_under_default_cap_is_401(hostile, payload):
    tok = tokens.sign_text(RS256, payload())
    assert len(tok) <= 8192
    r = get(hostile, token=tok)
    assert_invalid_token(r, tok)
    assert body(r) == "Jwt is not well formed"


@pytest.mark.parametrize("signer", ["never", "istio"])
def test_deeply_nested_header_member(hostile, signer):
    """Header JSON nested deeper than 100 levels is refused before any key is looked at,
    forged or signed by the issuer (jwt_authn refuses it too: test_differential
    nested-header-member-depth-*)."""
    header = '{"alg":"RS256","kid":"%s","x":%s}' % (KID, nested(2500))
    tok = tokens.sign_text(header, tokens.claims(), key=signer)
    r = get(hostile, token=tok)
    assert_invalid_token(r, tok)
    assert body(r) == "Jwt is not well formed"


@pytest.mark.parametrize("depth", [10000, 11500])
def test_10k_brackets_under_custom_cap_is_401(custom_cap, depth):
    for payload in ("[" * depth, '{"iss":"testing@secure.istio.io","x":' + nested(depth) + "}"):
        tok = tokens.sign_text(RS256, payload)
        assert len(tok) <= CUSTOM_CAP
        r = get(custom_cap, token=tok)
        assert_invalid_token(r, tok)
        assert body(r) == "Jwt is not well formed"


def test_moderate_nesting_in_valid_token_passes_without_that_claim(hostile):
    tok = valid(note=json.loads(nested(99)))  # 100 levels with the payload object: the limit
    h = echoed_headers(get(hostile, "/headers", token=tok))
    assert h["x-jwt-claim.groups"] == "group1,group2"
    assert "x-jwt-claim.note" not in h


def test_huge_valid_payload_just_under_cap_passes(hostile):
    # Many claims rather than one long one: more JSON to parse and keep.
    def make(pad: str) -> str:
        extra = {f"c{i}": i for i in range(400)}
        return tokens.mint(tokens.claims(note="n", pad=pad, **extra))
    tok = tokens.sized(8192, make)
    h = echoed_headers(get(hostile, "/headers", token=tok))
    assert h["x-jwt-claim.groups"] == "group1,group2"
    assert h["x-jwt-claim.note"] == "n"


@pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "exp", [1]], ids=["exp", "b64", "empty", "string", "number"])
def test_crit_header_is_401(hostile, crit):
    tok = tokens.mint(tokens.claims(), headers={"crit": crit})
    r = get(hostile, "/headers", token=tok)
    assert_invalid_token(r, tok)
    if crit in (["exp"], ["b64"]):
        assert body(r) == "Jwt has an unsupported critical header"


# --- several tokens --------------------------------------------------------------------------

def test_header_and_param_both_valid_pass(hostile):
    a, b = valid(groups=["group1"], sub="a"), valid(groups=["group2"], sub="b")
    h = echoed_headers(get(hostile, f"/headers?access_token={b}", token=a))
    # Claims come from the first token in location order (the header).
    assert h["x-jwt-claim.groups"] == "group1" and h["x-jwt-sub"] == "a"
    assert "authorization" not in h


@pytest.mark.parametrize("where", ["header", "param"])
def test_header_and_param_one_invalid_is_401(hostile, where):
    good, bad = valid(), valid(exp=int(time.time()) - 3600)
    header_tok, param_tok = (bad, good) if where == "header" else (good, bad)
    r = get(hostile, f"/headers?access_token={param_tok}", token=header_tok)
    assert_invalid_token(r, bad)
    assert body(r) == "Jwt is expired"


def test_two_params_one_invalid_is_401(hostile):
    good = valid()
    r = get(hostile, f"/status/200?access_token={good}&access_token=a.b.c")
    assert_invalid_token(r, good)


def test_two_params_both_valid_pass(hostile):
    a, b = valid(), valid(sub="other")
    assert get(hostile, f"/headers?access_token={a}&access_token={b}").status_code == 200


@pytest.mark.parametrize("second", ["valid", "invalid"])
def test_two_authorization_headers_are_401(hostile, second):
    """Envoy joins repeated Authorization headers into one value ("Bearer A,Bearer B") before
    any filter sees them; that value is not a token, so the request is refused even when
    both are valid (jwt_authn refuses it too: test_differential two-headers-*)."""
    a = valid()
    b = valid(sub="other") if second == "valid" else "a.b.c"
    hostile.sent += [a, b]
    status, headers, text = raw_get(hostile, [("Authorization", f"Bearer {a}".encode()),
                                              ("Authorization", f"Bearer {b}".encode())])
    assert status == 401, (status, text)
    assert 'error="invalid_token"' in headers.get("www-authenticate", "")
    assert text.strip() == b"Jwt is not well formed", text
    assert a.split(".")[2].encode() not in text


# --- claim values with CR / LF / NUL ---------------------------------------------------------

CONTROL_CLAIMS = {
    "groups-string-crlf": dict(groups="group1\r\nx-injected: yes"),
    "groups-element-lf": dict(groups=["group1", "a\nx-injected: yes"]),
    "groups-element-cr": dict(groups=["group1\r"]),
    "note-nul": dict(note="a\u0000b"),
    "note-crlf-crlf": dict(note="a\r\n\r\nGET /status/418 HTTP/1.1\r\nHost: x"),
    "sub-crlf": dict(sub="alice\r\nx-injected: yes"),
    "sub-nul": dict(sub="alice\u0000"),
}


@pytest.mark.parametrize("name", list(CONTROL_CLAIMS))
def test_claims_with_control_characters_are_not_emitted(hostile, name):
    claims = CONTROL_CLAIMS[name]
    tok = tokens.mint(tokens.claims(**{"note": "ok", "sub": "ok", **claims}))
    r = get(hostile, "/delay/0", token=tok)
    h = echoed_headers(r)
    assert r.json()["url"].endswith("/delay/0"), "the upstream saw another request"
    assert "x-injected" not in h, h
    emitted = {**claim_headers(h), **({"x-jwt-sub": h["x-jwt-sub"]} if "x-jwt-sub" in h else {})}
    for header, claim in (("x-jwt-claim.groups", "groups"), ("x-jwt-claim.note", "note"), ("x-jwt-sub", "sub")):
        if claim in claims:
            assert header not in emitted, f"{header} emitted for {claims[claim]!r}: {emitted}"
        else:
            assert header in emitted, f"{header} (a clean claim) missing: {emitted}"
    for value in emitted.values():
        assert not set(value) & {"\r", "\n", "\x00"}, emitted
    # The connection still serves the next request normally.
    assert get(hostile, "/status/200").status_code == 200


# --- non-UTF-8 bytes -------------------------------------------------------------------------

def _utf8_cases():
    tok = tokens.GROUPS_SCOPE_JWT
    h, p, s = tok.split(".")
    return {
        "authorization-bytes-in-token": [("Authorization", b"Bearer " + h.encode() + b".\xff\xfe" + p.encode()
                                          + b"." + s.encode())],
        "authorization-latin1-only": [("Authorization", b"Bearer \xe9t\xe9")],
        "authorization-invalid-utf8-sequence": [("Authorization", b"Bearer \xc3\x28.\xa0\xa1.\xf0\x28\x8c\x28")],
        "other-header-with-valid-token": [("Authorization", f"Bearer {tok}".encode()),
                                          ("X-Other", b"caf\xe9")],
        "other-header-without-token": [("X-Other", b"\xff\xfe\xfd")],
        "cookie-bytes": [("Cookie", b"session=\xff; a=b")],
    }


UTF8_EXPECTED = {
    "authorization-bytes-in-token": 401,
    "authorization-latin1-only": 401,
    "authorization-invalid-utf8-sequence": 401,
    "other-header-with-valid-token": 200,
    "other-header-without-token": 200,
    "cookie-bytes": 200,
}

UTF8_VM_FAILURE = ("panicked", "Function: proxy_on_", "Uncaught RuntimeError", "wasm trap")


@pytest.fixture
def utf8_envoy(launch, seed_jwks):
    """A fresh Envoy with one worker per case: a VM failure in one case must not hide
    another's result."""
    env = _track(launch(hostile_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port,
                        concurrency=1, **DEBUG))
    yield env
    env.stop()


@pytest.mark.parametrize("name", list(UTF8_EXPECTED))
def test_non_utf8_header_bytes(utf8_envoy, name):
    env = utf8_envoy
    env.sent.append(tokens.GROUPS_SCOPE_JWT)
    status, _, text = raw_get(env, _utf8_cases()[name], path="/headers" if "valid-token" in name else "/status/200")
    after = [raw_get(env, [("Authorization", f"Bearer {tokens.GROUPS_SCOPE_JWT}".encode())], "/headers")[0]
             for _ in range(3)]
    time.sleep(0.2)
    failures = [ln for ln in env.log.splitlines() if any(m in ln for m in UTF8_VM_FAILURE)]
    assert not failures, (f"{name}: the wasm VM failed (answer {status}, then {after}):\n"
                          + "\n".join(failures[:4]))
    assert status == UTF8_EXPECTED[name], (status, text[:200])
    assert after == [200] * 3, f"a valid token after {name}: {after}"


# --- memory ----------------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def hostile_mix(n: int, seed: int) -> list[tuple[str, dict]]:
    """`n` hostile requests (path, headers), deterministic, all different. No non-UTF-8 bytes
    (test_non_utf8_header_bytes covers those; a VM failure there would void this measure)."""
    rnd = random.Random(seed)
    now = int(time.time())
    out = []
    for i in range(n):
        kind = i % 10
        if kind == 0:
            tok = "".join(rnd.choice("abcdef.") for _ in range(8193 + rnd.randrange(2000)))
        elif kind == 1:
            tok = "!" * rnd.randrange(10, 200) + f".{i}.x"
        elif kind == 2:
            tok = tokens.b64url(b"[" * (3000 + i % 2000)) + ".e30.c2ln"
        elif kind == 3:
            tok = tokens.b64url(json.dumps(RS256).encode()) + "." + tokens.b64url(
                ('{"a":' * 1000 + str(i) + "}" * 1000).encode()) + ".c2ln"
        elif kind == 4:
            tok = tokens.b64url(json.dumps({**RS256, "crit": ["exp"], "n": i}).encode()) + ".e30.c2ln"
        elif kind in (5, 6):  # valid, unique: fills the verified-token cache
            tok = tokens.mint(tokens.claims(jti=f"rss-{seed}-{i}", note="x" * (i % 500),
                                            groups=["group1", f"g{i}"]))
        elif kind == 7:  # valid signature, control characters in claims
            tok = tokens.mint(tokens.claims(jti=f"ctl-{seed}-{i}", note=f"a\r\nb{i}", sub="\u0000"))
        elif kind == 8:  # expired / not yet valid: refused before any signature work
            tok = tokens.mint(tokens.claims(jti=f"t-{i}", exp=now - 3600 - i))
        elif i % 20 == 9:  # a kid nobody published: at most one refetch per interval
            tok = tokens.mint(tokens.claims(jti=f"kid-{i}"), kid=f"random-kid-{seed}-{i}")
        else:  # bad signature
            good = tokens.mint(tokens.claims(jti=f"sig-{i}"))
            tok = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
        if i % 7 == 0:
            out.append((f"/delay/0?access_token={tokens.GROUPS_SCOPE_JWT}", {"Authorization": f"Bearer {tok}"}))
        else:
            out.append(("/headers", {"Authorization": f"Bearer {tok}"}))
    return out


@pytest.fixture(scope="module")
def rss_envoy(launch, seed_jwks):
    """Logs at info with wasm:debug: Envoy's own debug dump of 2000 requests with 8 KiB
    headers would be tens of MiB of log to search; the filter's own lines are all kept."""
    env = _track(launch(hostile_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port,
                        log_level="info", component_log_level="wasm:debug"))
    yield env
    env.stop()


def _blast(env: Envoy, requests_: list[tuple[str, dict]]) -> dict[int, int]:
    import requests as rq
    sessions = [rq.Session() for _ in range(8)]
    for _, headers in requests_:
        env.sent.append(headers["Authorization"][len("Bearer "):])

    def one(i_req):
        i, (path, headers) = i_req
        s = sessions[i % len(sessions)]
        r = s.get(env.base_url + path, headers={"Host": "httpbin.example.com", **headers}, timeout=30)
        return r.status_code
    with concurrent.futures.ThreadPoolExecutor(len(sessions)) as pool:
        codes = list(pool.map(one, enumerate(requests_)))
    for s in sessions:
        s.close()
    out: dict[int, int] = {}
    for c in codes:
        out[c] = out.get(c, 0) + 1
    return out


def test_rss_bounded_over_2000_hostile_requests(rss_envoy):
    env = rss_envoy
    warm = hostile_mix(300, seed=1)
    batch = hostile_mix(2000, seed=2)
    codes = _blast(env, warm)
    assert set(codes) <= {200, 401}, codes
    time.sleep(0.5)
    before = rss_kib(env.proc.pid)
    codes = _blast(env, batch)
    time.sleep(0.5)
    after = rss_kib(env.proc.pid)
    assert set(codes) <= {200, 401}, f"unexpected answers: {codes}"
    assert codes.get(401, 0) >= 1000 and codes.get(200, 0) >= 300, codes
    grown_mib = (after - before) / 1024
    assert grown_mib <= RSS_BOUND_MIB, (f"Envoy RSS grew {grown_mib:.1f} MiB over 2000 hostile requests "
                                        f"({before} → {after} KiB), bound {RSS_BOUND_MIB} MiB")
    print(f"\nRSS {before} → {after} KiB ({grown_mib:+.1f} MiB) over 2000 requests: {codes}")


# --- after the module: logs and VM health -----------------------------------------------------

RECORD_START = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\]")
HEADER_DUMP = "request headers complete"


def log_records(text: str) -> list[str]:
    """Envoy's log as records: a line starting with a timestamp and its continuation lines."""
    records: list[str] = []
    for line in text.splitlines():
        if RECORD_START.match(line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


BYTE_LIST = re.compile(r"bytes: \[([0-9, ]+)\]")


def decoded_byte_lists(text: str) -> str:
    """Rust's Debug of a byte vector ("bytes: [66, 101, ...]", as in a FromUtf8Error panic
    message) decoded, so that a token printed that way is found too."""
    return "\n".join(bytes(int(b) for b in m.group(1).split(",") if b.strip()).decode("latin-1")
                     for m in BYTE_LIST.finditer(text))


def secrets_of(token: str) -> list[str]:
    """What of a token must never be logged: its payload and signature segments (or, for a
    token without that structure, the token itself), where long enough to be meaningful."""
    parts = token.split(".")
    pieces = parts[1:3] if len(parts) >= 3 else [token]
    return [p for p in pieces if len(p) >= 16]


def test_logs_hold_no_tokens_or_keys():
    assert ENVOYS, "run with the rest of the module"
    dumped_somewhere = False
    problems = []
    for env in ENVOYS:
        records = log_records(env.log)
        checked = "\n".join(r for r in records if HEADER_DUMP not in r.split("\n", 1)[0])
        checked += "\n" + decoded_byte_lists(checked)
        dumps = "\n".join(r for r in records if HEADER_DUMP in r.split("\n", 1)[0])
        if ISTIO_N[:40] in checked:
            problems.append(f"{env.log_path}: the JWKS modulus n")
        leaks = []
        for tok in set(env.sent):
            for piece in secrets_of(tok):
                probe = piece[:64]
                if probe in checked:
                    leaks.append(probe)
                elif probe in dumps:
                    dumped_somewhere = True
        if leaks:
            where = [r.split("\n", 1)[0][:160] for r in records
                     if HEADER_DUMP not in r.split("\n", 1)[0]
                     and any(p in r or p in decoded_byte_lists(r) for p in leaks)]
            problems.append(f"{env.log_path}: {len(leaks)} token parts, in records such as {where[:2]}")
    assert not problems, "\n".join(problems)
    # Positive control: the search does find tokens where Envoy itself prints them.
    assert dumped_somewhere, "no token found even in Envoy's request header dumps: is debug logging on?"


def test_vm_healthy_after_everything(hostile, custom_cap, rss_envoy, groups_token):
    for env in (hostile, custom_cap, rss_envoy):
        assert env.alive()
        # Fresh connections land on every worker.
        codes = [raw_get(env, [("Authorization", f"Bearer {groups_token}".encode())], "/headers")[0]
                 for _ in range(8)]
        assert codes == [200] * 8, codes
        failures = [ln for ln in env.log.splitlines() if any(m in ln for m in UTF8_VM_FAILURE)]
        assert not failures, "\n".join(failures[:4])
        stats = env.stats()
        bad = {k: v for k, v in stats.items()
               if v > 0 and re.search(r"wasm.*(fail|crash|vm_reload)", k) and "jwks_fetch" not in k}
        assert bad == {}, bad

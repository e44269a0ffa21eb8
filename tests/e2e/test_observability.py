"""Observability: every metric of README's "Metrics" table, counted exactly, and the logs.

Two Envoys, each with its own controllable JWKS servers, get a known mix of requests:

  audience Envoy   requireToken false, audiences ["gateway.example.com"]: tokens allowed,
                   requests without a token (pass, counted nowhere), and one request for every
                   401/403 reason but `missing` and `keys_unavailable`; then a JWKS outage
                   met by an unknown-kid refetch (one fetch failure), and the recovery.
  strict Envoy     requireToken true, plus a second rule whose JWKS answers 500 for good:
                   `missing`, `keys_unavailable`, and fetch failures that must equal the
                   failing JWKS server's hit count.

The counters are read from admin /stats/prometheus. Envoy runs with
`--component-log-level wasm:debug`; its log file is read after Envoy stopped (Envoy flushes
the file every few seconds, and at exit), and must hold the right lines at the right levels and
not one token segment or key modulus.
"""
from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest
import requests

from support import tokens
from support.envoy import ROOT, Envoy, seed_config, seed_rule
from support.jwks_server import JwksServer

README = ROOT / "README.md"
AUDIENCE = "gateway.example.com"
DOWN_ISSUER = "https://down.example.com"
PREFIX = "jwt_claims_filter_"
VERSION = re.search(r'^version = "(.+)"$', (ROOT / "Cargo.toml").read_text(), re.M).group(1)


# --- README's metric table -------------------------------------------------------------------

def readme_metrics() -> set[str]:
    """The prometheus names README's "Metrics" section lists, `<reason>` expanded."""
    text = README.read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"^\| `[^`]+` \| `([a-z_<>]+)` \|$", section, re.M))
    reasons_line = re.search(r"`<reason>` is one of (.+?)\.", section, re.S).group(1)
    reasons = re.findall(r"`([a-z_]+)`", reasons_line)
    assert names and reasons, "README's Metrics section changed shape"
    out = set()
    for name in names:
        out |= {name.replace("<reason>", r) for r in reasons} if "<reason>" in name else {name}
    return out


# --- helpers ---------------------------------------------------------------------------------

def filter_stats(env: Envoy, settle: bool = False) -> dict[str, int]:
    """The filter's counters from /stats/prometheus, by prometheus name. `settle`: first wait
    until every VM has reported its allowed requests (at each tick, 0.5 s, rather than one
    host call each)."""
    if settle:
        time.sleep(0.7)
    out = {}
    for key, value in env.stats().items():
        name = key.split("{", 1)[0]
        if name.startswith(PREFIX):
            out[name] = int(value)
    return out


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def valid_claims(**extra):
    return tokens.claims(**{"aud": AUDIENCE, **extra})


def tampered(token: str) -> str:
    """The same header and payload with another token's signature: a bad signature."""
    other = tokens.mint(valid_claims(sub="someone-else"))
    return token.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]


@dataclass
class Sent:
    label: str
    token: str | None
    want: int
    got: int
    body: str


@dataclass
class Observed:
    sent: list[Sent] = field(default_factory=list)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # snapshot name → counters
    logs: dict[str, str] = field(default_factory=dict)               # envoy name → its log
    facts: dict[str, int] = field(default_factory=dict)              # e.g. JWKS hit counts

    def send(self, env: Envoy, label: str, want: int, token: str | None = None,
             path: str = "/headers") -> None:
        r = env.get(path, token=token)
        self.sent.append(Sent(label, token, want, r.status_code, r.text))


# --- the scenario, run once per module -------------------------------------------------------

@pytest.fixture(scope="module")
def observed(launch) -> Observed:
    obs = Observed()
    with JwksServer(keyset="istio") as jwks, JwksServer(keyset="istio") as down:
        # --- the audience Envoy ---
        cfg = {"jwtRules": [seed_rule(jwks.jwks_uri, audiences=[AUDIENCE])],
               "claimHeaders": ["x-jwt-claim.groups"]}
        env = launch(cfg, jwks_port=jwks.port, component_log_level="wasm:debug")
        wait_for("the first JWKS fetch", lambda: filter_stats(env).get(PREFIX + "jwks_fetch_success") == 1)
        obs.stats["audience:start"] = filter_stats(env, settle=True)

        good = tokens.mint(valid_claims())
        obs.send(env, "allowed", 200, good)
        obs.send(env, "allowed (token cache)", 200, good)
        obs.send(env, "allowed (another token)", 200, tokens.mint(valid_claims(sub="other@example.com")))
        obs.send(env, "no token, exposed path", 200, None, path="/status/200")
        obs.send(env, "no token, claim route", 404, None, path="/headers")
        now = int(time.time())
        obs.send(env, "expired", 401, tokens.mint(valid_claims(iat=now - 7200, exp=now - 3600)))
        obs.send(env, "not yet valid", 401, tokens.mint(valid_claims(nbf=now + 3600)))
        obs.send(env, "bad signature", 401, tampered(tokens.mint(valid_claims())))
        obs.send(env, "bad signature (again)", 401, tampered(tokens.mint(valid_claims(sub="x@example.com"))))
        # Two segments only: long ones, so that the log check below means something.
        obs.send(env, "malformed", 401, b64({"alg": "RS256", "typ": "JWT"}) + "." + b64(valid_claims()))
        obs.send(env, "too large", 401, tokens.mint(valid_claims(pad="p" * 9000)))
        # With a signature segment: an empty one is refused earlier, as malformed.
        obs.send(env, "alg none", 401, tokens.forge({"alg": "none", "typ": "JWT"}, valid_claims(), b"\x02" * 32))
        obs.send(env, "crit header", 401, tokens.mint(valid_claims(), headers={"crit": ["exp-policy"], "exp-policy": 1}))
        obs.send(env, "unknown issuer", 401, tokens.mint(valid_claims(issuer="https://elsewhere.example.com")))
        obs.send(env, "alg mismatch", 401, tokens.forge({"alg": "ES256", "typ": "JWT", "kid": tokens.ISTIO_KID},
                                                        valid_claims(), b"\x01" * 64))
        obs.send(env, "audience", 403, tokens.mint(valid_claims(aud="someone-else.example.com")))
        obs.send(env, "audience (none)", 403, tokens.GROUPS_SCOPE_JWT)
        obs.stats["audience:mix"] = filter_stats(env, settle=True)

        # A JWKS outage met by a token with an unknown kid: one refetch, which fails; the
        # last good keys stay, the token is refused, and the retry after the outage succeeds.
        jwks.set_mode("500")
        obs.send(env, "unknown kid (refetch fails)", 401, tokens.mint(valid_claims(), key="a"))
        wait_for("the failed refetch to count",
                 lambda: filter_stats(env).get(PREFIX + "jwks_fetch_failure") == 1)
        jwks.set_mode("ok")
        wait_for("the retry after the outage",
                 lambda: filter_stats(env).get(PREFIX + "jwks_fetch_success") == 2)
        obs.send(env, "unknown kid (throttled)", 401, tokens.mint(valid_claims(), key="a"))
        obs.send(env, "allowed after the outage", 200, good)
        time.sleep(0.6)  # room for a stray extra fetch to show up in the counts
        obs.stats["audience:end"] = filter_stats(env, settle=True)
        obs.facts["audience:jwks_hits"] = jwks.hits
        env.stop()
        obs.logs["audience"] = env.log

        # --- the strict Envoy: requireToken, and a rule whose keys never come ---
        down.set_mode("500")
        cfg = {"jwtRules": [seed_rule(jwks.jwks_uri),
                            {"issuer": DOWN_ISSUER, "jwksUri": down.jwks_uri,
                             "jwksCluster": "jwks_down", "timeout": "1s"}],
               "claimHeaders": ["x-jwt-claim.groups"], "requireToken": True}
        strict = launch(cfg, jwks_port=jwks.port, extra_clusters={"jwks_down": down.port},
                        component_log_level="wasm:debug")
        wait_for("the first JWKS fetches", lambda: filter_stats(strict).get(PREFIX + "jwks_fetch_success") == 1
                 and filter_stats(strict).get(PREFIX + "jwks_fetch_failure", 0) >= 1)
        obs.send(strict, "missing", 401, None, path="/status/200")
        obs.send(strict, "missing (claim route)", 401, None, path="/headers")
        obs.send(strict, "keys unavailable", 401, tokens.mint(tokens.claims(issuer=DOWN_ISSUER)))
        obs.send(strict, "allowed with requireToken", 200, tokens.GROUPS_SCOPE_JWT)

        # Every fetch the failing server answered is one failure: read both until they agree
        # (a fetch may be in flight between the two reads).
        time.sleep(0.7)  # every VM has reported its allowed requests (at its 0.5 s tick)

        def settled() -> bool:
            hits = down.hits
            stats = filter_stats(strict)
            if down.hits == hits and stats.get(PREFIX + "jwks_fetch_failure") == hits:
                obs.stats["strict:end"] = stats
                obs.facts["strict:down_hits"] = hits
                return True
            return False
        try:
            wait_for("jwks_fetch_failure to equal the failing JWKS server's hits", settled, timeout=5)
        except AssertionError:
            obs.stats["strict:end"] = filter_stats(strict, settle=True)
            obs.facts["strict:down_hits"] = down.hits
        strict.stop()
        obs.logs["strict"] = strict.log
    return obs


def deltas(obs: Observed, before: str, after: str) -> dict[str, int]:
    a, b = obs.stats[before], obs.stats[after]
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b)) if b.get(k, 0) != a.get(k, 0)}


def zeros(**counts: int) -> dict[str, int]:
    """Every README metric at 0 except `counts` (short names, without the prefix)."""
    out = {name: 0 for name in readme_metrics()}
    for short, n in counts.items():
        assert PREFIX + short in out, f"{short} is not in README's metric table"
        out[PREFIX + short] = n
    return out


# --- the tests -------------------------------------------------------------------------------

def test_every_request_got_its_answer(observed):
    wrong = [(s.label, s.want, s.got, s.body[:80]) for s in observed.sent if s.got != s.want]
    assert not wrong, wrong


def test_prometheus_has_exactly_the_readme_metrics(observed):
    for snapshot in ("audience:start", "strict:end"):
        assert set(observed.stats[snapshot]) == readme_metrics(), snapshot


def test_counters_start_at_zero_but_the_first_fetch(observed):
    assert observed.stats["audience:start"] == zeros(jwks_fetch_success=1)


def test_counters_for_the_request_mix(observed):
    # Requests without a token that pass (two of them) are counted nowhere.
    assert deltas(observed, "audience:start", "audience:mix") == {
        PREFIX + "requests_allowed": 3,
        PREFIX + "requests_denied_expired": 1,
        PREFIX + "requests_denied_not_yet_valid": 1,
        PREFIX + "requests_denied_bad_signature": 2,
        PREFIX + "requests_denied_malformed": 1,
        PREFIX + "requests_denied_too_large": 1,
        PREFIX + "requests_denied_unsupported_alg": 1,
        PREFIX + "requests_denied_crit_header": 1,
        PREFIX + "requests_denied_unknown_issuer": 1,
        PREFIX + "requests_denied_alg_mismatch": 1,
        PREFIX + "requests_denied_audience": 2,
    }


def test_counters_for_a_jwks_outage_and_unknown_kids(observed):
    assert deltas(observed, "audience:mix", "audience:end") == {
        PREFIX + "jwks_unknown_kid_refetch": 1,   # the second unknown kid is throttled
        PREFIX + "jwks_fetch_failure": 1,          # the refetch during the outage
        PREFIX + "jwks_fetch_success": 1,          # the retry after it
        PREFIX + "requests_denied_unknown_kid": 2,
        PREFIX + "requests_allowed": 1,
    }
    # The JWKS server saw exactly the fetches the counters report.
    end = observed.stats["audience:end"]
    assert observed.facts["audience:jwks_hits"] == end[PREFIX + "jwks_fetch_success"] + end[PREFIX + "jwks_fetch_failure"] == 3


def test_counters_with_require_token_and_keys_that_never_come(observed):
    failures = observed.facts["strict:down_hits"]
    assert failures >= 1
    assert observed.stats["strict:end"] == zeros(
        jwks_fetch_success=1,
        jwks_fetch_failure=failures,  # each 500 of the failing JWKS server, once
        requests_denied_missing=2,
        requests_denied_keys_unavailable=1,
        requests_allowed=1,
    )


def test_stats_page_shows_wasmcustom_names(launch, seed_jwks):
    """README: /stats shows the counters as wasmcustom.<name>."""
    env = launch(seed_config(seed_jwks.jwks_uri), jwks_port=seed_jwks.port)
    try:
        text = requests.get(env.admin_url + "/stats?filter=jwt_claims_filter", timeout=5).text
        names = {line.split(":")[0] for line in text.splitlines() if line.strip()}
        expected = {"wasmcustom." + n.replace(PREFIX, "jwt_claims_filter.", 1) for n in readme_metrics()}
        # requests_denied_<reason> is requests_denied.<reason> in the stat name.
        expected = {re.sub(r"requests_denied_", "requests_denied.", n) for n in expected}
        assert expected <= names, sorted(expected - names)
    finally:
        env.stop()


# --- logs ------------------------------------------------------------------------------------

LINE = re.compile(r"^\[[^\]]+\]\[\d+\]\[(\w+)\]\[(\w+)\] .*?wasm log[^:]*: (.*)$")


def filter_lines(log: str) -> list[tuple[str, str]]:
    """(level, message) of every line the filter logged."""
    out = []
    for line in log.splitlines():
        m = LINE.match(line)
        if m and m.group(2) == "wasm":
            out.append((m.group(1), m.group(3)))
    return out


def test_vm_start_names_the_version(observed):
    for name, log in observed.logs.items():
        lines = filter_lines(log)
        assert ("info", f"jwt-claims-filter {VERSION} starting") in lines, (name, lines[:10])
        assert any(level == "info" and re.fullmatch(r"jwt-claims-filter configured \(root context \d+, plugin name '[^']+'\)", text)
                   for level, text in lines), name


def test_rs_and_es_signatures_go_to_envoys_boringssl(observed):
    """The start-up probe (a fixed valid and a tampered ECDSA signature) must pass against
    Envoy 1.40's verify_signature, so RS*/ES* take the fast host path; losing it would only
    show as a slower benchmark otherwise."""
    for name, log in observed.logs.items():
        lines = filter_lines(log)
        host = ("info", "signatures: RS*/ES* verified by the host (Envoy verify_signature)")
        assert host in lines, (name, [m for _, m in lines if m.startswith("signatures")])
        assert not any(m.startswith("signatures: host verification unavailable") for _, m in lines), name


def test_rejections_are_logged_at_debug_with_their_reason(observed):
    lines = filter_lines(observed.logs["audience"]) + filter_lines(observed.logs["strict"])
    denied = [(lvl, msg) for lvl, msg in lines if msg.startswith("request denied")]
    assert denied and all(lvl == "debug" for lvl, _ in denied), denied
    reasons = {re.match(r"request denied: (\w+) \((\d+)\)", msg).groups() for _, msg in denied}
    assert reasons == {
        ("expired", "401"), ("not_yet_valid", "401"), ("bad_signature", "401"),
        ("malformed", "401"), ("too_large", "401"), ("unsupported_alg", "401"),
        ("crit_header", "401"), ("unknown_issuer", "401"), ("alg_mismatch", "401"),
        ("audience", "403"), ("unknown_kid", "401"), ("missing", "401"),
        ("keys_unavailable", "401"),
    }
    # One line per denied request.
    assert len(denied) == sum(1 for s in observed.sent if s.want in (401, 403))


def test_fetch_failures_are_warnings(observed):
    for name in ("audience", "strict"):
        lines = filter_lines(observed.logs[name])
        failed = [(lvl, msg) for lvl, msg in lines if re.search(r"rule \d+: fetch via cluster \S+ failed", msg)]
        assert failed, f"no fetch failure logged by the {name} Envoy"
        assert all(lvl == "warning" for lvl, _ in failed), failed
        assert all("HTTP status 500" in msg for _, msg in failed), failed
    # The strict Envoy logs one warning per failed fetch.
    strict_failed = [m for lvl, m in filter_lines(observed.logs["strict"]) if "failed: HTTP status 500" in m]
    assert len(strict_failed) == observed.stats["strict:end"][PREFIX + "jwks_fetch_failure"]


def test_no_errors_logged_by_the_filter(observed):
    for name, log in observed.logs.items():
        bad = [(lvl, msg) for lvl, msg in filter_lines(log) if lvl in ("error", "critical")]
        assert not bad, (name, bad)


def test_no_token_or_key_material_in_the_logs(observed):
    secrets: dict[str, str] = {}
    for s in observed.sent:
        if s.token:
            secrets[f"token of {s.label!r}"] = s.token
            for i, part in enumerate(s.token.split(".")):
                if len(part) >= 16:
                    secrets[f"segment {i} of {s.label!r}"] = part
    for jwk in json.loads(tokens.ISTIO_JWKS_PATH.read_text())["keys"]:
        secrets[f"n of {jwk['kid']}"] = jwk["n"]
        # Any 32-character window of the modulus, in case a log line cuts it.
        for i in range(0, len(jwk["n"]) - 32, 16):
            secrets[f"n[{i}:] of {jwk['kid']}"] = jwk["n"][i:i + 32]
    secrets["the JWKS document"] = tokens.jwks_json("istio")
    assert len(secrets) > 40
    for name, log in observed.logs.items():
        assert len(log) > 10_000, f"the {name} log looks empty"
        leaked = [what for what, value in secrets.items() if value in log]
        assert not leaked, f"the {name} Envoy's log holds: {leaked[:10]}"

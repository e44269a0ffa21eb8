"""`scripts/istio-envoy.sh --emit istio` (issue 21) of deploy/istio and of the e2e case inputs
(tests/fixtures/istio-cases): manifests a real Istio ingress gateway accepts and that behave
as `--emit envoy` does.

For each input: every manifest valid for its Istio CRD (tests/fixtures/istio-crds), no
RequestAuthentication left (a comment says what replaced it), one WasmPlugin whose
pluginConfig the filter's own parser accepts and which carries the RequestAuthentications'
jwtRules and every condition the routes and policies test, VirtualServices and
AuthorizationPolicies with nothing of `request.auth` left (only the condition headers), the
condition headers removed before the upstream on every http route, the rest passed through.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ → `support`
from crd_schema import CrdSet  # noqa: E402
from support import istio  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "fixtures" / "istio-cases"
CRDS = ROOT / "tests" / "fixtures" / "istio-crds"
COND = re.compile(r"^x-jwt-cond-[0-9]+$")

INPUTS = {
    "deploy": [ROOT / "deploy" / "istio"],
    "claims": [CASES / "claims"],
    "authz-task-deny": [CASES / "authz" / "base", CASES / "authz" / "task-deny"],
    "authz-policies": [CASES / "authz" / "base", CASES / "authz" / "policies"],
}


def _documents(paths: list[Path]) -> list[dict]:
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.yaml")) if p.is_dir() else [p])
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


@pytest.fixture(scope="session")
def crds() -> CrdSet:
    return CrdSet(CRDS)


@pytest.fixture(scope="module", params=list(INPUTS))
def case(request):
    """(name, input documents, compile result, output documents)."""
    result = istio.compile(INPUTS[request.param], emit="istio")
    assert result.returncode == 0, result.stderr
    out = [d for d in yaml.safe_load_all(result.stdout) if d]
    return request.param, _documents(INPUTS[request.param]), result, out


def _kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def _plugin_config(out: list[dict]) -> dict:
    (plugin,) = _kind(out, "WasmPlugin")
    return plugin["spec"]["pluginConfig"]


def _condition_headers(out: list[dict]) -> set[str]:
    return {c["header"] for c in _plugin_config(out).get("conditions", [])}


def _keys(value) -> list[str]:
    """Every mapping key in a document, at any depth."""
    if isinstance(value, dict):
        return [k for k in value] + [k for v in value.values() for k in _keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _keys(v)]
    return []


def test_only_warnings_on_stderr(case):
    _, _, result, _ = case
    ours = [ln for ln in result.stderr.splitlines() if ln.startswith("istio-envoy:")]
    assert all(ln.startswith("istio-envoy: warning:") for ln in ours), result.stderr


def test_every_manifest_validates_against_its_crd(case, crds):
    _, _, _, out = case
    assert out
    for doc in out:
        assert (doc["apiVersion"], doc["kind"]) in crds.schemas, (doc["apiVersion"], doc["kind"])
        assert crds.errors(doc) == [], (doc["kind"], doc["metadata"], crds.errors(doc))


def test_no_request_authentication_left(case):
    _, given, result, out = case
    assert _kind(out, "RequestAuthentication") == []
    comments = [ln for ln in result.stdout.splitlines() if ln.startswith("#")]
    for ra in _kind(given, "RequestAuthentication"):
        name = f"RequestAuthentication {ra['metadata'].get('namespace', 'default')}/{ra['metadata']['name']}"
        assert any(name in ln and "replaced" in ln for ln in comments), (name, comments)


def test_one_wasm_plugin_carries_the_rules_and_conditions(case):
    _, given, _, out = case
    (plugin,) = _kind(out, "WasmPlugin")
    assert plugin["spec"]["phase"] == "AUTHN"
    config = plugin["spec"]["pluginConfig"]
    rules = [r for ra in _kind(given, "RequestAuthentication") for r in ra["spec"]["jwtRules"]]
    assert [{k: r[k] for k in g} for r, g in zip(config["jwtRules"], rules)] == rules
    assert len(config["jwtRules"]) == len(rules)
    conditions = config.get("conditions", [])
    assert [c["header"] for c in conditions] == sorted({c["header"] for c in conditions},
                                                        key=lambda h: int(h.rsplit("-", 1)[1]))
    for c in conditions:
        assert COND.match(c["header"]), c
        assert ("claim" in c) != ("principal" in c), c
        assert sum(k in c for k in ("exact", "prefix", "suffix", "regex", "present")) == 1, c


def test_filter_accepts_the_plugin_config(case, tmp_path):
    _, _, _, out = case
    path = tmp_path / "plugin-config.json"
    path.write_text(json.dumps(_plugin_config(out)))
    result = subprocess.run(["cargo", "run", "--quiet", "--example", "check_config", "--", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_config_can_refuse(case, tmp_path):
    # The check above can fail: a condition with two matchers is refused by the filter.
    _, _, _, out = case
    config = _plugin_config(out)
    config = {**config, "conditions": [{"header": "x-jwt-cond-99", "claim": ["a"], "exact": "x", "prefix": "y"}]}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(config))
    result = subprocess.run(["cargo", "run", "--quiet", "--example", "check_config", "--", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "conditions[0]" in result.stderr


def test_virtual_services_test_only_condition_headers(case):
    _, given, _, out = case
    headers = _condition_headers(out)
    services = _kind(out, "VirtualService")
    assert len(services) == len(_kind(given, "VirtualService"))
    for vs in services:
        for key in _keys(vs["spec"]):
            assert "@request.auth.claims" not in key and not key.lower().startswith("x-jwt-claim"), key
        for route in vs["spec"].get("http", []):
            for m in route.get("match", []):
                for field, verdict in (("headers", "true"), ("withoutHeaders", None)):
                    for name, match in (m.get(field) or {}).items():
                        if COND.match(name):
                            assert field == "headers", (vs["metadata"], m)
                            assert name in headers, (name, headers)
                            assert match in ({"exact": "true"}, {"exact": "false"}), match


def test_condition_headers_removed_on_every_route(case):
    _, _, _, out = case
    headers = _condition_headers(out)
    for vs in _kind(out, "VirtualService"):
        for route in vs["spec"].get("http", []):
            removed = set(route.get("headers", {}).get("request", {}).get("remove", []))
            assert headers <= removed, (vs["metadata"]["name"], route.get("name"), headers - removed)


def test_claim_route_verdicts(case):
    """Claim `headers` become `exact: "true"`, claim `withoutHeaders` `exact: "false"`: the
    rewritten matches keep Istio's meaning, matched against the input route by route."""
    name, given, _, out = case
    for vs_in, vs_out in zip(_kind(given, "VirtualService"), _kind(out, "VirtualService")):
        for r_in, r_out in zip(vs_in["spec"].get("http", []), vs_out["spec"].get("http", [])):
            for m_in, m_out in zip(r_in.get("match", []), r_out.get("match", [])):
                claims = lambda f: [k for k in (m_in.get(f) or {})  # noqa: E731
                                    if k.startswith("@request.auth.claims") or k.lower().startswith("x-jwt-claim")]
                verdicts = sorted(v["exact"] for k, v in (m_out.get("headers") or {}).items() if COND.match(k))
                want = sorted(["true"] * len(claims("headers")) + ["false"] * len(claims("withoutHeaders")))
                assert verdicts == want, (r_in.get("name"), m_in, m_out)
                # Everything else of the match is the input's.
                plain = lambda m: {f: ({k: v for k, v in m[f].items()  # noqa: E731
                                        if not (k.startswith("@request.auth.claims") or COND.match(k)
                                                or k.lower().startswith("x-jwt-claim"))}
                                       if f in ("headers", "withoutHeaders") else m[f]) for f in m}
                strip_empty = lambda m: {k: v for k, v in m.items() if v != {}}  # noqa: E731
                assert strip_empty(plain(m_in)) == strip_empty(plain(m_out)), (m_in, m_out)
    if name == "claims":
        without = [m for vs in _kind(out, "VirtualService") for r in vs["spec"]["http"]
                   if r["name"] == "without-matched" for m in r["match"]]
        assert [v for m in without for v in m["headers"].values()] == [{"exact": "false"}]


def test_authorization_policies_test_only_condition_headers(case):
    _, given, _, out = case
    headers = _condition_headers(out) if _kind(out, "WasmPlugin") else set()
    policies = _kind(out, "AuthorizationPolicy")
    assert [p["metadata"] for p in policies] == [p["metadata"] for p in _kind(given, "AuthorizationPolicy")]
    for p in policies:
        assert p["apiVersion"].startswith("security.istio.io/")
        assert p["spec"].get("action", "ALLOW") in ("ALLOW", "DENY")
        for rule in p["spec"].get("rules", []):
            assert set(rule) <= {"from", "to", "when"}, rule
            for src in rule.get("from", []):
                assert not {"requestPrincipals", "notRequestPrincipals"} & set(src["source"]), src
            for w in rule.get("when", []):
                assert not w["key"].startswith("request.auth."), w
                m = re.fullmatch(r"request\.headers\[(.+)\]", w["key"])
                if m and COND.match(m.group(1)):
                    assert m.group(1) in headers, (w, headers)
                    assert w.get("values", ["true"]) == ["true"] and w.get("notValues", ["true"]) == ["true"], w


def test_the_rest_passes_through(case):
    _, given, _, out = case
    assert _kind(out, "Gateway") == _kind(given, "Gateway")
    # ServiceEntries and DestinationRules: the input's, plus those for JWKS hosts the input
    # does not describe.
    jwks_hosts = {re.match(r"https?://([^/:]+)", r["jwksUri"]).group(1)
                  for r in _plugin_config(out)["jwtRules"] if "jwksUri" in r}
    for kind, hosts in (("ServiceEntry", lambda d: set(d["spec"]["hosts"])),
                        ("DestinationRule", lambda d: {d["spec"]["host"]})):
        given_docs, out_docs = _kind(given, kind), _kind(out, kind)
        assert [d for d in out_docs if d in given_docs] == given_docs, kind
        for d in out_docs:
            if d not in given_docs:
                assert hosts(d) <= jwks_hosts, d


def test_emit_istio_of_its_own_output_is_the_same(case, tmp_path):
    # Applied manifests compiled again (e.g. after an edit) must not drift: the rewritten
    # matches test the same headers, the plugin keeps its conditions and rules.
    _, _, _, out = case
    folder = tmp_path / "again"
    folder.mkdir()
    (folder / "compiled.yaml").write_text(yaml.safe_dump_all(out, sort_keys=False))
    again = istio.compile([folder], emit="istio")
    assert again.returncode == 0, again.stderr
    assert [d for d in yaml.safe_load_all(again.stdout) if d] == out


def test_committed_gateway_manifests_are_the_compilers_output():
    """deploy/istio-gateway/manifests.yaml is what a real gateway applies for the task
    (`kubectl apply -f`): exactly `--emit istio deploy/istio`, kept in step by this test.
    Regenerate: scripts/istio-envoy.sh --emit istio deploy/istio > deploy/istio-gateway/manifests.yaml"""
    result = istio.compile([ROOT / "deploy" / "istio"], emit="istio")
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "deploy" / "istio-gateway" / "manifests.yaml").read_text()
    assert committed == result.stdout

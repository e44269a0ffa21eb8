"""deploy/istio: the task's resources as the task prints them, every manifest (and every one
the compiler writes for Istio) valid for its Istio CRD, and envoy.yaml answering as they do.

The CRDs are copies of istio/api's, kept in tests/fixtures/istio-crds so the tests need no
cluster and nothing outside the repository; the task's page is in tests/fixtures/istio-task.
The tests of `--emit istio` run the compiler (scripts/istio-envoy.sh builds it first).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ → `support`
from crd_schema import CrdSet, convert, load_documents, Validator  # noqa: E402
from support import istio  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "istio"
BROWSER = DEPLOY / "browser"
GATEWAY_ONLY = DEPLOY / "gateway-only"
CRDS = ROOT / "tests" / "fixtures" / "istio-crds"
CHECK_CONFIG = ROOT / "examples" / "check_config.rs"
ENVOY_YAML = ROOT / "envoy.yaml"


@pytest.fixture(scope="session")
def crds() -> CrdSet:
    return CrdSet(CRDS)


def _files() -> list[Path]:
    """deploy/istio's manifests; browser/'s and gateway-only/'s links to them are the same
    files, counted once."""
    own = [p for d in (BROWSER, GATEWAY_ONLY) for p in sorted(d.glob("*.yaml")) if not p.is_symlink()]
    return sorted(DEPLOY.glob("*.yaml")) + own


def _manifests() -> list[tuple[str, dict]]:
    found = []
    for path in _files():
        for doc in load_documents(path):
            name = path.relative_to(DEPLOY)
            found.append((f"{name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc))
    return found


MANIFESTS = _manifests()
# The claim section of the task, what `istio-envoy deploy/istio` compiles.
TOP = [doc for name, doc in MANIFESTS if "/" not in name.split(":")[0]]


def _only(kind: str, docs: list[dict] | None = None) -> dict:
    found = [doc for doc in (TOP if docs is None else docs) if doc["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def _wasm_plugins() -> list[dict]:
    return [doc for doc in TOP if doc["kind"] == "WasmPlugin"]


# --- the task, verbatim -----------------------------------------------------------------------


def test_deploy_has_the_task_resources():
    assert sorted(doc["kind"] for doc in TOP) == [
        "Gateway", "RequestAuthentication", "ServiceEntry", "VirtualService", "WasmPlugin"]
    # The browser section replaces the Gateway and the VirtualService and keeps the rest.
    own = sorted(p.name for p in BROWSER.glob("*.yaml") if not p.is_symlink())
    assert own == ["gateway.yaml", "virtualservice.yaml"]
    links = {p.name: p.resolve() for p in BROWSER.glob("*.yaml") if p.is_symlink()}
    assert links == {n: (DEPLOY / n).resolve() for n in
                     ("requestauthentication.yaml", "httpbin-serviceentry.yaml", "wasmplugin.yaml")}
    # The task's first step: its first VirtualService with the same Gateway, before JWT.
    own = sorted(p.name for p in GATEWAY_ONLY.glob("*.yaml") if not p.is_symlink())
    assert own == ["virtualservice.yaml"]
    links = {p.name: p.resolve() for p in GATEWAY_ONLY.glob("*.yaml") if p.is_symlink()}
    assert links == {n: (DEPLOY / n).resolve() for n in ("gateway.yaml", "httpbin-serviceentry.yaml")}


def _body(path: Path) -> str:
    """The file without its leading comment (which says where in the task it is)."""
    lines = path.read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


TASK_FILES = [
    ("gateway.yaml", 0, 0),
    ("gateway-only/virtualservice.yaml", 1, 0),
    ("requestauthentication.yaml", 2, 0),
    ("virtualservice.yaml", 3, 0),
    ("browser/gateway.yaml", 4, 0),
    ("browser/virtualservice.yaml", 4, 1),
]


@pytest.mark.parametrize("name, block, part", TASK_FILES, ids=[f[0] for f in TASK_FILES])
def test_file_is_the_task_verbatim(name, block, part):
    """Field order, quoting and the task's comments included: text, not only data."""
    blocks = istio.task_yaml()
    assert len(blocks) == 5, "the task's page no longer has its five kubectl apply blocks"
    expected = blocks[block].split("---\n")[part]
    path = DEPLOY / name
    assert path.read_text().startswith("#"), f"{name} has no header comment saying where it is from"
    assert _body(path) == expected


def test_jwks_uri_is_the_task_github_file():
    (rule,) = _only("RequestAuthentication")["spec"]["jwtRules"]
    assert rule == {"issuer": "testing@secure.istio.io",
                    "jwksUri": f"https://{istio.TASK_JWKS_HOST}{istio.TASK_JWKS_PATH}"}


def test_httpbin_service_entry_names_the_destination():
    entry = _only("ServiceEntry")
    assert entry["spec"]["hosts"] == ["httpbin"]
    assert entry["spec"]["resolution"] == "DNS"
    (port,) = entry["spec"]["ports"]
    destinations = [d["destination"] for r in _only("VirtualService")["spec"]["http"] for d in r["route"]]
    assert destinations == [{"port": {"number": port["number"]}, "host": "httpbin"}]


# --- every manifest against its CRD -----------------------------------------------------------


@pytest.mark.parametrize("manifest", [doc for _, doc in MANIFESTS], ids=[name for name, _ in MANIFESTS])
def test_manifest_validates_against_its_crd(crds, manifest):
    assert crds.errors(manifest) == []


# --- the validator really rejects what the API server rejects ---------------------------------


# A DestinationRule like the ones the tests add for the task's JWKS host (deploy/ has none).
SAMPLE_RULE = {
    "apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
    "metadata": {"name": "jwks", "namespace": "istio-system"},
    "spec": {"host": istio.TASK_JWKS_HOST,
             "trafficPolicy": {"tls": {"mode": "SIMPLE", "caCertificates": "/etc/ca.pem"}}},
}


def _broken(kind: str, change) -> dict:
    doc = copy.deepcopy(SAMPLE_RULE if kind == "DestinationRule" else _only(kind))
    change(doc)
    return doc


BROKEN = [
    ("phase-wrong-type", "WasmPlugin", lambda d: d["spec"].update(phase=1), "spec.phase: 1 is not of type 'string'"),
    ("phase-not-in-enum", "WasmPlugin", lambda d: d["spec"].update(phase="AUTH"), "spec.phase: 'AUTH' is not one of"),
    ("unknown-spec-field", "WasmPlugin", lambda d: d["spec"].update(pahse="AUTHN"), "'pahse' was unexpected"),
    ("unknown-nested-field", "WasmPlugin", lambda d: d["spec"]["selector"].update(labels={"a": "b"}), "'labels' was unexpected"),
    ("missing-required", "WasmPlugin", lambda d: d["spec"].pop("url"), "'url' is a required property"),
    # An unquoted all-digit digest is a YAML integer, which the API server refuses.
    ("sha256-unquoted-digits", "WasmPlugin", lambda d: d["spec"].update(sha256=1234), "spec.sha256: 1234 is not of type 'string'"),
    ("sha256-with-prefix", "WasmPlugin", lambda d: d["spec"].update(sha256="sha256:abc"), "spec.sha256: 'sha256:abc' does not match"),
    ("int32-overflow", "WasmPlugin", lambda d: d["spec"].update(priority=2**31), "out of range for format int32"),
    ("unserved-version", "WasmPlugin", lambda d: d.update(apiVersion="extensions.istio.io/v1"), "no served CRD version"),
    ("unknown-metadata-field", "WasmPlugin", lambda d: d["metadata"].update(nmae="x"), "'nmae' was unexpected"),
    ("port-as-string", "Gateway", lambda d: d["spec"]["servers"][0]["port"].update(number="80"), "'80' is not of type 'integer'"),
    (
        "two-string-matches",
        "VirtualService",
        lambda d: d["spec"]["http"][0]["match"][2]["headers"]["x-jwt-claim.groups"].update(prefix="group"),
        "is valid under each of",
    ),
    ("location-not-in-enum", "ServiceEntry", lambda d: d["spec"].update(location="EXTERNAL"), "'EXTERNAL' is not one of"),
    (
        "duplicate-list-map-key",
        "ServiceEntry",
        lambda d: d["spec"]["ports"].append({"number": 8443, "name": "http", "protocol": "HTTP"}),
        "duplicate entry for list-map keys ['name']",
    ),
    ("tls-mode-not-in-enum", "DestinationRule", lambda d: d["spec"]["trafficPolicy"]["tls"].update(mode="TLS"), "'TLS' is not one of"),
    ("unknown-tls-field", "DestinationRule", lambda d: d["spec"]["trafficPolicy"]["tls"].update(verify=True), "'verify' was unexpected"),
    ("unknown-jwt-rule-field", "RequestAuthentication", lambda d: d["spec"]["jwtRules"][0].update(jwksUrl="x"), "'jwksUrl' was unexpected"),
    ("jwt-rules-not-a-list", "RequestAuthentication", lambda d: d["spec"].update(jwtRules={"issuer": "x"}), "is not of type 'array'"),
]


@pytest.mark.parametrize("kind, change, expected", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_validator_rejects_a_broken_manifest(crds, kind, change, expected):
    errors = crds.errors(_broken(kind, change))
    assert any(expected in e for e in errors), errors


def test_validator_keeps_what_the_schema_leaves_open(crds):
    # pluginConfig has x-kubernetes-preserve-unknown-fields: any JSON object is the plugin's business.
    doc = _broken("WasmPlugin", lambda d: d["spec"]["pluginConfig"].update(anything={"nested": [1, None]}))
    assert crds.errors(doc) == []
    # priority is `nullable: true`.
    assert crds.errors(_broken("WasmPlugin", lambda d: d["spec"].update(priority=None))) == []


def test_schema_conversion_of_kubernetes_extensions():
    schema = convert(
        {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "bare": {"x-kubernetes-int-or-string": True},
                "maybe": {"type": "string", "nullable": True, "enum": ["A", "B"]},
                "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "empty": {"type": "object"},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            },
        }
    )
    v = Validator(schema)
    assert v.is_valid({"port": 80, "bare": "http", "maybe": None, "open": {"x": 1}, "tags": ["a", "b"]})
    assert not v.is_valid({"port": 1.5})
    assert not v.is_valid({"bare": True})
    assert not v.is_valid({"maybe": "C"})
    assert not v.is_valid({"empty": {"x": 1}})  # no properties, not preserved: the server prunes x
    assert not v.is_valid({"tags": ["a", "a"]})
    assert not v.is_valid({"other": 1})


# --- what `--emit istio` makes of deploy/istio ------------------------------------------------


COND_HEADER = re.compile(r"^x-jwt-cond-[0-9]+$")


@pytest.fixture(scope="module")
def emitted() -> subprocess.CompletedProcess:
    result = istio.compile([DEPLOY], emit="istio")
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def out(emitted) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(emitted.stdout) if doc]


def _one(docs: list[dict], kind: str, **where) -> dict:
    found = [d for d in docs if d["kind"] == kind and all(d["spec"].get(k) == v for k, v in where.items())]
    assert len(found) == 1, f"{len(found)} {kind} {where or ''} in the output: {[d['metadata'] for d in found]}"
    return found[0]


def _headers_condition(vs: dict) -> str:
    """The condition header the compiled /headers match tests for `true`."""
    (route,) = vs["spec"]["http"]
    (match,) = [m for m in route["match"] if m["uri"] == {"prefix": "/headers"}]
    (name,) = match["headers"]
    assert COND_HEADER.match(name), match
    assert match["headers"][name] == {"exact": "true"}
    return name


def test_emit_istio_warns_about_the_old_claim_spelling(emitted):
    warnings = [ln for ln in emitted.stderr.splitlines() if ln.startswith("istio-envoy: warning:")]
    assert any("x-jwt-claim" in ln and "@request.auth.claims" in ln for ln in warnings), emitted.stderr
    # Only warnings from the compiler (stderr also carries cargo's own output when it builds).
    ours = [ln for ln in emitted.stderr.splitlines() if ln.startswith("istio-envoy:")]
    assert ours == warnings, emitted.stderr


def test_emit_istio_validates_against_the_crds(crds, out):
    assert out
    for doc in out:
        assert crds.errors(doc) == [], doc["metadata"]


def test_emit_istio_replaces_the_request_authentication_with_a_comment(emitted, out):
    assert not [d for d in out if d["kind"] == "RequestAuthentication"]
    comments = [ln for ln in emitted.stdout.splitlines() if ln.startswith("#")]
    assert any("RequestAuthentication" in ln and "ingress-jwt" in ln for ln in comments), comments


def test_emit_istio_passes_the_rest_through(out):
    assert _one(out, "Gateway") == _only("Gateway")
    assert _one(out, "ServiceEntry", hosts=["httpbin"]) == _only("ServiceEntry")


def test_emit_istio_rewrites_the_claim_match(out):
    given, vs = _only("VirtualService"), _one(out, "VirtualService")
    assert vs["metadata"] == given["metadata"]
    header = _headers_condition(vs)
    (route,), (given_route,) = vs["spec"]["http"], given["spec"]["http"]
    # The other two matches and the destination are the task's.
    assert [m for m in route["match"] if "headers" not in m] == given_route["match"][:2]
    assert route["route"] == given_route["route"]
    # The condition header never reaches httpbin.
    assert header in route["headers"]["request"]["remove"]
    assert "x-jwt-claim.groups" not in json.dumps(vs)


def test_emit_istio_hands_rules_and_conditions_to_the_plugin(out):
    plugin, given = _one(out, "WasmPlugin"), _only("WasmPlugin")
    header = _headers_condition(_one(out, "VirtualService"))
    config = plugin["spec"]["pluginConfig"]
    (rule,) = config["jwtRules"]
    (given_rule,) = _only("RequestAuthentication")["spec"]["jwtRules"]
    assert {k: rule[k] for k in given_rule} == given_rule
    assert config["conditions"] == [{"header": header, "claim": ["groups"], "exact": "group1"}]
    assert config["claimHeaders"] == given["spec"]["pluginConfig"]["claimHeaders"]
    # Everything but pluginConfig is the WasmPlugin of deploy/istio.
    assert {k: v for k, v in plugin["spec"].items() if k != "pluginConfig"} == \
        {k: v for k, v in given["spec"].items() if k != "pluginConfig"}
    assert plugin["metadata"] == given["metadata"]


def test_emit_istio_makes_the_jwks_host_a_tls_cluster(out):
    (rule,) = _one(out, "WasmPlugin")["spec"]["pluginConfig"]["jwtRules"]
    uri = urlsplit(rule["jwksUri"])
    assert (uri.scheme, uri.hostname, uri.port) == ("https", istio.TASK_JWKS_HOST, None)
    # jwksCluster defaults to Istio's name for the URI's host; spelt out, it must be that name.
    assert rule.get("jwksCluster", f"outbound|443||{uri.hostname}") == f"outbound|443||{uri.hostname}"
    entry = _one(out, "ServiceEntry", hosts=[uri.hostname])
    assert entry["spec"]["location"] == "MESH_EXTERNAL"
    assert entry["spec"]["resolution"] == "DNS"
    (port,) = entry["spec"]["ports"]
    assert port["number"] == 443
    # The filter speaks HTTP to the cluster and Envoy originates TLS (SNI = the host): an HTTP
    # port and a DestinationRule with tls SIMPLE.
    assert port["protocol"] == "HTTP"
    policy = _one(out, "DestinationRule", host=uri.hostname)["spec"]["trafficPolicy"]
    # For the whole host, or for the port (Istio applies a port's settings over the host's).
    at_port = [s["tls"] for s in policy.get("portLevelSettings", []) if s["port"] == {"number": 443}]
    tls = at_port[0] if at_port else policy["tls"]
    assert tls["mode"] == "SIMPLE"
    assert tls.get("sni", uri.hostname) == uri.hostname


# --- envoy.yaml is the compiled task, written by hand -----------------------------------------


def _envoy_yaml() -> tuple[dict, dict]:
    """envoy.yaml's route_config and its filter's JSON configuration."""
    cfg = yaml.safe_load(ENVOY_YAML.read_text())
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    return hcm["route_config"], json.loads(wasm["typed_config"]["config"]["configuration"]["value"])


def test_envoy_yaml_routes_on_the_compiled_condition(out):
    route_config, filter_config = _envoy_yaml()
    compiled = _one(out, "WasmPlugin")["spec"]["pluginConfig"]
    # The same condition (envoy.yaml may name its header otherwise) and claim headers.
    strip = lambda conds: [{k: v for k, v in c.items() if k != "header"} for c in conds]  # noqa: E731
    assert strip(filter_config["conditions"]) == strip(compiled["conditions"])
    assert filter_config["claimHeaders"] == compiled["claimHeaders"]
    assert [r["issuer"] for r in filter_config["jwtRules"]] == [r["issuer"] for r in compiled["jwtRules"]]
    (cond,) = filter_config["conditions"]
    (vhost, *_) = route_config["virtual_hosts"]
    (headers_route,) = [r for r in vhost["routes"] if r["match"].get("prefix") == "/headers"]
    assert headers_route["match"]["headers"] == [{"name": cond["header"], "string_match": {"exact": "true"}}]
    assert cond["header"] in route_config["request_headers_to_remove"]


@pytest.mark.parametrize("plugin", _wasm_plugins(), ids=lambda p: p["metadata"]["name"])
def test_wasmplugin_shape(plugin):
    spec = plugin["spec"]
    assert plugin["metadata"]["namespace"] == "istio-system"
    assert spec["selector"] == {"matchLabels": {"istio": "ingressgateway"}}
    assert spec["phase"] == "AUTHN"
    # CEL rules of the CRD that the schema validator does not evaluate:
    assert sum(k in spec for k in ("selector", "targetRef", "targetRefs")) <= 1
    assert urlsplit(spec["url"]).scheme in ("oci", "http", "https", "file")
    # The release the url names is the crate's version (package-oci.sh tags the image with it).
    version = re.search(r'^version = "(.+)"$', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    assert spec["url"] == f"oci://ghcr.io/example/jwt-claims-filter:{version}"
    # For oci:// Istio compares sha256 with the image manifest digest: 64 lower-case hex digits,
    # a quoted YAML string (see test_oci.py for the digest itself).
    assert isinstance(spec["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", spec["sha256"])


# --- the filter's own configuration code accepts each pluginConfig ----------------------------


def _check_config(config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "plugin-config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        ["cargo", "run", "--quiet", "--example", "check_config", "--", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


needs_check_config = pytest.mark.skipif(
    not CHECK_CONFIG.exists(), reason="examples/check_config.rs does not exist yet"
)


@needs_check_config
def test_filter_accepts_the_compiled_plugin_config(out, tmp_path):
    result = _check_config(_one(out, "WasmPlugin")["spec"]["pluginConfig"], tmp_path)
    assert result.returncode == 0, result.stderr


@needs_check_config
def test_filter_accepts_envoy_yaml_config(tmp_path):
    result = _check_config(_envoy_yaml()[1], tmp_path)
    assert result.returncode == 0, result.stderr


@needs_check_config
def test_filter_rejects_a_broken_plugin_config(out, tmp_path):
    # Proves the check above can fail: an unknown field is a configuration error naming it.
    config = copy.deepcopy(_one(out, "WasmPlugin")["spec"]["pluginConfig"])
    config["jwtRules"][0]["jwksUrl"] = config["jwtRules"][0]["jwksUri"]
    result = _check_config(config, tmp_path)
    assert result.returncode != 0
    assert "jwksUrl" in result.stderr

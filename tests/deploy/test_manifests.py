"""deploy/istio: every manifest is valid for its Istio CRD, and the manifests fit together.

The CRDs are copies of istio/api's, kept in tests/fixtures/istio-crds so the tests need no
cluster and nothing outside the repository.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crd_schema import CrdSet, convert, load_documents, Validator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "istio"
CRDS = ROOT / "tests" / "fixtures" / "istio-crds"
CHECK_CONFIG = ROOT / "examples" / "check_config.rs"


@pytest.fixture(scope="session")
def crds() -> CrdSet:
    return CrdSet(CRDS)


def _manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in load_documents(path):
            found.append((f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc))
    return found


MANIFESTS = _manifests()


def _only(kind: str) -> dict:
    docs = [doc for _, doc in MANIFESTS if doc["kind"] == kind]
    assert len(docs) == 1, f"expected exactly one {kind} in deploy/istio, found {len(docs)}"
    return docs[0]


def _wasm_plugins() -> list[dict]:
    return [doc for _, doc in MANIFESTS if doc["kind"] == "WasmPlugin"]


# --- every manifest against its CRD -----------------------------------------------------------


def test_deploy_has_the_seed_resources():
    kinds = sorted(doc["kind"] for _, doc in MANIFESTS)
    assert kinds == ["DestinationRule", "Gateway", "ServiceEntry", "VirtualService", "WasmPlugin"]


@pytest.mark.parametrize("manifest", [doc for _, doc in MANIFESTS], ids=[name for name, _ in MANIFESTS])
def test_manifest_validates_against_its_crd(crds, manifest):
    assert crds.errors(manifest) == []


# --- the validator really rejects what the API server rejects ---------------------------------


def _broken(kind: str, change) -> dict:
    doc = copy.deepcopy(_only(kind))
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
        lambda d: d["spec"]["http"][1]["match"][0]["headers"]["x-jwt-claim.groups"].update(exact="group1"),
        "is valid under each of",
    ),
    ("location-not-in-enum", "ServiceEntry", lambda d: d["spec"].update(location="EXTERNAL"), "'EXTERNAL' is not one of"),
    (
        "duplicate-list-map-key",
        "ServiceEntry",
        lambda d: d["spec"]["ports"].append({"number": 8443, "name": "http-idp", "protocol": "HTTP"}),
        "duplicate entry for list-map keys ['name']",
    ),
    ("tls-mode-not-in-enum", "DestinationRule", lambda d: d["spec"]["trafficPolicy"]["tls"].update(mode="TLS"), "'TLS' is not one of"),
    ("unknown-tls-field", "DestinationRule", lambda d: d["spec"]["trafficPolicy"]["tls"].update(verify=True), "'verify' was unexpected"),
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


# --- the manifests fit together ---------------------------------------------------------------


def test_gateway_and_virtualservice_are_the_seeds():
    gateway, vs = _only("Gateway"), _only("VirtualService")
    assert gateway["metadata"]["name"] == "httpbin-gateway"
    assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}
    (server,) = gateway["spec"]["servers"]
    assert server["port"] == {"number": 80, "name": "http", "protocol": "HTTP"}
    assert server["hosts"] == ["httpbin.example.com"]

    assert vs["metadata"]["name"] == "httpbin"
    assert vs["spec"]["hosts"] == ["httpbin.example.com"]
    assert vs["spec"]["gateways"] == ["httpbin-gateway"]
    prefixes = {}
    for route in vs["spec"]["http"]:
        assert [r["destination"] for r in route["route"]] == [{"host": "httpbin", "port": {"number": 8000}}]
        for match in route["match"]:
            prefixes[match["uri"]["prefix"]] = match.get("headers")
    assert prefixes == {
        "/status": None,
        "/delay": None,
        "/headers": {"x-jwt-claim.groups": {"regex": "(.*,)?group1(,.*)?"}},
    }


@pytest.mark.parametrize(
    "value, routed",
    [
        ("group1", True),
        ("group1,group2", True),
        ("group2,group1", True),
        ("a,group1,b", True),
        ("group10", False),
        ("group2", False),
        ("xgroup1", False),
        ("group1x,group2", False),
        ("", False),
    ],
)
def test_headers_route_matches_group1_as_a_list_element(value, routed):
    # Istio matches header regexes against the whole value (RE2 FullMatch), like fullmatch here.
    regex = _only("VirtualService")["spec"]["http"][1]["match"][0]["headers"]["x-jwt-claim.groups"]["regex"]
    assert (re.fullmatch(regex, value) is not None) is routed


def test_virtualservice_routes_on_a_header_the_plugin_writes():
    vs_headers = {
        name
        for route in _only("VirtualService")["spec"]["http"]
        for match in route["match"]
        for name in match.get("headers", {})
    }
    written = {h for plugin in _wasm_plugins() for h in plugin["spec"]["pluginConfig"].get("claimHeaders", [])}
    assert vs_headers and vs_headers <= written
    # Istio's validation wants lower-case header names in matches.
    assert all(name == name.lower() for name in vs_headers)


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


def _clusters_from_service_entries() -> dict[str, dict]:
    """Istio's outbound cluster names (outbound|<port>||<host>) that the ServiceEntries create."""
    clusters = {}
    for _, doc in MANIFESTS:
        if doc["kind"] == "ServiceEntry":
            for host in doc["spec"]["hosts"]:
                for port in doc["spec"]["ports"]:
                    clusters[f"outbound|{port['number']}||{host}"] = {"entry": doc, "port": port, "host": host}
    return clusters


@pytest.mark.parametrize("plugin", _wasm_plugins(), ids=lambda p: p["metadata"]["name"])
def test_every_jwks_cluster_exists_with_tls_origination(plugin):
    clusters = _clusters_from_service_entries()
    rules = plugin["spec"]["pluginConfig"]["jwtRules"]
    assert rules
    for rule in rules:
        uri = urlsplit(rule["jwksUri"])
        port = uri.port or {"https": 443, "http": 80}[uri.scheme]
        # jwksCluster defaults to Istio's name for the URI's host; spelt out, it must be that name.
        cluster = rule.get("jwksCluster", f"outbound|{port}||{uri.hostname}")
        assert cluster == f"outbound|{port}||{uri.hostname}"
        assert cluster in clusters, f"{cluster} is made by no ServiceEntry in deploy/istio"
        found = clusters[cluster]
        assert found["entry"]["spec"]["location"] == "MESH_EXTERNAL"
        assert found["entry"]["spec"]["resolution"] == "DNS"
        # The filter speaks HTTP to the cluster; Envoy originates TLS. So the port is HTTP...
        assert found["port"]["protocol"] == "HTTP"
        # ...and a DestinationRule for the host turns on TLS with the host's SNI.
        (rule_doc,) = [d for _, d in MANIFESTS if d["kind"] == "DestinationRule" and d["spec"]["host"] == uri.hostname]
        tls = rule_doc["spec"]["trafficPolicy"]["tls"]
        assert tls == {"mode": "SIMPLE", "sni": uri.hostname}
        assert uri.scheme == "https"


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
@pytest.mark.parametrize("plugin", _wasm_plugins(), ids=lambda p: p["metadata"]["name"])
def test_filter_accepts_plugin_config(plugin, tmp_path):
    result = _check_config(plugin["spec"]["pluginConfig"], tmp_path)
    assert result.returncode == 0, result.stderr


@needs_check_config
def test_filter_rejects_a_broken_plugin_config(tmp_path):
    # Proves the check above can fail: an unknown field is a configuration error naming it.
    config = copy.deepcopy(_wasm_plugins()[0]["spec"]["pluginConfig"])
    config["jwtRules"][0]["jwksUrl"] = config["jwtRules"][0]["jwksUri"]
    result = _check_config(config, tmp_path)
    assert result.returncode != 0
    assert "jwksUrl" in result.stderr

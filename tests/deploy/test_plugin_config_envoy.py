"""Each WasmPlugin's pluginConfig, loaded by the filter inside a real Envoy: the WasmPlugins
that `scripts/istio-envoy.sh --emit istio deploy/istio` writes for a real gateway (the
RequestAuthentication's jwtRules and the routes' conditions merged into deploy/istio's own).

test_manifests.py checks every pluginConfig with the filter's own parser (check_config); this
loads it into Envoy as the gateway would and sends a token through. The pluginConfig is taken
as written, with only what cannot work here changed: each rule's jwksUri points at a local JWKS
server serving the Istio sample keys, through the harness's `jwks` cluster.

Each config is loaded twice:
  envoy.yaml   the repository's Envoy configuration (the harness default);
  istio        the Wasm filter shaped as istiod builds it from a WasmPlugin: name
               `<namespace>.<name>`, root_id = spec.pluginName (empty when unset), no vm_id,
               the VM environment istiod adds, and the pluginConfig as protojson in a
               google.protobuf.StringValue.
Needs the built module (scripts/build.sh) and the venv (scripts/setup.sh).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ → `support`
from support import tokens  # noqa: E402
from support.envoy import ENVOY_YAML, ROOT, start_envoy, start_httpbin  # noqa: E402
from support.istio import compile as istio_compile  # noqa: E402
from support.jwks_server import JwksServer  # noqa: E402

DEPLOY = ROOT / "deploy" / "istio"


def _emitted_plugins() -> list[dict]:
    out = istio_compile([DEPLOY], emit="istio")
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc and doc.get("kind") == "WasmPlugin"]


PLUGINS = _emitted_plugins()


def test_there_is_a_wasmplugin():
    assert PLUGINS, f"no WasmPlugin in {DEPLOY}"


def plugin_config_json(plugin: dict) -> str:
    """The pluginConfig as istiod hands it to Envoy: protojson of a protobuf Struct. Whole
    numbers (doubles in a Struct) print without a fraction, as json.dumps prints the YAML's
    integers; protojson orders object keys."""
    return json.dumps(plugin["spec"].get("pluginConfig", {}), sort_keys=True)


def for_local_jwks(config: dict, jwks_uri: str) -> dict:
    """Each rule's jwksUri/jwksCluster pointed at the local JWKS server; all else kept."""
    for i, rule in enumerate(config.get("jwtRules", [])):
        if "jwks" in rule:
            continue  # inline keys: nothing to fetch
        assert "jwksUri" in rule, (f"jwtRules[{i}] uses OpenID discovery; this test knows "
                                   "only rules with jwksUri or inline jwks")
        rule["jwksUri"] = jwks_uri
        rule["jwksCluster"] = "jwks"
    return config


def token_for(config: dict) -> str:
    """The Istio sample's groups-scope token when the first rule is the sample issuer and
    asks for no audience; otherwise a token like it for that rule, signed with the sample key."""
    rule = config["jwtRules"][0]
    if rule["issuer"] == tokens.ISTIO_ISSUER and not rule.get("audiences"):
        return tokens.GROUPS_SCOPE_JWT
    extra = {"aud": rule["audiences"][0]} if rule.get("audiences") else {}
    return tokens.mint(tokens.claims(issuer=rule["issuer"], **extra))


def istio_shaped_envoy_yaml(plugin: dict, workdir: Path) -> Path:
    """envoy.yaml with its Wasm filter's PluginConfig built the way istiod builds it."""
    cfg = yaml.safe_load(ENVOY_YAML.read_text())
    spec, meta = plugin["spec"], plugin["metadata"]
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (wasm,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    env = {"ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "1"}
    if spec.get("imagePullPolicy"):
        env["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = spec["imagePullPolicy"]
    wasm["typed_config"]["config"] = {
        "name": f"{meta['namespace']}.{meta['name']}",
        "root_id": spec.get("pluginName", ""),
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            # istiod points at the image; the agent swaps in the downloaded module. The
            # harness puts the built module's path here.
            "code": {"local": {"filename": "wasm/jwt_claims_filter.wasm"}},
            "environment_variables": {"key_values": env},
        },
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "{}"},
        # istiod maps failStrategy onto PluginConfig.failure_policy (FAIL_CLOSE: FAIL_CLOSED).
        "failure_policy": {"FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}.get(
            spec.get("failStrategy", ""), "FAIL_CLOSED"),
    }
    path = workdir / f"envoy-istio-{meta['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def httpbin(tmp_path_factory):
    hb = start_httpbin(workdir=tmp_path_factory.mktemp("httpbin"))
    yield hb
    hb.stop()


@pytest.fixture(scope="module")
def jwks():
    with JwksServer(keyset="istio") as srv:
        yield srv


@pytest.mark.parametrize("shape", ["envoy.yaml", "istio"])
@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p["metadata"]["name"])
def test_plugin_config_runs_in_envoy(plugin, shape, httpbin, jwks, tmp_path):
    config = for_local_jwks(json.loads(plugin_config_json(plugin)), jwks.jwks_uri)
    config_path = istio_shaped_envoy_yaml(plugin, tmp_path) if shape == "istio" else None
    jwks.reset_hits()
    env = start_envoy(json.dumps(config, sort_keys=True), jwks_port=jwks.port,
                      httpbin_port=httpbin.port, workdir=tmp_path, config_path=config_path)
    try:
        token = token_for(config)
        r = env.get("/headers", token=token)
        assert r.status_code == 200, f"{r.status_code} {r.text[:200]}\n{env.log_tail(30)}"
        echoed = {k.lower(): v for k, v in r.json()["headers"].items()}
        assert echoed.get("x-jwt-claim.groups") == "group1,group2", echoed
        # The filter is in the path: a bad token is refused, no token gets no claim header.
        assert env.get("/headers", token="some.invalid.token").status_code == 401
        assert env.get("/headers").status_code == 404
        # One key fetch for the whole Envoy (two workers), also with istiod's empty vm_id.
        assert jwks.hits == 1, jwks.status()
        assert env.alive()
    finally:
        env.stop()  # Envoy writes its log file out at exit
    log = env.log
    assert "jwt-claims-filter configured" in log, env.log_tail(40)
    for bad in ("invalid configuration", "Unable to create Wasm plugin", "panicked", "wasm trap"):
        assert bad not in log, f"{bad!r} in Envoy's log:\n{env.log_tail(40)}"


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p["metadata"]["name"])
def test_a_broken_plugin_config_is_refused_by_envoy(plugin, httpbin, jwks, tmp_path):
    """The check above can fail: with an unknown rule field, Envoy refuses the Istio-shaped
    filter at start-up, and the filter's log line names the field."""
    config = for_local_jwks(json.loads(plugin_config_json(plugin)), jwks.jwks_uri)
    config["jwtRules"][0]["jwksUrl"] = config["jwtRules"][0]["jwksUri"]
    env = start_envoy(config, jwks_port=jwks.port, httpbin_port=httpbin.port, workdir=tmp_path,
                      config_path=istio_shaped_envoy_yaml(plugin, tmp_path), wait_ready=False)
    try:
        env.proc.wait(timeout=30)
    except Exception:
        env.stop()
        pytest.fail(f"Envoy still runs 30 s after start with a broken pluginConfig:\n{env.log_tail()}")
    name = f"{plugin['metadata']['namespace']}.{plugin['metadata']['name']}"
    assert env.proc.returncode == 1, env.log_tail()
    assert f"Unable to create Wasm plugin {name}" in env.log, env.log_tail()
    assert any("jwksUrl" in line for line in env.log.splitlines() if "wasm log" in line), env.log_tail()

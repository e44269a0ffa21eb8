"""Every refusal of the Istio compiler (issue 21): for each field the compiler names as
unsupported (the `fields(known, unsupported)` lists and the `refuse(...)` calls of
tools/istio-envoy/src), a minimal input that holds it, and the one stderr line it must give:
exit status 2 and `istio-envoy: <Kind> <ns>/<name>: <field path>: <reason>`.

No Envoy: the compiler alone, in a subprocess, on YAML written into a tmp dir. Each case
starts from a small valid gateway (BASE, checked to compile) and changes one thing, so the
refusal is that change's.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import pytest
import yaml

from support.istio import compile

UPSTREAMS = {"httpbin:8000": "127.0.0.1:1"}
JWKS_URI = "http://127.0.0.1:9/jwks.json"


def gateway(**server) -> dict:
    s = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["r.example.com"]}
    s.update(server)
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw"},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [s]}}


def virtual_service(**route) -> dict:
    r = {"route": [{"destination": {"host": "httpbin", "port": {"number": 8000}}}]}
    r.update(route)
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "vs"},
            "spec": {"hosts": ["r.example.com"], "gateways": ["gw"], "http": [r]}}


def request_authentication(**rule) -> dict:
    r = {"issuer": "testing@secure.istio.io", "jwksUri": JWKS_URI}
    r.update(rule)
    return {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "ra", "namespace": "istio-system"}, "spec": {"jwtRules": [r]}}


def policy(spec: dict, name: str = "p") -> dict:
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": "istio-system"}, "spec": spec}


def service_entry(**spec) -> dict:
    s = {"hosts": ["svc.example.com"], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
         "resolution": "DNS"}
    s.update(spec)
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "se"}, "spec": s}


def destination_rule(**spec) -> dict:
    s = {"host": "svc.example.com"}
    s.update(spec)
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "dr"}, "spec": s}


def wasm_plugin(**spec) -> dict:
    s = {"selector": {"matchLabels": {"istio": "ingressgateway"}},
         "url": "oci://ghcr.io/example/jwt-claims-filter:0.1.0", "phase": "AUTHN"}
    s.update(spec)
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": "jwt-claims-filter", "namespace": "istio-system"}, "spec": s}


def claim_route(header: str, match: dict) -> dict:
    return virtual_service(match=[{"uri": {"prefix": "/"}, "headers": {header: match}}])


BASE = [gateway(), virtual_service(), request_authentication()]


def run(tmp_path: Path, docs: list[dict], emit: str = "envoy", extra: tuple[str, ...] = ()):
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return compile([path], emit=emit, upstreams=UPSTREAMS, extra=extra)


def refusal_lines(result) -> list[str]:
    """The compiler's own stderr lines other than warnings (cargo may print when it builds)."""
    return [ln for ln in result.stderr.splitlines()
            if ln.startswith("istio-envoy: ") and not ln.startswith("istio-envoy: warning:")]


def assert_refused(result, prefix: str, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr, result.stdout[:500])
    assert result.stdout == "", result.stdout[:500]
    (line,) = refusal_lines(result)
    assert line.startswith("istio-envoy: " + prefix), line
    for w in words:
        assert w in line, (w, line)
    return line


@pytest.mark.parametrize("emit", ["envoy", "istio"])
def test_base_compiles(tmp_path, emit):
    r = run(tmp_path, BASE, emit=emit)
    assert r.returncode == 0, r.stderr
    assert refusal_lines(r) == []


def with_(index: int, change: Callable[[dict], None]) -> list[dict]:
    docs = copy.deepcopy(BASE)
    change(docs[index])
    return docs


def servers(d: dict) -> dict:
    return d["spec"]["servers"][0]


def https(**tls) -> Callable[[dict], None]:
    def change(gw: dict) -> None:
        servers(gw)["port"] = {"number": 443, "name": "https", "protocol": "HTTPS"}
        servers(gw)["tls"] = {"mode": "SIMPLE", "serverCertificate": "/c.pem", "privateKey": "/k.pem", **tls}
    return change


def http0(d: dict) -> dict:
    return d["spec"]["http"][0]


GW = "Gateway default/gw: spec.servers[0]"
VS = "VirtualService default/vs: spec"
RA = "RequestAuthentication istio-system/ra: spec"
AP = "AuthorizationPolicy istio-system/p: spec"
SE = "ServiceEntry default/se: spec"
DR = "DestinationRule default/dr: spec"
WP = "WasmPlugin istio-system/jwt-claims-filter: spec"

# (id, documents, expected line prefix after "istio-envoy: ", key words of the reason)
CASES: list[tuple[str, list[dict], str, tuple[str, ...]]] = [
    # --- Gateway ------------------------------------------------------------------------------
    ("gw-bind", with_(0, lambda g: servers(g).update(bind="10.0.0.1")),
     f"{GW}.bind: is not supported:", ("--bind",)),
    ("gw-defaultEndpoint", with_(0, lambda g: servers(g).update(defaultEndpoint="127.0.0.1:8080")),
     f"{GW}.defaultEndpoint: is not supported:", ("sidecar",)),
    ("gw-protocol-tcp", with_(0, lambda g: servers(g)["port"].update(protocol="TCP")),
     f'{GW}.port.protocol: "TCP" is not supported:', ("HTTP", "HTTPS")),
    ("gw-unknown-field", with_(0, lambda g: servers(g).update(portt=1)),
     f"{GW}.portt: is not a field the compiler knows", ()),
    ("gw-no-hosts", with_(0, lambda g: servers(g).update(hosts=[])),
     f"{GW}.hosts: needs at least one host", ()),
    ("gw-https-without-tls", with_(0, lambda g: servers(g)["port"].update(number=443, protocol="HTTPS")),
     f"{GW}.tls: an HTTPS server needs tls", ("SIMPLE",)),
    ("gw-tls-mutual", with_(0, https(mode="MUTUAL")),
     f'{GW}.tls.mode: "MUTUAL" is not supported', ("SIMPLE",)),
    ("gw-tls-credential-unknown", with_(0, lambda g: (https()(g), servers(g)["tls"].pop("serverCertificate"),
                                                      servers(g)["tls"].pop("privateKey"),
                                                      servers(g)["tls"].update(credentialName="cred"))),
     f'{GW}.tls.credentialName: "cred"', ("--tls-cert cred=",)),
    *[(f"gw-tls-{field}", with_(0, https(**{field: value})),
       f"{GW}.tls.{field}: is not supported:", (why,))
      for field, value, why in [("caCertificates", "/ca.pem", "MUTUAL"),
                                ("subjectAltNames", ["a"], "MUTUAL"),
                                ("minProtocolVersion", "TLSV1_2", "protocol versions"),
                                ("maxProtocolVersion", "TLSV1_3", "protocol versions"),
                                ("cipherSuites", ["ECDHE-RSA-AES256-GCM-SHA384"], "cipher suites")]],
    # --- VirtualService -----------------------------------------------------------------------
    ("vs-tls", with_(1, lambda v: v["spec"].update(tls=[{"match": [{"sniHosts": ["r.example.com"]}]}])),
     f"{VS}.tls: is not supported:", ("TLS passthrough",)),
    ("vs-tcp", with_(1, lambda v: v["spec"].update(tcp=[{"route": []}])),
     f"{VS}.tcp: is not supported:", ("TCP routes",)),
    *[(f"vs-http-{field}", with_(1, lambda v, f=field, x=value: http0(v).update({f: x})),
       f"{VS}.http[0].{field}: is not supported:", (why,))
      for field, value, why in [
          ("delegate", {"name": "other"}, "delegated"),
          ("fault", {"abort": {"httpStatus": 500}}, "fault injection"),
          ("mirror", {"host": "httpbin"}, "mirroring"),
          ("mirrors", [{"destination": {"host": "httpbin"}}], "mirroring"),
          ("mirrorPercentage", {"value": 50.0}, "mirroring"),
          ("mirrorPercent", 50, "mirroring"),
          ("corsPolicy", {"allowOrigins": [{"exact": "https://x"}]}, "CORS")]],
    *[(f"vs-match-{field}", with_(1, lambda v, f=field, x=value: http0(v).update(match=[{f: x}])),
       f"{VS}.http[0].match[0].{field}: is not supported:", ("mesh workloads",))
      for field, value in [("sourceLabels", {"app": "a"}), ("sourceNamespace", "ns")]],
    ("vs-subset", with_(1, lambda v: http0(v)["route"][0]["destination"].update(subset="v1")),
     f"{VS}.http[0].route[0].destination.subset: is not supported:", ("subsets",)),
    ("vs-derivePort", with_(1, lambda v: (http0(v).pop("route"),
                                          http0(v).update(redirect={"derivePort": "FROM_REQUEST_PORT"}))),
     f"{VS}.http[0].redirect.derivePort: is not supported:", ("port",)),
    ("vs-missing-gateway", with_(1, lambda v: v["spec"].update(gateways=["nope"])),
     f'{VS}.gateways[0]: "nope" names no Gateway in the input', ()),
    ("vs-destination-unknown", with_(1, lambda v: http0(v)["route"][0]["destination"].update(host="unknown")),
     f"{VS}.http[0].route[0].destination.host: unknown:8000 has no ServiceEntry and no --upstream", ()),
    ("vs-destination-no-port", with_(1, lambda v: http0(v)["route"][0]["destination"].update(
        host="unknown", port=None)),
     f'{VS}.http[0].route[0].destination.host: "unknown" has no ServiceEntry', ("--upstream",)),
    ("vs-route-and-redirect", with_(1, lambda v: http0(v).update(redirect={"uri": "/x"})),
     f"{VS}.http[0].redirect: cannot be given with route", ()),
    ("vs-no-action", with_(1, lambda v: http0(v).pop("route")),
     f"{VS}.http[0].route: an http route needs route, redirect or directResponse", ()),
    ("vs-bad-timeout", with_(1, lambda v: http0(v).update(timeout="5 seconds")),
     f'{VS}.http[0].timeout: "5 seconds" is not a duration', ()),
    ("vs-redirect-code", with_(1, lambda v: (http0(v).pop("route"),
                                             http0(v).update(redirect={"uri": "/x", "redirectCode": 305}))),
     f"{VS}.http[0].redirect.redirectCode: 305 is not a redirect", ("301",)),
    ("vs-weights", with_(1, lambda v: http0(v)["route"].append(copy.deepcopy(http0(v)["route"][0]))),
     f"{VS}.http[0].route: several destinations need weights", ()),
    ("vs-two-matchers", with_(1, lambda v: http0(v).update(match=[{"uri": {"exact": "/a", "prefix": "/b"}}])),
     f"{VS}.http[0].match[0].uri: give one of exact, prefix and regex", ()),
    # --- claim matches ------------------------------------------------------------------------
    ("claim-bad-regex", [gateway(), claim_route("@request.auth.claims.sub", {"regex": "(unclosed"}),
                         request_authentication()],
     f"{VS}.http[0].match[0].headers.@request.auth.claims.sub.regex: is not a valid RE2 regex", ()),
    ("claim-presence", [gateway(), claim_route("@request.auth.claims.sub", {}), request_authentication()],
     f"{VS}.http[0].match[0].headers.@request.auth.claims.sub: a claim match needs exact, prefix or regex", ()),
    ("claim-no-key", [gateway(), claim_route("@request.auth.claims", {"exact": "a"}), request_authentication()],
     f"{VS}.http[0].match[0].headers.@request.auth.claims:", ("request.auth.claims",)),
    ("claim-unclosed-bracket", [gateway(), claim_route("@request.auth.claims[a", {"exact": "a"}),
                                request_authentication()],
     f"{VS}.http[0].match[0].headers.@request.auth.claims[a:", ("[key]",)),
    ("claim-empty-key", [gateway(), claim_route("@request.auth.claims..a", {"exact": "a"}),
                         request_authentication()],
     f"{VS}.http[0].match[0].headers.@request.auth.claims..a:", ("empty claim key",)),
    # (A claim route without a RequestAuthentication is not refused: it never matches, as in
    # Istio; test_istio_gateway.py serves it.)
    ("policy-without-request-authentication",
     [gateway(), virtual_service(), policy({"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]})],
     f"{AP}: tests request.auth claims or principals", ("need JWT validation", "RequestAuthentication")),
    # --- RequestAuthentication ----------------------------------------------------------------
    ("ra-unknown-rule-field", with_(2, lambda r: r["spec"]["jwtRules"][0].update(jwksUrl=JWKS_URI)),
     f"{RA}.jwtRules[0].jwksUrl:", ()),
    ("ra-unknown-field", with_(2, lambda r: r["spec"].update(jwtRule=[])),
     f"{RA}.jwtRule: is not a field the compiler knows", ()),
    ("ra-rule-without-issuer", with_(2, lambda r: r["spec"]["jwtRules"][0].pop("issuer")),
     f"{RA}.jwtRules[0]", ("issuer",)),
    # --- WasmPlugin ---------------------------------------------------------------------------
    ("wp-match", BASE + [wasm_plugin(match=[{"mode": "SERVER"}])],
     f"{WP}.match: is not supported:", ("every gateway port",)),
    ("wp-vmConfig", BASE + [wasm_plugin(vmConfig={"env": [{"name": "A", "value": "b"}]})],
     f"{WP}.vmConfig: is not supported:", ("environment variables",)),
    ("wp-other-filter", BASE + [dict(wasm_plugin(url="oci://example/other:1"), metadata={"name": "other"})],
     "WasmPlugin default/other: spec.url: is not jwt-claims-filter's WasmPlugin", ()),
    ("wp-unknown-field", BASE + [wasm_plugin(urll="x")],
     f"{WP}.urll: is not a field the compiler knows", ()),
    # --- ServiceEntry -------------------------------------------------------------------------
    ("se-workloadSelector", BASE + [service_entry(workloadSelector={"labels": {"app": "a"}})],
     f"{SE}.workloadSelector: is not supported:", ("mesh workloads",)),
    ("se-subjectAltNames", BASE + [service_entry(subjectAltNames=["a"])],
     f"{SE}.subjectAltNames: is not supported:", ("mTLS",)),
    ("se-resolution-none", BASE + [service_entry(resolution="NONE")],
     f'{SE}.resolution: "NONE": the compiler needs STATIC or DNS', ()),
    ("se-static-no-endpoints", BASE + [service_entry(resolution="STATIC")],
     f"{SE}.endpoints: resolution STATIC needs endpoints", ()),
    ("se-protocol", BASE + [service_entry(ports=[{"number": 80, "name": "m", "protocol": "MONGO"}])],
     f'{SE}.ports[0].protocol: "MONGO" is not a protocol', ()),
    # --- DestinationRule ----------------------------------------------------------------------
    ("dr-subsets", BASE + [destination_rule(subsets=[{"name": "v1", "labels": {"v": "1"}}])],
     f"{DR}.subsets: is not supported:", ("pod labels",)),
    *[(f"dr-{field}", BASE + [destination_rule(trafficPolicy={field: value})],
       f"{DR}.trafficPolicy.{field}: is not supported:", ("TLS origination",))
      for field, value in [("loadBalancer", {"simple": "ROUND_ROBIN"}), ("connectionPool", {"tcp": {}}),
                           ("outlierDetection", {"consecutive5xxErrors": 5}), ("tunnel", {"protocol": "CONNECT"}),
                           ("proxyProtocol", {"version": "V1"})]],
    *[(f"dr-port-{field}", BASE + [destination_rule(trafficPolicy={"portLevelSettings": [
        {"port": {"number": 80}, field: value}]})],
       f"{DR}.trafficPolicy.portLevelSettings[0].{field}: is not supported:", ("only TLS",))
      for field, value in [("loadBalancer", {"simple": "ROUND_ROBIN"}), ("connectionPool", {"tcp": {}}),
                           ("outlierDetection", {"consecutive5xxErrors": 5})]],
    *[(f"dr-tls-{field}", BASE + [destination_rule(trafficPolicy={"tls": {"mode": "SIMPLE", field: value}})],
       f"{DR}.trafficPolicy.tls.{field}: is not supported:", (why,))
      for field, value, why in [("credentialName", "cred", "caCertificates"),
                                ("clientCertificate", "/c.pem", "mutual TLS"),
                                ("privateKey", "/k.pem", "mutual TLS"),
                                ("caCrl", "/crl.pem", "CRLs")]],
    ("dr-tls-mutual", BASE + [destination_rule(trafficPolicy={"tls": {"mode": "MUTUAL"}})],
     f'{DR}.trafficPolicy.tls.mode: "MUTUAL" is not supported', ("SIMPLE",)),
    # --- AuthorizationPolicy ------------------------------------------------------------------
    ("ap-provider", BASE + [policy({"action": "CUSTOM", "provider": {"name": "ext"}})],
     f"{AP}.provider: is not supported:", ("external authorizer",)),
    ("ap-audit", BASE + [policy({"action": "AUDIT", "rules": [{}]})],
     f"{AP}.action: AUDIT is not supported", ("audit",)),
    ("ap-custom", BASE + [policy({"action": "CUSTOM", "rules": [{}]})],
     f"{AP}.action: CUSTOM is not supported", ("ext_authz",)),
    ("ap-action-lowercase", BASE + [policy({"action": "allow"})],
     f'{AP}.action: "allow" is not one of ALLOW, DENY, AUDIT, CUSTOM', ()),
    ("ap-deny-without-rules", BASE + [policy({"action": "DENY"})],
     f"{AP}.rules: a DENY policy without rules never matches", ()),
    *[(f"ap-source-{field}", BASE + [policy({"rules": [{"from": [{"source": {field: ["a"]}}]}]})],
       f"{AP}.rules[0].from[0].source.{field}: is not supported:", ("mTLS",))
      for field in ["principals", "notPrincipals", "namespaces", "notNamespaces", "serviceAccounts",
                    "notServiceAccounts"]],
    ("ap-path-template", BASE + [policy({"rules": [{"to": [{"operation": {"paths": ["/a/{*}"]}}]}]})],
     f'{AP}.rules[0].to[0].operation.paths[0]: "/a/{{*}}": path templates', ()),
    ("ap-when-mtls-key", BASE + [policy({"rules": [{"when": [{"key": "source.namespace", "values": ["a"]}]}]})],
     f'{AP}.rules[0].when[0].key: "source.namespace" is not supported', ("mTLS",)),
    ("ap-when-unknown-key", BASE + [policy({"rules": [{"when": [{"key": "connection.sni", "values": ["a"]}]}]})],
     f'{AP}.rules[0].when[0].key: "connection.sni" is not a key the compiler supports', ()),
    ("ap-when-dotted-claim", BASE + [policy({"rules": [{"when": [{"key": "request.auth.claims.groups",
                                                                    "values": ["a"]}]}]})],
     f'{AP}.rules[0].when[0].key: "request.auth.claims.groups" must be request.auth.claims[<claim>]', ()),
    ("ap-when-no-values", BASE + [policy({"rules": [{"when": [{"key": "request.auth.principal"}]}]})],
     f"{AP}.rules[0].when[0]: key \"request.auth.principal\": at least one of values or notValues", ()),
    ("ap-unknown-operation-field", BASE + [policy({"rules": [{"to": [{"operation": {"verbs": ["GET"]}}]}]})],
     f"{AP}.rules[0].to[0].operation.verbs: is not a field the compiler knows", ()),
    ("ap-empty-from", BASE + [policy({"rules": [{"from": []}]})],
     f"{AP}.rules[0].from: must not be empty", ()),
    ("ap-bad-cidr", BASE + [policy({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]})],
     f'{AP}.rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/33" is not an IP address or CIDR range', ()),
    # --- resources as a whole -----------------------------------------------------------------
    ("duplicate-name", BASE + [virtual_service()],
     "VirtualService default/vs: metadata.name: is given twice", ()),
    ("extra-document-key", BASE + [dict(service_entry(), specs={})],
     "", ("ServiceEntry default/se: specs: is not a field of a resource",)),
]


@pytest.mark.parametrize("docs,prefix,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusal(tmp_path, docs, prefix, words):
    assert_refused(run(tmp_path, docs), prefix, *words)


@pytest.mark.parametrize("case_id", ["gw-bind", "vs-http-mirror", "claim-bad-regex", "ap-audit",
                                     "ra-unknown-rule-field", "policy-without-request-authentication"])
def test_refusal_is_the_same_for_emit_istio(tmp_path, case_id):
    (_, docs, prefix, words), = [c for c in CASES if c[0] == case_id]
    assert_refused(run(tmp_path, docs, emit="istio"), prefix, *words)


BAD_CONDITION_PLUGIN = wasm_plugin(pluginConfig={"conditions": [
    {"header": "x-jwt-cond-9", "claim": ["sub"], "regex": "(unclosed"}]})


def test_bad_condition_regex_in_a_wasm_plugin_is_refused_by_the_filters_parser(tmp_path):
    # The module's own parser (jwt_claims_filter::config) refuses the regex, so the compiler
    # never writes a configuration the filter would not load.
    assert_refused(run(tmp_path, BASE + [BAD_CONDITION_PLUGIN]), "", "conditions[0].regex",
                   "found open group")


def test_bad_condition_regex_names_the_wasm_plugin(tmp_path):
    assert_refused(run(tmp_path, BASE + [BAD_CONDITION_PLUGIN]),
                   f"{WP}.pluginConfig.conditions[0].regex: ")


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


# --- input that is no resource ---------------------------------------------------------------

def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "input.yaml"
    path.write_text(text)
    return path


def test_unknown_kind(tmp_path):
    path = _file(tmp_path, "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec: {}\n")
    line = assert_refused(compile([path], upstreams=UPSTREAMS), f"{path}: document 1: Sidecar default/s: kind Sidecar is not supported")
    for kind in ("Gateway", "VirtualService", "RequestAuthentication", "AuthorizationPolicy", "WasmPlugin"):
        assert kind in line


def test_bad_api_version(tmp_path):
    path = _file(tmp_path, "apiVersion: security.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n")
    assert_refused(compile([path], upstreams=UPSTREAMS),
                   f'{path}: document 1: Gateway default/g: apiVersion "security.istio.io/v1" is not networking.istio.io/<version>')


def test_invalid_yaml(tmp_path):
    docs = yaml.safe_dump_all(BASE, sort_keys=False)
    path = _file(tmp_path, docs + "---\nkind: [unclosed\n")
    assert_refused(compile([path], upstreams=UPSTREAMS), f"{path}: document 4: not valid YAML")


def test_document_without_kind(tmp_path):
    path = _file(tmp_path, "apiVersion: networking.istio.io/v1\nmetadata: {name: g}\n")
    assert_refused(compile([path], upstreams=UPSTREAMS), f"{path}: document 1: has no kind")


def test_missing_input_file(tmp_path):
    path = tmp_path / "absent.yaml"
    assert_refused(compile([path], upstreams=UPSTREAMS), f"{path}: cannot read")


def test_two_wasm_plugins_for_istio(tmp_path):
    second = dict(wasm_plugin(), metadata={"name": "jwt-claims-filter-2", "namespace": "istio-system"})
    docs = BASE + [wasm_plugin(), second]
    assert_refused(run(tmp_path, docs, emit="istio"),
                   "WasmPlugin istio-system/jwt-claims-filter-2: metadata.name: a second WasmPlugin of this filter")


@pytest.mark.parametrize("option,value,words", [
    ("--bind", "81=127.0.0.1:8081", ("names no Gateway server port",)),
    ("--bind", "80=127.0.0.1", ("ADDR:PORT",)),
    ("--upstream", "httpbin=127.0.0.1:1", ("HOST:PORT",)),
    ("--admin", "nowhere", ("ADDR:PORT",)),
    ("--tls-cert", "cred", ("CREDENTIAL=CERT.pem,KEY.pem",)),
])
def test_bad_option(tmp_path, option, value, words):
    assert_refused(run(tmp_path, BASE, extra=(option, value)), f"{option} {value}: ", *words)

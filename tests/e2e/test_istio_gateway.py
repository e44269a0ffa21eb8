"""The Istio compiler's Gateway, VirtualService, ServiceEntry and DestinationRule translation,
through real Envoy and a real httpbin, for both emits: `--emit envoy` of the input, and
`--emit istio` of it compiled again with `--emit envoy`.

Claim routing, authorization and refusals have their own files (test_istio_claims.py,
test_istio_authz.py, test_istio_refusals.py); the task itself is test_istio_task.py.
"""
from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest
import requests
import yaml

from support.istio import compile as istio_compile
from support.istio import start_compiled
from support.envoy import free_port
from support.tls import TestCA

HOST = "features.example.com"


def _gateway(servers: list[dict]) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}}


def _vs(http: list[dict], hosts=(HOST,)) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "features", "namespace": "default"},
            "spec": {"hosts": list(hosts), "gateways": ["gw"], "http": http}}


def _to(host="httpbin", **extra) -> dict:
    return {"destination": {"host": host, "port": {"number": 8000}}, **extra}


def _write(workdir: Path, name: str, docs: list[dict]) -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def _inputs(emit: str, path: Path, workdir: Path) -> list[Path]:
    """What Envoy is compiled from: the input itself, or its --emit istio manifests."""
    if emit == "envoy":
        return [path]
    out = istio_compile([path], emit="istio")
    assert out.returncode == 0, out.stderr
    manifests = workdir / f"{path.stem}.istio.yaml"
    manifests.write_text(out.stdout)
    return [manifests]


FEATURES_HTTP = [
    {"name": "exact-rewrite", "match": [{"uri": {"exact": "/exact"}}],
     "rewrite": {"uri": "/anything/rewritten"}, "route": [_to()]},
    {"name": "method", "match": [{"uri": {"prefix": "/method"}, "method": {"exact": "POST"}}],
     "rewrite": {"uri": "/anything"}, "route": [_to()]},
    {"name": "query", "match": [{"uri": {"prefix": "/query"}, "queryParams": {"q": {"exact": "yes"}}}],
     "rewrite": {"uri": "/anything"}, "route": [_to()]},
    {"name": "header-regex", "match": [{"uri": {"prefix": "/hdr"}, "headers": {"x-want": {"regex": "a+"}}}],
     "rewrite": {"uri": "/anything"}, "route": [_to()]},
    {"name": "without", "match": [{"uri": {"prefix": "/without"},
                                   "withoutHeaders": {"x-block": {"exact": "1"}}}],
     "rewrite": {"uri": "/anything"}, "route": [_to()]},
    {"name": "nocase", "match": [{"uri": {"prefix": "/case"}, "ignoreUriCase": True}],
     "rewrite": {"uri": "/anything"}, "route": [_to()]},
    {"name": "authority", "match": [{"uri": {"prefix": "/authority"},
                                     "authority": {"exact": "other.example.com"}}],
     "rewrite": {"uri": "/anything"}, "route": [_to()]},
    {"name": "redirect", "match": [{"uri": {"exact": "/old"}}],
     "redirect": {"uri": "/new", "redirectCode": 302}},
    {"name": "teapot", "match": [{"uri": {"exact": "/teapot"}}],
     "directResponse": {"status": 418, "body": {"string": "short and stout"}}},
    {"name": "header-ops", "match": [{"uri": {"prefix": "/ops"}}], "rewrite": {"uri": "/anything"},
     "headers": {"request": {"set": {"x-added": "by-route"}, "remove": ["x-drop"]},
                 "response": {"set": {"x-resp": "r1"}}},
     "route": [_to()]},
    {"name": "weights", "match": [{"uri": {"prefix": "/split"}}], "rewrite": {"uri": "/anything"},
     "route": [_to(weight=50, headers={"request": {"set": {"x-dest": "a"}}}),
               _to("httpbin-b", weight=50, headers={"request": {"set": {"x-dest": "b"}}})]},
    {"name": "timeout", "match": [{"uri": {"prefix": "/delay"}}], "timeout": "1s",
     "retries": {"attempts": 0}, "route": [_to()]},
    {"name": "service-entry", "match": [{"uri": {"prefix": "/se"}}], "rewrite": {"uri": "/anything"},
     "route": [_to("httpbin-se.internal")]},
    {"name": "regex-rewrite", "match": [{"uri": {"prefix": "/re/"}}],
     "rewrite": {"uriRegexRewrite": {"match": "^/re/(.*)$", "rewrite": "/anything/\\1"}},
     "route": [_to()]},
    {"name": "scheme", "match": [{"uri": {"prefix": "/scheme"}, "scheme": {"exact": "https"}}],
     "rewrite": {"uri": "/anything"}, "route": [_to()]},
    {"name": "scheme-http", "match": [{"uri": {"prefix": "/scheme-http"}, "scheme": {"exact": "http"}}],
     "rewrite": {"uri": "/anything"}, "route": [_to()]},
    {"name": "status", "match": [{"uri": {"prefix": "/status"}}], "route": [_to()]},
]


@pytest.fixture(scope="module", params=["envoy", "istio"])
def features(request, httpbin, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"istio-features-{request.param}")
    entry = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
             "metadata": {"name": "httpbin-se", "namespace": "default"},
             "spec": {"hosts": ["httpbin-se.internal"], "location": "MESH_INTERNAL",
                      "resolution": "STATIC",
                      "ports": [{"number": 8000, "name": "http", "protocol": "HTTP"}],
                      "endpoints": [{"address": "127.0.0.1", "ports": {"http": httpbin.port}}]}}
    gw = _gateway([{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                    "hosts": [HOST, "other.example.com"]}])
    vs = _vs(FEATURES_HTTP, hosts=(HOST, "other.example.com"))
    path = _write(workdir, "features.yaml", [gw, vs, entry])
    up = f"127.0.0.1:{httpbin.port}"
    env = start_compiled(_inputs(request.param, path, workdir), workdir=workdir,
                         upstreams={"httpbin:8000": up, "httpbin-b:8000": up})
    yield env
    env.stop()


def _echo(resp: requests.Response) -> dict:
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    return resp.json()


def test_exact_match_and_uri_rewrite(features):
    assert _echo(features.get("/exact", host=HOST))["url"].endswith("/anything/rewritten")
    assert features.get("/exact/more", host=HOST).status_code == 404


def test_method_query_and_header_matches(features):
    base = features.base_url
    assert requests.post(base + "/method", headers={"Host": HOST}, timeout=10).status_code == 200
    assert features.get("/method", host=HOST).status_code == 404
    assert features.get("/query?q=yes", host=HOST).status_code == 200
    assert features.get("/query?q=no", host=HOST).status_code == 404
    assert features.get("/query", host=HOST).status_code == 404
    assert features.get("/hdr", host=HOST, headers={"x-want": "aaa"}).status_code == 200
    # RE2 whole match: "ab" is not all a's.
    assert features.get("/hdr", host=HOST, headers={"x-want": "ab"}).status_code == 404


def test_without_headers_holds_for_an_absent_header(features):
    assert features.get("/without", host=HOST).status_code == 200
    assert features.get("/without", host=HOST, headers={"x-block": "2"}).status_code == 200
    assert features.get("/without", host=HOST, headers={"x-block": "1"}).status_code == 404


def test_ignore_uri_case_and_authority(features):
    assert features.get("/CaSe", host=HOST).status_code == 200
    assert features.get("/authority", host="other.example.com").status_code == 200
    assert features.get("/authority", host=HOST).status_code == 404


def test_redirect_and_direct_response(features):
    r = features.get("/old", host=HOST)
    assert r.status_code == 302 and r.headers["location"].endswith("/new")
    r = features.get("/teapot", host=HOST)
    assert (r.status_code, r.text) == (418, "short and stout")


def test_header_operations(features):
    r = features.get("/ops", host=HOST, headers={"x-drop": "gone", "x-keep": "kept"})
    echoed = {k.lower(): v for k, v in _echo(r)["headers"].items()}
    assert echoed["x-added"] == "by-route" and echoed["x-keep"] == "kept"
    assert "x-drop" not in echoed
    assert r.headers["x-resp"] == "r1"


def test_weighted_destinations_both_serve(features):
    seen = {_echo(features.get("/split", host=HOST))["headers"].get("X-Dest") for _ in range(60)}
    assert seen == {"a", "b"}


def test_route_timeout(features):
    started = time.monotonic()
    r = features.get("/delay/3", host=HOST)
    assert r.status_code == 504
    assert time.monotonic() - started < 2.5


def test_regex_rewrite_and_scheme_match(features):
    assert _echo(features.get("/re/x/y", host=HOST))["url"].endswith("/anything/x/y")
    # The listener is plain HTTP: a route that wants https is never taken.
    # (rewritten to /anything, so only the scheme test keeps it from httpbin's 200)
    assert features.get("/scheme", host=HOST).status_code == 404
    assert features.get("/scheme-http", host=HOST).status_code == 200


def test_service_entry_endpoints(features):
    assert _echo(features.get("/se", host=HOST))["url"].endswith("/anything")


def test_unserved_host_and_unmatched_path_are_404(features):
    assert features.get("/status/200", host=HOST).status_code == 200
    assert features.get("/status/200", host="unknown.example.com").status_code == 404
    assert features.get("/nothing-here", host=HOST).status_code == 404


@pytest.mark.parametrize("emit", ["envoy", "istio"])
def test_https_gateway_with_a_credential_and_https_redirect(emit, httpbin, tmp_path):
    ca = TestCA("istio gateway test CA", stem="gw-ca").write(tmp_path)
    cert = ca.issue(HOST, stem="gw-cert").write(tmp_path)
    gw = _gateway([
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": [HOST],
         "tls": {"mode": "SIMPLE", "credentialName": "features-cred"}},
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [HOST],
         "tls": {"httpsRedirect": True}},
    ])
    vs = _vs([{"match": [{"uri": {"prefix": "/status"}}], "route": [_to()]}])
    path = _write(tmp_path, "https.yaml", [gw, vs])
    http_port = free_port()
    env = start_compiled(_inputs(emit, path, tmp_path), workdir=tmp_path, gateway_port=443,
                         upstreams={"httpbin:8000": f"127.0.0.1:{httpbin.port}"},
                         extra=["--tls-cert", f"features-cred={cert.cert_path},{cert.key_path}",
                                "--bind", f"80=127.0.0.1:{http_port}"])
    try:
        # TLS with SNI for the Gateway's host, verified against the test CA.
        ctx = ssl.create_default_context(cafile=str(ca.cert_path))
        import http.client
        conn = http.client.HTTPSConnection("127.0.0.1", env.listener_port, context=ctx, timeout=10)
        conn.sock = ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", env.listener_port)),
                                    server_hostname=HOST)
        conn.request("GET", "/status/200", headers={"Host": HOST})
        assert conn.getresponse().status == 200
        conn.close()
        r = requests.get(f"http://127.0.0.1:{http_port}/status/200", headers={"Host": HOST},
                         allow_redirects=False, timeout=10)
        assert r.status_code == 301 and r.headers["location"].startswith(f"https://{HOST}")
    finally:
        env.stop()


@pytest.mark.parametrize("emit", ["envoy", "istio"])
def test_claim_matches_without_request_authentication_hold_as_in_istio(emit, httpbin, tmp_path):
    """No RequestAuthentication: no request has claims. Istio's own case ("unmatched with no
    request authentication": 404); a claim in withoutHeaders then always holds. A client's
    condition header changes nothing: there is no filter and no condition header to forge."""
    gw = _gateway([{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [HOST]}])
    claim = {"@request.auth.claims.groups": {"exact": "group1"}}
    vs = _vs([
        {"match": [{"uri": {"prefix": "/status"}, "headers": claim}], "route": [_to()]},
        {"match": [{"uri": {"prefix": "/anything"}, "withoutHeaders": claim}], "route": [_to()]},
    ])
    path = _write(tmp_path, "no-ra.yaml", [gw, vs])
    inputs = _inputs(emit, path, tmp_path)
    env = start_compiled(inputs, workdir=tmp_path, upstreams={"httpbin:8000": f"127.0.0.1:{httpbin.port}"})
    try:
        assert "no RequestAuthentication validates tokens" in env.compiled.stderr
        assert env.get("/status/200", host=HOST).status_code == 404
        assert env.get("/status/200", host=HOST, headers={"x-jwt-cond-1": "true"}).status_code == 404
        assert env.get("/anything", host=HOST).status_code == 200
    finally:
        env.stop()

"""Envoy's configuration for each of the bench's configurations (see bench/bench.py's
docstring): no filter, native jwt_authn with and without jwt_cache_config, the no-op and
floor proxy-wasm filters (bench/noop-filter), and this filter."""
from __future__ import annotations

import json
from pathlib import Path

import tokens as tk
from common import NOOP_WASM, WASM

# The run measures a snapshot of WASM taken at its start (a rebuild during the run must not
# change the module half-way through); set by bench.py's main() (and ab.py, instructions.py),
# read when an Envoy's configuration is written.
wasm_used: Path = WASM
# The no-op module's snapshot, likewise (bench/noop-filter: common.NOOP_WASM).
noop_used: Path = NOOP_WASM
KINDS = ("none", "native_cache", "native_nocache", "noop_wasm", "floor_wasm", "filter")
LABELS = {
    "none": "no auth filter",
    "native_cache": "native jwt_authn + jwt_cache_config",
    "native_nocache": "native jwt_authn, no cache",
    "noop_wasm": "no-op proxy-wasm filter (wasm)",
    "floor_wasm": "the job's host calls only (wasm)",
    "filter": "jwt-claims-filter (wasm)",
}
SHORT = {"none": "no filter", "native_cache": "native + cache", "native_nocache": "native, no cache",
         "noop_wasm": "noop-wasm", "floor_wasm": "floor-wasm", "filter": "filter"}
AUTH_KINDS = ("native_cache", "native_nocache", "filter")
# Configurations that pass every request on unverified: a broken signature gets a 200.
PASS_KINDS = ("none", "noop_wasm", "floor_wasm")
# Configurations that run bench/noop-filter's module (NOOP_WASM).
NOOP_MODULE_KINDS = ("noop_wasm", "floor_wasm")


def wasm_filter(name: str, path: Path, configuration: str) -> dict:
    """An envoy.filters.http.wasm entry: `path` in V8, `configuration` as its plugin config.
    The filter and the no-op filter are both loaded through this, so they differ only in the
    module, its names and its configuration."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(path)}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
            },
        },
    }


def http_filters(kind: str, alg: str, jwks_port: int, cache_size: int) -> list[dict]:
    """The configuration's HTTP filter chain: its auth filter (if any), then the router."""
    jwks_uri = f"http://127.0.0.1:{jwks_port}/{alg}/jwks.json"
    filters: list[dict] = []
    if kind == "noop_wasm":
        filters.append(wasm_filter("noop_filter", noop_used, "{}"))
    elif kind == "floor_wasm":
        filters.append(wasm_filter("floor_filter", noop_used, "rewrite-headers"))
    elif kind == "filter":
        plugin = {
            "jwtRules": [{
                "issuer": tk.ISSUER,
                "jwksUri": jwks_uri,
                "jwksCluster": "jwks",
                "timeout": "5s",
                "jwksCacheDuration": "300s",
            }],
            "claimHeaders": ["x-jwt-claim.groups"],
            "tokenCacheSize": cache_size,
        }
        filters.append(wasm_filter("jwt_claims_filter", wasm_used, json.dumps(plugin)))
    elif kind in ("native_cache", "native_nocache"):
        filters.append(jwt_authn(kind, jwks_uri, cache_size))
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    return filters


def jwt_authn(kind: str, jwks_uri: str, cache_size: int) -> dict:
    """Native jwt_authn configured to do the filter's job (native_cache: with jwt_cache_config)."""
    provider = {
        "issuer": tk.ISSUER,
        "remote_jwks": {
            "http_uri": {"uri": jwks_uri, "cluster": "jwks", "timeout": "5s"},
            "cache_duration": "300s",
            # Fetched by the main thread before the listener starts and refreshed there
            # when it expires, as the filter fetches off the request path. Without it,
            # the first requests after every 300 s fetch the key set themselves, and
            # some got 401 in the repeated workload's long-lived Envoys.
            "async_fetch": {},
        },
        # The filter's defaults, spelled out: Authorization: Bearer and ?access_token=
        # (an explicit from_headers/from_params replaces jwt_authn's defaults).
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "from_params": ["access_token"],
        # The filter's forwardOriginalToken: false, claimHeaders and route cache clearing.
        "forward": False,
        "claim_to_headers": [{"header_name": "x-jwt-claim.groups", "claim_name": "groups"}],
        "clear_route_cache": True,
    }
    if kind == "native_cache":
        # jwt_cache_size 0 would mean jwt_authn's default (100), not "off".
        provider["jwt_cache_config"] = {"jwt_cache_size": max(cache_size, 1)}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"bench": provider},
            # Istio's RequestAuthentication semantics, as the filter has them: a request
            # without a token passes, an invalid one is rejected.
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "bench"}, {"allow_missing": {}}]}}}],
        },
    }


def envoy_config(kind: str, alg: str, port: int, admin_port: int, jwks_port: int,
                 cache_size: int) -> dict:
    """Envoy's bootstrap for one configuration: one listener on `port`, the bench's routes, the
    configuration's filters, and the JWKS server's cluster."""
    filters = http_filters(kind, alg, jwks_port, cache_size)
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "AUTO",  # HTTP/1.1 for wrk, h2c for h2load
                        "route_config": {"name": "bench", "virtual_hosts": [{
                            "name": "bench", "domains": ["*"],
                            "routes": [
                                # The bench target, the same in every configuration; see the
                                # docstring of bench/bench.py for why it is a direct_response.
                                {"match": {"prefix": "/status"}, "direct_response": {"status": 200}},
                                # Start-up check only: shows which configurations wrote the
                                # claim header as the filter writes it (a list as a,b).
                                {"match": {"prefix": "/claim-check", "headers": [{
                                    "name": "x-jwt-claim.groups",
                                    "string_match": {"exact": "group1,group2"}}]},
                                 "direct_response": {"status": 204}},
                                {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                            ],
                        }]},
                        "http_filters": filters,
                    },
                }]}],
            }],
            "clusters": [{
                "name": "jwks", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "jwks", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": jwks_port}}}}]}]},
            }],
        },
    }

//! `--emit envoy`: an Envoy bootstrap that serves the resources with the filter.

use serde_json::{json, Value};

use crate::conditions::Conditions;
use crate::gateway::{listeners, virtual_hosts, Listener, Protocol};
use crate::model::{Refusal, Resource, Result};
use crate::upstreams::{host_port, Upstreams};
use crate::{authz, plugin, Cli};

/// The whole compile for Envoy: listeners, the filter's configuration, RBAC, clusters.
pub struct Compiled {
    pub listeners: Vec<Listener>,
    /// The filter's configuration, `None` when nothing asks for JWT validation.
    pub plugin_config: Option<Value>,
    pub rbac: Vec<Value>,
    pub conditions: Conditions,
    pub clusters: Vec<Value>,
    pub upstreams: Upstreams,
    pub wasm_plugins: Vec<Resource>,
}

/// `for_mesh`: compiling for `--emit istio`, where the mesh resolves destination hosts.
pub fn compile(resources: &[Resource], cli: &Cli, for_mesh: bool) -> Result<Compiled> {
    let mut conds = Conditions::default();
    let pc = plugin::read(resources, &mut conds)?;
    let mut ups = Upstreams::new(resources, &cli.upstreams, for_mesh)?;
    let listeners = listeners(resources, &cli.binds, &cli.tls_certs, for_mesh, pc.has_rules(), &mut ups, &mut conds)?;
    let policies: Vec<&Resource> = resources.iter().filter(|r| r.kind == "AuthorizationPolicy").collect();
    let rbac = authz::rbac_filters(&policies, &mut conds)?;
    let plugin_config = if pc.has_rules() {
        let (value, parsed) = pc.finish(&conds)?;
        for (uri, cluster) in plugin::remote_keys(&parsed) {
            ups.jwks(&uri, &cluster)?;
        }
        Some(value)
    } else if !conds.entries().is_empty() {
        // Routes fold their claim matches without tokens; policies and a WasmPlugin's own
        // conditions would need the filter to write the headers they test.
        let asker = policies.first().copied().or(pc.wasm_plugins.first());
        let reason = "tests request.auth claims or principals, which need JWT validation: add a RequestAuthentication (or jwtRules in the WasmPlugin)";
        return Err(match asker {
            Some(r) => r.refuse("spec", reason),
            None => Refusal { resource: "the input".into(), field: String::new(), reason: reason.into() },
        });
    } else {
        for w in &pc.wasm_plugins {
            w.warn("spec.pluginConfig", "has no jwtRules, so the filter has nothing to do and is left out");
        }
        None
    };
    Ok(Compiled { listeners, plugin_config, rbac, clusters: ups.clusters(), conditions: conds, upstreams: ups, wasm_plugins: pc.wasm_plugins })
}

pub fn emit(resources: &[Resource], cli: &Cli) -> Result<String> {
    let c = compile(resources, cli, false)?;
    let (admin_address, admin_port) = host_port(&cli.admin)
        .ok_or_else(|| Refusal { resource: format!("--admin {}", cli.admin), field: String::new(), reason: "expected ADDR:PORT".into() })?;
    let mut http_filters = Vec::new();
    if let Some(config) = &c.plugin_config {
        http_filters.push(wasm_filter(config, &cli.wasm));
    }
    let ports: Vec<(u16, u16)> = c.listeners.iter().map(|l| (l.port, l.listen_port)).collect();
    http_filters.extend(c.rbac.iter().map(|f| listen_ports(f, &ports)));
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }));
    let listeners: Vec<Value> = c.listeners.iter().map(|l| listener(l, &http_filters, &c.conditions.headers())).collect();
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": c.clusters},
    });
    let yaml = crate::yaml::to_yaml(&bootstrap);
    Ok(format!(
        "# Envoy bootstrap compiled by scripts/istio-envoy.sh from Istio resources.\n\
         # Gateways are listeners, VirtualServices routes, RequestAuthentication jwtRules the\n\
         # configuration of jwt-claims-filter, AuthorizationPolicies RBAC filters.\n{yaml}"
    ))
}

/// A policy's `ports` name Gateway server ports; Envoy's `destination_port` is the port the
/// listener really binds (`--bind`).
fn listen_ports(v: &Value, ports: &[(u16, u16)]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let mapped = match (k.as_str(), x.as_u64()) {
                        ("destination_port", Some(p)) => ports.iter().find(|(g, _)| u64::from(*g) == p).map(|(_, l)| json!(l)),
                        _ => None,
                    };
                    (k.clone(), mapped.unwrap_or_else(|| listen_ports(x, ports)))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| listen_ports(x, ports)).collect()),
        other => other.clone(),
    }
}

fn wasm_filter(config: &Value, wasm: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "jwt_claims_filter",
                "root_id": "jwt_claims_filter",
                "failure_policy": "FAIL_RELOAD",
                "vm_config": {
                    "vm_id": "jwt_claims_filter",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": serde_json::to_string_pretty(config).unwrap_or_default(),
                },
            },
        },
    })
}

fn listener(l: &Listener, http_filters: &[Value], condition_headers: &[String]) -> Value {
    let mut route_config = json!({"name": format!("http.{}", l.port), "virtual_hosts": virtual_hosts(l)});
    if !condition_headers.is_empty() {
        // Written by the filter for routing and policy only: the upstream never sees them.
        route_config["request_headers_to_remove"] = json!(condition_headers);
    }
    let hcm = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": format!("gateway_{}", l.port),
            "codec_type": "AUTO",
            "use_remote_address": true,
            "normalize_path": true,
            // `/a//b` is `/a/b` for routes and policies alike: a notPaths rule cannot be
            // stepped around with a doubled slash (Istio's MERGE_SLASHES normalization).
            "merge_slashes": true,
            // Hosts match without their port, as Istio's gateways match them.
            "strip_any_host_port": true,
            // Edge guidance: many upstreams fold `_` into `-`, so such names could pose as the
            // filter's own headers there; the filter strips every spelling of those as well.
            "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
            "route_config": route_config,
            "http_filters": http_filters,
        },
    });
    let mut out = json!({
        "name": format!("gateway_{}", l.port),
        "address": {"socket_address": {"address": l.address, "port_value": l.listen_port}},
    });
    if l.servers.first().is_some_and(|s| s.protocol == Protocol::Https) {
        let several = l.servers.len() > 1;
        let chains: Vec<Value> = l
            .servers
            .iter()
            .filter_map(|s| {
                let tls = s.tls.as_ref()?;
                let mut chain = json!({
                    "filters": [hcm],
                    "transport_socket": {
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                            "common_tls_context": {
                                "alpn_protocols": ["h2", "http/1.1"],
                                "tls_certificates": [{"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}],
                            },
                        },
                    },
                });
                let names: Vec<&String> = s.hosts.iter().map(|(_, h)| h).filter(|h| *h != "*").collect();
                if several && !names.is_empty() && names.len() == s.hosts.len() {
                    chain["filter_chain_match"] = json!({"server_names": names});
                }
                Some(chain)
            })
            .collect();
        out["listener_filters"] = json!([{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"},
        }]);
        out["filter_chains"] = Value::Array(chains);
    } else {
        out["filter_chains"] = json!([{"filters": [hcm]}]);
    }
    out
}

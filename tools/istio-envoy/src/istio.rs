//! `--emit istio`: manifests for a real Istio ingress gateway running the filter as a
//! WasmPlugin, behaving as `--emit envoy` does.
//!
//! A WasmPlugin cannot feed Istio's `@request.auth.claims` routes or `request.auth`
//! policies (those read jwt_authn's dynamic metadata, which a Wasm filter cannot write:
//! envoy#15148), so they are rewritten to the condition headers the filter writes, and the
//! RequestAuthentication is replaced by the WasmPlugin that does its work.

use jwt_claims_filter::config::HttpUri;
use serde_json::{json, Map, Value};

use crate::conditions::{claim_key, Conditions, Subject};
use crate::envoy::{compile, Compiled};
use crate::model::{Obj, Refusal, Resource, Result};
use crate::routes::string_match;
use crate::{authz, plugin, Cli};

/// Where the generated WasmPlugin points when the input has none: a placeholder to replace.
const DEFAULT_IMAGE: &str = "oci://ghcr.io/example/jwt-claims-filter:0.1.0";

/// A manifest with the comment printed above it.
struct Doc {
    comment: String,
    value: Option<Value>,
}

pub fn emit(resources: &[Resource], cli: &Cli) -> Result<String> {
    // The same compile as --emit envoy: it refuses what Envoy would not serve, and numbers
    // the conditions; rewriting below asks for the same conditions and gets the same headers.
    let mut c = compile(resources, cli, true)?;
    let mut docs: Vec<Doc> = Vec::new();
    let plugins = c.wasm_plugins.clone();
    if plugins.len() > 1 {
        return Err(plugins[1].refuse("metadata.name", format!("a second WasmPlugin of this filter (after {}): give one for a gateway", plugins[0].id())));
    }
    let mut plugin_written = false;
    for r in resources {
        match r.kind.as_str() {
            // Without JWT validation Istio itself gives claim matches their meaning (none).
            "VirtualService" if c.plugin_config.is_none() => docs.push(Doc { comment: String::new(), value: Some(r.document.clone()) }),
            "VirtualService" => docs.push(Doc { comment: String::new(), value: Some(virtual_service(r, &mut c.conditions)?) }),
            "AuthorizationPolicy" => {
                docs.push(Doc { comment: String::new(), value: Some(authz::for_istio(r, &mut c.conditions)?) })
            }
            "RequestAuthentication" => docs.push(Doc {
                comment: format!(
                    "# RequestAuthentication {}/{} is replaced by the WasmPlugin jwt-claims-filter:\n\
                     # its jwtRules are in the plugin's pluginConfig. Istio's jwt_authn would validate\n\
                     # the same tokens, but its claims cannot reach the rewritten routes and policies.\n",
                    r.namespace, r.name
                ),
                value: None,
            }),
            "WasmPlugin" => {
                docs.push(Doc { comment: String::new(), value: wasm_plugin(Some(r), resources, &c)? });
                plugin_written = true;
            }
            _ => docs.push(Doc { comment: String::new(), value: Some(r.document.clone()) }),
        }
    }
    if !plugin_written {
        if let Some(value) = wasm_plugin(None, resources, &c)? {
            eprintln!("istio-envoy: warning: the WasmPlugin jwt-claims-filter is generated with url {DEFAULT_IMAGE}: publish the module (scripts/package-oci.sh) and set url and sha256");
            docs.push(Doc { comment: "# jwt-claims-filter, doing the RequestAuthentication's work on the gateway.\n".into(), value: Some(value) });
        }
    }
    docs.extend(jwks_services(&c, &plugin_namespace(&plugins))?);
    let mut out = String::from("# Istio manifests compiled by scripts/istio-envoy.sh --emit istio for jwt-claims-filter.\n");
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&d.comment);
        if let Some(v) = &d.value {
            out.push_str(&crate::yaml::to_yaml(v));
        }
    }
    Ok(out)
}

fn plugin_namespace(plugins: &[Resource]) -> String {
    plugins.first().map(|p| p.namespace.clone()).unwrap_or_else(|| "istio-system".into())
}

/// The VirtualService with claim matches rewritten to condition headers, and the condition
/// headers removed before the upstream on every route.
fn virtual_service(r: &Resource, conds: &mut Conditions) -> Result<Value> {
    let mut doc = r.document.clone();
    let headers = conds.headers();
    let Some(http) = doc.pointer_mut("/spec/http").and_then(Value::as_array_mut) else { return Ok(doc) };
    for (i, route) in http.iter_mut().enumerate() {
        if let Some(matches) = route.get_mut("match").and_then(Value::as_array_mut) {
            for (j, m) in matches.iter_mut().enumerate() {
                rewrite_match(r, m, &format!("spec.http[{i}].match[{j}]"), conds)?;
            }
        }
        if !headers.is_empty() {
            let remove = route
                .as_object_mut()
                .map(|o| o.entry("headers").or_insert_with(|| json!({})))
                .and_then(|h| h.as_object_mut())
                .map(|h| h.entry("request").or_insert_with(|| json!({})))
                .and_then(|q| q.as_object_mut())
                .map(|q| q.entry("remove").or_insert_with(|| json!([])));
            if let Some(Value::Array(list)) = remove {
                for h in &headers {
                    if !list.iter().any(|v| v.as_str() == Some(h)) {
                        list.push(json!(h));
                    }
                }
            }
        }
    }
    Ok(doc)
}

fn rewrite_match(r: &Resource, m: &mut Value, at: &str, conds: &mut Conditions) -> Result<()> {
    let mut tests: Vec<(String, &'static str)> = Vec::new();
    for (field, verdict) in [("headers", "true"), ("withoutHeaders", "false")] {
        let Some(map) = m.get_mut(field).and_then(Value::as_object_mut) else { continue };
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            let field_at = format!("{at}.{field}.{key}");
            let Some((path, _)) = claim_key(&key).map_err(|reason| r.refuse(&field_at, reason))? else { continue };
            let value = map.remove(&key).unwrap_or(Value::Null);
            let sm = string_match(&Obj::of(r, &value, field_at)?)?;
            tests.push((conds.header_for(&Subject::Claim(path), &[sm]), verdict));
        }
        if map.is_empty() {
            m.as_object_mut().map(|o| o.remove(field));
        }
    }
    if tests.is_empty() {
        return Ok(());
    }
    let Some(obj) = m.as_object_mut() else { return Ok(()) };
    let headers = obj.entry("headers").or_insert_with(|| json!({}));
    if let Some(h) = headers.as_object_mut() {
        for (header, verdict) in tests {
            h.insert(header, json!({"exact": verdict}));
        }
    }
    Ok(())
}

/// This filter's WasmPlugin with the complete pluginConfig; generated when the input has
/// none. `None` when nothing needs the filter.
fn wasm_plugin(given: Option<&Resource>, resources: &[Resource], c: &Compiled) -> Result<Option<Value>> {
    let Some(config) = &c.plugin_config else { return Ok(given.map(|g| g.document.clone())) };
    let mut doc = match given {
        Some(g) => g.document.clone(),
        None => {
            let selector = resources
                .iter()
                .find(|r| r.kind == "Gateway")
                .and_then(|g| g.document.pointer("/spec/selector").cloned())
                .unwrap_or_else(|| json!({"istio": "ingressgateway"}));
            json!({
                "apiVersion": "extensions.istio.io/v1alpha1",
                "kind": "WasmPlugin",
                "metadata": {"name": "jwt-claims-filter", "namespace": "istio-system"},
                "spec": {
                    "selector": {"matchLabels": selector},
                    "url": DEFAULT_IMAGE,
                    "phase": "AUTHN",
                    "failStrategy": "FAIL_RELOAD",
                },
            })
        }
    };
    if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("pluginConfig".into(), config.clone());
    }
    Ok(Some(doc))
}

/// A ServiceEntry (and for https a DestinationRule originating TLS) for each JWKS host that
/// the input does not already describe: the filter fetches through Istio's outbound cluster
/// `outbound|<port>||<host>`, which exists only for a known service.
fn jwks_services(c: &Compiled, namespace: &str) -> Result<Vec<Doc>> {
    let Some(config) = &c.plugin_config else { return Ok(Vec::new()) };
    let parsed = jwt_claims_filter::config::FilterConfig::parse(config.to_string().as_bytes())
        .map_err(|e| Refusal { resource: "the filter's configuration".into(), field: e.field, reason: e.message })?;
    let mut docs = Vec::new();
    let mut seen: Vec<(String, u16)> = Vec::new();
    for (uri, cluster) in plugin::remote_keys(&parsed) {
        if cluster != uri.istio_cluster() {
            eprintln!("istio-envoy: warning: jwksCluster {cluster:?} is not Istio's cluster for {}: make sure the gateway has it", uri.authority);
            continue;
        }
        if seen.contains(&(uri.host.clone(), uri.port)) || c.upstreams.has_service_entry(&uri.host, uri.port) {
            continue;
        }
        seen.push((uri.host.clone(), uri.port));
        if uri.host.parse::<std::net::IpAddr>().is_ok() || uri.host.starts_with('[') {
            eprintln!("istio-envoy: warning: the JWKS host {} is an IP address, which a ServiceEntry cannot name: give it a DNS name", uri.host);
            continue;
        }
        docs.extend(service_entry_for(&uri, namespace, !c.upstreams.has_destination_rule(&uri.host)));
    }
    Ok(docs)
}

fn service_entry_for(uri: &HttpUri, namespace: &str, with_tls_rule: bool) -> Vec<Doc> {
    let name = uri.host.replace('.', "-");
    let mut docs = vec![Doc {
        comment: format!(
            "# The JWKS host {} as a service, so that the cluster the filter fetches through,\n\
             # {}, exists. The port is HTTP: the filter speaks HTTP to the cluster{}.\n",
            uri.host,
            uri.istio_cluster(),
            if uri.scheme == "https" { ",\n# and the DestinationRule below originates TLS" } else { "" }
        ),
        value: Some(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {"name": format!("jwks-{name}"), "namespace": namespace},
            "spec": {
                "hosts": [uri.host],
                "location": "MESH_EXTERNAL",
                "resolution": "DNS",
                "ports": [{"number": uri.port, "name": format!("http-jwks-{}", uri.port), "protocol": "HTTP"}],
            },
        })),
    }];
    if uri.scheme == "https" && with_tls_rule {
        let mut map = Map::new();
        map.insert("mode".into(), json!("SIMPLE"));
        map.insert("sni".into(), json!(uri.host));
        docs.push(Doc {
            comment: "# TLS to the JWKS host, verified against the proxy's system CA bundle (set\n# caCertificates for a private CA).\n".into(),
            value: Some(json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": format!("jwks-{name}"), "namespace": namespace},
                "spec": {"host": uri.host, "trafficPolicy": {"portLevelSettings": [{"port": {"number": uri.port}, "tls": Value::Object(map)}]}},
            })),
        });
    }
    docs
}

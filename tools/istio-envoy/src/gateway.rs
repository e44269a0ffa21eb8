//! Gateways and the VirtualServices bound to them, grouped by listener port: what each Envoy
//! listener serves.

use serde_json::{json, Value};

use crate::conditions::Conditions;
use crate::model::{Obj, Refusal, Resource, Result};
use crate::routes::{gateway_ref_is, http_route, Scope};
use crate::upstreams::{host_port, Upstreams};

#[derive(Debug, Clone, PartialEq)]
pub enum Protocol {
    Http,
    Https,
}

/// Downstream TLS of an HTTPS server: certificate and key files.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// `namespace/name` of its Gateway.
    pub gateway: String,
    pub port: u16,
    pub protocol: Protocol,
    /// Host patterns, the namespace part (`ns/host`) kept apart.
    pub hosts: Vec<(Option<String>, String)>,
    pub tls: Option<ServerTls>,
    pub https_redirect: bool,
}

/// A virtual host: a domain and its routes, in VirtualService order.
#[derive(Debug)]
pub struct VirtualHost {
    pub domain: String,
    pub routes: Vec<Value>,
    pub require_tls: bool,
}

/// One Envoy listener: a Gateway port and where it listens.
#[derive(Debug)]
pub struct Listener {
    pub port: u16,
    pub address: String,
    pub listen_port: u16,
    pub servers: Vec<Server>,
    pub virtual_hosts: Vec<VirtualHost>,
}

fn option_refusal(option: &str, value: &str, reason: &str) -> Refusal {
    Refusal { resource: format!("{option} {value}"), field: String::new(), reason: reason.to_string() }
}

/// `--tls-cert CREDENTIAL=CERT,KEY` entries.
fn credentials(tls_certs: &[String]) -> Result<Vec<(String, ServerTls)>> {
    tls_certs
        .iter()
        .map(|t| {
            let (name, files) = t.split_once('=').ok_or_else(|| option_refusal("--tls-cert", t, "expected CREDENTIAL=CERT.pem,KEY.pem"))?;
            let (cert, key) = files.split_once(',').ok_or_else(|| option_refusal("--tls-cert", t, "expected CREDENTIAL=CERT.pem,KEY.pem"))?;
            Ok((name.to_string(), ServerTls { cert: cert.to_string(), key: key.to_string() }))
        })
        .collect()
}

fn read_servers(r: &Resource, creds: &[(String, ServerTls)], for_mesh: bool) -> Result<Vec<Server>> {
    let spec = r.spec()?;
    spec.fields(&["selector", "servers"], &[])?;
    let mut servers = Vec::new();
    for s in spec.objs("servers")? {
        s.fields(&["port", "hosts", "tls", "name"], &[
            ("bind", "binding to an address is what --bind does here"),
            ("defaultEndpoint", "sidecar ingress is not a gateway"),
        ])?;
        let port = s.obj("port")?.ok_or_else(|| s.refuse("port", "is required"))?;
        port.fields(&["number", "name", "protocol", "targetPort"], &[])?;
        let number = port.u32("number")?.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
        let number = number.ok_or_else(|| port.refuse("number", "is required: a port from 1 to 65535"))?;
        let protocol = match port.req_str("protocol")?.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTP2" => Protocol::Http,
            "HTTPS" => Protocol::Https,
            other => return Err(port.refuse("protocol", format!("{other:?} is not supported: HTTP, HTTP2 or HTTPS (the filter is an HTTP filter)"))),
        };
        let hosts: Vec<(Option<String>, String)> = s
            .strs("hosts")?
            .into_iter()
            .map(|h| match h.split_once('/') {
                Some((ns, host)) => (Some(if ns == "." { r.namespace.clone() } else { ns.to_string() }), host.to_ascii_lowercase()),
                None => (None, h.to_ascii_lowercase()),
            })
            .collect();
        if hosts.is_empty() {
            return Err(s.refuse("hosts", "needs at least one host"));
        }
        let (tls, https_redirect) = server_tls(&s, &protocol, creds, for_mesh)?;
        servers.push(Server { gateway: format!("{}/{}", r.namespace, r.name), port: number, protocol, hosts, tls, https_redirect });
    }
    if servers.is_empty() {
        return Err(spec.refuse("servers", "needs at least one server"));
    }
    Ok(servers)
}

fn server_tls(s: &Obj, protocol: &Protocol, creds: &[(String, ServerTls)], for_mesh: bool) -> Result<(Option<ServerTls>, bool)> {
    let Some(tls) = s.obj("tls")? else {
        return match protocol {
            Protocol::Https => Err(s.refuse("tls", "an HTTPS server needs tls (mode SIMPLE)")),
            Protocol::Http => Ok((None, false)),
        };
    };
    tls.fields(&["mode", "credentialName", "serverCertificate", "privateKey", "httpsRedirect"], &[
        ("caCertificates", "client certificate verification (MUTUAL) is not implemented"),
        ("subjectAltNames", "client certificate verification (MUTUAL) is not implemented"),
        ("minProtocolVersion", "TLS protocol versions are not implemented; Envoy's defaults apply"),
        ("maxProtocolVersion", "TLS protocol versions are not implemented; Envoy's defaults apply"),
        ("cipherSuites", "cipher suites are not implemented; Envoy's defaults apply"),
    ])?;
    let redirect = tls.bool("httpsRedirect")?.unwrap_or(false);
    if *protocol == Protocol::Http {
        if tls.map.keys().any(|k| k != "httpsRedirect") {
            return Err(tls.refuse("", "an HTTP server takes only httpsRedirect here"));
        }
        return Ok((None, redirect));
    }
    match tls.str("mode")?.unwrap_or("SIMPLE") {
        "SIMPLE" => {}
        other => return Err(tls.refuse("mode", format!("{other:?} is not supported: SIMPLE"))),
    }
    let files = match (tls.str("credentialName")?, tls.str("serverCertificate")?, tls.str("privateKey")?) {
        (Some(name), None, None) => match creds.iter().find(|(n, _)| n == name) {
            Some((_, files)) => files.clone(),
            // On a real gateway the credential is a Kubernetes secret.
            None if for_mesh => ServerTls { cert: String::new(), key: String::new() },
            None => return Err(tls.refuse("credentialName", format!("{name:?}: give its files with --tls-cert {name}=CERT.pem,KEY.pem"))),
        },
        (None, Some(cert), Some(key)) => ServerTls { cert: cert.to_string(), key: key.to_string() },
        _ => return Err(tls.refuse("", "give credentialName, or serverCertificate and privateKey")),
    };
    Ok((Some(files), redirect))
}

/// Whether `pattern` (`*`, `*.example.com` or a name) covers `host` (which may be a pattern).
fn covers(pattern: &str, host: &str) -> bool {
    pattern == "*"
        || pattern == host
        || pattern.strip_prefix('*').is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
}

/// The domains a VirtualService host serves through a server host: the more specific of two
/// that overlap, as Istio intersects them.
fn intersect(vs_host: &str, server_host: &str) -> Option<String> {
    if covers(server_host, vs_host) {
        Some(vs_host.to_string())
    } else if covers(vs_host, server_host) {
        Some(server_host.to_string())
    } else {
        None
    }
}

/// Every listener, with its virtual hosts.
/// `for_mesh`: for `--emit istio`, where credentials are the cluster's secrets.
pub fn listeners(resources: &[Resource], binds: &[String], tls_certs: &[String], for_mesh: bool, claims: bool, ups: &mut Upstreams, conds: &mut Conditions) -> Result<Vec<Listener>> {
    let creds = credentials(tls_certs)?;
    let mut servers: Vec<Server> = Vec::new();
    for r in resources.iter().filter(|r| r.kind == "Gateway") {
        servers.extend(read_servers(r, &creds, for_mesh)?);
    }
    let mut ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let mut listeners = Vec::new();
    for port in ports {
        let on_port: Vec<Server> = servers.iter().filter(|s| s.port == port).cloned().collect();
        if on_port.iter().any(|s| s.protocol != on_port[0].protocol) {
            return Err(Refusal { resource: format!("Gateway port {port}"), field: String::new(), reason: "servers on one port must share a protocol".into() });
        }
        let (address, listen_port) = bind_for(port, binds)?;
        listeners.push(Listener { port, address, listen_port, servers: on_port, virtual_hosts: Vec::new() });
    }
    for b in binds {
        let port = b.split_once('=').and_then(|(p, _)| p.parse::<u16>().ok());
        if !listeners.iter().any(|l| Some(l.port) == port) {
            return Err(option_refusal("--bind", b, "names no Gateway server port"));
        }
    }
    let gateway_names: Vec<String> = resources.iter().filter(|r| r.kind == "Gateway").map(|r| format!("{}/{}", r.namespace, r.name)).collect();
    for vs in resources.iter().filter(|r| r.kind == "VirtualService") {
        bind_virtual_service(vs, &gateway_names, claims, &mut listeners, ups, conds)?;
    }
    Ok(listeners)
}

fn bind_for(port: u16, binds: &[String]) -> Result<(String, u16)> {
    for b in binds {
        let (p, to) = b.split_once('=').ok_or_else(|| option_refusal("--bind", b, "expected PORT=ADDR:PORT"))?;
        let p: u16 = p.parse().map_err(|_| option_refusal("--bind", b, "PORT must be a Gateway server port number"))?;
        if p == port {
            return host_port(to).ok_or_else(|| option_refusal("--bind", b, "ADDR:PORT needs a port from 1 to 65535"));
        }
    }
    Ok(("127.0.0.1".to_string(), port))
}

fn bind_virtual_service(vs: &Resource, gateway_names: &[String], claims: bool, listeners: &mut [Listener], ups: &mut Upstreams, conds: &mut Conditions) -> Result<()> {
    let spec = vs.spec()?;
    spec.fields(&["hosts", "gateways", "http", "exportTo"], &[
        ("tls", "TLS passthrough routes are not implemented; the filter needs HTTP"),
        ("tcp", "TCP routes are not implemented; the filter needs HTTP"),
    ])?;
    let hosts: Vec<String> = spec.strs("hosts")?.into_iter().map(str::to_ascii_lowercase).collect();
    if hosts.is_empty() {
        return Err(spec.refuse("hosts", "needs at least one host"));
    }
    let refs = spec.strs("gateways")?;
    if refs.is_empty() {
        vs.warn("spec.gateways", "is empty, which Istio reads as [mesh]: this VirtualService serves sidecars, not a gateway, and is not compiled");
        return Ok(());
    }
    let mut bound = Vec::new();
    for (i, g) in refs.iter().enumerate() {
        if *g == "mesh" {
            vs.warn(&format!("spec.gateways[{i}]"), "mesh (sidecars) is not a gateway; only the gateways are compiled");
            continue;
        }
        match gateway_names.iter().find(|full| gateway_ref_is(g, &vs.namespace, full)) {
            Some(full) => bound.push(full.clone()),
            None => return Err(vs.refuse(format!("spec.gateways[{i}]"), format!("{g:?} names no Gateway in the input"))),
        }
    }
    let http = spec.objs("http")?;
    let mut served = false;
    for l in listeners.iter_mut() {
        let here: Vec<String> = bound.iter().filter(|g| l.servers.iter().any(|s| &s.gateway == *g)).cloned().collect();
        if here.is_empty() {
            continue;
        }
        let mut domains: Vec<(String, bool)> = Vec::new();
        for s in l.servers.iter().filter(|s| here.contains(&s.gateway)) {
            for (ns, server_host) in &s.hosts {
                if ns.as_ref().is_some_and(|ns| ns != "*" && *ns != vs.namespace) {
                    continue;
                }
                for h in &hosts {
                    if let Some(d) = intersect(h, server_host) {
                        if !domains.iter().any(|(x, _)| *x == d) {
                            domains.push((d, s.https_redirect));
                        }
                    }
                }
            }
        }
        if domains.is_empty() {
            continue;
        }
        served = true;
        let scope = Scope { port: l.port, gateways: &here, claims };
        let mut routes = Vec::new();
        for route in &http {
            routes.extend(http_route(route, &scope, ups, conds)?);
        }
        for (domain, require_tls) in domains {
            match l.virtual_hosts.iter_mut().find(|v| v.domain == domain) {
                Some(v) => v.routes.extend(routes.iter().cloned()),
                None => l.virtual_hosts.push(VirtualHost { domain, routes: routes.clone(), require_tls }),
            }
        }
    }
    if !served {
        vs.warn("spec.hosts", "no host matches a host of its gateways' servers: it serves nothing");
    }
    Ok(())
}

/// The listener's Envoy virtual hosts, most specific domains first as Envoy searches them.
pub fn virtual_hosts(l: &Listener) -> Vec<Value> {
    l.virtual_hosts
        .iter()
        .map(|v| {
            let mut vh = json!({"name": format!("{}:{}", v.domain, l.port), "domains": [v.domain], "routes": v.routes});
            if v.require_tls {
                vh["require_tls"] = json!("ALL");
            }
            vh
        })
        .collect()
}

//! Where destination and JWKS hosts live, and the Envoy clusters that reach them.
//!
//! A host:port is looked up in this order: `--upstream HOST:PORT=ADDR:PORT`, a ServiceEntry
//! naming the host, and (JWKS hosts only) the URI itself: DNS for a name, an IP used as it is.
//! A DestinationRule for the host adds TLS origination; an `https` JWKS URI is TLS with SNI and
//! the system CA unless a DestinationRule says otherwise.

use std::collections::BTreeMap;

use jwt_claims_filter::config::{istio_cluster_name, HttpUri};
use serde_json::{json, Value};

use crate::model::{Obj, Refusal, Resource, Result};

/// Debian's and most distributions' CA bundle: Istio's "system CA" for TLS origination.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone)]
struct Endpoint {
    address: String,
    port: u16,
}

/// A ServiceEntry's host and port, with its endpoints.
#[derive(Debug, Clone)]
struct EntryPort {
    host: String,
    port: u16,
    dns: bool,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq)]
struct Tls {
    sni: Option<String>,
    ca: Option<String>,
    subject_alt_names: Vec<String>,
    skip_verify: bool,
}

#[derive(Debug, Clone)]
struct DestinationTls {
    host: String,
    /// `None`: the whole host; `Some(port)`: a portLevelSettings entry.
    port: Option<u16>,
    /// `None`: mode DISABLE.
    tls: Option<Tls>,
}

#[derive(Debug, Default)]
pub struct Upstreams {
    overrides: Vec<(String, u16, Endpoint)>,
    entries: Vec<EntryPort>,
    tls: Vec<DestinationTls>,
    clusters: BTreeMap<String, Value>,
    /// For `--emit istio`: destinations are the mesh's services, so a host with no entry
    /// here is not an error (Istio knows where it lives).
    mesh_knows_hosts: bool,
}

/// `HOST:PORT` (the port required) or `[v6]:PORT`.
pub fn host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn option_refusal(option: &str, value: &str, reason: &str) -> Refusal {
    Refusal { resource: format!("{option} {value}"), field: String::new(), reason: reason.to_string() }
}

impl Upstreams {
    pub fn new(resources: &[Resource], overrides: &[String], mesh_knows_hosts: bool) -> Result<Upstreams> {
        let mut ups = Upstreams { mesh_knows_hosts, ..Upstreams::default() };
        for text in overrides {
            let (from, to) = text
                .split_once('=')
                .ok_or_else(|| option_refusal("--upstream", text, "expected HOST:PORT=ADDR:PORT"))?;
            let (host, port) =
                host_port(from).ok_or_else(|| option_refusal("--upstream", text, "HOST:PORT needs a port from 1 to 65535"))?;
            let (address, to_port) =
                host_port(to).ok_or_else(|| option_refusal("--upstream", text, "ADDR:PORT needs a port from 1 to 65535"))?;
            ups.overrides.push((host, port, Endpoint { address, port: to_port }));
        }
        for r in resources {
            match r.kind.as_str() {
                "ServiceEntry" => ups.read_service_entry(r)?,
                "DestinationRule" => ups.read_destination_rule(r)?,
                _ => {}
            }
        }
        Ok(ups)
    }

    fn read_service_entry(&mut self, r: &Resource) -> Result<()> {
        let spec = r.spec()?;
        spec.fields(
            &["hosts", "addresses", "ports", "location", "resolution", "endpoints", "exportTo"],
            &[
                ("workloadSelector", "entries backed by mesh workloads need a cluster's registry"),
                ("subjectAltNames", "it applies to mTLS inside a mesh"),
            ],
        )?;
        let dns = match spec.str("resolution")?.unwrap_or("NONE") {
            "STATIC" => false,
            "DNS" | "DNS_ROUND_ROBIN" => true,
            other => return Err(spec.refuse("resolution", format!("{other:?}: the compiler needs STATIC or DNS to know where the host lives"))),
        };
        let hosts = spec.strs("hosts")?;
        if hosts.is_empty() {
            return Err(spec.refuse("hosts", "needs at least one host"));
        }
        let mut ports: Vec<(u16, String, Option<u16>)> = Vec::new();
        for p in spec.objs("ports")? {
            p.fields(&["number", "name", "protocol", "targetPort"], &[])?;
            let number = port_of(&p, "number")?.ok_or_else(|| p.refuse("number", "is required"))?;
            if let Some(proto) = p.str("protocol")? {
                if !matches!(proto.to_ascii_uppercase().as_str(), "HTTP" | "HTTP2" | "HTTPS" | "GRPC" | "TLS" | "TCP") {
                    return Err(p.refuse("protocol", format!("{proto:?} is not a protocol the gateway can route to")));
                }
            }
            ports.push((number, p.str("name")?.unwrap_or_default().to_string(), port_of(&p, "targetPort")?));
        }
        if ports.is_empty() {
            return Err(spec.refuse("ports", "needs at least one port"));
        }
        let mut endpoints: Vec<(String, BTreeMap<String, u16>)> = Vec::new();
        for e in spec.objs("endpoints")? {
            e.fields(&["address", "ports", "labels", "network", "locality", "weight", "serviceAccount"], &[])?;
            let address = e.req_str("address")?.to_string();
            let mut named = BTreeMap::new();
            if let Some(p) = e.obj("ports")? {
                for (name, v) in p.map {
                    let n = v.as_u64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
                    named.insert(name.clone(), n.ok_or_else(|| p.refuse(name, "must be a port from 1 to 65535"))?);
                }
            }
            endpoints.push((address, named));
        }
        if !dns && endpoints.is_empty() {
            return Err(spec.refuse("endpoints", "resolution STATIC needs endpoints"));
        }
        for host in &hosts {
            for (number, name, target) in &ports {
                let eps = if endpoints.is_empty() {
                    vec![Endpoint { address: host.to_string(), port: target.unwrap_or(*number) }]
                } else {
                    endpoints
                        .iter()
                        .map(|(address, named)| Endpoint {
                            address: address.clone(),
                            port: named.get(name).copied().or(*target).unwrap_or(*number),
                        })
                        .collect()
                };
                self.entries.push(EntryPort { host: host.to_string(), port: *number, dns, endpoints: eps });
            }
        }
        Ok(())
    }

    fn read_destination_rule(&mut self, r: &Resource) -> Result<()> {
        let spec = r.spec()?;
        spec.fields(
            &["host", "trafficPolicy", "exportTo", "workloadSelector"],
            &[("subsets", "subsets need pod labels, which a gateway outside Kubernetes does not have")],
        )?;
        let host = spec.req_str("host")?.to_string();
        let Some(policy) = spec.obj("trafficPolicy")? else { return Ok(()) };
        policy.fields(&["tls", "portLevelSettings"], &[
            ("loadBalancer", "the compiler only reads TLS origination from a DestinationRule"),
            ("connectionPool", "the compiler only reads TLS origination from a DestinationRule"),
            ("outlierDetection", "the compiler only reads TLS origination from a DestinationRule"),
            ("tunnel", "the compiler only reads TLS origination from a DestinationRule"),
            ("proxyProtocol", "the compiler only reads TLS origination from a DestinationRule"),
        ])?;
        if let Some(tls) = policy.obj("tls")? {
            self.tls.push(DestinationTls { host: host.clone(), port: None, tls: read_tls(&tls)? });
        }
        for setting in policy.objs("portLevelSettings")? {
            setting.fields(&["port", "tls"], &[("loadBalancer", "only TLS is read"), ("connectionPool", "only TLS is read"), ("outlierDetection", "only TLS is read")])?;
            let port = setting.obj("port")?.ok_or_else(|| setting.refuse("port", "is required"))?;
            port.fields(&["number"], &[])?;
            let number = port_of(&port, "number")?.ok_or_else(|| port.refuse("number", "is required"))?;
            if let Some(tls) = setting.obj("tls")? {
                self.tls.push(DestinationTls { host: host.clone(), port: Some(number), tls: read_tls(&tls)? });
            }
        }
        Ok(())
    }

    /// The cluster for a VirtualService destination, made on first use. `port` may be omitted
    /// when the host has exactly one.
    pub fn destination(&mut self, host: &str, port: Option<u16>, at: &Obj) -> Result<String> {
        let names = host_names(host, &at.res.namespace);
        let known_ports: Vec<u16> = {
            let mut ps: Vec<u16> = self.overrides.iter().filter(|(h, _, _)| names.contains(h)).map(|(_, p, _)| *p).collect();
            ps.extend(self.entries.iter().filter(|e| names.contains(&e.host)).map(|e| e.port));
            ps.sort_unstable();
            ps.dedup();
            ps
        };
        let port = match (port, known_ports.as_slice()) {
            (Some(p), _) => p,
            (None, []) if self.mesh_knows_hosts => return Ok(format!("outbound|||{host}")),
            (None, [only]) => *only,
            (None, []) => return Err(at.refuse("host", format!("{host:?} has no ServiceEntry and no --upstream {host}:PORT=ADDR:PORT"))),
            (None, _) => return Err(at.refuse("port", format!("{host:?} has several ports; name one"))),
        };
        let name = istio_cluster_name(port, host);
        if self.clusters.contains_key(&name) {
            return Ok(name);
        }
        let (endpoints, dns) = match self.lookup(&names, port) {
            Some(found) => found,
            None if self.mesh_knows_hosts => return Ok(name),
            None => {
                return Err(at.refuse(
                    "host",
                    format!("{host}:{port} has no ServiceEntry and no --upstream {host}:{port}=ADDR:PORT"),
                ))
            }
        };
        let tls = self.tls_for(&names, port).flatten();
        self.clusters.insert(name.clone(), cluster(&name, &endpoints, dns, tls.as_ref(), host));
        Ok(name)
    }

    /// The cluster a JWKS (or discovery) fetch goes through: `cluster` for `uri`'s host.
    pub fn jwks(&mut self, uri: &HttpUri, cluster_name: &str) -> Result<()> {
        if self.clusters.contains_key(cluster_name) {
            return Ok(());
        }
        let names = vec![uri.host.clone()];
        let (endpoints, dns) = self.lookup(&names, uri.port).unwrap_or_else(|| {
            let ip = uri.host.parse::<std::net::IpAddr>().is_ok() || uri.host.starts_with('[');
            (vec![Endpoint { address: uri.host.trim_matches(['[', ']']).to_string(), port: uri.port }], !ip)
        });
        let tls = match self.tls_for(&names, uri.port) {
            Some(configured) => configured,
            None if uri.scheme == "https" => Some(Tls { sni: None, ca: None, subject_alt_names: Vec::new(), skip_verify: false }),
            None => None,
        };
        self.clusters.insert(cluster_name.to_string(), cluster(cluster_name, &endpoints, dns, tls.as_ref(), &uri.host));
        Ok(())
    }

    fn lookup(&self, names: &[String], port: u16) -> Option<(Vec<Endpoint>, bool)> {
        if let Some((_, _, ep)) = self.overrides.iter().find(|(h, p, _)| names.contains(h) && *p == port) {
            let ip = ep.address.parse::<std::net::IpAddr>().is_ok();
            return Some((vec![ep.clone()], !ip));
        }
        self.entries.iter().find(|e| names.contains(&e.host) && e.port == port).map(|e| (e.endpoints.clone(), e.dns))
    }

    /// `Some(None)`: a DestinationRule disables TLS; `None`: no DestinationRule says anything.
    fn tls_for(&self, names: &[String], port: u16) -> Option<Option<Tls>> {
        let for_host = |d: &&DestinationTls| names.contains(&d.host);
        let by_port = self.tls.iter().filter(for_host).find(|d| d.port == Some(port));
        by_port.or_else(|| self.tls.iter().filter(for_host).find(|d| d.port.is_none())).map(|d| d.tls.clone())
    }

    /// The hosts of JWKS URIs and destinations with a cluster, for `--emit istio`.
    pub fn clusters(&self) -> Vec<Value> {
        self.clusters.values().cloned().collect()
    }

    /// Whether a ServiceEntry already makes the Istio cluster for `host:port`.
    pub fn has_service_entry(&self, host: &str, port: u16) -> bool {
        self.entries.iter().any(|e| e.host == host && e.port == port)
    }

    /// Whether a DestinationRule says how to reach `host` (TLS or not).
    pub fn has_destination_rule(&self, host: &str) -> bool {
        self.tls.iter().any(|d| d.host == host)
    }
}

/// The names a VirtualService host may go by: as written, and for a Kubernetes short name
/// its FQDN in the resource's namespace (and back).
fn host_names(host: &str, namespace: &str) -> Vec<String> {
    let mut names = vec![host.to_string()];
    if !host.contains('.') {
        names.push(format!("{host}.{namespace}.svc.cluster.local"));
    } else if let Some(short) = host.strip_suffix(".svc.cluster.local").and_then(|h| h.split('.').next()) {
        names.push(short.to_string());
    }
    names
}

fn port_of(o: &Obj, field: &str) -> Result<Option<u16>> {
    match o.u32(field)? {
        None => Ok(None),
        Some(n) => u16::try_from(n).ok().filter(|n| *n > 0).map(Some).ok_or_else(|| o.refuse(field, "must be a port from 1 to 65535")),
    }
}

fn read_tls(tls: &Obj) -> Result<Option<Tls>> {
    tls.fields(
        &["mode", "caCertificates", "sni", "subjectAltNames", "insecureSkipVerify"],
        &[
            ("credentialName", "secrets live in Kubernetes; give caCertificates as a file"),
            ("clientCertificate", "mutual TLS to upstreams is not implemented"),
            ("privateKey", "mutual TLS to upstreams is not implemented"),
            ("caCrl", "CRLs are not implemented"),
        ],
    )?;
    match tls.str("mode")?.unwrap_or("DISABLE") {
        "DISABLE" => Ok(None),
        "SIMPLE" => Ok(Some(Tls {
            sni: tls.str("sni")?.map(str::to_string),
            ca: tls.str("caCertificates")?.map(str::to_string),
            subject_alt_names: tls.strs("subjectAltNames")?.into_iter().map(str::to_string).collect(),
            skip_verify: tls.bool("insecureSkipVerify")?.unwrap_or(false),
        })),
        other => Err(tls.refuse("mode", format!("{other:?} is not supported: SIMPLE (TLS origination) or DISABLE"))),
    }
}

/// An Envoy cluster. `host` is the name TLS verifies and sends as SNI unless the
/// DestinationRule names others (Istio verifies the server's name, not only its chain).
fn cluster(name: &str, endpoints: &[Endpoint], dns: bool, tls: Option<&Tls>, host: &str) -> Value {
    let lb: Vec<Value> = endpoints
        .iter()
        .map(|e| json!({"endpoint": {"address": {"socket_address": {"address": e.address, "port_value": e.port}}}}))
        .collect();
    let mut c = json!({
        "name": name,
        "type": if dns { "STRICT_DNS" } else { "STATIC" },
        "connect_timeout": "10s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": lb}]},
    });
    if let Some(tls) = tls {
        let sni = tls.sni.clone().unwrap_or_else(|| host.to_string());
        let mut validation = serde_json::Map::new();
        if !tls.skip_verify {
            validation.insert("trusted_ca".into(), json!({"filename": tls.ca.clone().unwrap_or_else(|| SYSTEM_CA.to_string())}));
            let sans = if tls.subject_alt_names.is_empty() { vec![sni.clone()] } else { tls.subject_alt_names.clone() };
            let matchers: Vec<Value> = sans.iter().map(|s| json!({"san_type": "DNS", "matcher": {"exact": s}})).collect();
            validation.insert("match_typed_subject_alt_names".into(), Value::Array(matchers));
        }
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": sni,
                "common_tls_context": {"validation_context": Value::Object(validation)},
            },
        });
    }
    c
}

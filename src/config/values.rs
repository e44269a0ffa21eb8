//! The configuration's values that are more than JSON scalars: URIs and durations.

use std::time::Duration;

/// Istio's name for a service's outbound cluster, `outbound|<port>||<host>`: the one place it
/// is spelled, for the filter's default `jwksCluster` and the Istio compiler's clusters.
pub fn istio_cluster_name(port: u16, host: &str) -> String {
    format!("outbound|{port}||{host}")
}

/// An `http(s)://authority/path` URI, split the way a dispatched call needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpUri {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// `host` or `host:port` as written in the URI; the call's `:authority`.
    pub authority: String,
    /// Path and query; `/` when the URI has none.
    pub path: String,
}

impl HttpUri {
    /// Istio's name for the cluster of this URI's host and port (a ServiceEntry's outbound
    /// cluster): what a fetch goes through when no cluster is named.
    pub fn istio_cluster(&self) -> String {
        istio_cluster_name(self.port, &self.host)
    }

    /// Parses an absolute http or https URI. Userinfo and fragments are refused.
    pub fn parse(text: &str) -> Result<HttpUri, String> {
        let (scheme, rest) =
            text.split_once("://").ok_or_else(|| format!("{text:?} is not an absolute http(s) URI"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("{text:?}: scheme must be http or https")),
        };
        if rest.contains('#') {
            return Err(format!("{text:?}: fragments are not allowed"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{text:?}: needs a host and no userinfo"));
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| format!("{text:?}: the port is not a number from 1 to 65535"))?;
        let host = host.to_string();
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_[]:".contains(&b)) {
            return Err(format!("{text:?}: {host:?} is not a valid host"));
        }
        Ok(HttpUri { scheme, port: port.unwrap_or(default_port), authority: authority.to_string(), host, path })
    }
}

/// Splits `host[:port]`, including `[v6]:port`. `None` when a port is present but invalid.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(v6_end) = authority.find(']') {
        let (host, after) = authority.split_at(v6_end + 1);
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    match port {
        None => Some((host, None)),
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 => Some((host, Some(p))),
            _ => None,
        },
    }
}

/// Parses a protobuf-JSON duration: decimal seconds with an `s` suffix (`"5s"`, `"1.5s"`),
/// and, for convenience, whole milliseconds (`"250ms"`).
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse::<u64>().ok().map(Duration::from_millis);
    }
    let secs = text.strip_suffix('s')?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) || (secs.contains('.') && frac.is_empty()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    if whole > 315_576_000_000 {
        return None; // protobuf Duration's range
    }
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    Some(Duration::new(whole, nanos))
}

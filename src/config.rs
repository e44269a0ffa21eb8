//! Plugin configuration: the JSON that Envoy passes as the Wasm filter's `configuration`
//! (Istio: WasmPlugin `pluginConfig`), parsed once into a validated [`FilterConfig`].
//!
//! Field names follow Istio's RequestAuthentication `jwtRules`, so a user can paste theirs.
//! Parsing walks a `serde_json::Value` by hand rather than deriving, so that every error names
//! the field it is about (`jwtRules[0].timeout: ...`), and unknown fields are refused.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::claims::ClaimPath;
use crate::extract::ScannedNames;
use crate::jwks::KeySet;

/// The validated configuration. Built once in `on_configure`, shared read-only afterwards.
#[derive(Debug)]
pub struct FilterConfig {
    pub rules: Vec<JwtRule>,
    /// Headers filled from the verified claims; the name spells the claim path.
    pub claim_headers: Vec<ClaimHeader>,
    /// With no token at all: `false` lets the request pass (Istio), `true` answers 401.
    pub require_token: bool,
    /// Tokens longer than this are refused before any decoding.
    pub max_token_bytes: usize,
    /// Verified tokens remembered per VM (0 disables the cache).
    pub token_cache_size: usize,
    /// Every distinct place a token may come from, over all rules, in rule order.
    pub locations: Vec<TokenLocation>,
    /// Lowercased names of the headers this filter writes (besides the `x-jwt-claim` family):
    /// they are stripped from every incoming request so a client cannot forge them.
    pub owned_headers: Vec<String>,
    /// Which request headers the request path's walk looks at (from the two above).
    pub scanned_names: ScannedNames,
}

/// One `jwtRules` entry: which issuer, which keys, where its tokens are, what to emit.
#[derive(Debug)]
pub struct JwtRule {
    pub issuer: String,
    /// Empty: any audience (or none) is accepted.
    pub audiences: Vec<String>,
    pub keys: KeySource,
    /// Time a dispatched key fetch may take; also how long a request waits for keys.
    pub timeout: Duration,
    pub jwks_cache_duration: Duration,
    /// Unknown-`kid` refetches are at least this far apart.
    pub jwks_min_refetch_interval: Duration,
    /// Indices into [`FilterConfig::locations`].
    pub locations: Vec<usize>,
    pub forward_original_token: bool,
    pub output_payload_to_header: Option<String>,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    pub clock_skew: Duration,
}

/// Where a rule's keys come from.
#[derive(Debug)]
pub enum KeySource {
    /// Fetched with `dispatch_http_call` and cached.
    Remote(RemoteJwks),
    /// Inlined in the configuration (`jwks`); the only source for HMAC keys.
    Inline(KeySet),
}

/// A JWKS (or OIDC discovery document) fetched over HTTP through an Envoy cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteJwks {
    pub uri: HttpUri,
    /// The Envoy cluster the call goes through.
    pub cluster: String,
    /// `true` when `uri` is the issuer's OpenID discovery document, which names the JWKS.
    pub discovery: bool,
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
        format!("outbound|{}||{}", self.port, self.host)
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

/// A place a token may be presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// A request header (name lowercased) and the prefix before the token, e.g. `Bearer `.
    Header { name: String, prefix: String },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

/// A configured claim header: its lowercased name and the claim path the name spells.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimHeader {
    pub name: String,
    pub path: ClaimPath,
}

/// An `outputClaimToHeaders` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: ClaimPath,
}

/// A configuration error: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "configuration: {}", self.message)
        } else {
            write!(f, "configuration field {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn error(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_string(), message: message.into() }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_JWKS_CACHE_DURATION: Duration = Duration::from_secs(300);
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 1000;
/// Istio's and Envoy's default token location: `Authorization: Bearer <token>`.
pub const DEFAULT_HEADER: &str = "authorization";
pub const DEFAULT_PREFIX: &str = "Bearer ";
/// Istio's and Envoy's default query parameter.
pub const DEFAULT_PARAM: &str = "access_token";

const TOP_FIELDS: &[&str] = &["jwtRules", "claimHeaders", "requireToken", "maxTokenBytes", "tokenCacheSize"];
const RULE_FIELDS: &[&str] = &[
    "issuer",
    "audiences",
    "jwksUri",
    "jwks",
    "jwksCluster",
    "timeout",
    "jwksCacheDuration",
    "jwksMinRefetchInterval",
    "fromHeaders",
    "fromParams",
    "fromCookies",
    "forwardOriginalToken",
    "outputPayloadToHeader",
    "outputClaimToHeaders",
    "clockSkew",
];

impl FilterConfig {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| error("", format!("not valid JSON: {e}")))?;
        let top = as_object(&value, "")?;
        reject_unknown(top, TOP_FIELDS, "")?;

        let rules_value = top.get("jwtRules").ok_or_else(|| error("jwtRules", "is required (a list of JWT rules)"))?;
        let rules_array = as_array(rules_value, "jwtRules")?;
        if rules_array.is_empty() {
            return Err(error("jwtRules", "needs at least one rule"));
        }

        let mut locations: Vec<TokenLocation> = Vec::new();
        let mut rules = Vec::with_capacity(rules_array.len());
        for (i, rule_value) in rules_array.iter().enumerate() {
            let rule = parse_rule(rule_value, &format!("jwtRules[{i}]"), &mut locations)?;
            if rules.iter().any(|r: &JwtRule| r.issuer == rule.issuer) {
                return Err(error(
                    &format!("jwtRules[{i}].issuer"),
                    format!("{:?} is already used by another rule", rule.issuer),
                ));
            }
            rules.push(rule);
        }

        let claim_headers = match top.get("claimHeaders") {
            None => Vec::new(),
            Some(v) => as_array(v, "claimHeaders")?
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let field = format!("claimHeaders[{i}]");
                    let name = as_str(name, &field)?;
                    let path = ClaimPath::from_claim_header(name).map_err(|m| error(&field, m))?;
                    Ok(ClaimHeader { name: name.to_ascii_lowercase(), path })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };

        let require_token = opt_bool(top, "requireToken", "requireToken")?.unwrap_or(false);
        let max_token_bytes = match top.get("maxTokenBytes") {
            None => DEFAULT_MAX_TOKEN_BYTES,
            Some(v) => match v.as_u64() {
                Some(n) if (64..=1 << 20).contains(&n) => n as usize,
                _ => return Err(error("maxTokenBytes", "must be an integer from 64 to 1048576")),
            },
        };

        let token_cache_size = match top.get("tokenCacheSize") {
            None => DEFAULT_TOKEN_CACHE_SIZE,
            Some(v) => match v.as_u64() {
                Some(n) if n <= 1_000_000 => n as usize,
                _ => return Err(error("tokenCacheSize", "must be an integer from 0 to 1000000")),
            },
        };

        let mut owned_headers: Vec<String> = Vec::new();
        for rule in &rules {
            let named = rule
                .output_claim_to_headers
                .iter()
                .map(|c| c.header.clone())
                .chain(rule.output_payload_to_header.clone());
            for name in named {
                if !owned_headers.contains(&name) {
                    owned_headers.push(name);
                }
            }
        }
        for (name, field) in owned_headers.iter().map(|n| (n, "outputClaimToHeaders/outputPayloadToHeader")) {
            let is_token_header =
                locations.iter().any(|l| matches!(l, TokenLocation::Header { name: h, .. } if h == name));
            if is_token_header {
                return Err(error(field, format!("{name:?} is also a token location")));
            }
        }

        let scanned_names = ScannedNames::new(&locations, &owned_headers);
        Ok(FilterConfig {
            rules,
            claim_headers,
            require_token,
            max_token_bytes,
            token_cache_size,
            locations,
            owned_headers,
            scanned_names,
        })
    }

    /// `true` when no rule fetches keys, so the filter never needs the network.
    pub fn all_keys_inline(&self) -> bool {
        self.rules.iter().all(|r| matches!(r.keys, KeySource::Inline(_)))
    }
}

fn parse_rule(value: &Value, at: &str, locations: &mut Vec<TokenLocation>) -> Result<JwtRule, ConfigError> {
    let obj = as_object(value, at)?;
    reject_unknown(obj, RULE_FIELDS, at)?;
    let field = |name: &str| format!("{at}.{name}");

    let issuer = match obj.get("issuer") {
        Some(v) => as_str(v, &field("issuer"))?.to_string(),
        None => return Err(error(&field("issuer"), "is required")),
    };
    if issuer.is_empty() {
        return Err(error(&field("issuer"), "must not be empty"));
    }

    let audiences = opt_string_list(obj, "audiences", &field("audiences"))?;

    let jwks_uri = opt_str(obj, "jwksUri", &field("jwksUri"))?;
    let inline_jwks = opt_str(obj, "jwks", &field("jwks"))?;
    let cluster = opt_str(obj, "jwksCluster", &field("jwksCluster"))?;
    let keys = match (jwks_uri, inline_jwks) {
        (Some(_), Some(_)) => return Err(error(&field("jwksUri"), "give exactly one of jwksUri and jwks, not both")),
        (None, Some(text)) => {
            if cluster.is_some() {
                return Err(error(&field("jwksCluster"), "only applies with jwksUri"));
            }
            let set = KeySet::parse(text.as_bytes(), true).map_err(|e| error(&field("jwks"), e.to_string()))?;
            KeySource::Inline(set)
        }
        (Some(uri), None) => {
            let uri = HttpUri::parse(uri).map_err(|m| error(&field("jwksUri"), m))?;
            KeySource::Remote(remote(uri, cluster, false, &field("jwksCluster"))?)
        }
        (None, None) => {
            // OIDC discovery: the issuer publishes where its keys are.
            let base = issuer.trim_end_matches('/');
            let uri = HttpUri::parse(&format!("{base}/.well-known/openid-configuration")).map_err(|_| {
                error(
                    &field("jwksUri"),
                    "give jwksUri or jwks; without them the issuer must be an http(s) URL for OpenID discovery",
                )
            })?;
            KeySource::Remote(remote(uri, cluster, true, &field("jwksCluster"))?)
        }
    };

    let timeout = opt_duration(obj, "timeout", &field("timeout"))?.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(error(&field("timeout"), "must be greater than zero"));
    }
    let jwks_cache_duration =
        opt_duration(obj, "jwksCacheDuration", &field("jwksCacheDuration"))?.unwrap_or(DEFAULT_JWKS_CACHE_DURATION);
    if jwks_cache_duration < Duration::from_secs(1) {
        return Err(error(&field("jwksCacheDuration"), "must be at least 1s"));
    }
    let jwks_min_refetch_interval = opt_duration(obj, "jwksMinRefetchInterval", &field("jwksMinRefetchInterval"))?
        .unwrap_or(DEFAULT_MIN_REFETCH_INTERVAL);
    let clock_skew = opt_duration(obj, "clockSkew", &field("clockSkew"))?.unwrap_or(DEFAULT_CLOCK_SKEW);

    let mut rule_locations = Vec::new();
    let has_headers = obj.contains_key("fromHeaders");
    let has_params = obj.contains_key("fromParams");
    let mut add = |loc: TokenLocation| {
        let index = match locations.iter().position(|l| *l == loc) {
            Some(i) => i,
            None => {
                locations.push(loc);
                locations.len() - 1
            }
        };
        if !rule_locations.contains(&index) {
            rule_locations.push(index);
        }
    };
    if let Some(v) = obj.get("fromHeaders") {
        for (i, h) in as_array(v, &field("fromHeaders"))?.iter().enumerate() {
            let at = format!("{at}.fromHeaders[{i}]");
            let h = as_object(h, &at)?;
            reject_unknown(h, &["name", "prefix"], &at)?;
            let name = match h.get("name") {
                Some(n) => as_str(n, &format!("{at}.name"))?,
                None => return Err(error(&format!("{at}.name"), "is required")),
            };
            if !is_header_name(name) {
                return Err(error(&format!("{at}.name"), format!("{name:?} is not a valid header name")));
            }
            let prefix = opt_str(h, "prefix", &format!("{at}.prefix"))?.unwrap_or("");
            add(TokenLocation::Header { name: name.to_ascii_lowercase(), prefix: prefix.to_string() });
        }
    }
    if has_params {
        for name in opt_string_list(obj, "fromParams", &field("fromParams"))? {
            add(TokenLocation::Param(name));
        }
    }
    for name in opt_string_list(obj, "fromCookies", &field("fromCookies"))? {
        add(TokenLocation::Cookie(name));
    }
    if !has_headers && !has_params {
        // Istio and Envoy: with no header or parameter location given, use both defaults.
        add(TokenLocation::Header { name: DEFAULT_HEADER.into(), prefix: DEFAULT_PREFIX.into() });
        add(TokenLocation::Param(DEFAULT_PARAM.into()));
    }
    if rule_locations.is_empty() {
        return Err(error(at, "has no token location (fromHeaders, fromParams, fromCookies are all empty)"));
    }

    let forward_original_token =
        opt_bool(obj, "forwardOriginalToken", &field("forwardOriginalToken"))?.unwrap_or(false);
    let output_payload_to_header = match opt_str(obj, "outputPayloadToHeader", &field("outputPayloadToHeader"))? {
        None => None,
        Some(name) if is_header_name(name) => Some(name.to_ascii_lowercase()),
        Some(name) => {
            return Err(error(&field("outputPayloadToHeader"), format!("{name:?} is not a valid header name")))
        }
    };
    let mut output_claim_to_headers = Vec::new();
    if let Some(v) = obj.get("outputClaimToHeaders") {
        for (i, entry) in as_array(v, &field("outputClaimToHeaders"))?.iter().enumerate() {
            let at = format!("{at}.outputClaimToHeaders[{i}]");
            let entry = as_object(entry, &at)?;
            reject_unknown(entry, &["header", "claim"], &at)?;
            let header = match entry.get("header") {
                Some(h) => as_str(h, &format!("{at}.header"))?,
                None => return Err(error(&format!("{at}.header"), "is required")),
            };
            if !is_header_name(header) {
                return Err(error(&format!("{at}.header"), format!("{header:?} is not a valid header name")));
            }
            let claim = match entry.get("claim") {
                Some(c) => as_str(c, &format!("{at}.claim"))?,
                None => return Err(error(&format!("{at}.claim"), "is required")),
            };
            let claim = ClaimPath::dotted(claim).map_err(|m| error(&format!("{at}.claim"), m))?;
            output_claim_to_headers.push(ClaimToHeader { header: header.to_ascii_lowercase(), claim });
        }
    }

    Ok(JwtRule {
        issuer,
        audiences,
        keys,
        timeout,
        jwks_cache_duration,
        jwks_min_refetch_interval,
        locations: rule_locations,
        forward_original_token,
        output_payload_to_header,
        output_claim_to_headers,
        clock_skew,
    })
}

fn remote(uri: HttpUri, cluster: Option<&str>, discovery: bool, field: &str) -> Result<RemoteJwks, ConfigError> {
    let cluster = match cluster {
        Some("") => return Err(error(field, "must not be empty")),
        Some(c) => c.to_string(),
        // Istio's name for the outbound cluster of a ServiceEntry host and port.
        None => uri.istio_cluster(),
    };
    Ok(RemoteJwks { uri, cluster, discovery })
}

/// Parses a protobuf-JSON duration: decimal seconds with an `s` suffix (`"5s"`, `"1.5s"`),
/// and, for convenience, whole milliseconds (`"250ms"`).
pub fn parse_duration(text: &str) -> Option<Duration> {
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

/// RFC 7230 `token`: what a header name may contain.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn as_object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object().ok_or_else(|| error(at, format!("expected an object, found {}", kind(v))))
}

fn as_array<'a>(v: &'a Value, at: &str) -> Result<&'a Vec<Value>, ConfigError> {
    v.as_array().ok_or_else(|| error(at, format!("expected a list, found {}", kind(v))))
}

fn as_str<'a>(v: &'a Value, at: &str) -> Result<&'a str, ConfigError> {
    v.as_str().ok_or_else(|| error(at, format!("expected a string, found {}", kind(v))))
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<Option<&'a str>, ConfigError> {
    obj.get(key).map(|v| as_str(v, at)).transpose()
}

fn opt_bool(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<bool>, ConfigError> {
    obj.get(key)
        .map(|v| v.as_bool().ok_or_else(|| error(at, format!("expected true or false, found {}", kind(v)))))
        .transpose()
}

fn opt_string_list(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>, ConfigError> {
    match obj.get(key) {
        None => Ok(Vec::new()),
        Some(v) => as_array(v, at)?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = as_str(s, &format!("{at}[{i}]"))?;
                if s.is_empty() {
                    return Err(error(&format!("{at}[{i}]"), "must not be empty"));
                }
                Ok(s.to_string())
            })
            .collect(),
    }
}

fn opt_duration(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<Duration>, ConfigError> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => {
            let text = as_str(v, at)?;
            parse_duration(text)
                .map(Some)
                .ok_or_else(|| error(at, format!("{text:?} is not a duration like \"5s\" or \"1.5s\"")))
        }
    }
}

fn reject_unknown(obj: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), ConfigError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(unknown) => {
            let field = if at.is_empty() { unknown.clone() } else { format!("{at}.{unknown}") };
            Err(error(&field, format!("unknown field; expected one of: {}", known.join(", "))))
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = include_str!("../tests/fixtures/istio-samples/jwks.json");

    fn parse(json: &str) -> Result<FilterConfig, ConfigError> {
        FilterConfig::parse(json.as_bytes())
    }

    fn err_field(json: &str) -> String {
        parse(json).unwrap_err().field
    }

    const URI_RULE: &str = r#"{"issuer":"testing@secure.istio.io","jwksUri":"http://127.0.0.1:8091/jwks.json"}"#;

    #[test]
    fn contract_example_parses_with_every_field() {
        let json = r#"{
          "jwtRules": [{
            "issuer": "testing@secure.istio.io",
            "audiences": ["optional", "any-of"],
            "jwksUri": "http://127.0.0.1:8091/jwks.json",
            "jwksCluster": "jwks",
            "timeout": "5s",
            "jwksCacheDuration": "300s",
            "jwksMinRefetchInterval": "10s",
            "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
            "fromParams": ["access_token"],
            "fromCookies": ["session"],
            "forwardOriginalToken": false,
            "outputPayloadToHeader": "x-jwt-payload",
            "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
            "clockSkew": "60s"
          }],
          "claimHeaders": ["x-jwt-claim.groups"],
          "requireToken": false,
          "maxTokenBytes": 4096,
          "tokenCacheSize": 0
        }"#;
        let config = parse(json).unwrap();
        let rule = &config.rules[0];
        assert_eq!(rule.audiences, vec!["optional", "any-of"]);
        let KeySource::Remote(remote) = &rule.keys else { panic!("remote expected") };
        assert_eq!(remote.cluster, "jwks");
        assert_eq!(remote.uri.authority, "127.0.0.1:8091");
        assert_eq!(remote.uri.path, "/jwks.json");
        assert_eq!(rule.jwks_min_refetch_interval, Duration::from_secs(10));
        assert_eq!(config.locations.len(), 3);
        assert_eq!(
            config.locations[0],
            TokenLocation::Header { name: "authorization".into(), prefix: "Bearer ".into() }
        );
        assert_eq!(config.owned_headers, vec!["x-jwt-sub", "x-jwt-payload"]);
        assert_eq!(config.claim_headers[0].name, "x-jwt-claim.groups");
        assert_eq!(config.max_token_bytes, 4096);
        assert_eq!(config.token_cache_size, 0);
    }

    #[test]
    fn defaults_follow_istio() {
        let config = parse(&format!(r#"{{"jwtRules":[{URI_RULE}]}}"#)).unwrap();
        let rule = &config.rules[0];
        assert_eq!(rule.timeout, DEFAULT_TIMEOUT);
        assert_eq!(rule.jwks_cache_duration, DEFAULT_JWKS_CACHE_DURATION);
        assert_eq!(rule.clock_skew, DEFAULT_CLOCK_SKEW);
        assert!(!rule.forward_original_token);
        assert!(!config.require_token);
        assert_eq!(config.max_token_bytes, DEFAULT_MAX_TOKEN_BYTES);
        assert_eq!(config.token_cache_size, DEFAULT_TOKEN_CACHE_SIZE);
        assert_eq!(
            config.locations,
            vec![
                TokenLocation::Header { name: "authorization".into(), prefix: "Bearer ".into() },
                TokenLocation::Param("access_token".into())
            ]
        );
        let KeySource::Remote(remote) = &rule.keys else { panic!("remote expected") };
        assert_eq!(remote.cluster, "outbound|8091||127.0.0.1");
        let https = parse(r#"{"jwtRules":[{"issuer":"i","jwksUri":"https://idp.example.com/keys"}]}"#).unwrap();
        let KeySource::Remote(remote) = &https.rules[0].keys else { panic!("remote expected") };
        assert_eq!(remote.cluster, "outbound|443||idp.example.com");
    }

    #[test]
    fn headers_only_location_drops_the_param_default() {
        let config =
            parse(r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","fromHeaders":[{"name":"x-token"}]}]}"#)
                .unwrap();
        assert_eq!(config.locations, vec![TokenLocation::Header { name: "x-token".into(), prefix: String::new() }]);
    }

    #[test]
    fn issuer_without_keys_uses_oidc_discovery() {
        let config = parse(r#"{"jwtRules":[{"issuer":"https://idp.example.com/realms/x/"}]}"#).unwrap();
        let KeySource::Remote(remote) = &config.rules[0].keys else { panic!("remote expected") };
        assert!(remote.discovery);
        assert_eq!(remote.uri.path, "/realms/x/.well-known/openid-configuration");
        assert_eq!(err_field(r#"{"jwtRules":[{"issuer":"not-a-url"}]}"#), "jwtRules[0].jwksUri");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            ("[]", ""),
            ("{}", "jwtRules"),
            (r#"{"jwtRules":[]}"#, "jwtRules"),
            (r#"{"jwtRules":{}}"#, "jwtRules"),
            (r#"{"jwtRules":[{"jwksUri":"http://h/j"}]}"#, "jwtRules[0].issuer"),
            (r#"{"jwtRules":[{"issuer":5,"jwksUri":"http://h/j"}]}"#, "jwtRules[0].issuer"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"ftp://h/j"}]}"#, "jwtRules[0].jwksUri"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h:99999/j"}]}"#, "jwtRules[0].jwksUri"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","jwks":"{}"}]}"#, "jwtRules[0].jwksUri"),
            (r#"{"jwtRules":[{"issuer":"i","jwks":"{\"keys\":[]}"}]}"#, "jwtRules[0].jwks"),
            (r#"{"jwtRules":[{"issuer":"i","jwks":"not json"}]}"#, "jwtRules[0].jwks"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","timeout":"5"}]}"#, "jwtRules[0].timeout"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","timeout":5}]}"#, "jwtRules[0].timeout"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","timeout":"0s"}]}"#, "jwtRules[0].timeout"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","clockSkew":"-1s"}]}"#, "jwtRules[0].clockSkew"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","audiences":"a"}]}"#, "jwtRules[0].audiences"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","audiences":[1]}]}"#, "jwtRules[0].audiences[0]"),
            (
                r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","fromHeaders":[{"prefix":"B "}]}]}"#,
                "jwtRules[0].fromHeaders[0].name",
            ),
            (
                r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","fromHeaders":[{"name":"a b"}]}]}"#,
                "jwtRules[0].fromHeaders[0].name",
            ),
            (
                r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","forwardOriginalToken":"no"}]}"#,
                "jwtRules[0].forwardOriginalToken",
            ),
            (
                r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","outputClaimToHeaders":[{"header":"x"}]}]}"#,
                "jwtRules[0].outputClaimToHeaders[0].claim",
            ),
            (
                r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","outputPayloadToHeader":"bad header"}]}"#,
                "jwtRules[0].outputPayloadToHeader",
            ),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","jwksCluster":""}]}"#, "jwtRules[0].jwksCluster"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","issuerr":"x"}]}"#, "jwtRules[0].issuerr"),
            (
                r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"},{"issuer":"i","jwksUri":"http://h/j"}]}"#,
                "jwtRules[1].issuer",
            ),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"claimHeaders":["x-groups"]}"#, "claimHeaders[0]"),
            (
                r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"claimHeaders":["x-jwt-claim"]}"#,
                "claimHeaders[0]",
            ),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"requireToken":1}"#, "requireToken"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"maxTokenBytes":1}"#, "maxTokenBytes"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"claimHeader":[]}"#, "claimHeader"),
            (r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j"}],"tokenCacheSize":-1}"#, "tokenCacheSize"),
        ];
        for (json, field) in cases {
            assert_eq!(&err_field(json), field, "{json}");
        }
        let message =
            parse(r#"{"jwtRules":[{"issuer":"i","jwksUri":"http://h/j","timeout":"soon"}]}"#).unwrap_err().to_string();
        assert!(message.contains("jwtRules[0].timeout") && message.contains("soon"), "{message}");
    }

    #[test]
    fn inline_jwks_may_hold_hmac_keys() {
        let json = serde_json::json!({"jwtRules":[{"issuer":"i","jwks":r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#}]});
        let config = parse(&json.to_string()).unwrap();
        assert!(config.all_keys_inline());
        let json = serde_json::json!({"jwtRules":[{"issuer":"i","jwks": JWKS}]});
        assert!(parse(&json.to_string()).is_ok());
    }

    #[test]
    fn durations_in_protobuf_text_form() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.000000001s"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_duration("300s"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "s", "5", "-1s", "1.s", ".5s", "1.0000000001s", "5m", "1e3s", "5 s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn uris() {
        let u = HttpUri::parse("https://idp.example.com:8443/a/b?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str(), u.path.as_str()),
            ("idp.example.com", 8443, "idp.example.com:8443", "/a/b?x=1")
        );
        let u = HttpUri::parse("http://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("[::1]", 9000, "/"));
        for bad in ["idp.example.com/jwks", "http://", "http://user@h/", "http://h:0/", "http://h/#f", "http://h h/"] {
            assert!(HttpUri::parse(bad).is_err(), "{bad}");
        }
    }
}

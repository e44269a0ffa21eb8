//! Plugin configuration: the JSON that Envoy passes as the Wasm filter's `configuration`
//! (Istio: WasmPlugin `pluginConfig`), parsed once into a validated [`FilterConfig`].
//!
//! Field names follow Istio's RequestAuthentication `jwtRules`, so a user can paste theirs.
//! Parsing walks a `serde_json::Value` by hand rather than deriving, so that every error names
//! the field it is about (`jwtRules[0].timeout: ...`), and unknown fields are refused.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::claims::{is_claim_header_family, ClaimPath};
use crate::conditions::Condition;
use crate::jwks::KeySet;

mod conditions;
mod fields;
mod locations;
mod rule;
mod values;

use conditions::{claim_path, parse_conditions, written_header};
use fields::{as_array, as_object, as_str, error, opt_bool, reject_unknown};
pub use locations::{ScannedNames, TokenLocation};
use rule::parse_rule;
pub use values::{istio_cluster_name, HttpUri};

/// The validated configuration. Built once in `on_configure`, shared read-only afterwards.
#[derive(Debug)]
pub struct FilterConfig {
    pub rules: Vec<JwtRule>,
    /// Headers filled from the verified claims; the name spells the claim path.
    pub claim_headers: Vec<ClaimHeader>,
    /// Claim conditions, each written as `true` or `false` on every request that goes on.
    pub conditions: Vec<Condition>,
    /// With no token at all: `false` lets the request pass (Istio), `true` answers 401.
    pub require_token: bool,
    /// Tokens longer than this are refused before any decoding.
    pub max_token_bytes: usize,
    /// Verified tokens remembered per VM (0 disables the cache).
    pub token_cache_size: usize,
    /// Every distinct place a token may come from, over all rules, in rule order.
    pub locations: Vec<TokenLocation>,
    /// Lowercased names of the headers this filter writes (besides the `x-jwt-claim` family:
    /// the rules' output headers and the conditions'):
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

const TOP_FIELDS: &[&str] =
    &["jwtRules", "claimHeaders", "conditions", "requireToken", "maxTokenBytes", "tokenCacheSize"];

impl FilterConfig {
    /// Parses and validates the plugin configuration bytes.
    pub fn parse(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| error("", format!("not valid JSON: {e}")))?;
        let top = as_object(&value, "")?;
        reject_unknown(top, TOP_FIELDS, "")?;

        let mut locations: Vec<TokenLocation> = Vec::new();
        let rules = parse_rules(top, &mut locations)?;
        let claim_headers = parse_claim_headers(top)?;
        let conditions = parse_conditions(top)?;
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
        let owned_headers = owned_headers(&rules, &conditions, &locations)?;

        let scanned_names = ScannedNames::new(&locations, &owned_headers);
        Ok(FilterConfig {
            rules,
            claim_headers,
            conditions,
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

/// `jwtRules`: at least one, each issuer once; their token locations fill `locations`.
fn parse_rules(top: &Map<String, Value>, locations: &mut Vec<TokenLocation>) -> Result<Vec<JwtRule>, ConfigError> {
    let rules_value = top.get("jwtRules").ok_or_else(|| error("jwtRules", "is required (a list of JWT rules)"))?;
    let rules_array = as_array(rules_value, "jwtRules")?;
    if rules_array.is_empty() {
        return Err(error("jwtRules", "needs at least one rule"));
    }
    let mut rules = Vec::with_capacity(rules_array.len());
    for (i, rule_value) in rules_array.iter().enumerate() {
        let rule = parse_rule(rule_value, &format!("jwtRules[{i}]"), locations)?;
        if rules.iter().any(|r: &JwtRule| r.issuer == rule.issuer) {
            return Err(error(
                &format!("jwtRules[{i}].issuer"),
                format!("{:?} is already used by another rule", rule.issuer),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// `claimHeaders`: a name that spells the claim path it is filled from, or
/// `{"header": name, "claim": path}` for a path the name cannot spell (keys holding `.`).
fn parse_claim_headers(top: &Map<String, Value>) -> Result<Vec<ClaimHeader>, ConfigError> {
    match top.get("claimHeaders") {
        None => Ok(Vec::new()),
        Some(v) => as_array(v, "claimHeaders")?
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let field = format!("claimHeaders[{i}]");
                if let Value::Object(obj) = entry {
                    reject_unknown(obj, &["header", "claim"], &field)?;
                    let name = written_header(obj, &field)?;
                    if !is_claim_header_family(name.as_bytes()) {
                        return Err(error(&format!("{field}.header"), format!("{name:?} does not start with x-jwt-claim")));
                    }
                    let claim = obj.get("claim").ok_or_else(|| error(&format!("{field}.claim"), "is required"))?;
                    return Ok(ClaimHeader { name, path: claim_path(claim, &format!("{field}.claim"))? });
                }
                let name = as_str(entry, &field)?;
                let path = ClaimPath::from_claim_header(name).map_err(|m| error(&field, m))?;
                Ok(ClaimHeader { name: name.to_ascii_lowercase(), path })
            })
            .collect(),
    }
}

/// The headers the rules and conditions write, each once; none may also be a token location,
/// and no condition header may be a rule's.
fn owned_headers(
    rules: &[JwtRule],
    conditions: &[Condition],
    locations: &[TokenLocation],
) -> Result<Vec<String>, ConfigError> {
    let mut owned_headers: Vec<String> = Vec::new();
    for rule in rules {
        let named =
            rule.output_claim_to_headers.iter().map(|c| c.header.clone()).chain(rule.output_payload_to_header.clone());
        for name in named {
            if !owned_headers.contains(&name) {
                owned_headers.push(name);
            }
        }
    }
    for (i, condition) in conditions.iter().enumerate() {
        if owned_headers.contains(&condition.header) {
            let why = format!("{:?} is also written by outputClaimToHeaders/outputPayloadToHeader", condition.header);
            return Err(error(&format!("conditions[{i}].header"), why));
        }
    }
    let rules_headers = owned_headers.len();
    owned_headers.extend(conditions.iter().map(|c| c.header.clone()));
    for (n, name) in owned_headers.iter().enumerate() {
        let field = if n < rules_headers {
            "outputClaimToHeaders/outputPayloadToHeader".to_string()
        } else {
            format!("conditions[{}].header", n - rules_headers)
        };
        let is_token_header =
            locations.iter().any(|l| matches!(l, TokenLocation::Header { name: h, .. } if h == name));
        if is_token_header {
            return Err(error(&field, format!("{name:?} is also a token location")));
        }
    }
    Ok(owned_headers)
}

#[cfg(test)]
mod tests;

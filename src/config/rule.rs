//! One `jwtRules` entry: its issuer, where its keys come from, its times, its token
//! locations and the headers it writes.

use std::time::Duration;

use serde_json::{Map, Value};

use super::conditions::{claim_path, written_header};
use super::fields::{as_array, as_object, as_str, error, opt_bool, opt_duration, opt_str, opt_string_list, reject_unknown};
use super::locations::{rule_locations, TokenLocation};
use super::values::HttpUri;
use super::{
    ClaimToHeader, ConfigError, JwtRule, KeySource, RemoteJwks, DEFAULT_CLOCK_SKEW, DEFAULT_JWKS_CACHE_DURATION,
    DEFAULT_MIN_REFETCH_INTERVAL, DEFAULT_TIMEOUT,
};
use crate::bytes::is_header_name;
use crate::jwks::KeySet;

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

/// Parses the rule at `at` (`jwtRules[i]`); its token locations join `locations`.
pub(super) fn parse_rule(value: &Value, at: &str, locations: &mut Vec<TokenLocation>) -> Result<JwtRule, ConfigError> {
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
    let keys = key_source(obj, &issuer, at)?;

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

    let rule_locations = rule_locations(obj, at, locations)?;

    let forward_original_token =
        opt_bool(obj, "forwardOriginalToken", &field("forwardOriginalToken"))?.unwrap_or(false);
    let output_payload_to_header = output_payload_to_header(obj, at)?;
    let output_claim_to_headers = output_claim_to_headers(obj, at)?;

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

/// `jwksUri`, `jwks` or neither (OpenID discovery from the issuer), and `jwksCluster`.
fn key_source(obj: &Map<String, Value>, issuer: &str, at: &str) -> Result<KeySource, ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
    let jwks_uri = opt_str(obj, "jwksUri", &field("jwksUri"))?;
    let inline_jwks = opt_str(obj, "jwks", &field("jwks"))?;
    let cluster = opt_str(obj, "jwksCluster", &field("jwksCluster"))?;
    Ok(match (jwks_uri, inline_jwks) {
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

/// `outputPayloadToHeader`: the header the verified payload is written to, lowercased.
fn output_payload_to_header(obj: &Map<String, Value>, at: &str) -> Result<Option<String>, ConfigError> {
    let field = format!("{at}.outputPayloadToHeader");
    match opt_str(obj, "outputPayloadToHeader", &field)? {
        None => Ok(None),
        Some(name) if is_header_name(name) => Ok(Some(name.to_ascii_lowercase())),
        Some(name) => Err(error(&field, format!("{name:?} is not a valid header name"))),
    }
}

/// `outputClaimToHeaders`: which claim goes into which header.
fn output_claim_to_headers(obj: &Map<String, Value>, at: &str) -> Result<Vec<ClaimToHeader>, ConfigError> {
    let mut output_claim_to_headers = Vec::new();
    if let Some(v) = obj.get("outputClaimToHeaders") {
        for (i, entry) in as_array(v, &format!("{at}.outputClaimToHeaders"))?.iter().enumerate() {
            let at = format!("{at}.outputClaimToHeaders[{i}]");
            let entry = as_object(entry, &at)?;
            reject_unknown(entry, &["header", "claim"], &at)?;
            let header = written_header(entry, &at)?;
            let claim = entry.get("claim").ok_or_else(|| error(&format!("{at}.claim"), "is required"))?;
            let claim = claim_path(claim, &format!("{at}.claim"))?;
            output_claim_to_headers.push(ClaimToHeader { header, claim });
        }
    }
    Ok(output_claim_to_headers)
}

//! Where tokens may be presented: a rule's `fromHeaders`, `fromParams` and `fromCookies`,
//! merged over all rules into one list, and which header names the request path looks at.

use serde_json::{Map, Value};

use super::fields::{as_array, as_object, as_str, error, opt_str, opt_string_list, reject_unknown};
use super::{ConfigError, DEFAULT_HEADER, DEFAULT_PARAM, DEFAULT_PREFIX};
use crate::bytes::is_header_name;
use crate::claims::is_claim_header_family;

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

/// A rule's token locations as indices into `locations` (all rules' locations, each once),
/// which gains those no earlier rule has.
pub(super) fn rule_locations(
    obj: &Map<String, Value>,
    at: &str,
    locations: &mut Vec<TokenLocation>,
) -> Result<Vec<usize>, ConfigError> {
    let field = |name: &str| format!("{at}.{name}");
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
    Ok(rule_locations)
}

/// Which header names [`crate::extract::scan_headers`] has to look at: those of a length that a token
/// location, `:path` or an owned header has, and the `x-jwt-claim` family. Made once per
/// configuration; a request's other headers are passed over on their length alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScannedNames {
    /// Bit n: some name of n bytes is looked at; bit 63: of 63 bytes or more.
    lengths: u64,
}

impl ScannedNames {
    pub fn new(locations: &[TokenLocation], owned_headers: &[String]) -> ScannedNames {
        let mut names: Vec<&str> = vec![":path"];
        for location in locations {
            match location {
                TokenLocation::Header { name, .. } => names.push(name),
                TokenLocation::Cookie(_) => names.push("cookie"),
                TokenLocation::Param(_) => {}
            }
        }
        names.extend(owned_headers.iter().map(String::as_str));
        ScannedNames { lengths: names.iter().fold(0, |lengths, name| lengths | ScannedNames::bit(name.len())) }
    }

    fn bit(len: usize) -> u64 {
        1 << len.min(63)
    }

    /// Whether a header of this name may be one the walk acts on.
    pub fn may_concern(&self, name: &[u8]) -> bool {
        self.lengths & ScannedNames::bit(name.len()) != 0 || is_claim_header_family(name)
    }
}

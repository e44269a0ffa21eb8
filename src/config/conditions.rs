//! `conditions` (claim conditions exposed as headers) and the claim paths that every field
//! naming a claim accepts.

use serde_json::{Map, Value};

use super::fields::{as_array, as_object, as_str, error, reject_unknown};
use super::ConfigError;
use crate::bytes::is_header_name;
use crate::claims::{is_claim_header_family, ClaimPath};
use crate::conditions::{whole_match_regex, Condition, Matcher, Subject};

const CONDITION_FIELDS: &[&str] = &["header", "claim", "principal", "exact", "prefix", "suffix", "regex", "present"];
const MATCHERS: &[&str] = &["exact", "prefix", "suffix", "regex", "present"];

/// A claim path: a string splits at `.` (Istio's `outputClaimToHeaders.claim`), a list of
/// strings is literal keys, outermost first, so a key may hold `.`, `/`, `@` or `:`.
pub(super) fn claim_path(v: &Value, at: &str) -> Result<ClaimPath, ConfigError> {
    match v {
        Value::Array(items) => {
            let keys = items
                .iter()
                .enumerate()
                .map(|(i, key)| as_str(key, &format!("{at}[{i}]")).map(str::to_string))
                .collect::<Result<Vec<_>, _>>()?;
            ClaimPath::literal(keys).map_err(|m| error(at, m))
        }
        _ => {
            let dotted = as_str(v, at).map_err(|_| error(at, "expected a string or a list of keys"))?;
            ClaimPath::dotted(dotted).map_err(|m| error(at, m))
        }
    }
}

/// A header the filter writes: a valid name, lowercased.
pub(super) fn written_header(obj: &Map<String, Value>, at: &str) -> Result<String, ConfigError> {
    let field = format!("{at}.header");
    let name = as_str(obj.get("header").ok_or_else(|| error(&field, "is required"))?, &field)?;
    if !is_header_name(name) {
        return Err(error(&field, format!("{name:?} is not a valid header name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// `conditions`: each header once, outside the `x-jwt-claim` family (whose names spell claim
/// paths), with one subject and one matcher.
pub(super) fn parse_conditions(top: &Map<String, Value>) -> Result<Vec<Condition>, ConfigError> {
    let Some(v) = top.get("conditions") else { return Ok(Vec::new()) };
    let mut conditions: Vec<Condition> = Vec::new();
    for (i, entry) in as_array(v, "conditions")?.iter().enumerate() {
        let at = format!("conditions[{i}]");
        let condition = parse_condition(entry, &at)?;
        if is_claim_header_family(condition.header.as_bytes()) {
            return Err(error(&format!("{at}.header"), "the x-jwt-claim family is for claimHeaders; name it otherwise"));
        }
        if conditions.iter().any(|c| c.header == condition.header) {
            return Err(error(&format!("{at}.header"), format!("{:?} is already another condition's", condition.header)));
        }
        conditions.push(condition);
    }
    Ok(conditions)
}

fn parse_condition(entry: &Value, at: &str) -> Result<Condition, ConfigError> {
    let obj = as_object(entry, at)?;
    reject_unknown(obj, CONDITION_FIELDS, at)?;
    let header = written_header(obj, at)?;
    let subject = match (obj.get("claim"), obj.get("principal")) {
        (Some(claim), None) => Subject::Claim(claim_path(claim, &format!("{at}.claim"))?),
        (None, Some(Value::Bool(true))) => Subject::Principal,
        (None, Some(_)) => return Err(error(&format!("{at}.principal"), "must be true when given")),
        (Some(_), Some(_)) => return Err(error(at, "names both claim and principal; give one")),
        (None, None) => return Err(error(at, "needs a subject: claim or principal")),
    };
    let named: Vec<&str> = MATCHERS.iter().copied().filter(|m| obj.contains_key(*m)).collect();
    let [name] = named[..] else {
        return Err(error(at, format!("needs exactly one of {}, found {}", MATCHERS.join(", "), named.len())));
    };
    let field = format!("{at}.{name}");
    let value = obj.get(name).unwrap_or(&Value::Null);
    let matcher = match name {
        "present" if value == &Value::Bool(true) => Matcher::Present,
        "present" => return Err(error(&field, "must be true when given")),
        "regex" => Matcher::Regex(whole_match_regex(as_str(value, &field)?).map_err(|m| error(&field, m))?),
        "exact" => Matcher::Exact(as_str(value, &field)?.to_string()),
        "prefix" => Matcher::Prefix(as_str(value, &field)?.to_string()),
        _ => Matcher::Suffix(as_str(value, &field)?.to_string()),
    };
    Ok(Condition { header, subject, matcher })
}

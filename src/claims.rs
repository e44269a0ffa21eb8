//! Verified claims into header values.
//!
//! A claim header's name spells its claim path the way Istio names them: the character right
//! after `x-jwt-claim` is the separator, so `x-jwt-claim.groups` and `x-jwt-claim-groups` both
//! read `groups`, `x-jwt-claim.key1.key2` reads the nested `key1` → `key2`, and
//! `x-jwt-claim-key.1-key.2` reads the keys `key.1` → `key.2`.
//!
//! Values are rendered so that Envoy's route matchers can use them directly (where Envoy's own
//! `claim_to_headers` writes lists as base64 JSON): a string as is, a list of strings joined with `,`,
//! numbers and booleans as their JSON text. Anything that cannot be rendered unambiguously is
//! not emitted at all.

use serde_json::Value;

use crate::bytes::{is_header_name, starts_with_header_name};

/// Every header whose lowercased name starts with this belongs to the filter.
pub const CLAIM_HEADER_PREFIX: &str = match std::str::from_utf8(CLAIM_PREFIX_BYTES) {
    Ok(prefix) => prefix,
    Err(_) => "",
};
const CLAIM_PREFIX_BYTES: &[u8; 11] = b"x-jwt-claim";

/// A path of object keys into the claims, outermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// Reads the path from a claim header name (`x-jwt-claim<sep><key><sep><key>...`).
    pub fn from_claim_header(name: &str) -> Result<ClaimPath, String> {
        let lower = name.to_ascii_lowercase();
        let rest = lower
            .strip_prefix(CLAIM_HEADER_PREFIX)
            .ok_or_else(|| format!("{name:?} does not start with {CLAIM_HEADER_PREFIX:?}"))?;
        if !is_header_name(name) {
            return Err(format!("{name:?} is not a valid header name"));
        }
        let separator =
            rest.chars().next().ok_or_else(|| format!("{name:?} names no claim (expected e.g. x-jwt-claim.groups)"))?;
        // Keys keep their case from the configured name: claims are case-sensitive, while the
        // header itself is matched case-insensitively.
        let keys_text = &name[CLAIM_HEADER_PREFIX.len() + separator.len_utf8()..];
        Self::split(keys_text, separator).map_err(|m| format!("{name:?}: {m}"))
    }

    /// Reads an Istio `outputClaimToHeaders` claim: nested keys separated by `.`.
    pub fn dotted(claim: &str) -> Result<ClaimPath, String> {
        Self::split(claim, '.').map_err(|m| format!("{claim:?}: {m}"))
    }

    /// A path of literal keys, which may hold any character (`.`, `/`, `@`, `:` too): Istio's
    /// `@request.auth.claims[test-issuer-1@istio.io/simple]`.
    pub fn literal(keys: Vec<String>) -> Result<ClaimPath, String> {
        if keys.is_empty() {
            return Err("names no claim (an empty list of keys)".to_string());
        }
        if keys.iter().any(String::is_empty) {
            return Err("holds an empty key".to_string());
        }
        Ok(ClaimPath(keys))
    }

    fn split(text: &str, separator: char) -> Result<ClaimPath, String> {
        let keys: Vec<String> = text.split(separator).map(str::to_string).collect();
        if keys.iter().any(String::is_empty) {
            return Err(format!("empty claim name (separator {separator:?})"));
        }
        Ok(ClaimPath(keys))
    }

    /// The keys, outermost first.
    pub fn keys(&self) -> &[String] {
        &self.0
    }

    /// The value at this path, if every key exists and each step is an object.
    pub fn lookup<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(claims, |v, key| v.as_object()?.get(key))
    }
}

/// Why a claim was present but not emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRendered {
    /// Objects, nulls, nested lists: no header form that a route could match reliably.
    UnsupportedType,
    /// A list element holding `,` would be read as two elements by an element match.
    CommaInListElement,
    /// Control characters (CR, LF, NUL, ...) are not allowed in header values.
    InvalidHeaderCharacter,
}

/// Renders a claim value as a header value.
pub fn render(value: &Value) -> Result<String, NotRendered> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => value.to_string(),
        Value::Array(items) => {
            let length = items.iter().map(|item| item.as_str().map_or(0, |s| s.len() + 1)).sum();
            let mut joined = String::with_capacity(length);
            for (i, item) in items.iter().enumerate() {
                // Only lists of strings: a mixed list has no single reading a route could rely on.
                let Value::String(part) = item else {
                    return Err(NotRendered::UnsupportedType);
                };
                if part.contains(',') {
                    return Err(NotRendered::CommaInListElement);
                }
                if i > 0 {
                    joined.push(',');
                }
                joined.push_str(part);
            }
            joined
        }
        Value::Null | Value::Object(_) => return Err(NotRendered::UnsupportedType),
    };
    if !is_header_value(&text) {
        return Err(NotRendered::InvalidHeaderCharacter);
    }
    Ok(text)
}

/// RFC 9110 field-value characters: visible ASCII, space, tab and obs-text; nothing that
/// could end a header line (CR, LF) or truncate it (NUL).
pub fn is_header_value(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

/// `true` for every header name in the filter's `x-jwt-claim` family, in any case and with
/// any separator (`x_jwt_claim_groups` too, [`starts_with_header_name`]): such headers are only
/// ever written by the filter.
pub fn is_claim_header_family(name: &[u8]) -> bool {
    starts_with_header_name(name, CLAIM_PREFIX_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(keys: &[&str]) -> ClaimPath {
        ClaimPath(keys.iter().map(|k| k.to_string()).collect())
    }

    #[test]
    fn separator_is_the_character_after_the_prefix() {
        assert_eq!(ClaimPath::from_claim_header("x-jwt-claim.groups"), Ok(path(&["groups"])));
        assert_eq!(ClaimPath::from_claim_header("x-jwt-claim-groups"), Ok(path(&["groups"])));
        assert_eq!(ClaimPath::from_claim_header("X-JWT-Claim.Groups"), Ok(path(&["Groups"])));
        assert_eq!(ClaimPath::from_claim_header("x-jwt-claim.key1.key2"), Ok(path(&["key1", "key2"])));
        assert_eq!(ClaimPath::from_claim_header("x-jwt-claim-key.1-key.2"), Ok(path(&["key.1", "key.2"])));
    }

    #[test]
    fn malformed_claim_header_names_are_refused() {
        for bad in ["x-jwt-claim", "x-jwt-claim.", "x-jwt-claim..a", "x-jwt-claim.a.", "x-jwt-sub", "x-jwt-claim.a b"] {
            assert!(ClaimPath::from_claim_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lookup_follows_nested_objects_only() {
        let claims = json!({"key1": {"key2": "v"}, "key.1": {"key.2": 7}, "list": ["a"]});
        assert_eq!(path(&["key1", "key2"]).lookup(&claims), Some(&json!("v")));
        assert_eq!(path(&["key.1", "key.2"]).lookup(&claims), Some(&json!(7)));
        assert_eq!(path(&["list", "0"]).lookup(&claims), None);
        assert_eq!(path(&["missing"]).lookup(&claims), None);
    }

    #[test]
    fn renders_scalars_and_lists() {
        assert_eq!(render(&json!("group1")), Ok("group1".into()));
        assert_eq!(render(&json!(["group1", "group2"])), Ok("group1,group2".into()));
        assert_eq!(render(&json!(42)), Ok("42".into()));
        assert_eq!(render(&json!(1.5)), Ok("1.5".into()));
        assert_eq!(render(&json!(true)), Ok("true".into()));
        assert_eq!(render(&json!([1, false, "x"])), Err(NotRendered::UnsupportedType));
        assert_eq!(render(&json!([])), Ok(String::new()));
    }

    #[test]
    fn refuses_what_a_route_could_misread() {
        assert_eq!(render(&json!({"a": 1})), Err(NotRendered::UnsupportedType));
        assert_eq!(render(&json!(null)), Err(NotRendered::UnsupportedType));
        assert_eq!(render(&json!([["a"]])), Err(NotRendered::UnsupportedType));
        assert_eq!(render(&json!(["a,group1"])), Err(NotRendered::CommaInListElement));
        assert_eq!(render(&json!("a\r\nx-jwt-claim.groups: group1")), Err(NotRendered::InvalidHeaderCharacter));
        assert_eq!(render(&json!("a\u{0}b")), Err(NotRendered::InvalidHeaderCharacter));
        // A single string may hold commas: it is one value, as the IdP wrote it.
        assert_eq!(render(&json!("a, b")), Ok("a, b".into()));
    }

    #[test]
    fn claim_header_family_is_case_and_separator_blind() {
        for name in [
            "x-jwt-claim.groups",
            "X-JWT-Claim.Groups",
            "x-jwt-claim-groups",
            "x-jwt-claimx",
            "X-Jwt-Claim",
            "x_jwt_claim_groups",
            "x_jwt_claim.groups",
            "X_JWT_CLAIM_SCOPE",
            "x-jwt_claim-groups",
        ] {
            assert!(is_claim_header_family(name.as_bytes()), "{name}");
        }
        for name in ["x-jwt-clai", "x-jwt-sub", "authorization", "xx-jwt-claim"] {
            assert!(!is_claim_header_family(name.as_bytes()), "{name}");
        }
    }
}

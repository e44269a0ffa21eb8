//! Claim conditions: what Istio evaluates on `request.auth` (route matches on
//! `@request.auth.claims`, authorization on principals and claims), handed to the filter's
//! `conditions` and tested by routes and RBAC as the header the filter writes.
//!
//! The filter writes each condition's header as `true` or `false` on every request it lets
//! through and strips every client spelling of it, so a route or policy that tests
//! `x-jwt-cond-<n>: true` cannot be satisfied by a client.

use jwt_claims_filter::claims::ClaimPath;
use serde_json::{json, Value};

/// What Istio looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// Literal keys, outermost first.
    Claim(Vec<String>),
    /// `request.auth.principal`: `<iss>/<sub>`.
    Principal,
}

/// Istio's `StringMatch` on a claim (route matches) or one of its `*` forms (authorization).
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// RE2 syntax, whole value.
    Regex(String),
    Present,
}

impl Match {
    /// The same match as an RE2 pattern (whole value), to join alternatives.
    fn pattern(&self) -> String {
        match self {
            Match::Exact(s) => regex_lite::escape(s),
            Match::Prefix(s) => format!("{}.*", regex_lite::escape(s)),
            Match::Suffix(s) => format!(".*{}", regex_lite::escape(s)),
            Match::Regex(r) => format!("(?:{r})"),
            Match::Present => ".*".to_string(),
        }
    }
}

/// The prefix of the headers the compiler names; a condition the user already wrote in a
/// WasmPlugin keeps its own header.
pub const HEADER_PREFIX: &str = "x-jwt-cond-";

/// The conditions of one compile, each once, numbered in the order first asked for.
#[derive(Debug, Default)]
pub struct Conditions {
    /// The filter's `conditions` entries, given (from a WasmPlugin) and made.
    entries: Vec<Value>,
}

impl Conditions {
    /// Adds conditions that a WasmPlugin's `pluginConfig` already carries.
    pub fn adopt(&mut self, given: &[Value]) {
        self.entries.extend(given.iter().cloned());
    }

    /// The header that is `true` when `subject` matches one of `any_of` (a list claim: when
    /// one of its elements does). An empty `any_of` never holds and is refused by callers.
    pub fn header_for(&mut self, subject: &Subject, any_of: &[Match]) -> String {
        let matcher = match any_of {
            [one] => one.clone(),
            _ if any_of.contains(&Match::Present) => Match::Present,
            _ => Match::Regex(any_of.iter().map(Match::pattern).collect::<Vec<_>>().join("|")),
        };
        let mut entry = serde_json::Map::new();
        match subject {
            Subject::Claim(keys) => entry.insert("claim".into(), json!(keys)),
            Subject::Principal => entry.insert("principal".into(), json!(true)),
        };
        let (name, value) = match &matcher {
            Match::Exact(s) => ("exact", json!(s)),
            Match::Prefix(s) => ("prefix", json!(s)),
            Match::Suffix(s) => ("suffix", json!(s)),
            Match::Regex(r) => ("regex", json!(r)),
            Match::Present => ("present", json!(true)),
        };
        entry.insert(name.into(), value);
        let same = |e: &Value| {
            let mut e = e.clone();
            e.as_object_mut().map(|m| m.remove("header"));
            e == Value::Object(entry.clone())
        };
        if let Some(existing) = self.entries.iter().find(|e| same(e)) {
            return existing["header"].as_str().unwrap_or_default().to_string();
        }
        let taken = |h: &str| self.entries.iter().any(|e| e["header"] == h);
        let header = (1..).map(|n| format!("{HEADER_PREFIX}{n}")).find(|h| !taken(h)).unwrap_or_default();
        let mut full = serde_json::Map::new();
        full.insert("header".into(), json!(header));
        full.extend(entry);
        self.entries.push(Value::Object(full));
        header
    }

    /// The filter's `conditions`.
    pub fn entries(&self) -> &[Value] {
        &self.entries
    }

    /// Every condition header: written only for routing and policy, so removed before the
    /// upstream.
    pub fn headers(&self) -> Vec<String> {
        self.entries.iter().filter_map(|e| e["header"].as_str()).map(str::to_ascii_lowercase).collect()
    }
}

/// The claim a route's header key names, if it names one:
/// - `@request.auth.claims.a.b` (keys split at `.`) and `@request.auth.claims[a][b]` (literal
///   keys, which may hold `.`, `/`, `@`, `:`), as Istio's `pkg/jwt/routing.go` reads them;
/// - the task's `x-jwt-claim<sep>a<sep>b`, where the character after `x-jwt-claim` is the
///   separator (`legacy` is then true: current Istio spells it `@request.auth.claims`).
///
/// `Err` for a key in one of those forms that names no claim.
pub fn claim_key(key: &str) -> Result<Option<(Vec<String>, bool)>, String> {
    if let Some(rest) = key.strip_prefix("@request.auth.claims") {
        return auth_claims_keys(rest).map(|keys| Some((keys, false)));
    }
    if key.len() >= 11 && key[..11].eq_ignore_ascii_case("x-jwt-claim") {
        let path = ClaimPath::from_claim_header(key).map_err(|m| format!("{key:?}: {m}"))?;
        return Ok(Some((path.keys().to_vec(), true)));
    }
    Ok(None)
}

/// After `@request.auth.claims` (or `request.auth.claims` in authorization): `.a.b` or
/// `[a][b]`.
pub fn auth_claims_keys(rest: &str) -> Result<Vec<String>, String> {
    let keys: Vec<String> = if let Some(dotted) = rest.strip_prefix('.') {
        dotted.split('.').map(str::to_string).collect()
    } else if rest.starts_with('[') {
        let mut keys = Vec::new();
        let mut tail = rest;
        while !tail.is_empty() {
            let inner = tail.strip_prefix('[').and_then(|t| t.split_once(']'));
            let Some((key, after)) = inner else {
                return Err(format!("{rest:?}: expected [key][key]..."));
            };
            keys.push(key.to_string());
            tail = after;
        }
        keys
    } else {
        return Err(format!("{rest:?}: expected .key or [key] after request.auth.claims"));
    };
    if keys.is_empty() || keys.iter().any(String::is_empty) {
        return Err(format!("{rest:?}: names an empty claim key"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_keys_in_each_spelling() {
        let keys = |k: &str| claim_key(k).unwrap();
        assert_eq!(keys("@request.auth.claims.groups"), Some((vec!["groups".into()], false)));
        assert_eq!(keys("@request.auth.claims.a.b"), Some((vec!["a".into(), "b".into()], false)));
        assert_eq!(
            keys("@request.auth.claims[test-issuer-1@istio.io/simple][x.y]"),
            Some((vec!["test-issuer-1@istio.io/simple".into(), "x.y".into()], false))
        );
        assert_eq!(keys("x-jwt-claim.groups"), Some((vec!["groups".into()], true)));
        assert_eq!(keys("x-jwt-claim-key.1-key.2"), Some((vec!["key.1".into(), "key.2".into()], true)));
        assert_eq!(keys("x-user"), None);
        assert!(claim_key("@request.auth.claims").is_err());
        assert!(claim_key("@request.auth.claims[a").is_err());
        assert!(claim_key("@request.auth.claims..a").is_err());
    }

    #[test]
    fn conditions_are_shared_and_alternatives_join() {
        let mut c = Conditions::default();
        let groups = Subject::Claim(vec!["groups".into()]);
        let h1 = c.header_for(&groups, &[Match::Exact("group1".into())]);
        let h2 = c.header_for(&groups, &[Match::Exact("group1".into())]);
        let h3 = c.header_for(&Subject::Principal, &[Match::Prefix("a.b".into()), Match::Exact("c".into())]);
        assert_eq!((h1.as_str(), h2.as_str(), h3.as_str()), ("x-jwt-cond-1", "x-jwt-cond-1", "x-jwt-cond-2"));
        assert_eq!(c.entries()[1]["regex"], "a\\.b.*|c");
    }
}

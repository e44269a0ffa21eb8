//! Claim conditions: Istio's claim matches (`@request.auth.claims…`, `request.auth.principal`)
//! evaluated inside the filter, each exposed as a header that routes and authorization
//! policies test (`true` or `false`).
//!
//! Envoy's header matchers cannot express Istio's rules on a rendered claim: a list matches
//! when one element matches, a list and a string holding `,` differ, and a regex applies to
//! one element as a whole. Deciding here, on the JSON value itself, keeps those rules exact,
//! and a route only ever tests a value the filter wrote.

use serde_json::Value;

use crate::claims::ClaimPath;

/// One configured condition: the header it is exposed as, what it looks at, how it matches.
#[derive(Debug)]
pub struct Condition {
    /// Lowercased; owned by the filter, so stripped from every request in every spelling.
    pub header: String,
    pub subject: Subject,
    pub matcher: Matcher,
}

/// What a condition looks at in the winning token.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    Claim(ClaimPath),
    /// Istio's `request.auth.principal`: `<iss>/<sub>`, present when both are strings.
    Principal,
}

/// How a string is matched. Istio's `StringMatch`; a regex matches the whole string (RE2's
/// full match, as Envoy and Istio apply it).
#[derive(Debug)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(regex_lite::Regex),
    /// The subject exists as a string or a list of strings.
    Present,
}

/// The header values a condition is written with.
pub const TRUE: &str = "true";
pub const FALSE: &str = "false";

impl Matcher {
    fn matches(&self, text: &str) -> bool {
        match self {
            Matcher::Exact(s) => text == s,
            Matcher::Prefix(s) => text.starts_with(s.as_str()),
            Matcher::Suffix(s) => text.ends_with(s.as_str()),
            Matcher::Regex(re) => re.is_match(text),
            Matcher::Present => true,
        }
    }

    /// A string matches when it matches; a list of strings when any element does; any
    /// other value never does (Istio matches claims of those two types only).
    fn matches_value(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => self.matches(s),
            Value::Array(items) => items.iter().any(|item| item.as_str().is_some_and(|s| self.matches(s))),
            _ => false,
        }
    }
}

impl Condition {
    /// Whether the condition holds for these verified claims.
    pub fn holds(&self, claims: &Value) -> bool {
        match &self.subject {
            Subject::Claim(path) => path.lookup(claims).is_some_and(|v| self.matcher.matches_value(v)),
            Subject::Principal => match (claims.get("iss"), claims.get("sub")) {
                (Some(Value::String(iss)), Some(Value::String(sub))) => self.matcher.matches(&format!("{iss}/{sub}")),
                _ => false,
            },
        }
    }
}

/// Compiles a regex for a whole-value match; the error text is the regex engine's.
pub fn whole_match_regex(pattern: &str) -> Result<regex_lite::Regex, String> {
    // The pattern must stand on its own first: `a)|(b` is unbalanced alone, but inside the
    // anchoring group it would close the group and match any string starting with `a`.
    regex_lite::Regex::new(pattern).map_err(|e| e.to_string())?;
    regex_lite::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(keys: &[&str], matcher: Matcher) -> Condition {
        let path = ClaimPath::literal(keys.iter().map(|k| k.to_string()).collect()).unwrap_or_else(|e| panic!("{e}"));
        Condition { header: "x-c".into(), subject: Subject::Claim(path), matcher }
    }

    fn regex(pattern: &str) -> Matcher {
        Matcher::Regex(whole_match_regex(pattern).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn a_list_matches_when_one_element_does() {
        let claims = json!({"groups": ["group1", "group2"], "csv": "group1,group2"});
        assert!(claim(&["groups"], Matcher::Exact("group2".into())).holds(&claims));
        assert!(!claim(&["groups"], Matcher::Exact("group1,group2".into())).holds(&claims));
        // The string holding a comma is one value, not a list.
        assert!(claim(&["csv"], Matcher::Exact("group1,group2".into())).holds(&claims));
        assert!(!claim(&["csv"], Matcher::Exact("group1".into())).holds(&claims));
        assert!(claim(&["groups"], Matcher::Prefix("group".into())).holds(&claims));
        assert!(claim(&["groups"], Matcher::Suffix("p2".into())).holds(&claims));
    }

    #[test]
    fn a_regex_matches_one_whole_element() {
        let claims = json!({"groups": ["group10", "admins"]});
        assert!(claim(&["groups"], regex("group[0-9]+")).holds(&claims));
        assert!(!claim(&["groups"], regex("group1")).holds(&claims));
        assert!(claim(&["groups"], regex("^adm.*$")).holds(&claims), "anchors inside the pattern");
        assert!(!claim(&["groups"], regex("roup10")).holds(&claims));
        assert!(claim(&["groups"], regex("a|admins")).holds(&claims), "alternation is grouped");
        assert!(!claim(&["groups"], regex("a|dmins")).holds(&claims));
    }

    #[test]
    fn literal_keys_and_nesting() {
        let claims = json!({"test-issuer-1@istio.io/simple": "yes", "a.b": {"c": ["x"]}, "a": {"b": {"c": "y"}}});
        assert!(claim(&["test-issuer-1@istio.io/simple"], Matcher::Exact("yes".into())).holds(&claims));
        assert!(claim(&["a.b", "c"], Matcher::Exact("x".into())).holds(&claims));
        assert!(claim(&["a", "b", "c"], Matcher::Exact("y".into())).holds(&claims));
        assert!(!claim(&["a", "b"], Matcher::Present).holds(&claims), "an object is neither string nor list");
    }

    #[test]
    fn other_types_and_absent_claims_never_match() {
        let claims = json!({"n": 1, "b": true, "nul": null, "mixed": [1, "one"]});
        for key in ["n", "b", "nul", "missing"] {
            assert!(!claim(&[key], Matcher::Present).holds(&claims), "{key}");
            assert!(!claim(&[key], regex(".*")).holds(&claims), "{key}");
        }
        assert!(!claim(&["n"], Matcher::Exact("1".into())).holds(&claims));
        assert!(claim(&["mixed"], Matcher::Exact("one".into())).holds(&claims), "string elements still count");
    }

    #[test]
    fn principal_is_issuer_slash_subject() {
        let principal = |matcher| Condition { header: "x-c".into(), subject: Subject::Principal, matcher };
        let claims = json!({"iss": "https://idp", "sub": "alice"});
        assert!(principal(Matcher::Exact("https://idp/alice".into())).holds(&claims));
        assert!(principal(Matcher::Prefix("https://idp/".into())).holds(&claims));
        assert!(principal(Matcher::Present).holds(&claims));
        assert!(!principal(Matcher::Present).holds(&json!({"iss": "https://idp"})));
        assert!(!principal(Matcher::Present).holds(&json!({"iss": "https://idp", "sub": 7})));
    }

    #[test]
    fn bad_regexes_are_refused() {
        assert!(whole_match_regex("(").is_err());
        assert!(whole_match_regex("a)|(b").is_err(), "a pattern cannot close the wrapping group");
    }
}

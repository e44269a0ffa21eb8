//! The decision for one request: the tokens it presents, the rules and their key sets, the
//! time → allow (with the headers to write), deny (with why), or wait for keys.
//!
//! Pure: no host calls. The filter module gathers the inputs and applies the verdict.

use serde_json::Value;

use crate::claims::render;
use crate::config::{FilterConfig, TokenLocation};
use crate::extract::{without_param, FoundToken};
use crate::jwks::KeySet;
use crate::verify::{check_time, decode, verify, DecodedToken, Rejection};

/// What the key cache can offer a rule's tokens right now.
pub enum KeysFor<'a> {
    /// Keys are loaded. `may_refetch`: an unknown `kid` may wait for a refetch (the cache has
    /// one in flight or its unknown-kid throttle allows one).
    Ready { keys: &'a KeySet, may_refetch: bool },
    /// No keys yet; a fetch is (or will be) under way.
    Pending,
    /// No keys, and the last fetch failed: answer now rather than wait.
    Unavailable,
}

/// Why a request has to wait, per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWait {
    /// The rule has no keys yet.
    FirstKeys(usize),
    /// A token names a `kid` the rule's key set lacks: refetch in case the issuer rotated.
    UnknownKid(usize),
}

/// The outcome for one request.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// No token presented and none required: pass, with no claim headers.
    PassWithoutToken,
    Allow(Grant),
    Deny(Rejection),
    /// Pause the request and decide again once these rules' keys have been (re)fetched.
    AwaitKeys(Vec<KeyWait>),
}

/// What a valid request gets: headers to set, headers to remove, maybe a new `:path`.
#[derive(Debug, Default, PartialEq)]
pub struct Grant {
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    pub new_path: Option<String>,
}

/// Decides a request. `keys(rule_index)` says what the cache holds for a rule.
pub fn authenticate<'k>(
    config: &FilterConfig,
    found: &[FoundToken],
    keys: &dyn Fn(usize) -> KeysFor<'k>,
    path: &str,
    now_secs: u64,
) -> Verdict {
    if found.is_empty() {
        return if config.require_token { Verdict::Deny(Rejection::Missing) } else { Verdict::PassWithoutToken };
    }

    // Structure and issuer of every token first: they need no keys, and any invalid token
    // refuses the request (as Envoy does with several tokens).
    let mut decoded = Vec::with_capacity(found.len());
    for presented in found {
        let token = match decode(&presented.token, config.max_token_bytes) {
            Ok(token) => token,
            Err(rejection) => return Verdict::Deny(rejection),
        };
        let rule = config.rules.iter().position(|rule| {
            token.issuer() == Some(rule.issuer.as_str()) && rule.locations.contains(&presented.location)
        });
        let Some(rule) = rule else {
            return Verdict::Deny(Rejection::UnknownIssuer);
        };
        decoded.push((presented, token, rule));
    }

    let mut waits = Vec::new();
    for (_, token, rule_index) in &decoded {
        let rule_index = *rule_index;
        let Some(rule) = config.rules.get(rule_index) else {
            return Verdict::Deny(Rejection::UnknownIssuer);
        };
        match keys(rule_index) {
            KeysFor::Ready { keys, may_refetch } => match verify(token, rule, keys, now_secs) {
                Ok(()) => {}
                Err(Rejection::UnknownKid) if may_refetch => waits.push(KeyWait::UnknownKid(rule_index)),
                Err(rejection) => return Verdict::Deny(rejection),
            },
            KeysFor::Pending => {
                // Do not keep an expired token waiting for keys it cannot use.
                if let Err(rejection) = check_time(token, now_secs, rule.clock_skew) {
                    return Verdict::Deny(rejection);
                }
                waits.push(KeyWait::FirstKeys(rule_index));
            }
            KeysFor::Unavailable => return Verdict::Deny(Rejection::KeysUnavailable),
        }
    }
    if !waits.is_empty() {
        waits.dedup();
        return Verdict::AwaitKeys(waits);
    }
    Verdict::Allow(grant(config, &decoded, path))
}

/// Headers for verified tokens. Claim headers come from the first token (in location
/// order); where two tokens would write one header, the first wins.
fn grant(config: &FilterConfig, accepted: &[(&FoundToken, DecodedToken<'_>, usize)], path: &str) -> Grant {
    let mut grant = Grant::default();
    let set = |grant: &mut Grant, name: &str, value: Option<&Value>| {
        let Some(value) = value else { return };
        if grant.set_headers.iter().any(|(n, _)| n == name) {
            return;
        }
        match render(value) {
            Ok(text) => grant.set_headers.push((name.to_string(), text)),
            Err(why) => log::debug!("claim header {name} not set: {why:?}"),
        }
    };
    if let Some((_, first, _)) = accepted.first() {
        for header in &config.claim_headers {
            set(&mut grant, &header.name, header.path.lookup(&first.claims));
        }
    }
    for (presented, token, rule_index) in accepted {
        let Some(rule) = config.rules.get(*rule_index) else { continue };
        if let Some(name) = &rule.output_payload_to_header {
            if !grant.set_headers.iter().any(|(n, _)| n == name) {
                grant.set_headers.push((name.clone(), token.payload_b64.to_string()));
            }
        }
        for output in &rule.output_claim_to_headers {
            set(&mut grant, &output.header, output.claim.lookup(&token.claims));
        }
        if rule.forward_original_token {
            continue;
        }
        match config.locations.get(presented.location) {
            Some(TokenLocation::Header { name, .. }) => {
                if !grant.remove_headers.contains(name) {
                    grant.remove_headers.push(name.clone());
                }
            }
            Some(TokenLocation::Param(name)) => {
                let current = grant.new_path.as_deref().unwrap_or(path);
                grant.new_path = Some(without_param(current, name));
            }
            // Cookies carry other state too; like Envoy, the cookie header is left as is.
            Some(TokenLocation::Cookie(_)) | None => {}
        }
    }
    grant
}

/// The `realm` of a `WWW-Authenticate` challenge: the request URI without its query (which
/// may hold the token), as Envoy's jwt_authn writes it.
pub fn realm(scheme: &str, authority: &str, path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let uri = format!("{scheme}://{authority}{path}");
    // Inside a quoted-string: escape quotes and backslashes, drop control characters.
    uri.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect()
}

/// The `WWW-Authenticate` value for a refusal (RFC 6750 §3): no `error` when no token was
/// presented, `invalid_token` otherwise.
pub fn challenge(realm: &str, rejection: Rejection) -> String {
    match rejection {
        Rejection::Missing => format!("Bearer realm=\"{realm}\""),
        _ => format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
    }
}

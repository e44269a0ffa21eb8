//! The decision for one request: the tokens it presents, the rules and their key sets, the
//! time → allow (with the headers to write), deny (with why), or wait for keys.
//!
//! Pure: no host calls. The filter module gathers the inputs and applies the verdict.

use std::rc::Rc;

use serde_json::Value;

use crate::claims::render;
use crate::conditions;
use crate::config::{FilterConfig, TokenLocation};
use crate::extract::{without_param, FoundToken};
use crate::headermap::text;
use crate::jwks::KeySet;
use crate::tokencache::{CachedToken, TokenCache};
use crate::model::{Grant, Rejection};
use crate::verify::{check_time, decode, verify, DecodedToken, HostVerifier};

/// What the key cache can offer a rule's tokens right now.
pub enum KeysFor<'a> {
    /// Keys are loaded, of this generation. `may_refetch`: an unknown `kid` may wait for a
    /// refetch (one is in flight, or the unknown-kid throttle allows one).
    Ready { keys: &'a KeySet, generation: u64, may_refetch: bool },
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

impl KeyWait {
    pub fn rule(self) -> usize {
        match self {
            KeyWait::FirstKeys(rule) | KeyWait::UnknownKid(rule) => rule,
        }
    }
}

/// The outcome for one request.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// No token presented and none required: pass, with no claim headers.
    PassWithoutToken,
    /// Shared: a cached token's grant is rendered once and then handed to every request.
    Allow(Rc<Grant>),
    Deny(Rejection),
    /// Pause the request and decide again once these rules' keys have been (re)fetched.
    AwaitKeys(Vec<KeyWait>),
}

/// The verdict, and the tokens verified on the way (for the token cache).
#[derive(Debug)]
pub struct Decision {
    pub verdict: Verdict,
    pub newly_verified: Vec<(Vec<u8>, CachedToken)>,
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Decision {
        Decision { verdict, newly_verified: Vec::new() }
    }
}

/// A token that passed, from the cache or just verified.
struct Accepted<'a> {
    /// Its place among the request's tokens (`found`: location order, then as presented).
    order: usize,
    presented: &'a FoundToken<'a>,
    claims: &'a Value,
    payload_b64: &'a str,
    rule: usize,
}

/// The time for a decision. The host's clock is a host call, about a tenth of the cost of a
/// cached decision in the VM; most decisions do not need it.
pub struct RequestTime<'a> {
    recent_secs: u64,
    exact_secs: &'a dyn Fn() -> u64,
    /// The exact time once read: one reading serves the whole decision.
    exact: std::cell::Cell<Option<u64>>,
}

/// How stale the recent reading of a [`RequestTime`] may be. A cached token whose `exp` and `nbf` are both
/// further than this from the recent reading gets the same answer at every moment the true
/// time can be, so it is judged without the host's clock; one nearer its limits, and every
/// token that needs verifying, gets the exact time. Far above the filter's tick (0.5 s): it
/// only has to hold while the worker's event loop runs at all.
pub const RECENT_WITHIN_SECS: u64 = 30;

impl<'a> RequestTime<'a> {
    /// `recent_secs`: seconds since the epoch at a moment at most [`RECENT_WITHIN_SECS`] ago
    /// (the filter reads the host's clock at every tick and every few hundred requests);
    /// `exact_secs` reads the exact time, from the host.
    pub fn new(recent_secs: u64, exact_secs: &'a dyn Fn() -> u64) -> RequestTime<'a> {
        RequestTime { recent_secs, exact_secs, exact: std::cell::Cell::new(None) }
    }

    /// The exact time, read at most once per decision.
    fn exact_secs(&self) -> u64 {
        *self.exact.get().get_or_insert_with(|| {
            let now = (self.exact_secs)();
            self.exact.set(Some(now));
            now
        })
    }

    /// Whether the cached token is within its `exp`/`nbf` (with `skew`) now.
    fn admits(&self, hit: &CachedToken, skew: std::time::Duration) -> bool {
        hit.is_current_throughout(self.recent_secs, self.recent_secs.saturating_add(RECENT_WITHIN_SECS), skew)
            || hit.is_current(self.exact_secs(), skew)
    }
}

/// The state a request is decided against.
pub struct Context<'a, 'k> {
    pub config: &'a FilterConfig,
    /// What the key cache holds for a rule (by index).
    pub keys: &'a dyn Fn(usize) -> KeysFor<'k>,
    /// Tokens verified before.
    pub cache: &'a TokenCache,
    /// The host's signature check, where it offers one.
    pub host: &'a dyn HostVerifier,
    pub clock: RequestTime<'a>,
}

/// Decides a request presenting `found` tokens on `path` (the `:path` as sent).
pub fn authenticate(ctx: &Context<'_, '_>, found: &[FoundToken<'_>], path: &[u8]) -> Decision {
    // The common request: one token, seen before, where it was seen then. Checked here and
    // the rest kept out of line: in Envoy a request's code is fetched again from the outer
    // caches every time (README "Performance"), so the lines this path spans cost time.
    let [presented] = found else { return authenticate_in_full(ctx, found, path, None) };
    match cached_alone(ctx, presented) {
        Ok(grant) => Verdict::Allow(Rc::clone(grant)).into(),
        Err(hit) => authenticate_in_full(ctx, found, path, Some(hit)),
    }
}

/// A request's only token, looked up in the cache: the grant it earned alone when it was
/// verified, if it is cached with one for where it was presented now. Otherwise the
/// lookup's answer (for [`authenticate_looked_up`] when it is a hit). What [`authenticate`] does first, for a
/// caller that writes the grant itself without a [`Decision`] in between.
pub fn cached_alone<'c>(
    ctx: &Context<'c, '_>,
    presented: &FoundToken<'_>,
) -> Result<&'c Rc<Grant>, Option<&'c CachedToken>> {
    let hit = cached(ctx, presented);
    match hit.and_then(|hit| hit.grant_alone.as_ref()) {
        Some((location, grant)) if *location == presented.location => Ok(grant),
        _ => Err(hit),
    }
}

/// [`authenticate`] for a request whose only token [`cached_alone`] found cached (`hit`)
/// without a grant for where it was presented.
pub fn authenticate_looked_up<'c>(
    ctx: &Context<'c, '_>,
    presented: &FoundToken<'_>,
    path: &[u8],
    hit: &'c CachedToken,
) -> Decision {
    authenticate_in_full(ctx, std::slice::from_ref(presented), path, Some(Some(hit)))
}

/// The cached entry for a presented token, if it is one of the current key set's, for a
/// rule that reads it where it was presented, and within its `exp`/`nbf` now.
fn cached<'c>(ctx: &Context<'c, '_>, presented: &FoundToken<'_>) -> Option<&'c CachedToken> {
    let Context { config, keys, cache, ref clock, .. } = *ctx;
    let generation = |rule: usize| match keys(rule) {
        KeysFor::Ready { generation, .. } => Some(generation),
        KeysFor::Pending | KeysFor::Unavailable => None,
    };
    cache.get(&presented.token, generation).filter(|hit| {
        config
            .rules
            .get(hit.rule)
            .is_some_and(|rule| rule.locations.contains(&presented.location) && clock.admits(hit, rule.clock_skew))
    })
}

/// [`authenticate`] for every other request: no token, several, or one to verify (or one
/// cached without a grant of its own: a query parameter's). `single_lookup`: the cache's
/// answer for a request's only token, when [`authenticate`] asked already.
#[inline(never)]
fn authenticate_in_full<'c>(
    ctx: &Context<'c, '_>,
    found: &[FoundToken<'_>],
    path: &[u8],
    single_lookup: Option<Option<&'c CachedToken>>,
) -> Decision {
    let config = ctx.config;
    if found.is_empty() {
        let verdict = if config.require_token { Verdict::Deny(Rejection::Missing) } else { Verdict::PassWithoutToken };
        return verdict.into();
    }

    // First the cache, then structure and issuer of the rest: they need no keys, and any
    // invalid token refuses the request (as Envoy does with several tokens).
    let (accepted, misses) = split_cached(ctx, found, single_lookup);
    // Only tokens that have to be decoded are read as text.
    let texts: Vec<_> = misses.iter().map(|(_, presented)| presented.text()).collect();
    let fresh = match decode_misses(config, misses, &texts) {
        Ok(fresh) => fresh,
        Err(rejection) => return Verdict::Deny(rejection).into(),
    };
    let generations = match verify_fresh(ctx, &fresh) {
        Ok(generations) => generations,
        Err(verdict) => return verdict.into(),
    };
    allow(config, accepted, fresh, generations, path)
}

/// A token the cache did not answer for: its place among the request's tokens, where it was
/// presented, the token decoded, the rule (by index) whose issuer it names.
type Fresh<'r, 't> = (usize, &'r FoundToken<'r>, DecodedToken<'t>, usize);

/// The request's tokens the cache answers for, accepted, and the others (with their order).
fn split_cached<'r, 'c: 'r>(
    ctx: &Context<'c, '_>,
    found: &'r [FoundToken<'r>],
    single_lookup: Option<Option<&'c CachedToken>>,
) -> (Vec<Accepted<'r>>, Vec<(usize, &'r FoundToken<'r>)>) {
    let mut misses: Vec<(usize, &FoundToken<'_>)> = Vec::new();
    let mut accepted: Vec<Accepted<'_>> = Vec::new();
    for (order, presented) in found.iter().enumerate() {
        let hit = match single_lookup {
            Some(looked_up) if found.len() == 1 => looked_up,
            _ => cached(ctx, presented),
        };
        if let Some(hit) = hit {
            let (claims, payload_b64, rule) = (&hit.claims, hit.payload_b64.as_str(), hit.rule);
            accepted.push(Accepted { order, presented, claims, payload_b64, rule });
        } else {
            misses.push((order, presented));
        }
    }
    (accepted, misses)
}

/// The structure and issuer of each token the cache did not answer for (`texts`: theirs).
fn decode_misses<'r, 't>(
    config: &FilterConfig,
    misses: Vec<(usize, &'r FoundToken<'r>)>,
    texts: &'t [std::borrow::Cow<'_, str>],
) -> Result<Vec<Fresh<'r, 't>>, Rejection> {
    let mut fresh: Vec<Fresh<'r, 't>> = Vec::with_capacity(misses.len());
    for ((order, presented), text) in misses.into_iter().zip(texts) {
        let token = decode(text, config.max_token_bytes)?;
        let rule = config.rules.iter().position(|rule| {
            token.issuer() == Some(rule.issuer.as_str()) && rule.locations.contains(&presented.location)
        });
        let Some(rule) = rule else {
            return Err(Rejection::UnknownIssuer);
        };
        fresh.push((order, presented, token, rule));
    }
    Ok(fresh)
}

/// Time and signature of each fresh token against its rule's keys: the key generation each
/// was verified with, or the verdict (a denial, or a wait for keys) for the request.
fn verify_fresh(ctx: &Context<'_, '_>, fresh: &[Fresh<'_, '_>]) -> Result<Vec<u64>, Verdict> {
    let Context { config, keys, host, ref clock, .. } = *ctx;
    let now_secs = if fresh.is_empty() { clock.recent_secs } else { clock.exact_secs() };
    let mut waits = Vec::new();
    let mut generations = Vec::with_capacity(fresh.len());
    for (_, _, token, rule_index) in fresh {
        let Some(rule) = config.rules.get(*rule_index) else {
            return Err(Verdict::Deny(Rejection::UnknownIssuer));
        };
        match keys(*rule_index) {
            KeysFor::Ready { keys, generation, may_refetch } => match verify(token, rule, keys, now_secs, host) {
                Ok(()) => generations.push(generation),
                Err(Rejection::UnknownKid) if may_refetch => waits.push(KeyWait::UnknownKid(*rule_index)),
                Err(rejection) => return Err(Verdict::Deny(rejection)),
            },
            KeysFor::Pending => {
                // Do not keep an expired token waiting for keys it cannot use.
                if let Err(rejection) = check_time(token, now_secs, rule.clock_skew) {
                    return Err(Verdict::Deny(rejection));
                }
                waits.push(KeyWait::FirstKeys(*rule_index));
            }
            KeysFor::Unavailable => return Err(Verdict::Deny(Rejection::KeysUnavailable)),
        }
    }
    if !waits.is_empty() {
        waits.dedup();
        return Err(Verdict::AwaitKeys(waits));
    }
    Ok(generations)
}

/// The grant for a request whose tokens all passed, and the fresh ones for the cache.
fn allow(
    config: &FilterConfig,
    accepted: Vec<Accepted<'_>>,
    fresh: Vec<Fresh<'_, '_>>,
    generations: Vec<u64>,
    path: &[u8],
) -> Decision {
    // Shortened to the borrows of `fresh` that join it.
    let mut accepted: Vec<Accepted<'_>> = accepted;
    // Presented order (location order, then as presented), whichever way each token passed:
    // what is cached on this worker never changes which token's claims win.
    accepted.extend(fresh.iter().map(|(order, presented, token, rule)| Accepted {
        order: *order,
        presented,
        claims: &token.claims,
        payload_b64: token.payload_b64,
        rule: *rule,
    }));
    if accepted.len() > 1 {
        accepted.sort_by_key(|a| a.order);
    }
    // What each verified token earns alone, for its cache entry. A query parameter's grant
    // depends on the path, so it is not kept.
    let grants_alone: Vec<Option<Rc<Grant>>> = fresh
        .iter()
        .map(|(_, presented, token, rule)| match config.locations.get(presented.location) {
            Some(TokenLocation::Param(_)) | None => None,
            Some(_) => {
                let alone =
                    Accepted { order: 0, presented, claims: &token.claims, payload_b64: token.payload_b64, rule: *rule };
                Some(Rc::new(grant(config, &[alone], path)))
            }
        })
        .collect();
    let verdict = match (accepted.len(), grants_alone.as_slice()) {
        // The request's only token, just verified: its grant is the one just rendered.
        (1, [Some(grant)]) => Verdict::Allow(Rc::clone(grant)),
        _ => Verdict::Allow(Rc::new(grant(config, &accepted, path))),
    };
    drop(accepted);

    let newly_verified = fresh
        .into_iter()
        .zip(generations)
        .zip(grants_alone)
        .map(|(((_, presented, token, rule), generation), grant_alone)| {
            let grant_alone = grant_alone.map(|grant| (presented.location, grant));
            let cached = CachedToken {
                rule,
                generation,
                validity: token.validity,
                payload_b64: token.payload_b64.to_string(),
                claims: token.claims,
                grant_alone,
            };
            (presented.token.to_vec(), cached)
        })
        .collect();
    Decision { verdict, newly_verified }
}

/// Headers for verified tokens. Claim headers and conditions come from the first token (in
/// presented order); where two tokens would write one header, the first wins.
fn grant(config: &FilterConfig, accepted: &[Accepted<'_>], path: &[u8]) -> Grant {
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
    if let Some(first) = accepted.first() {
        for header in &config.claim_headers {
            set(&mut grant, &header.name, header.path.lookup(first.claims));
        }
        for condition in &config.conditions {
            let value = if condition.holds(first.claims) { conditions::TRUE } else { conditions::FALSE };
            grant.set_headers.push((condition.header.clone(), value.to_string()));
        }
    }
    for token in accepted {
        let Some(rule) = config.rules.get(token.rule) else { continue };
        if let Some(name) = &rule.output_payload_to_header {
            if !grant.set_headers.iter().any(|(n, _)| n == name) {
                grant.set_headers.push((name.clone(), token.payload_b64.to_string()));
            }
        }
        for output in &rule.output_claim_to_headers {
            set(&mut grant, &output.header, output.claim.lookup(token.claims));
        }
        if rule.forward_original_token {
            continue;
        }
        match config.locations.get(token.presented.location) {
            Some(TokenLocation::Header { name, .. }) => {
                if !grant.remove_headers.contains(name) {
                    grant.remove_headers.push(name.clone());
                }
            }
            Some(TokenLocation::Param(name)) => {
                let current = grant.new_path.take().unwrap_or_else(|| text(path).into_owned());
                grant.new_path = Some(without_param(&current, name));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;
    use crate::extract::find_tokens;
    use crate::testkit::*;
    use crate::verify::BuiltinOnly;
    use serde_json::json;

    fn inline_keys<'a>(config: &'a FilterConfig) -> impl Fn(usize) -> KeysFor<'a> {
        move |rule| match &config.rules[rule].keys {
            KeySource::Inline(keys) => KeysFor::Ready { keys, generation: 0, may_refetch: false },
            KeySource::Remote(_) => KeysFor::Pending,
        }
    }

    fn run(config: &FilterConfig, headers: &[(&str, &str)], path: &str) -> Verdict {
        let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let found = find_tokens(&config.locations, &headers, path);
        auth(config, &found, &inline_keys(config), &TokenCache::new(0), path, NOW).verdict
    }

    fn auth<'k>(
        config: &FilterConfig,
        found: &[FoundToken<'_>],
        keys: &dyn Fn(usize) -> KeysFor<'k>,
        cache: &TokenCache,
        path: &str,
        now_secs: u64,
    ) -> Decision {
        let exact = || now_secs;
        let ctx = Context { config, keys, cache, host: &BuiltinOnly, clock: RequestTime::new(now_secs, &exact) };
        authenticate(&ctx, found, path.as_bytes())
    }

    fn decide<'k>(config: &FilterConfig, found: &[FoundToken<'_>], keys: &dyn Fn(usize) -> KeysFor<'k>) -> Verdict {
        auth(config, found, keys, &TokenCache::new(0), "/", NOW).verdict
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {}", token.trim())
    }

    #[test]
    fn valid_token_sets_claim_headers_and_removes_the_token() {
        let config = config_with(json!({}), json!({}));
        let verdict = run(&config, &[("authorization", &bearer(GROUPS_SCOPE_JWT))], "/headers");
        assert_eq!(
            verdict,
            Verdict::Allow(Rc::new(Grant {
                set_headers: vec![("x-jwt-claim.groups".into(), "group1,group2".into())],
                remove_headers: vec!["authorization".into()],
                new_path: None,
            }))
        );
    }

    #[test]
    fn conditions_are_written_true_or_false_from_the_winning_token() {
        let conditions = json!({"conditions": [
            {"header": "x-jwt-cond-0", "claim": ["groups"], "exact": "group1"},
            {"header": "x-jwt-cond-1", "claim": "groups", "exact": "group1,group2"},
            {"header": "x-jwt-cond-2", "principal": true, "exact": "testing@secure.istio.io/testing@secure.istio.io"},
            {"header": "x-jwt-cond-3", "claim": ["foo"], "present": true}
        ]});
        let config = config_with(json!({}), conditions);
        assert_eq!(config.owned_headers, vec!["x-jwt-cond-0", "x-jwt-cond-1", "x-jwt-cond-2", "x-jwt-cond-3"]);
        let values = |token: &str| {
            let Verdict::Allow(grant) = run(&config, &[("authorization", &bearer(token))], "/") else { panic!() };
            let cond = |n: &str| grant.set_headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
            (0..4).map(|i| cond(&format!("x-jwt-cond-{i}")).unwrap_or_default()).collect::<Vec<_>>()
        };
        assert_eq!(values(GROUPS_SCOPE_JWT), ["true", "false", "true", "false"]);
        assert_eq!(values(DEMO_JWT), ["false", "false", "true", "true"]);
        // Two tokens: the first presented wins, whichever verifies second.
        let header = format!("Bearer {}", DEMO_JWT.trim());
        let path = format!("/?access_token={}", GROUPS_SCOPE_JWT.trim());
        let Verdict::Allow(grant) = run(&config, &[("authorization", &header)], &path) else { panic!() };
        assert!(grant.set_headers.contains(&("x-jwt-cond-0".to_string(), "false".to_string())));
        assert!(grant.set_headers.contains(&("x-jwt-cond-3".to_string(), "true".to_string())));
    }

    #[test]
    fn demo_token_is_valid_without_the_groups_header() {
        let config = config_with(json!({}), json!({}));
        let Verdict::Allow(grant) = run(&config, &[("authorization", &bearer(DEMO_JWT))], "/headers") else {
            panic!("allow expected")
        };
        assert!(grant.set_headers.is_empty());
    }

    #[test]
    fn forwarding_keeps_the_token_and_params_are_stripped_from_the_path() {
        let config = config_with(json!({"forwardOriginalToken": true}), json!({}));
        let Verdict::Allow(grant) = run(&config, &[("authorization", &bearer(DEMO_JWT))], "/") else { panic!() };
        assert!(grant.remove_headers.is_empty());
        let config = config_with(json!({}), json!({}));
        let path = format!("/headers?a=1&access_token={}", DEMO_JWT.trim());
        let Verdict::Allow(grant) = run(&config, &[], &path) else { panic!() };
        assert_eq!(grant.new_path.as_deref(), Some("/headers?a=1"));
    }

    #[test]
    fn outputs_payload_and_claims_to_headers() {
        let config = config_with(
            json!({"outputPayloadToHeader": "x-jwt-payload",
                   "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}, {"header": "x-k", "claim": "key1.key2"}]}),
            json!({"claimHeaders": ["x-jwt-claim.key1.key2", "x-jwt-claim-key.1-key.2", "x-jwt-claim.missing"]}),
        );
        let token = mint_with(json!({"key1": {"key2": "v"}, "key.1": {"key.2": 7}}));
        let Verdict::Allow(grant) = run(&config, &[("authorization", &bearer(&token))], "/") else { panic!() };
        let payload = token.split('.').nth(1).unwrap().to_string();
        assert_eq!(
            grant.set_headers,
            vec![
                ("x-jwt-claim.key1.key2".into(), "v".into()),
                ("x-jwt-claim-key.1-key.2".into(), "7".into()),
                ("x-jwt-payload".into(), payload),
                ("x-sub".into(), ISSUER.into()),
                ("x-k".into(), "v".into()),
            ]
        );
    }

    #[test]
    fn missing_token_passes_unless_required() {
        let config = config_with(json!({}), json!({}));
        assert_eq!(run(&config, &[], "/"), Verdict::PassWithoutToken);
        let config = config_with(json!({}), json!({"requireToken": true}));
        assert_eq!(run(&config, &[], "/"), Verdict::Deny(Rejection::Missing));
    }

    #[test]
    fn any_invalid_token_refuses_the_request() {
        let config = config_with(json!({}), json!({}));
        let good = bearer(GROUPS_SCOPE_JWT);
        let expired = bearer(&mint_with(json!({"exp": NOW - 3600})));
        assert_eq!(
            run(&config, &[("authorization", &good), ("authorization", &expired)], "/"),
            Verdict::Deny(Rejection::Expired)
        );
        assert_eq!(
            run(&config, &[("authorization", "Bearer some.invalid.token")], "/"),
            Verdict::Deny(Rejection::Malformed)
        );
        let other_issuer = bearer(&mint_with(json!({"iss": "someone-else"})));
        assert_eq!(run(&config, &[("authorization", &other_issuer)], "/"), Verdict::Deny(Rejection::UnknownIssuer));
    }

    #[test]
    fn issuer_must_match_a_rule_at_the_token_location() {
        let config = config_with(json!({"fromHeaders": [{"name": "x-token"}]}), json!({}));
        // Authorization is not a location of this rule: the header is simply not read.
        assert_eq!(run(&config, &[("authorization", &bearer(DEMO_JWT))], "/"), Verdict::PassWithoutToken);
        assert!(matches!(run(&config, &[("x-token", DEMO_JWT.trim())], "/"), Verdict::Allow(_)));
    }

    #[test]
    fn pending_keys_wait_and_unknown_kids_wait_only_when_a_refetch_may_run() {
        let config = config_with(json!({}), json!({}));
        let found = vec![FoundToken { location: 0, token: GROUPS_SCOPE_JWT.trim().as_bytes().into() }];
        let pending = |_: usize| KeysFor::Pending;
        assert_eq!(decide(&config, &found, &pending), Verdict::AwaitKeys(vec![KeyWait::FirstKeys(0)]));
        let expired =
            vec![FoundToken { location: 0, token: mint_with(json!({"exp": NOW - 3600})).into_bytes().into() }];
        assert_eq!(decide(&config, &expired, &pending), Verdict::Deny(Rejection::Expired));
        let unavailable = |_: usize| KeysFor::Unavailable;
        assert_eq!(decide(&config, &found, &unavailable), Verdict::Deny(Rejection::KeysUnavailable));

        let KeySource::Inline(keys) = &config.rules[0].keys else { panic!() };
        let rotated = vec![FoundToken {
            location: 0,
            token: with_segment(GROUPS_SCOPE_JWT.trim(), 0, r#"{"alg":"RS256","kid":"new"}"#).into_bytes().into(),
        }];
        let may = |_: usize| KeysFor::Ready { keys, generation: 1, may_refetch: true };
        assert_eq!(decide(&config, &rotated, &may), Verdict::AwaitKeys(vec![KeyWait::UnknownKid(0)]));
        let may_not = |_: usize| KeysFor::Ready { keys, generation: 1, may_refetch: false };
        assert_eq!(decide(&config, &rotated, &may_not), Verdict::Deny(Rejection::UnknownKid));
    }

    #[test]
    fn verified_tokens_are_cached_until_the_key_set_changes_or_they_expire() {
        let config = config_with(json!({}), json!({}));
        let token = mint_with(json!({"exp": NOW + 10}));
        let found = vec![FoundToken { location: 0, token: token.clone().into_bytes().into() }];
        let mut cache = TokenCache::new(10);
        let first = auth(&config, &found, &inline_keys(&config), &cache, "/", NOW);
        assert!(matches!(first.verdict, Verdict::Allow(_)));
        assert_eq!(first.newly_verified.len(), 1);
        for (token, verified) in first.newly_verified {
            cache.insert(&token, verified);
        }
        // A hit needs no keys at all, and still writes the claim headers.
        let no_keys = |_: usize| KeysFor::Unavailable;
        let KeySource::Inline(keys) = &config.rules[0].keys else { panic!() };
        let same_keys = |_: usize| KeysFor::Ready { keys, generation: 0, may_refetch: false };
        let hit = auth(&config, &found, &same_keys, &cache, "/", NOW);
        assert!(hit.newly_verified.is_empty(), "served from the cache");
        let Verdict::Allow(grant) = hit.verdict else { panic!("allow expected") };
        assert_eq!(grant.set_headers, vec![("x-jwt-claim.groups".to_string(), "group1,group2".to_string())]);
        assert_eq!(
            auth(&config, &found, &no_keys, &cache, "/", NOW).verdict,
            Verdict::Deny(Rejection::KeysUnavailable),
            "no keys means no current generation: the entry does not serve"
        );
        let rotated = |_: usize| KeysFor::Ready { keys, generation: 1, may_refetch: false };
        assert_eq!(auth(&config, &found, &rotated, &cache, "/", NOW).newly_verified.len(), 1);
        let later = NOW + 10 + 61;
        assert_eq!(auth(&config, &found, &same_keys, &cache, "/", later).verdict, Verdict::Deny(Rejection::Expired));
    }

    #[test]
    fn a_cached_grant_is_the_grant_a_fresh_verification_gives() {
        let config = config_with(json!({"outputPayloadToHeader": "x-payload"}), json!({}));
        let keys = inline_keys(&config);
        let token = mint_with(json!({}));
        let at = |location: usize| vec![FoundToken { location, token: token.clone().into_bytes().into() }];
        let fresh = |found: &[FoundToken<'_>], path: &str| auth(&config, found, &keys, &TokenCache::new(0), path, NOW);
        let mut cache = TokenCache::new(10);
        let first = auth(&config, &at(0), &keys, &cache, "/", NOW);
        let Verdict::Allow(rendered) = &first.verdict else { panic!() };
        for (token, verified) in first.newly_verified {
            let kept = verified.grant_alone.as_ref();
            assert!(kept.is_some_and(|(location, grant)| *location == 0 && Rc::ptr_eq(grant, rendered)), "{kept:?}");
            cache.insert(&token, verified);
        }
        let Verdict::Allow(shared) = auth(&config, &at(0), &keys, &cache, "/", NOW).verdict else { panic!() };
        let Verdict::Allow(again) = auth(&config, &at(0), &keys, &cache, "/other", NOW).verdict else { panic!() };
        assert!(Rc::ptr_eq(&shared, &again), "a hit hands out the grant rendered at verification");
        assert_eq!(Verdict::Allow(shared), fresh(&at(0), "/").verdict);
        assert_eq!(again.remove_headers, vec!["authorization".to_string()]);
        assert!(again.set_headers.iter().any(|(name, _)| name == "x-payload"), "{:?}", again.set_headers);
        // The same token in the query: its grant depends on the path, so it is built per request.
        let path = format!("/headers?a=1&access_token={token}");
        let hit = auth(&config, &at(1), &keys, &cache, &path, NOW);
        assert!(hit.newly_verified.is_empty(), "served from the cache");
        assert_eq!(hit.verdict, fresh(&at(1), &path).verdict);
        let Verdict::Allow(grant) = hit.verdict else { panic!() };
        assert_eq!(grant.new_path.as_deref(), Some("/headers?a=1"));
        // Two tokens: the combined grant, not either one's alone.
        let both = [at(0), at(1)].concat();
        assert_eq!(auth(&config, &both, &keys, &cache, &path, NOW).verdict, fresh(&both, &path).verdict);
    }

    #[test]
    fn the_first_presented_token_wins_whatever_is_cached() {
        let config = config_with(json!({}), json!({}));
        let keys = inline_keys(&config);
        let a = mint_with(json!({"groups": ["a-group"]}));
        let b = mint_with(json!({"groups": ["b-group"]}));
        // Both in the query (one location), A first: A's claims, in every cache state.
        let path = format!("/headers?access_token={a}&access_token={b}");
        let no_headers: Vec<(String, String)> = Vec::new();
        let found = find_tokens(&config.locations, &no_headers, &path);
        assert_eq!(found.len(), 2);
        let alone = |token: &str| vec![FoundToken { location: 0, token: token.as_bytes().to_vec().into() }];
        for cached in [vec![], vec![&a], vec![&b], vec![&a, &b]] {
            let mut cache = TokenCache::new(10);
            for token in &cached {
                for (bytes, verified) in auth(&config, &alone(token), &keys, &cache, "/", NOW).newly_verified {
                    cache.insert(&bytes, verified);
                }
            }
            let Verdict::Allow(grant) = auth(&config, &found, &keys, &cache, &path, NOW).verdict else { panic!() };
            let groups = grant.set_headers.iter().find(|(name, _)| name == "x-jwt-claim.groups");
            assert_eq!(groups.map(|(_, v)| v.as_str()), Some("a-group"), "cached: {}", cached.len());
        }
    }

    #[test]
    fn a_cached_token_far_from_its_limits_needs_no_exact_clock() {
        use std::cell::Cell;
        let config = config_with(json!({}), json!({}));
        let KeySource::Inline(keys) = &config.rules[0].keys else { panic!() };
        let keys = |_: usize| KeysFor::Ready { keys, generation: 0, may_refetch: false };
        let exp = NOW + 3600;
        let token = mint_with(json!({"exp": exp}));
        let found = vec![FoundToken { location: 0, token: token.clone().into_bytes().into() }];
        let mut cache = TokenCache::new(10);
        let readings = Cell::new(0);
        let decide_at = |cache: &TokenCache, recent: u64, exact: u64| {
            let read = || {
                readings.set(readings.get() + 1);
                exact
            };
            let time = RequestTime::new(recent, &read);
            authenticate(&Context { config: &config, keys: &keys, cache, host: &BuiltinOnly, clock: time }, &found, b"/")
        };
        // Verifying always takes the exact time.
        let first = decide_at(&cache, NOW, NOW);
        assert_eq!(readings.get(), 1);
        for (token, verified) in first.newly_verified {
            cache.insert(&token, verified);
        }
        readings.set(0);
        assert!(matches!(decide_at(&cache, NOW, NOW).verdict, Verdict::Allow(_)));
        assert_eq!(readings.get(), 0, "an hour from exp: the recent reading decides");
        // Near exp (skew 60 s included), the exact time decides, both ways.
        let near = exp + 60 - RECENT_WITHIN_SECS + 1;
        assert!(matches!(decide_at(&cache, near, near).verdict, Verdict::Allow(_)));
        assert_eq!(readings.get(), 1);
        assert_eq!(decide_at(&cache, near, exp + 61).verdict, Verdict::Deny(Rejection::Expired));
        assert_eq!(readings.get(), 2, "one reading per decision, also when the token is then verified");
    }

    #[test]
    fn challenges_never_carry_the_query() {
        let realm = realm("http", "httpbin.example.com", "/headers?access_token=secret");
        assert_eq!(realm, "http://httpbin.example.com/headers");
        assert_eq!(challenge(&realm, Rejection::Missing), "Bearer realm=\"http://httpbin.example.com/headers\"");
        assert_eq!(
            challenge(&realm, Rejection::BadSignature),
            "Bearer realm=\"http://httpbin.example.com/headers\", error=\"invalid_token\""
        );
        assert_eq!(super::realm("http", "a\"b", "/\r\n"), "http://a\\\"b/");
    }
}

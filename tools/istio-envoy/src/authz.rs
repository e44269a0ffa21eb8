//! AuthorizationPolicy at the gateway: DENY before ALLOW, 403 `RBAC: access denied`.
//!
//! The reading follows Istio's (`pilot/pkg/security/authz/model`): a policy matches when one
//! of its rules does; a rule is (one of `from`) AND (one of `to`) AND (all of `when`); the
//! fields of one source or operation are ANDed, the values of one field ORed, a `not` field
//! holds when none of its values does. In Envoy's RBAC a policy holds when one of its
//! `permissions` and one of its `principals` hold, so each `from` source becomes a principal
//! and each `to` operation a permission, and every `when` condition is ANDed into each of
//! its side's entries, which keeps the ORs of `from` and `to` apart.
//!
//! What Istio reads from `request.auth` (request principals, claims, audiences, presenter)
//! is evaluated by the filter as a claim condition, and the policy tests the header the
//! filter writes for it (`true`/`false` on every request it lets through).

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use crate::conditions::{auth_claims_keys, Conditions, Match, Subject, HEADER_PREFIX};
use crate::model::{Obj, Resource, Result};

const RBAC_FILTER: &str = "envoy.filters.http.rbac";
const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// Why the peer identity fields are refused: they name the client's mTLS certificate.
const MTLS: &str = "it matches the peer's mTLS identity, and clients of the gateway present no mesh certificate";

/// The RBAC HTTP filters (DENY first, then ALLOW) that enforce `policies` at the gateway,
/// to place after the Wasm filter and before the router.
pub fn rbac_filters(policies: &[&Resource], conds: &mut Conditions) -> Result<Vec<Value>> {
    let (mut deny, mut allow) = (None::<Map<String, Value>>, None::<Map<String, Value>>);
    for policy in policies {
        let compiled = compile(policy, conds)?;
        let into = match compiled.action {
            Action::Deny => deny.get_or_insert_with(Map::new),
            Action::Allow => allow.get_or_insert_with(Map::new),
        };
        for (name, rbac_policy) in compiled.policies {
            if into.contains_key(&name) {
                return Err(
                    policy.refuse("metadata", format!("makes the RBAC policy name {name:?} (namespace.name[rule-i]), which an earlier policy already has"))
                );
            }
            into.insert(name, rbac_policy);
        }
    }
    // An ALLOW filter without policies denies every request: that is `spec: {}`, Istio's
    // "deny all". Without any ALLOW policy there is no ALLOW filter.
    let filter = |action: &str, policies: Map<String, Value>| {
        json!({
            "name": RBAC_FILTER,
            "typed_config": {"@type": RBAC_TYPE, "rules": {"action": action, "policies": policies}},
        })
    };
    Ok(deny.map(|p| filter("DENY", p)).into_iter().chain(allow.map(|p| filter("ALLOW", p))).collect())
}

/// `policy` for a real gateway: its `request.auth` sources and conditions rewritten to the
/// condition headers the filter writes.
///
/// A real gateway has no `request.auth` once the RequestAuthentication is replaced by the
/// WasmPlugin. Request principals become `when` tests of their header; a rule with several
/// `from` sources, one of them naming request principals, becomes one rule per source,
/// because sources are alternatives and `when` is ANDed with all of them.
pub fn for_istio(policy: &Resource, conds: &mut Conditions) -> Result<Value> {
    // Everything the rewrite reads is checked here, with the same refusals as --emit envoy,
    // and the conditions are interned (asking again gives the same header).
    compile(policy, conds)?;
    let mut document = policy.document.clone();
    let Some(rules) = document.pointer_mut("/spec/rules").and_then(Value::as_array_mut) else {
        return Ok(document);
    };
    let rewritten: Vec<Value> = rules.drain(..).flat_map(|rule| rewrite_rule(rule, conds)).collect();
    *rules = rewritten;
    Ok(document)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Allow,
    Deny,
}

struct Compiled {
    action: Action,
    /// `<ns>.<name>[rule-<i>]` and its RBAC policy, in rule order.
    policies: Vec<(String, Value)>,
}

fn compile(policy: &Resource, conds: &mut Conditions) -> Result<Compiled> {
    // A policy without a spec is `spec: {}`, as the API server stores it.
    let empty = Value::Object(Map::new());
    let spec_value = policy.document.get("spec").filter(|v| !v.is_null()).unwrap_or(&empty);
    let spec = Obj::of(policy, spec_value, "spec".to_string())?;
    spec.fields(
        &["selector", "targetRef", "targetRefs", "action", "rules"],
        &[("provider", "it names the external authorizer of action CUSTOM, which the compiler does not configure")],
    )?;
    let action = match spec.str("action")? {
        None | Some("ALLOW") => Action::Allow,
        Some("DENY") => Action::Deny,
        Some("AUDIT") => {
            return Err(spec.refuse("action", "AUDIT is not supported: it only marks requests for an audit logging provider, which the gateway here has none of"));
        }
        Some("CUSTOM") => {
            return Err(spec.refuse("action", "CUSTOM is not supported: it delegates the decision to an external authorizer (ext_authz), which the compiler does not configure"));
        }
        Some(other) => return Err(spec.refuse("action", format!("{other:?} is not one of ALLOW, DENY, AUDIT, CUSTOM"))),
    };
    let rules = spec.objs("rules")?;
    if action == Action::Deny && rules.is_empty() {
        return Err(spec.refuse(
            "rules",
            "a DENY policy without rules never matches (Istio refuses it); a rule {} denies every request",
        ));
    }
    let mut policies = Vec::new();
    for (i, rule_obj) in rules.iter().enumerate() {
        policies.push((format!("{}.{}[rule-{i}]", policy.namespace, policy.name), rule(rule_obj, conds)?));
    }
    Ok(Compiled { action, policies })
}

/// One rule as an RBAC policy: a principal per `from` source, a permission per `to`
/// operation, each ANDed with the `when` conditions of its side.
fn rule(r: &Obj<'_>, conds: &mut Conditions) -> Result<Value> {
    r.fields(&["from", "to", "when"], &[])?;
    let (mut permission_when, mut principal_when) = (Vec::new(), Vec::new());
    for c in r.objs("when")? {
        let (permission, principal) = condition(&c, conds)?;
        permission_when.extend(permission);
        principal_when.extend(principal);
    }
    let principals = entries(r, ("from", "source"), Side::Principal, &principal_when, |src| source(src, conds))?;
    let permissions = entries(r, ("to", "operation"), Side::Permission, &permission_when, operation)?;
    Ok(json!({"permissions": permissions, "principals": principals}))
}

/// The entries of `from` (`list` `("from", "source")`) or `to` (`("to", "operation")`): one
/// per element, its object read by `read` and ANDed with the `when` conditions of that side.
/// Without the list, the conditions alone.
fn entries(
    r: &Obj<'_>,
    (list, inner): (&str, &str),
    side: Side,
    when: &[Value],
    mut read: impl FnMut(&Obj<'_>) -> Result<Vec<Value>>,
) -> Result<Vec<Value>> {
    if r.get(list).is_none() {
        return Ok(vec![side.and(when.to_vec())]);
    }
    let elements = r.objs(list)?;
    if elements.is_empty() {
        return Err(r.refuse(list, format!("must not be empty (leave it out for any {inner})")));
    }
    elements
        .iter()
        .map(|e| {
            e.fields(&[inner], &[])?;
            let object = e.obj(inner)?.ok_or_else(|| e.refuse(inner, "is required"))?;
            let mut all = read(&object)?;
            all.extend(when.iter().cloned());
            Ok(side.and(all))
        })
        .collect()
}

/// `from[].source`: the principal entries it ANDs.
fn source(src: &Obj<'_>, conds: &mut Conditions) -> Result<Vec<Value>> {
    src.fields(
        &[
            "requestPrincipals",
            "notRequestPrincipals",
            "ipBlocks",
            "notIpBlocks",
            "remoteIpBlocks",
            "notRemoteIpBlocks",
        ],
        &[
            ("principals", MTLS),
            ("notPrincipals", MTLS),
            ("namespaces", MTLS),
            ("notNamespaces", MTLS),
            ("serviceAccounts", MTLS),
            ("notServiceAccounts", MTLS),
        ],
    )?;
    let mut ids = Vec::new();
    ids.extend(field_pair(src, "ipBlocks", "notIpBlocks", Side::Principal, |v, at| {
        Ok(json!({"direct_remote_ip": cidr(src, at, v)?}))
    })?);
    ids.extend(field_pair(src, "remoteIpBlocks", "notRemoteIpBlocks", Side::Principal, |v, at| {
        Ok(json!({"remote_ip": cidr(src, at, v)?}))
    })?);
    let (yes, no) = (values(src, "requestPrincipals")?, values(src, "notRequestPrincipals")?);
    ids.extend(claim_tests(Side::Principal, &Subject::Principal, &yes, &no, conds));
    if ids.is_empty() {
        return Err(src.refuse("", "must not be empty (leave the `from` entry out for any source)"));
    }
    Ok(ids)
}

/// `to[].operation`: the permission entries it ANDs.
fn operation(op: &Obj<'_>) -> Result<Vec<Value>> {
    op.fields(&["hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"], &[])?;
    let mut rules = Vec::new();
    // Istio compares hosts with `:authority` ignoring case.
    rules.extend(field_pair(op, "hosts", "notHosts", Side::Permission, |v, _| {
        Ok(json!({"header": header_matcher(":authority", v, true)}))
    })?);
    rules.extend(field_pair(op, "methods", "notMethods", Side::Permission, |v, _| {
        Ok(json!({"header": header_matcher(":method", v, false)}))
    })?);
    rules.extend(field_pair(op, "paths", "notPaths", Side::Permission, |v, at| {
        if v.contains("{*}") || v.contains("{**}") {
            return Err(op.refuse(at, format!("{v:?}: path templates ({{*}}, {{**}}) are not supported")));
        }
        Ok(json!({"url_path": {"path": string_matcher(v, false)}}))
    })?);
    rules.extend(field_pair(op, "ports", "notPorts", Side::Permission, |v, at| {
        Ok(json!({"destination_port": port(op, at, v)?}))
    })?);
    if rules.is_empty() {
        return Err(op.refuse("", "must not be empty (leave the `to` entry out for any operation)"));
    }
    Ok(rules)
}

/// A `when` entry: its permission entries and its principal entries (one side is empty).
fn condition(c: &Obj<'_>, conds: &mut Conditions) -> Result<(Vec<Value>, Vec<Value>)> {
    c.fields(&["key", "values", "notValues"], &[])?;
    let key = c.req_str("key")?;
    let (yes, no) = (values(c, "values")?, values(c, "notValues")?);
    if yes.is_empty() && no.is_empty() {
        return Err(c.refuse("", format!("key {key:?}: at least one of values or notValues must be set")));
    }
    if let Some(subject) = auth_subject(key) {
        let subject = subject.map_err(|reason| c.refuse("key", reason))?;
        return Ok((claim_tests(Side::Permission, &subject, &yes, &no, conds), Vec::new()));
    }
    let each = |side: Side, f: &dyn Fn(&str, &str) -> Result<Value>| -> Result<Vec<Value>> {
        let map = |list: &[&str], field: &str| -> Result<Vec<Value>> {
            list.iter().enumerate().map(|(i, v)| f(v, &format!("{field}[{i}]"))).collect()
        };
        Ok(either(side, map(&yes, "values")?, map(&no, "notValues")?))
    };
    match key {
        "source.ip" => {
            Ok((Vec::new(), each(Side::Principal, &|v, at| Ok(json!({"direct_remote_ip": cidr(c, at, v)?})))?))
        }
        "remote.ip" => Ok((Vec::new(), each(Side::Principal, &|v, at| Ok(json!({"remote_ip": cidr(c, at, v)?})))?)),
        "destination.port" => {
            Ok((each(Side::Permission, &|v, at| Ok(json!({"destination_port": port(c, at, v)?})))?, Vec::new()))
        }
        _ if key.starts_with("request.headers") => {
            let name = bracketed(key.strip_prefix("request.headers").unwrap_or_default())
                .ok_or_else(|| c.refuse("key", format!("{key:?} must be request.headers[<name>]")))?;
            // A condition header is only trustworthy when the filter writes it (and strips what
            // the client sent): that is when one of its conditions names it, as the WasmPlugin
            // of `--emit istio` output does.
            let spelled = name.to_ascii_lowercase().replace('_', "-");
            if spelled.starts_with(HEADER_PREFIX) && !conds.headers().contains(&spelled) {
                return Err(c.refuse(
                    "key",
                    format!(
                        "{key:?} tests a condition header that no condition of the filter defines, so the filter \
                         would neither write it nor strip a client's: define it in the WasmPlugin's conditions"
                    ),
                ));
            }
            Ok((each(Side::Permission, &|v, _| Ok(json!({"header": header_matcher(name, v, false)})))?, Vec::new()))
        }
        "source.principal" | "source.namespace" | "source.serviceAccount" => {
            Err(c.refuse("key", format!("{key:?} is not supported: {MTLS}")))
        }
        _ => Err(c.refuse(
            "key",
            format!(
                "{key:?} is not a key the compiler supports (request.auth.principal, request.auth.audiences, \
                 request.auth.presenter, request.auth.claims[...], request.headers[...], source.ip, remote.ip, \
                 destination.port)"
            ),
        )),
    }
}

/// The subject of a `request.auth.*` key, `None` for other keys.
fn auth_subject(key: &str) -> Option<std::result::Result<Subject, String>> {
    match key {
        "request.auth.principal" => Some(Ok(Subject::Principal)),
        "request.auth.audiences" => Some(Ok(Subject::Claim(vec!["aud".to_string()]))),
        "request.auth.presenter" => Some(Ok(Subject::Claim(vec!["azp".to_string()]))),
        _ => {
            let rest = key.strip_prefix("request.auth.claims")?;
            // Istio reads only the bracketed form here; `.a.b` is a route spelling.
            Some(match rest.starts_with('[') {
                true => auth_claims_keys(rest).map(Subject::Claim).map_err(|m| format!("{key:?}: {m}")),
                false => Err(format!("{key:?} must be request.auth.claims[<claim>] (one bracketed key per level)")),
            })
        }
    }
}

/// The tests of the headers the filter writes for `subject` matching one of `yes` (`true`)
/// and one of `no` (not `true`: `false`, which is also what a request without a token gets).
fn claim_tests(side: Side, subject: &Subject, yes: &[&str], no: &[&str], conds: &mut Conditions) -> Vec<Value> {
    let mut tests = Vec::new();
    if !yes.is_empty() {
        tests.push(side.header(header_is_true(&condition_header(subject, yes, conds))));
    }
    if !no.is_empty() {
        tests.push(side.not(side.header(header_is_true(&condition_header(subject, no, conds)))));
    }
    tests
}

/// One condition per (subject, values list): the filter joins the alternatives.
fn condition_header(subject: &Subject, values: &[&str], conds: &mut Conditions) -> String {
    let any_of: Vec<Match> = values.iter().map(|v| istio_value(v)).collect();
    conds.header_for(subject, &any_of)
}

/// Istio's `*` forms (`matcher.StringMatcher`): `*` alone is presence, a leading `*` a
/// suffix (checked first, so `*a*` is the suffix `a*`), a trailing `*` a prefix.
fn istio_value(v: &str) -> Match {
    if v == "*" {
        Match::Present
    } else if let Some(suffix) = v.strip_prefix('*') {
        Match::Suffix(suffix.to_string())
    } else if let Some(prefix) = v.strip_suffix('*') {
        Match::Prefix(prefix.to_string())
    } else {
        Match::Exact(v.to_string())
    }
}

/// An Envoy `StringMatcher` for an Istio value: `*` is a non-empty value, as Istio writes it.
fn string_matcher(v: &str, ignore_case: bool) -> Value {
    let mut m = match istio_value(v) {
        Match::Present => json!({"safe_regex": {"regex": ".+"}}),
        Match::Suffix(s) => json!({"suffix": s}),
        Match::Prefix(p) => json!({"prefix": p}),
        Match::Exact(e) | Match::Regex(e) => json!({"exact": e}),
    };
    if ignore_case {
        if let Some(m) = m.as_object_mut() {
            m.insert("ignore_case".into(), json!(true));
        }
    }
    m
}

/// An Envoy `HeaderMatcher` for an Istio value: `*` is the header's presence.
fn header_matcher(name: &str, v: &str, ignore_case: bool) -> Value {
    match v {
        "*" => json!({"name": name, "present_match": true}),
        _ => json!({"name": name, "string_match": string_matcher(v, ignore_case)}),
    }
}

fn header_is_true(header: &str) -> Value {
    json!({"name": header, "string_match": {"exact": "true"}})
}

/// The name in `[name]`, not empty.
fn bracketed(s: &str) -> Option<&str> {
    s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).filter(|name| !name.is_empty())
}

/// A list of non-empty strings (Istio refuses empty values).
fn values<'a>(o: &Obj<'a>, field: &str) -> Result<Vec<&'a str>> {
    let list = o.strs(field)?;
    if let Some(i) = list.iter().position(|v| v.is_empty()) {
        return Err(o.refuse(&format!("{field}[{i}]"), "must not be empty"));
    }
    Ok(list)
}

/// A field and its `not` form, each value made an entry by `f(value, field path)`.
fn field_pair(
    o: &Obj<'_>,
    field: &str,
    not_field: &str,
    side: Side,
    f: impl Fn(&str, &str) -> Result<Value>,
) -> Result<Vec<Value>> {
    let map = |name: &str| -> Result<Vec<Value>> {
        values(o, name)?.iter().enumerate().map(|(i, v)| f(v, &format!("{name}[{i}]"))).collect()
    };
    Ok(either(side, map(field)?, map(not_field)?))
}

/// One of `yes`, and none of `no`; an empty list sets no constraint.
fn either(side: Side, yes: Vec<Value>, no: Vec<Value>) -> Vec<Value> {
    let mut entries = Vec::new();
    if !yes.is_empty() {
        entries.push(side.or(yes));
    }
    if !no.is_empty() {
        entries.push(side.not(side.or(no)));
    }
    entries
}

/// An IP or CIDR range as an Envoy `CidrRange`.
fn cidr(o: &Obj<'_>, at: &str, v: &str) -> Result<Value> {
    let bad = || o.refuse(at, format!("{v:?} is not an IP address or CIDR range"));
    let (addr, len) = match v.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (v, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
            len.parse::<u32>().ok().filter(|n| *n <= max).ok_or_else(bad)?
        }
        Some(_) => return Err(bad()),
    };
    Ok(json!({"address_prefix": addr, "prefix_len": len}))
}

fn port(o: &Obj<'_>, at: &str, v: &str) -> Result<u32> {
    match v.bytes().all(|b| b.is_ascii_digit()) {
        true => v.parse::<u16>().map(u32::from).map_err(|_| o.refuse(at, format!("{v:?} is not a port (0-65535)"))),
        false => Err(o.refuse(at, format!("{v:?} is not a port (0-65535)"))),
    }
}

/// Which list of an RBAC policy an entry belongs to: the two spell and/or/not differently.
#[derive(Clone, Copy)]
enum Side {
    Permission,
    Principal,
}

impl Side {
    /// All of `entries`; none is no constraint.
    fn and(self, mut entries: Vec<Value>) -> Value {
        match (entries.len(), self) {
            (0, _) => json!({"any": true}),
            (1, _) => entries.pop().unwrap_or_default(),
            (_, Side::Permission) => json!({"and_rules": {"rules": entries}}),
            (_, Side::Principal) => json!({"and_ids": {"ids": entries}}),
        }
    }

    /// One of `entries`, which callers never leave empty (none would match nothing).
    fn or(self, mut entries: Vec<Value>) -> Value {
        match (entries.len(), self) {
            (0, _) => self.not(json!({"any": true})),
            (1, _) => entries.pop().unwrap_or_default(),
            (_, Side::Permission) => json!({"or_rules": {"rules": entries}}),
            (_, Side::Principal) => json!({"or_ids": {"ids": entries}}),
        }
    }

    fn not(self, entry: Value) -> Value {
        match self {
            Side::Permission => json!({"not_rule": entry}),
            Side::Principal => json!({"not_id": entry}),
        }
    }

    fn header(self, matcher: Value) -> Value {
        json!({"header": matcher})
    }
}

// --- the rewrite for Istio (on documents `compile` has accepted) ---

/// `rule` with its `request.auth` tests on condition headers: one rule, or one per source.
fn rewrite_rule(mut rule: Value, conds: &mut Conditions) -> Vec<Value> {
    if let Some(when) = rule.get_mut("when").and_then(Value::as_array_mut) {
        let old = std::mem::take(when);
        for c in old {
            when.extend(rewrite_condition(c, conds));
        }
    }
    let from = rule.get("from").and_then(Value::as_array).cloned().unwrap_or_default();
    let names_principals =
        |f: &Value| ["requestPrincipals", "notRequestPrincipals"].iter().any(|k| f["source"].get(k).is_some());
    if !from.iter().any(names_principals) {
        return vec![rule];
    }
    from.into_iter()
        .map(|f| {
            let mut one = rule.clone();
            let mut src = f.get("source").and_then(Value::as_object).cloned().unwrap_or_default();
            let (yes, no) = (src.remove("requestPrincipals"), src.remove("notRequestPrincipals"));
            let tests = principal_conditions(yes, no, conds);
            if let Some(r) = one.as_object_mut() {
                match src.is_empty() {
                    true => r.remove("from"),
                    false => r.insert("from".into(), json!([{"source": src}])),
                };
                if !tests.is_empty() {
                    let when = r.entry("when").or_insert_with(|| json!([]));
                    if let Some(when) = when.as_array_mut() {
                        when.extend(tests);
                    }
                }
            }
            one
        })
        .collect()
}

/// The `when` entries replacing a source's request principals.
fn principal_conditions(yes: Option<Value>, no: Option<Value>, conds: &mut Conditions) -> Vec<Value> {
    let strs = |v: &Option<Value>| -> Vec<String> {
        v.as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    header_conditions(&Subject::Principal, &strs(&yes), &strs(&no), conds)
}

/// A `when` entry as Istio should see it: `request.auth.*` keys become condition headers.
fn rewrite_condition(c: Value, conds: &mut Conditions) -> Vec<Value> {
    let Some(Ok(subject)) = c.get("key").and_then(Value::as_str).and_then(auth_subject) else {
        return vec![c];
    };
    let strs = |field: &str| -> Vec<String> {
        c.get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    header_conditions(&subject, &strs("values"), &strs("notValues"), conds)
}

fn header_conditions(subject: &Subject, yes: &[String], no: &[String], conds: &mut Conditions) -> Vec<Value> {
    let mut entries = Vec::new();
    for (list, field) in [(yes, "values"), (no, "notValues")] {
        if !list.is_empty() {
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            let header = condition_header(subject, &list, conds);
            entries.push(json!({"key": format!("request.headers[{header}]"), field: ["true"]}));
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Resource {
        let document: Value = serde_yaml_ng::from_str(yaml).unwrap();
        Resource {
            kind: "AuthorizationPolicy".into(),
            api_version: "security.istio.io/v1".into(),
            name: document["metadata"]["name"].as_str().unwrap().into(),
            namespace: document["metadata"]["namespace"].as_str().unwrap_or("default").into(),
            document,
        }
    }

    fn filters(yamls: &[&str]) -> (Vec<Value>, Conditions) {
        let resources: Vec<Resource> = yamls.iter().map(|y| policy(y)).collect();
        let refs: Vec<&Resource> = resources.iter().collect();
        let mut conds = Conditions::default();
        let out = rbac_filters(&refs, &mut conds).unwrap();
        (out, conds)
    }

    /// The RBAC policy named `name` in the filter of `action`.
    fn rbac<'a>(filters: &'a [Value], action: &str, name: &str) -> &'a Value {
        let filter = filters.iter().find(|f| f["typed_config"]["rules"]["action"] == action).unwrap();
        &filter["typed_config"]["rules"]["policies"][name]
    }

    fn refusal(yaml: &str) -> String {
        let p = policy(yaml);
        let err = rbac_filters(&[&p], &mut Conditions::default()).unwrap_err();
        // --emit istio refuses the same input the same way.
        assert_eq!(for_istio(&p, &mut Conditions::default()).unwrap_err(), err);
        err.to_string()
    }

    const HEAD: &str =
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: ns}\n";

    fn spec(body: &str) -> String {
        format!("{HEAD}spec:\n{body}")
    }

    #[test]
    fn deny_all_and_no_policies() {
        let (out, _) = filters(&[&format!("{HEAD}spec: {{}}")]);
        assert_eq!(
            out,
            vec![json!({
                "name": "envoy.filters.http.rbac",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                    "rules": {"action": "ALLOW", "policies": {}},
                },
            })]
        );
        // No spec at all reads as `spec: {}`; `rules: []` matches nothing either.
        assert_eq!(filters(&[HEAD]).0, out);
        assert_eq!(filters(&[&spec("  rules: []")]).0, out);
        assert!(filters(&[]).0.is_empty());
    }

    #[test]
    fn deny_filter_comes_first_and_empty_rule_matches_everything() {
        let allow = spec("  rules:\n  - to: [{operation: {methods: [GET]}}]");
        let deny = format!("{HEAD}  # second\n").replace("name: p", "name: d") + "spec:\n  action: DENY\n  rules: [{}]";
        let (out, _) = filters(&[&allow, &deny]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["typed_config"]["rules"]["action"], "DENY");
        assert_eq!(out[1]["typed_config"]["rules"]["action"], "ALLOW");
        assert_eq!(
            rbac(&out, "DENY", "ns.d[rule-0]"),
            &json!({"permissions": [{"any": true}], "principals": [{"any": true}]})
        );
        assert_eq!(
            rbac(&out, "ALLOW", "ns.p[rule-0]"),
            &json!({
                "permissions": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}}],
                "principals": [{"any": true}],
            })
        );
        // Without an ALLOW policy there is no ALLOW filter.
        let (out, _) = filters(&[&deny]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["typed_config"]["rules"]["action"], "DENY");
    }

    #[test]
    fn operations_with_star_forms_and_not_fields() {
        let (out, _) = filters(&[&spec(
            "  rules:\n  - to:\n    - operation:\n        hosts: [Example.com, '*.example.org']\n        notPaths: ['/admin*', '*']\n        methods: ['*']\n        ports: ['8080']\n        notPorts: ['9000']\n    - operation: {paths: [/exact]}",
        )]);
        let p = rbac(&out, "ALLOW", "ns.p[rule-0]");
        assert_eq!(
            p["permissions"],
            json!([
                {"and_rules": {"rules": [
                    {"or_rules": {"rules": [
                        {"header": {"name": ":authority", "string_match": {"exact": "Example.com", "ignore_case": true}}},
                        {"header": {"name": ":authority", "string_match": {"suffix": ".example.org", "ignore_case": true}}},
                    ]}},
                    {"header": {"name": ":method", "present_match": true}},
                    {"not_rule": {"or_rules": {"rules": [
                        {"url_path": {"path": {"prefix": "/admin"}}},
                        {"url_path": {"path": {"safe_regex": {"regex": ".+"}}}},
                    ]}}},
                    {"destination_port": 8080},
                    {"not_rule": {"destination_port": 9000}},
                ]}},
                {"url_path": {"path": {"exact": "/exact"}}},
            ])
        );
        assert_eq!(p["principals"], json!([{"any": true}]));
    }

    #[test]
    fn sources_are_alternatives_and_when_joins_each() {
        let (out, conds) = filters(&[&spec(
            "  rules:\n  - from:\n    - source: {requestPrincipals: ['https://idp/*', 'iss/alice'], ipBlocks: [10.0.0.0/8]}\n    - source: {notRequestPrincipals: ['*'], remoteIpBlocks: ['2001:db8::1']}\n    when:\n    - {key: source.ip, notValues: [192.168.1.1]}\n    - {key: 'request.auth.claims[groups]', values: [admin, 'ops*']}\n    - {key: 'request.headers[X-Env]', values: ['*'], notValues: ['*prod']}\n    - {key: destination.port, values: ['443']}",
        )]);
        let p = rbac(&out, "ALLOW", "ns.p[rule-0]");
        let not_local = json!({"not_id": {"direct_remote_ip": {"address_prefix": "192.168.1.1", "prefix_len": 32}}});
        assert_eq!(
            p["principals"],
            json!([
                {"and_ids": {"ids": [
                    {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
                    {"header": {"name": "x-jwt-cond-2", "string_match": {"exact": "true"}}},
                    not_local,
                ]}},
                {"and_ids": {"ids": [
                    {"remote_ip": {"address_prefix": "2001:db8::1", "prefix_len": 128}},
                    {"not_id": {"header": {"name": "x-jwt-cond-3", "string_match": {"exact": "true"}}}},
                    not_local,
                ]}},
            ])
        );
        assert_eq!(
            p["permissions"],
            json!([{"and_rules": {"rules": [
                {"header": {"name": "x-jwt-cond-1", "string_match": {"exact": "true"}}},
                {"header": {"name": "X-Env", "present_match": true}},
                {"not_rule": {"header": {"name": "X-Env", "string_match": {"suffix": "prod"}}}},
                {"destination_port": 443},
            ]}}])
        );
        // `when` is read before `from`, so the claim condition is the first one made.
        assert_eq!(
            conds.entries(),
            &[
                json!({"header": "x-jwt-cond-1", "claim": ["groups"], "regex": "admin|ops.*"}),
                json!({"header": "x-jwt-cond-2", "principal": true, "regex": "https://idp/.*|iss/alice"}),
                json!({"header": "x-jwt-cond-3", "principal": true, "present": true}),
            ]
        );
    }

    #[test]
    fn auth_keys_become_claim_conditions_shared_across_policies() {
        let one = spec(
            "  action: DENY\n  rules:\n  - when:\n    - {key: request.auth.principal, values: ['*@corp']}\n    - {key: request.auth.audiences, notValues: [api]}\n    - {key: request.auth.presenter, values: [web]}\n    - {key: 'request.auth.claims[realm_access][roles]', values: ['*']}\n    - {key: 'request.auth.claims[a.b]', values: [x]}",
        );
        let two =
            spec("  rules:\n  - when: [{key: request.auth.audiences, values: [api]}]").replace("name: p", "name: q");
        let (out, conds) = filters(&[&one, &two]);
        let tests = &rbac(&out, "DENY", "ns.p[rule-0]")["permissions"][0]["and_rules"]["rules"];
        let is_true = |h: &str| json!({"header": {"name": h, "string_match": {"exact": "true"}}});
        assert_eq!(
            tests,
            &json!([
                is_true("x-jwt-cond-1"),
                {"not_rule": is_true("x-jwt-cond-2")},
                is_true("x-jwt-cond-3"),
                is_true("x-jwt-cond-4"),
                is_true("x-jwt-cond-5"),
            ])
        );
        // The same (subject, values) in another policy shares the header.
        assert_eq!(rbac(&out, "ALLOW", "ns.q[rule-0]")["permissions"][0], is_true("x-jwt-cond-2"));
        assert_eq!(
            conds.entries(),
            &[
                json!({"header": "x-jwt-cond-1", "principal": true, "suffix": "@corp"}),
                json!({"header": "x-jwt-cond-2", "claim": ["aud"], "exact": "api"}),
                json!({"header": "x-jwt-cond-3", "claim": ["azp"], "exact": "web"}),
                json!({"header": "x-jwt-cond-4", "claim": ["realm_access", "roles"], "present": true}),
                json!({"header": "x-jwt-cond-5", "claim": ["a.b"], "exact": "x"}),
            ]
        );
    }

    #[test]
    fn istio_star_forms() {
        assert_eq!(istio_value("*"), Match::Present);
        assert_eq!(istio_value("*a*"), Match::Suffix("a*".into()));
        assert_eq!(istio_value("a*"), Match::Prefix("a".into()));
        assert_eq!(istio_value("a*b"), Match::Exact("a*b".into()));
    }

    #[test]
    fn refusals_name_the_field_and_reason() {
        let cases = [
            ("  action: AUDIT\n  rules: [{}]", "spec.action: AUDIT is not supported"),
            ("  action: CUSTOM\n  rules: [{}]", "spec.action: CUSTOM is not supported"),
            ("  action: allow", "spec.action: \"allow\" is not one of ALLOW, DENY, AUDIT, CUSTOM"),
            ("  action: CUSTOM\n  provider: {name: ext}", "spec.provider: is not supported: it names the external authorizer"),
            ("  action: DENY", "spec.rules: a DENY policy without rules never matches"),
            ("  rule: []", "spec.rule: is not a field the compiler knows"),
            ("  rules: [{from: []}]", "spec.rules[0].from: must not be empty"),
            ("  rules: [{to: []}]", "spec.rules[0].to: must not be empty"),
            ("  rules: [{from: [{}]}]", "spec.rules[0].from[0].source: is required"),
            ("  rules: [{from: [{source: {}}]}]", "spec.rules[0].from[0].source: must not be empty"),
            ("  rules: [{to: [{operation: {}}]}]", "spec.rules[0].to[0].operation: must not be empty"),
            ("  rules: [{from: [{source: {principals: [a]}}]}]", "spec.rules[0].from[0].source.principals: is not supported: it matches the peer's mTLS identity"),
            ("  rules: [{from: [{source: {notNamespaces: [a]}}]}]", "spec.rules[0].from[0].source.notNamespaces: is not supported: it matches the peer's mTLS"),
            ("  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]", "spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\" is not an IP address or CIDR range"),
            ("  rules: [{from: [{source: {notRemoteIpBlocks: [host]}}]}]", "spec.rules[0].from[0].source.notRemoteIpBlocks[0]: \"host\" is not an IP"),
            ("  rules: [{from: [{source: {requestPrincipals: ['']}}]}]", "spec.rules[0].from[0].source.requestPrincipals[0]: must not be empty"),
            ("  rules: [{to: [{operation: {ports: ['70000']}}]}]", "spec.rules[0].to[0].operation.ports[0]: \"70000\" is not a port"),
            ("  rules: [{to: [{operation: {ports: [80]}}]}]", "spec.rules[0].to[0].operation.ports[0]: must be a string"),
            ("  rules: [{to: [{operation: {paths: ['/a/{*}']}}]}]", "spec.rules[0].to[0].operation.paths[0]: \"/a/{*}\": path templates"),
            ("  rules: [{to: [{operation: {verbs: [GET]}}]}]", "spec.rules[0].to[0].operation.verbs: is not a field the compiler knows"),
            ("  rules: [{when: [{key: request.auth.principal}]}]", "spec.rules[0].when[0]: key \"request.auth.principal\": at least one of values or notValues must be set"),
            ("  rules: [{when: [{values: [a]}]}]", "spec.rules[0].when[0].key: is required"),
            ("  rules: [{when: [{key: request.auth.claims.groups, values: [a]}]}]", "spec.rules[0].when[0].key: \"request.auth.claims.groups\" must be request.auth.claims[<claim>]"),
            ("  rules: [{when: [{key: 'request.auth.claims[a', values: [a]}]}]", "spec.rules[0].when[0].key: \"request.auth.claims[a\": "),
            ("  rules: [{when: [{key: 'request.headers[]', values: [a]}]}]", "spec.rules[0].when[0].key: \"request.headers[]\" must be request.headers[<name>]"),
            ("  rules: [{when: [{key: source.namespace, values: [a]}]}]", "spec.rules[0].when[0].key: \"source.namespace\" is not supported: it matches the peer's mTLS"),
            ("  rules: [{when: [{key: connection.sni, values: [a]}]}]", "spec.rules[0].when[0].key: \"connection.sni\" is not a key the compiler supports"),
            ("  rules: [{when: [{key: destination.port, values: [http]}]}]", "spec.rules[0].when[0].values[0]: \"http\" is not a port"),
            ("  rules: [{when: [{key: remote.ip, notValues: ['1.2.3.4/']}]}]", "spec.rules[0].when[0].notValues[0]: \"1.2.3.4/\" is not an IP"),
            ("  rules: [{when: [{key: request.auth.presenter, values: [a, '']}]}]", "spec.rules[0].when[0].values[1]: must not be empty"),
            ("  rules: [{when: [{key: 'request.headers[X_JWT_Cond-7]', values: ['true']}]}]", "spec.rules[0].when[0].key: \"request.headers[X_JWT_Cond-7]\" tests a condition header that no condition of the filter defines"),
        ];
        for (body, expected) in cases {
            let got = refusal(&spec(body));
            assert!(got.starts_with(&format!("AuthorizationPolicy ns/p: {expected}")), "{body}\n  gave {got}");
        }
    }

    #[test]
    fn for_istio_rewrites_request_auth_only() {
        let p = policy(&spec(
            "  selector: {matchLabels: {istio: ingressgateway}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {requestPrincipals: ['iss/*']}\n    to: [{operation: {paths: [/a]}}]\n    when:\n    - {key: 'request.auth.claims[groups]', values: [g1], notValues: [banned]}\n    - {key: 'request.headers[x-a]', values: [b]}\n  - from:\n    - source: {notRequestPrincipals: ['*'], ipBlocks: [10.0.0.0/8]}\n  - to: [{operation: {methods: [GET]}}]",
        ));
        let mut conds = Conditions::default();
        let out = for_istio(&p, &mut conds).unwrap();
        let expected: Value = serde_yaml_ng::from_str(&spec(
            "  selector: {matchLabels: {istio: ingressgateway}}\n  action: ALLOW\n  rules:\n  - to: [{operation: {paths: [/a]}}]\n    when:\n    - {key: 'request.headers[x-jwt-cond-1]', values: ['true']}\n    - {key: 'request.headers[x-jwt-cond-2]', notValues: ['true']}\n    - {key: 'request.headers[x-a]', values: [b]}\n    - {key: 'request.headers[x-jwt-cond-3]', values: ['true']}\n  - from:\n    - source: {ipBlocks: [10.0.0.0/8]}\n    when:\n    - {key: 'request.headers[x-jwt-cond-4]', notValues: ['true']}\n  - to: [{operation: {methods: [GET]}}]",
        ))
        .unwrap();
        assert_eq!(out, expected);
        assert_eq!(conds.entries()[2], json!({"header": "x-jwt-cond-3", "principal": true, "prefix": "iss/"}));
        assert_eq!(conds.entries()[3], json!({"header": "x-jwt-cond-4", "principal": true, "present": true}));
        // A policy without request.auth passes through unchanged.
        let plain = policy(&spec("  action: DENY\n  rules: [{to: [{operation: {paths: ['/admin*']}}]}]"));
        assert_eq!(for_istio(&plain, &mut conds).unwrap(), plain.document);
    }

    #[test]
    fn for_istio_splits_sources_so_principals_stay_alternatives() {
        let p = policy(&spec(
            "  rules:\n  - from:\n    - source: {requestPrincipals: [iss/a]}\n    - source: {remoteIpBlocks: [10.0.0.1]}\n    to: [{operation: {methods: [GET]}}]",
        ));
        let mut conds = Conditions::default();
        let out = for_istio(&p, &mut conds).unwrap();
        assert_eq!(
            out["spec"]["rules"],
            json!([
                {"to": [{"operation": {"methods": ["GET"]}}],
                 "when": [{"key": "request.headers[x-jwt-cond-1]", "values": ["true"]}]},
                {"from": [{"source": {"remoteIpBlocks": ["10.0.0.1"]}}], "to": [{"operation": {"methods": ["GET"]}}]},
            ])
        );
        // Compiled again (as the Istio output is), it is the same RBAC as the original: the
        // principal rule tests the same header, as a request header.
        let again = Resource { document: out, ..p.clone() };
        let f = rbac_filters(&[&again], &mut conds).unwrap();
        let rule0 = &f[0]["typed_config"]["rules"]["policies"]["ns.p[rule-0]"];
        assert_eq!(
            rule0["permissions"][0]["and_rules"]["rules"][1],
            json!({"header": {"name": "x-jwt-cond-1", "string_match": {"exact": "true"}}})
        );
        let direct = rbac_filters(&[&p], &mut conds).unwrap();
        assert_eq!(
            direct[0]["typed_config"]["rules"]["policies"]["ns.p[rule-0]"]["principals"][0],
            json!({"header": {"name": "x-jwt-cond-1", "string_match": {"exact": "true"}}})
        );
        assert_eq!(conds.entries().len(), 1);
    }
}

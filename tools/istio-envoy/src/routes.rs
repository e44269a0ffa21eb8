//! VirtualService `http` routes → Envoy routes, in order: one Envoy route per `match`, as
//! Istio's `TranslateRoute` does, so the first matching entry wins.

use serde_json::{json, Map, Value};

use crate::conditions::{claim_key, Conditions, Match, Subject};
use crate::model::{Obj, Result};
use crate::upstreams::Upstreams;

/// What a route is translated for: the listener's port and gateway, which `match.port` and
/// `match.gateways` select on.
pub struct Scope<'a> {
    pub port: u16,
    /// `namespace/name` of the gateway the listener serves.
    pub gateways: &'a [String],
    /// Whether tokens are validated at all. Without, no request has claims: a claim match
    /// never holds and a claim in withoutHeaders always does, as in Istio.
    pub claims: bool,
}

const HTTP_ROUTE_FIELDS: &[&str] =
    &["name", "match", "route", "redirect", "directResponse", "rewrite", "timeout", "retries", "headers"];
const HTTP_ROUTE_UNSUPPORTED: &[(&str, &str)] = &[
    ("delegate", "delegated VirtualServices are not implemented"),
    ("fault", "fault injection is not implemented"),
    ("mirror", "traffic mirroring is not implemented"),
    ("mirrors", "traffic mirroring is not implemented"),
    ("mirrorPercentage", "traffic mirroring is not implemented"),
    ("mirrorPercent", "traffic mirroring is not implemented"),
    ("corsPolicy", "CORS policies are not implemented"),
];
const MATCH_FIELDS: &[&str] = &[
    "name", "uri", "scheme", "method", "authority", "headers", "withoutHeaders", "queryParams", "ignoreUriCase",
    "port", "gateways", "statPrefix",
];
const MATCH_UNSUPPORTED: &[(&str, &str)] = &[
    ("sourceLabels", "it selects mesh workloads, which a gateway does not route for"),
    ("sourceNamespace", "it selects mesh workloads, which a gateway does not route for"),
];

/// The Envoy routes of one `http[]` entry (none when its matches all select other ports or
/// gateways).
pub fn http_route(route: &Obj, scope: &Scope, ups: &mut Upstreams, conds: &mut Conditions) -> Result<Vec<Value>> {
    route.fields(HTTP_ROUTE_FIELDS, HTTP_ROUTE_UNSUPPORTED)?;
    let action = action(route, ups)?;
    let name = route.str("name")?;
    let matches = route.objs("match")?;
    let mut out = Vec::new();
    let mut envoy_matches = Vec::new();
    if matches.is_empty() {
        envoy_matches.push(json!({"prefix": "/"}));
    }
    for m in &matches {
        if let Some(em) = route_match(m, scope, conds)? {
            envoy_matches.push(em);
        }
    }
    for em in envoy_matches {
        let mut r = Map::new();
        if let Some(name) = name {
            r.insert("name".into(), json!(name));
        }
        r.insert("match".into(), em);
        r.extend(action.clone());
        out.push(Value::Object(r));
    }
    Ok(out)
}

/// Istio's `StringMatch`: exactly one of exact, prefix, regex.
pub fn string_match(o: &Obj) -> Result<Match> {
    o.fields(&["exact", "prefix", "regex"], &[])?;
    let given: Vec<(&str, &str)> =
        ["exact", "prefix", "regex"].iter().filter_map(|k| o.map.get(*k).and_then(Value::as_str).map(|v| (*k, v))).collect();
    if o.map.len() != given.len() {
        return Err(o.refuse("", "exact, prefix and regex must be strings"));
    }
    match given.as_slice() {
        [("exact", v)] => Ok(Match::Exact(v.to_string())),
        [("prefix", v)] => Ok(Match::Prefix(v.to_string())),
        [("regex", v)] => {
            regex_lite::Regex::new(v).map_err(|e| o.refuse("regex", format!("is not a valid RE2 regex: {e}")))?;
            Ok(Match::Regex(v.to_string()))
        }
        [] => Ok(Match::Present),
        _ => Err(o.refuse("", "give one of exact, prefix and regex")),
    }
}

fn envoy_string_match(m: &Match, ignore_case: bool) -> Value {
    let mut v = match m {
        Match::Exact(s) => json!({"exact": s}),
        Match::Prefix(s) => json!({"prefix": s}),
        Match::Suffix(s) => json!({"suffix": s}),
        Match::Regex(r) => json!({"safe_regex": {"regex": r}}),
        Match::Present => json!({"safe_regex": {"regex": ".*"}}),
    };
    if ignore_case && !matches!(m, Match::Regex(_)) {
        v["ignore_case"] = json!(true);
    }
    v
}

/// A header matcher; `Present` tests presence. `without` inverts it, an absent header
/// counting as not matching (Istio's withoutHeaders), hence treat_missing_header_as_empty.
fn header_matcher(name: &str, m: &Match, without: bool) -> Value {
    let mut h = match m {
        Match::Present => json!({"name": name, "present_match": true}),
        _ => json!({"name": name, "string_match": envoy_string_match(m, false)}),
    };
    if without {
        h["invert_match"] = json!(true);
        if !matches!(m, Match::Present) {
            h["treat_missing_header_as_empty"] = json!(true);
        }
    }
    h
}

/// One `match` entry; `None` when it selects another port or gateway.
fn route_match(m: &Obj, scope: &Scope, conds: &mut Conditions) -> Result<Option<Value>> {
    m.fields(MATCH_FIELDS, MATCH_UNSUPPORTED)?;
    if let Some(port) = m.u32("port")? {
        if port != u32::from(scope.port) {
            return Ok(None);
        }
    }
    let gateways = m.strs("gateways")?;
    if !gateways.is_empty() && !gateways.iter().any(|g| scope.gateways.iter().any(|s| gateway_ref_is(g, &m.res.namespace, s))) {
        return Ok(None);
    }
    let ignore_case = m.bool("ignoreUriCase")?.unwrap_or(false);
    let mut em = Map::new();
    match m.obj("uri")? {
        None => {
            em.insert("prefix".into(), json!("/"));
        }
        Some(uri) => match string_match(&uri)? {
            Match::Exact(p) => {
                em.insert("path".into(), json!(p));
            }
            Match::Prefix(p) => {
                em.insert("prefix".into(), json!(p));
            }
            Match::Regex(r) => {
                em.insert("safe_regex".into(), json!({"regex": r}));
            }
            _ => {
                em.insert("prefix".into(), json!("/"));
            }
        },
    }
    if ignore_case {
        em.insert("case_sensitive".into(), json!(false));
    }
    let mut headers = Vec::new();
    for (field, pseudo) in [("scheme", ":scheme"), ("method", ":method"), ("authority", ":authority")] {
        if let Some(o) = m.obj(field)? {
            headers.push(header_matcher(pseudo, &string_match(&o)?, false));
        }
    }
    for (field, without) in [("headers", false), ("withoutHeaders", true)] {
        let Some(hs) = m.obj(field)? else { continue };
        for (name, value) in hs.map {
            let at = hs.path(name);
            let sm = string_match(&Obj::of(m.res, value, at.clone())?)?;
            match claim_key(name).map_err(|reason| m.res.refuse(&at, reason))? {
                Some(_) if !scope.claims => {
                    m.res.warn(&at, "no RequestAuthentication validates tokens, so no request has claims: as in Istio, this match never holds in headers and always holds in withoutHeaders");
                    if without {
                        continue;
                    }
                    return Ok(None);
                }
                Some((keys, legacy)) => {
                    if legacy {
                        m.res.warn(&at, "x-jwt-claim is the task's older spelling; current Istio spells it \"@request.auth.claims.<claim>\"");
                    }
                    if sm == Match::Present {
                        return Err(m.res.refuse(&at, "a claim match needs exact, prefix or regex"));
                    }
                    let header = conds.header_for(&Subject::Claim(keys), &[sm]);
                    let verdict = if without { "false" } else { "true" };
                    headers.push(json!({"name": header, "string_match": {"exact": verdict}}));
                }
                None => headers.push(header_matcher(&name.to_ascii_lowercase(), &sm, without)),
            }
        }
    }
    if !headers.is_empty() {
        em.insert("headers".into(), Value::Array(headers));
    }
    if let Some(qs) = m.obj("queryParams")? {
        let mut params = Vec::new();
        for (name, value) in qs.map {
            let sm = string_match(&Obj::of(m.res, value, qs.path(name))?)?;
            params.push(match sm {
                Match::Present => json!({"name": name, "present_match": true}),
                _ => json!({"name": name, "string_match": envoy_string_match(&sm, false)}),
            });
        }
        em.insert("query_parameters".into(), Value::Array(params));
    }
    Ok(Some(Value::Object(em)))
}

/// Whether a VirtualService's gateway reference (`name` or `namespace/name`, in namespace
/// `ns`) names the gateway `full` (`namespace/name`).
pub fn gateway_ref_is(reference: &str, ns: &str, full: &str) -> bool {
    match reference.split_once('/') {
        Some(_) => reference == full,
        None => format!("{ns}/{reference}") == full,
    }
}

/// The route's action (route, redirect or direct response) and its header operations.
fn action(route: &Obj, ups: &mut Upstreams) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    let given: Vec<&str> = ["route", "redirect", "directResponse"].into_iter().filter(|k| route.get(k).is_some()).collect();
    match given.as_slice() {
        ["route"] => {
            out.insert("route".into(), forward(route, ups)?);
        }
        ["redirect"] => {
            out.insert("redirect".into(), redirect(&route.obj("redirect")?.ok_or_else(|| route.refuse("redirect", "is empty"))?)?);
            forbid_with(route, "redirect")?;
        }
        ["directResponse"] => {
            let d = route.obj("directResponse")?.ok_or_else(|| route.refuse("directResponse", "is empty"))?;
            d.fields(&["status", "body"], &[])?;
            let status = d.u32("status")?.ok_or_else(|| d.refuse("status", "is required"))?;
            let mut dr = json!({"status": status});
            if let Some(body) = d.obj("body")? {
                body.fields(&["string", "bytes"], &[])?;
                if let Some(s) = body.str("string")? {
                    dr["body"] = json!({"inline_string": s});
                } else if let Some(b) = body.str("bytes")? {
                    dr["body"] = json!({"inline_bytes": b});
                }
            }
            out.insert("direct_response".into(), dr);
            forbid_with(route, "directResponse")?;
        }
        [] => return Err(route.refuse("route", "an http route needs route, redirect or directResponse")),
        _ => return Err(route.refuse(given[1], format!("cannot be given with {}", given[0]))),
    }
    if let Some(h) = route.obj("headers")? {
        header_operations(&h, &mut out)?;
    }
    Ok(out)
}

/// Fields that only make sense when the route forwards.
fn forbid_with(route: &Obj, what: &str) -> Result<()> {
    for field in ["rewrite", "timeout", "retries"] {
        if route.get(field).is_some() {
            return Err(route.refuse(field, format!("has no effect with {what}")));
        }
    }
    Ok(())
}

fn forward(route: &Obj, ups: &mut Upstreams) -> Result<Value> {
    let dests = route.objs("route")?;
    let mut clusters = Vec::new();
    for d in &dests {
        d.fields(&["destination", "weight", "headers"], &[])?;
        let dest = d.obj("destination")?.ok_or_else(|| d.refuse("destination", "is required"))?;
        dest.fields(&["host", "port"], &[("subset", "subsets need a DestinationRule's pod labels")])?;
        let host = dest.req_str("host")?;
        let port = match dest.obj("port")? {
            Some(p) => {
                p.fields(&["number"], &[])?;
                let n = p.u32("number")?.ok_or_else(|| p.refuse("number", "is required"))?;
                Some(u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| p.refuse("number", "must be a port from 1 to 65535"))?)
            }
            None => None,
        };
        let name = ups.destination(host, port, &dest)?;
        let mut c = json!({"name": name, "weight": d.u32("weight")?.unwrap_or(if dests.len() == 1 { 100 } else { 0 })});
        if let Some(h) = d.obj("headers")? {
            let mut ops = Map::new();
            header_operations(&h, &mut ops)?;
            if let Some(m) = c.as_object_mut() {
                m.extend(ops);
            }
        }
        clusters.push(c);
    }
    let mut action = match clusters.as_slice() {
        [] => return Err(route.refuse("route", "needs at least one destination")),
        [one] if one.as_object().is_some_and(|m| m.len() == 2) => json!({"cluster": one["name"]}),
        _ => {
            if clusters.iter().all(|c| c["weight"] == 0) {
                return Err(route.refuse("route", "several destinations need weights"));
            }
            json!({"weighted_clusters": {"clusters": clusters}})
        }
    };
    // Istio: no route timeout unless one is set, and its default retry policy.
    action["timeout"] = json!(route.str("timeout")?.map(|t| duration(route, "timeout", t)).transpose()?.unwrap_or("0s".into()));
    match route.obj("retries")? {
        None => action["retry_policy"] = default_retries(),
        Some(r) => {
            r.fields(&["attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities"], &[])?;
            let attempts = r.u32("attempts")?.unwrap_or(2);
            if attempts > 0 {
                let mut policy = default_retries();
                policy["num_retries"] = json!(attempts);
                if let Some(on) = r.str("retryOn")? {
                    policy["retry_on"] = json!(on);
                }
                if let Some(t) = r.str("perTryTimeout")? {
                    policy["per_try_timeout"] = json!(duration(&r, "perTryTimeout", t)?);
                }
                action["retry_policy"] = policy;
            }
        }
    }
    if let Some(rw) = route.obj("rewrite")? {
        rw.fields(&["uri", "authority", "uriRegexRewrite"], &[])?;
        if let Some(uri) = rw.str("uri")? {
            action["prefix_rewrite"] = json!(uri);
        }
        if let Some(authority) = rw.str("authority")? {
            action["host_rewrite_literal"] = json!(authority);
        }
        if let Some(re) = rw.obj("uriRegexRewrite")? {
            re.fields(&["match", "rewrite"], &[])?;
            action["regex_rewrite"] = json!({"pattern": {"regex": re.req_str("match")?}, "substitution": re.req_str("rewrite")?});
        }
    }
    Ok(action)
}

fn default_retries() -> Value {
    json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retriable_status_codes": [503],
    })
}

/// A protobuf duration as Istio writes it (`5s`, `1.5s`, `100ms`, `2m`, `1h`) in seconds.
fn duration(o: &Obj, field: &str, text: &str) -> Result<String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().map_err(|_| o.refuse(field, format!("{text:?} is not a duration such as 5s or 100ms")))?;
    let seconds = match unit {
        "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(o.refuse(field, format!("{text:?} is not a duration such as 5s or 100ms"))),
    };
    Ok(format!("{seconds}s"))
}

fn redirect(r: &Obj) -> Result<Value> {
    r.fields(&["uri", "authority", "port", "scheme", "redirectCode"], &[("derivePort", "deriving the port is not implemented")])?;
    let mut out = Map::new();
    if let Some(uri) = r.str("uri")? {
        out.insert("path_redirect".into(), json!(uri));
    }
    if let Some(a) = r.str("authority")? {
        out.insert("host_redirect".into(), json!(a));
    }
    if let Some(p) = r.u32("port")? {
        out.insert("port_redirect".into(), json!(p));
    }
    if let Some(s) = r.str("scheme")? {
        out.insert("scheme_redirect".into(), json!(s));
    }
    let code = match r.u32("redirectCode")?.unwrap_or(301) {
        301 => "MOVED_PERMANENTLY",
        302 => "FOUND",
        303 => "SEE_OTHER",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        other => return Err(r.refuse("redirectCode", format!("{other} is not a redirect Envoy can send (301, 302, 303, 307, 308)"))),
    };
    out.insert("response_code".into(), json!(code));
    Ok(Value::Object(out))
}

/// `headers: {request|response: {set, add, remove}}` into Envoy's header operations.
fn header_operations(h: &Obj, out: &mut Map<String, Value>) -> Result<()> {
    h.fields(&["request", "response"], &[])?;
    for (side, add_key, remove_key) in
        [("request", "request_headers_to_add", "request_headers_to_remove"), ("response", "response_headers_to_add", "response_headers_to_remove")]
    {
        let Some(ops) = h.obj(side)? else { continue };
        ops.fields(&["set", "add", "remove"], &[])?;
        let mut adds = Vec::new();
        for (op, append) in [("set", "OVERWRITE_IF_EXISTS_OR_ADD"), ("add", "APPEND_IF_EXISTS_OR_ADD")] {
            if let Some(kv) = ops.obj(op)? {
                for (k, v) in kv.map {
                    let v = v.as_str().ok_or_else(|| kv.refuse(k, "must be a string"))?;
                    adds.push(json!({"header": {"key": k, "value": v}, "append_action": append}));
                }
            }
        }
        if !adds.is_empty() {
            out.insert(add_key.into(), Value::Array(adds));
        }
        let removes = ops.strs("remove")?;
        if !removes.is_empty() {
            out.insert(remove_key.into(), json!(removes));
        }
    }
    Ok(())
}

//! A remote rule's fetches: taking the shared record's lease, dispatching the JWKS (or first
//! the OpenID discovery document) from the root context, reading the answer, and recording
//! success or failure in the shared record.

use crate::authn::KeyWait;
use crate::config::{HttpUri, KeySource, RemoteJwks};
use crate::headermap::text;
use crate::host::Host;
use crate::jwks::KeySet;

use super::{Plugin, WAITING_TICK};

/// A JWKS or discovery document larger than this is a failed fetch, not something to parse.
const MAX_FETCH_BODY_BYTES: usize = 256 * 1024;

/// A dispatched fetch: for which rule, through which cluster, and whether it asks for the
/// discovery document.
pub(super) struct Fetch {
    rule: usize,
    cluster: String,
    discovery: bool,
    /// The shared record's lease this fetch holds (see [`Plugin::abandon_fetches`]).
    lease_until_ms: u64,
}

/// Why a fetch is being started.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum FetchReason {
    /// First keys, scheduled refresh, or retry: only when the record says one is due.
    Due,
    /// A token named a `kid` the set lacks: throttled by `jwksMinRefetchInterval`.
    UnknownKid,
}

impl<H: Host> Plugin<H> {
    pub(super) fn start_fetch_for(&mut self, wait: KeyWait, now_ms: u64) {
        match wait {
            KeyWait::FirstKeys(rule) => self.start_fetch(rule, FetchReason::Due, now_ms),
            KeyWait::UnknownKid(rule) => self.start_fetch(rule, FetchReason::UnknownKid, now_ms),
        }
    }

    /// Takes the rule's fetch lease if `reason` allows it now, and dispatches the fetch.
    /// Whoever holds the lease fetches; every other worker waits for the record to change.
    pub(super) fn start_fetch(&mut self, rule: usize, reason: FetchReason, now_ms: u64) {
        let Some(remote) = self.remote_mut(rule) else { return };
        let policy = remote.policy;
        let leased = remote.update(|record| match reason {
            FetchReason::Due => record.fetch_due(now_ms) && record.begin_fetch(now_ms, &policy),
            FetchReason::UnknownKid => record.begin_unknown_kid_refetch(now_ms, &policy),
        });
        if !leased {
            return;
        }
        if reason == FetchReason::UnknownKid {
            self.metrics.bump(self.metrics.unknown_kid_refetch);
            log::info!("jwks: rule {rule}: a token names an unknown kid, refetching");
        }
        self.dispatch(rule, now_ms);
    }

    /// Dispatches the next request of a rule's fetch: the JWKS, or first the discovery document.
    pub(super) fn dispatch(&mut self, rule_index: usize, now_ms: u64) {
        if self.current_context != self.root_context {
            if !self.dispatch_at_tick.contains(&rule_index) {
                self.dispatch_at_tick.push(rule_index);
            }
            self.set_tick_period(WAITING_TICK);
            return;
        }
        let Some(rule) = self.config.rules.get(rule_index) else { return };
        let KeySource::Remote(remote) = &rule.keys else { return };
        let (uri, cluster, discovery) = match (remote.discovery, self.discovered.get(rule_index).cloned().flatten()) {
            (true, Some(jwks_uri)) => {
                let cluster = jwks_cluster_for(remote, &jwks_uri);
                (jwks_uri, cluster, false)
            }
            (true, None) => (remote.uri.clone(), remote.cluster.clone(), true),
            (false, _) => (remote.uri.clone(), remote.cluster.clone(), false),
        };
        let headers = vec![
            (":method", "GET"),
            (":path", uri.path.as_str()),
            (":authority", uri.authority.as_str()),
            (":scheme", uri.scheme.as_str()),
            ("accept", "application/json"),
        ];
        match self.host.dispatch_http_call(&cluster, &headers, rule.timeout) {
            Ok(token) => {
                log::debug!("jwks: fetching {}://{}{} via cluster {cluster}", uri.scheme, uri.authority, uri.path);
                let lease_until_ms = self.remote(rule_index).and_then(|r| r.record.lease(now_ms)).unwrap_or(now_ms);
                self.fetches.insert(token, Fetch { rule: rule_index, cluster, discovery, lease_until_ms });
            }
            Err(status) => {
                log::warn!("jwks: cannot dispatch to cluster {cluster:?} ({status:?}); is the cluster defined?");
                self.fetch_failed(rule_index, now_ms);
            }
        }
    }

    /// This configuration is gone, and the host cancelled the fetches it had in flight: their
    /// leases end now, so that the configuration replacing it fetches at once.
    pub fn abandon_fetches(&mut self) {
        let now_ms = self.clock.read();
        for fetch in std::mem::take(&mut self.fetches).into_values() {
            if let Some(remote) = self.remote_mut(fetch.rule) {
                if remote.update(|record| record.abandon_fetch(fetch.lease_until_ms, now_ms)) {
                    log::info!("jwks: rule {}: the fetch of a replaced configuration is abandoned", fetch.rule);
                }
            }
        }
    }

    fn fetch_failed(&mut self, rule: usize, now_ms: u64) {
        self.metrics.bump(self.metrics.fetch_failure);
        if let Some(remote) = self.remote_mut(rule) {
            let policy = remote.policy;
            remote.update(|record| {
                record.fetch_failed(now_ms, &policy);
                true
            });
            log::info!("jwks: rule {rule} will retry in {:?}", remote.record.retry_delay(&policy));
        }
    }

    /// A dispatched call answered, or failed: then the host has no response for it (no
    /// headers; reading them is an error, whatever stage the call failed at). A token that is
    /// not one of this plugin's is ignored. The paused requests are then decided again.
    pub fn on_fetch_response(&mut self, root: u32, token: u32, num_headers: usize, body_size: usize) {
        self.current_context = root;
        let now_ms = self.clock.read();
        if self.take_fetch_response(token, num_headers, body_size, now_ms) {
            self.wake_waiting(now_ms, root);
        }
    }

    /// [`Plugin::on_fetch_response`]: `false` for a token that is not one of this plugin's.
    fn take_fetch_response(&mut self, token: u32, num_headers: usize, body_size: usize, now_ms: u64) -> bool {
        let Some(fetch) = self.fetches.remove(&token) else { return false };
        let outcome = match fetched_body(&self.host, num_headers, body_size) {
            Err(why) => Err(why),
            Ok(body) if fetch.discovery => self.take_discovery(fetch.rule, &body).map(|()| None),
            Ok(body) => match (KeySet::parse(&body, false), String::from_utf8(body)) {
                (Ok(keys), Ok(text)) => Ok(Some((keys, text))),
                (Err(e), _) => Err(e.to_string()),
                (_, Err(_)) => Err("the JWKS is not UTF-8".to_string()),
            },
        };
        match outcome {
            Ok(Some((keys, text))) => {
                self.metrics.bump(self.metrics.fetch_success);
                if let Some(summary) = keys.skipped_summary() {
                    log::warn!("jwks: rule {}: {summary}", fetch.rule);
                }
                log::info!("jwks: rule {} loaded {} keys", fetch.rule, keys.usable_jwks());
                if let Some(remote) = self.remote_mut(fetch.rule) {
                    let policy = remote.policy;
                    remote.update(|record| {
                        record.fetch_succeeded(text.clone(), now_ms, &policy);
                        true
                    });
                }
            }
            // Discovery answered: now fetch the JWKS it names (the lease is still ours).
            Ok(None) => self.dispatch(fetch.rule, now_ms),
            Err(why) => {
                log::warn!("jwks: rule {}: fetch via cluster {} failed: {why}", fetch.rule, fetch.cluster);
                self.fetch_failed(fetch.rule, now_ms);
            }
        }
        true
    }

    /// Reads `jwks_uri` from an OpenID discovery document.
    fn take_discovery(&mut self, rule: usize, body: &[u8]) -> Result<(), String> {
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "discovery document is not JSON".to_string())?;
        let uri = doc.get("jwks_uri").and_then(|v| v.as_str()).ok_or("discovery document has no jwks_uri")?;
        let uri = HttpUri::parse(uri).map_err(|e| format!("discovery jwks_uri: {e}"))?;
        if let Some(slot) = self.discovered.get_mut(rule) {
            *slot = Some(uri);
        }
        Ok(())
    }

}

/// The body of a fetch's response if it is a 200 the filter may read, else why not.
fn fetched_body(host: &impl Host, num_headers: usize, body_size: usize) -> Result<Vec<u8>, String> {
    const NO_RESPONSE: &str = "no response (connection refused or reset, TLS handshake failed, or timed out)";
    if num_headers == 0 {
        return Err(NO_RESPONSE.to_string());
    }
    let status = match host.call_response_header(":status") {
        Ok(Some(status)) => status,
        Ok(None) => return Err("a response without :status".to_string()),
        Err(_) => return Err(NO_RESPONSE.to_string()),
    };
    if status != b"200" {
        return Err(match envoy_connect_failure(host, &status, body_size) {
            Some(reason) => format!("no response ({reason}; check the cluster's address and TLS settings)"),
            None => format!("HTTP status {}", text(&status)),
        });
    }
    if body_size > MAX_FETCH_BODY_BYTES {
        return Err(format!("body of {body_size} bytes exceeds {MAX_FETCH_BODY_BYTES}"));
    }
    match host.call_response_body(body_size) {
        Ok(Some(body)) if !body.is_empty() => Ok(body),
        Ok(_) => Err("empty body".to_string()),
        Err(status) => Err(format!("the body cannot be read ({status})")),
    }
}

/// Envoy's own reason when the fetch never reached the server: the router answers a
/// connection or TLS failure with a local 503 whose body starts like this.
fn envoy_connect_failure(host: &impl Host, status: &[u8], body_size: usize) -> Option<String> {
    const ENVOY_REPLY: &str = "upstream connect error or disconnect/reset before headers";
    if status != b"503" {
        return None;
    }
    let body = host.call_response_body(body_size.min(512)).ok().flatten()?;
    let body = text(&body);
    body.starts_with(ENVOY_REPLY).then(|| body.chars().filter(|c| !c.is_control()).collect())
}

/// The cluster for a discovered `jwks_uri`: the configured one when the JWKS lives on the
/// discovery host, else Istio's outbound cluster name for the JWKS host.
fn jwks_cluster_for(remote: &RemoteJwks, jwks_uri: &HttpUri) -> String {
    if jwks_uri.host == remote.uri.host && jwks_uri.port == remote.uri.port {
        remote.cluster.clone()
    } else {
        jwks_uri.istio_cluster()
    }
}


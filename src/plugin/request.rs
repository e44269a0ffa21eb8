//! A request's headers: strip the headers the filter owns, find the tokens, decide, and
//! write the grant, answer the refusal, or pause the request until keys arrive.

use std::borrow::Cow;

use crate::conditions;
use crate::authn::{authenticate_looked_up, cached_alone, challenge, realm, Verdict};
use crate::model::Grant;
use crate::extract::{add_query_tokens, scan_headers, FoundToken, FoundTokens, HeaderScan};
use crate::headermap::{text, Pairs};
use crate::host::Host;
use crate::model::Rejection;

use super::{Flow, Plugin, WaitingRequest};

impl<H: Host> Plugin<H> {

    /// Applies a verdict to the effective context's request (a woken or refused one; a
    /// request allowed at once goes straight to [`Plugin::allow`]).
    pub(super) fn apply(&self, verdict: Verdict, realm: &str) -> Flow {
        match verdict {
            Verdict::PassWithoutToken => self.pass_without_token(),
            Verdict::Allow(grant) => self.allow(&grant),
            Verdict::Deny(rejection) => {
                self.deny(rejection, realm);
                Flow::Pause
            }
            // Only reached if a caller applies a wait; never leave a request hanging.
            Verdict::AwaitKeys(_) => {
                self.deny(Rejection::KeysUnavailable, realm);
                Flow::Pause
            }
        }
    }

    /// Writes a grant into the request, which goes on.
    fn allow(&self, grant: &Grant) -> Flow {
        for name in &grant.remove_headers {
            self.host.remove_request_header(name);
        }
        // Add, not replace: every header a grant writes is one the filter owns, removed
        // from the request on arrival, and adding spares Envoy a lookup.
        for (name, value) in &grant.set_headers {
            self.host.add_request_header(name, value);
        }
        if let Some(path) = &grant.new_path {
            self.host.replace_request_header(":path", path);
        }
        self.metrics.allowed();
        Flow::Continue
    }

    /// A request with no token goes on with no claims: every condition is false.
    fn pass_without_token(&self) -> Flow {
        for condition in &self.config.conditions {
            self.host.add_request_header(&condition.header, conditions::FALSE);
        }
        Flow::Continue
    }

    fn deny(&self, rejection: Rejection, realm: &str) {
        self.metrics.denied(rejection);
        log::debug!("request denied: {} ({})", rejection.reason(), rejection.status());
        let challenge = challenge(realm, rejection);
        let body = format!("{}\n", rejection.message());
        let headers = vec![("www-authenticate", challenge.as_str()), ("content-type", "text/plain")];
        self.host.send_response(rejection.status(), &headers, body.as_bytes());
    }

    /// The request path: strip owned headers, find tokens, decide, apply or pause.
    pub fn on_request(&mut self, context_id: u32) -> Flow {
        self.current_context = context_id;
        let buffer = self.host.request_header_pairs().unwrap_or_default();
        self.on_request_headers(context_id, &buffer)
    }

    /// [`Plugin::on_request`] on the serialized header map.
    fn on_request_headers(&mut self, context_id: u32, buffer: &[u8]) -> Flow {
        // Borrowed from the host's buffer: the SDK's readers copy every name and value (and
        // its string form panics on a value that is not UTF-8, which any client can send).
        // Checked as the one walk reads it, and acted on only if it read all of it: a buffer
        // that does not parse counts as no headers, never as some of them.
        let scanned = Pairs::unchecked(buffer).and_then(|headers| {
            let mut walk = headers.clone();
            let scan = scan_headers(&self.config, &mut walk);
            walk.is_complete().then_some((headers, scan))
        });
        let (headers, HeaderScan { owned, path, tokens: mut found }) = scanned.unwrap_or_else(unreadable_headers);
        // Before anything else: no client-supplied header the filter owns survives.
        for name in owned {
            // Owned names are ASCII; a name that is not UTF-8 is none of them.
            if let Ok(text) = std::str::from_utf8(name) {
                self.host.remove_request_header(text);
            }
        }
        #[cfg(feature = "test-panic")]
        #[allow(clippy::panic)]
        if path.starts_with(b"/__jcf_test_panic") {
            panic!("test-panic build: aborting the VM on request");
        }
        add_query_tokens(&self.config.locations, path, &mut found);
        if found.is_empty() && !self.config.require_token {
            return self.pass_without_token();
        }
        let recent_ms = self.clock.recent();
        // The common request: one token, cached with the grant it earns where it was presented
        // now. The grant is written at once, with no `Decision` in between (its code is fetched
        // again on every request, README "Performance"). A cached token without such a grant
        // is decided on that lookup; a token not cached goes through `resolve`.
        let looked_up = match &*found {
            [presented] => self.with_request(recent_ms, |request| match cached_alone(request, presented) {
                Ok(grant) => Ok(self.allow(grant)),
                Err(hit) => Err(hit.map(|hit| authenticate_looked_up(request, presented, path, hit))),
            }),
            _ => Err(None),
        };
        let decision = match looked_up {
            Ok(action) => return action,
            Err(Some(decision)) => decision,
            Err(None) => self.resolve(&found, path, recent_ms),
        };
        match decision.verdict {
            Verdict::Allow(grant) => self.allow(&grant),
            Verdict::PassWithoutToken => self.pass_without_token(),
            verdict => self.wait_or_deny(context_id, verdict, found, path, headers),
        }
    }

    /// [`Plugin::on_request_headers`] for a request that waits for keys or is denied, out of
    /// line like [`Plugin::resolve_further`].
    #[inline(never)]
    fn wait_or_deny(&mut self, context_id: u32, verdict: Verdict, found: FoundTokens<'_>, path: &[u8], headers: Pairs<'_>) -> Flow {
        // The realm of the challenge.
        let realm = || {
            let header = |name: &str| {
                headers.clone().find(|(n, _)| *n == name.as_bytes()).map_or(Cow::Borrowed(""), |(_, v)| text(v))
            };
            realm(&header(":scheme"), &header(":authority"), &text(path))
        };
        match verdict {
            Verdict::AwaitKeys(waits) => {
                let now_ms = self.clock.read();
                let wait_for = waits
                    .iter()
                    .filter_map(|w| self.config.rules.get(w.rule()))
                    .map(|r| r.timeout)
                    .max()
                    .unwrap_or_default();
                log::debug!("request {context_id} waits for keys");
                self.waiting.push(WaitingRequest {
                    context_id,
                    found: found.into_vec().into_iter().map(FoundToken::into_owned).collect(),
                    path: path.to_vec(),
                    realm: realm(),
                    deadline_ms: now_ms + u64::try_from(wait_for.as_millis()).unwrap_or(u64::MAX),
                });
                self.set_tick(now_ms);
                Flow::Pause
            }
            Verdict::Deny(rejection) => self.apply(Verdict::Deny(rejection), &realm()),
            verdict => self.apply(verdict, ""),
        }
    }

    /// A paused request whose stream the host ended (its client went away): forgotten.
    pub fn forget_request(&mut self, context_id: u32) {
        let before = self.waiting.len();
        self.waiting.retain(|request| request.context_id != context_id);
        if self.waiting.len() < before {
            log::debug!("request {context_id} ended while it waited for keys");
        }
    }
}

/// What a request whose header map does not parse is read as: no headers.
#[cold]
#[inline(never)]
fn unreadable_headers<'a>() -> (Pairs<'a>, HeaderScan<'a>) {
    log::warn!("request headers from the host do not parse; reading none");
    (Pairs::default(), HeaderScan::default())
}


//! The filter's counters in Envoy's stats.

use std::cell::Cell;

use crate::host::Host;

use crate::model::Rejection;

/// How many allowed requests a VM counts before it reports them without waiting for its tick.
const ALLOWED_REPORT_EVERY: u32 = 100;

/// Counters in Envoy's stats (`wasmcustom.jwt_claims_filter.*`). Defined by name in every
/// VM; Envoy keeps one counter per name, so the workers' counts add up.
pub(super) struct Metrics<H: Host> {
    host: H,
    pub(super) fetch_success: Option<u32>,
    pub(super) fetch_failure: Option<u32>,
    pub(super) unknown_kid_refetch: Option<u32>,
    allowed: Option<u32>,
    /// Allowed requests not reported yet. A host call per allowed request costs about 1,100
    /// instructions, some 1 % of the request in Envoy; they are reported at every tick (0.5 s
    /// at most) and every [`ALLOWED_REPORT_EVERY`] requests instead. Denials, rare and
    /// answered by a local reply that costs far more, are counted at once.
    allowed_unreported: Cell<u32>,
    pub(super) denied: Vec<(Rejection, Option<u32>)>,
}

impl<H: Host> Metrics<H> {
    pub(super) fn define(host: H) -> Metrics<H> {
        let counter = |name: &str| host.define_counter(&format!("jwt_claims_filter.{name}"));
        Metrics {
            fetch_success: counter("jwks_fetch_success"),
            fetch_failure: counter("jwks_fetch_failure"),
            unknown_kid_refetch: counter("jwks_unknown_kid_refetch"),
            allowed: counter("requests_allowed"),
            allowed_unreported: Cell::new(0),
            denied: Rejection::ALL.iter().map(|r| (*r, counter(&format!("requests_denied.{}", r.reason())))).collect(),
            host,
        }
    }

    pub(super) fn bump(&self, id: Option<u32>) {
        if let Some(id) = id {
            self.host.increment_counter(id, 1);
        }
    }

    pub(super) fn allowed(&self) {
        let unreported = self.allowed_unreported.get() + 1;
        self.allowed_unreported.set(unreported);
        if unreported >= ALLOWED_REPORT_EVERY {
            self.report();
        }
    }

    /// Hands the allowed requests counted so far to the host.
    pub(super) fn report(&self) {
        let unreported = self.allowed_unreported.replace(0);
        if let (Some(id), true) = (self.allowed, unreported > 0) {
            self.host.increment_counter(id, i64::from(unreported));
        }
    }

    pub(super) fn denied(&self, rejection: Rejection) {
        self.bump(self.denied.iter().find(|(r, _)| *r == rejection).and_then(|(_, id)| *id));
    }
}

//! The filter's counters in Envoy's stats.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::verify::Rejection;

/// Counters in Envoy's stats (`wasmcustom.jwt_claims_filter.*`). Defined by name in every
/// VM; Envoy keeps one counter per name, so the workers' counts add up.
pub(super) struct Metrics {
    pub(super) fetch_success: Option<u32>,
    pub(super) fetch_failure: Option<u32>,
    pub(super) unknown_kid_refetch: Option<u32>,
    pub(super) allowed: Option<u32>,
    pub(super) denied: Vec<(Rejection, Option<u32>)>,
}

impl Metrics {
    pub(super) fn define() -> Metrics {
        let counter =
            |name: &str| hostcalls::define_metric(MetricType::Counter, &format!("jwt_claims_filter.{name}")).ok();
        Metrics {
            fetch_success: counter("jwks_fetch_success"),
            fetch_failure: counter("jwks_fetch_failure"),
            unknown_kid_refetch: counter("jwks_unknown_kid_refetch"),
            allowed: counter("requests_allowed"),
            denied: Rejection::ALL.iter().map(|r| (*r, counter(&format!("requests_denied.{}", r.reason())))).collect(),
        }
    }

    pub(super) fn bump(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    pub(super) fn denied(&self, rejection: Rejection) {
        Metrics::bump(self.denied.iter().find(|(r, _)| *r == rejection).and_then(|(_, id)| *id));
    }
}

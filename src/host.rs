//! The one seam between the filter and its host: every call the filter makes into Envoy goes
//! through [`Host`]. `filter::abi` implements it once over the proxy-wasm ABI (wasm32 only);
//! the native tests implement it with a fake host (`tests/host/`), so the request path and
//! the key lifecycle run without Envoy.
//!
//! Logs go through the `log` facade; the host implementation installs its logger.

use std::time::Duration;

/// A status other than `Ok` from the host (the proxy-wasm ABI's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const NOT_FOUND: Status = Status(1);
    pub const BAD_ARGUMENT: Status = Status(2);
    pub const CAS_MISMATCH: Status = Status(8);
    pub const INTERNAL_FAILURE: Status = Status(10);
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            12 => "Unimplemented",
            _ => "status",
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// What the filter asks of its host. Calls act on the *effective* context: the one whose
/// callback is running, or the one [`Host::set_effective_context`] chose. No method panics;
/// a call that fails returns its status, or is dropped where nobody could act on it.
pub trait Host: Clone {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    fn set_tick_period(&self, period: Duration);

    /// The effective context's request headers, serialized as the ABI's header map; `None`
    /// if the host has none to give.
    fn request_header_pairs(&self) -> Option<Vec<u8>>;
    fn remove_request_header(&self, name: &str);
    /// Adds a value (the header may exist already).
    fn add_request_header(&self, name: &str, value: &str);
    fn replace_request_header(&self, name: &str, value: &str);
    /// Answers the effective context's request locally.
    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Lets the effective context's paused request go on.
    fn resume_request(&self);
    /// Fails for a context the host has deleted (a stream whose client went away).
    fn set_effective_context(&self, context_id: u32) -> Result<(), Status>;

    /// Starts an HTTP call; its answer comes to the root context's `on_http_call_response`.
    fn dispatch_http_call(&self, cluster: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<u32, Status>;
    /// A header of the HTTP call being answered. Fails when there is no response at all (the
    /// call failed at any stage: connection, TLS, reset, timeout).
    fn call_response_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status>;
    /// Up to `max_size` bytes of the body of the HTTP call being answered.
    fn call_response_body(&self, max_size: usize) -> Result<Option<Vec<u8>>, Status>;

    /// A shared-data value (one store per Envoy process) and its CAS token.
    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status>;
    /// Writes shared data; with `cas`, only if nobody wrote since (else `CAS_MISMATCH`).
    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status>;

    /// A counter in the host's stats; `None` if the host would not define it.
    fn define_counter(&self, name: &str) -> Option<u32>;
    fn increment_counter(&self, id: u32, by: i64);

    /// A host extension's function (Envoy: `verify_signature`).
    fn call_foreign_function(&self, name: &str, arguments: &[u8]) -> Result<Option<Vec<u8>>, Status>;
}

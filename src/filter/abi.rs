//! [`Host`] over the proxy-wasm ABI (0.2.1): every call returns its status, and nothing here
//! can panic.
//!
//! Why not the SDK's `hostcalls`: each of its wrappers panics on a status it does not expect
//! (`unexpected status: 2`), and a panic aborts the VM, that worker's traffic with it, and the
//! next VM that takes the same path. A host answers such statuses in ordinary situations: a
//! fetch whose connection failed after its headers has no response object, so reading its
//! `:status` is `BadArgument`. The imports are declared here with plain integer statuses (the
//! SDK's `Status` enum would make an unlisted value undefined behaviour).
//!
//! The one SDK call kept is `dispatch_http_call` (see [`ProxyWasm::dispatch_http_call`]).

use std::ptr::{null, null_mut};
use std::time::Duration;

use proxy_wasm::types::{BufferType, MapType, MetricType};

use crate::host::{Host, Status};

fn check(code: u32) -> Result<(), Status> {
    if code == 0 {
        Ok(())
    } else {
        Err(Status(code))
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

/// Takes ownership of memory the host filled: it asked the module for it through
/// `proxy_on_memory_allocate` (the SDK's allocator: a buffer of exactly `size` bytes), as the
/// SDK's own readers take it. `None` when the host returned nothing.
///
/// # Safety
/// `data` is null or a buffer of `size` bytes that the host allocated through the module and
/// hands over.
unsafe fn take_host_buffer(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        // SAFETY: as the function's contract says.
        Some(unsafe { Vec::from_raw_parts(data, size, size) })
    }
}

/// A call that returns a buffer: `Ok(None)` for `NotFound` (and for no buffer at all).
fn read_buffer(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let code = call(&mut data, &mut size);
    match check(code) {
        // SAFETY: on Ok the host wrote a buffer it allocated through the module, or nothing.
        Ok(()) => Ok(unsafe { take_host_buffer(data, size) }),
        Err(Status::NOT_FOUND) => Ok(None),
        Err(status) => Err(status),
    }
}

fn log(level: log::Level, message: &str) {
    let level = match level {
        log::Level::Trace => 0,
        log::Level::Debug => 1,
        log::Level::Info => 2,
        log::Level::Warn => 3,
        log::Level::Error => 4,
    };
    // SAFETY: the host reads `message` and nothing else. A failed log call has no one to
    // tell: its status is dropped.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// The host's log level, as the `log` crate's filter.
pub(super) fn log_level() -> Result<log::LevelFilter, Status> {
    let mut level = 0u32;
    // SAFETY: the host writes one integer into `level`.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(match level {
        0 => log::LevelFilter::Trace,
        1 => log::LevelFilter::Debug,
        2 => log::LevelFilter::Info,
        3 => log::LevelFilter::Warn,
        4 => log::LevelFilter::Error,
        _ => log::LevelFilter::Off, // Critical: the filter logs nothing at that level
    })
}

/// Milliseconds since the Unix epoch.
fn current_time_ms() -> Result<u64, Status> {
    let mut nanos = 0u64;
    // SAFETY: the host writes one integer into `nanos`.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos / 1_000_000)
}

fn set_tick_period(period: Duration) -> Result<(), Status> {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no memory is passed.
    check(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

/// Up to `max_size` bytes of a buffer from `start`; `None` if the host has none.
pub(super) fn buffer(buffer_type: BufferType, start: usize, max_size: usize) -> Result<Option<Vec<u8>>, Status> {
    read_buffer(|data, size| {
        // SAFETY: the host writes the address and length of a buffer it allocated.
        unsafe { proxy_get_buffer_bytes(buffer_type as u32, start, max_size, data, size) }
    })
}

/// A whole header map, serialized.
fn header_map_pairs(map: MapType) -> Result<Option<Vec<u8>>, Status> {
    read_buffer(|data, size| {
        // SAFETY: as in `buffer`.
        unsafe { proxy_get_header_map_pairs(map as u32, data, size) }
    })
}

/// One header's value; `None` if the map has no such header.
fn header(map: MapType, name: &str) -> Result<Option<Vec<u8>>, Status> {
    read_buffer(|data, size| {
        // SAFETY: as in `buffer`; the host reads `name`.
        unsafe { proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), data, size) }
    })
}

fn remove_header(map: MapType, name: &str) -> Result<(), Status> {
    // SAFETY: the host reads `name`.
    check(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

fn replace_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: the host reads `name` and `value`.
    check(unsafe {
        proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

fn add_header(map: MapType, name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: the host reads `name` and `value`.
    check(unsafe {
        proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// The host's `plugin_name` for the effective context (Envoy: the filter's `config.name`),
/// for the log.
pub(super) fn plugin_name() -> Option<String> {
    const PATH: &[u8] = b"plugin_name";
    let name = read_buffer(|data, size| {
        // SAFETY: as in `buffer`; the host reads `PATH`.
        unsafe { proxy_get_property(PATH.as_ptr(), PATH.len(), data, size) }
    });
    name.ok().flatten().map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// A shared-data value and its CAS token; `(None, None)` if the key has none.
fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas = 0u32;
    // SAFETY: the host writes a buffer it allocated, its length and an integer.
    let code = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match check(code) {
        // SAFETY: as `take_host_buffer` requires, on Ok.
        Ok(()) => Ok((unsafe { take_host_buffer(data, size) }, (cas != 0).then_some(cas))),
        Err(Status::NOT_FOUND) => Ok((None, None)),
        Err(status) => Err(status),
    }
}

/// Writes shared data; with `cas`, only if nobody wrote since (else `CAS_MISMATCH`).
fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
    // SAFETY: the host reads `key` and `value`.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0))
    })
}

/// Lets the effective context's paused request go on.
fn resume_request() -> Result<(), Status> {
    const HTTP_REQUEST_STREAM: u32 = 0;
    // SAFETY: no memory is passed.
    check(unsafe { proxy_continue_stream(HTTP_REQUEST_STREAM) })
}

/// Answers the effective context's request without sending it upstream.
fn send_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Status> {
    let headers = serialize_map(headers);
    // SAFETY: the host reads `body` and `headers`.
    check(unsafe {
        proxy_send_local_response(status, null(), 0, body.as_ptr(), body.len(), headers.as_ptr(), headers.len(), -1)
    })
}

/// Makes `context_id` the context later calls act on; fails for a context the host deleted.
fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_set_effective_context(context_id) })
}

/// A host extension's function (Envoy: `verify_signature`); `Ok(None)` if it returned nothing.
fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host reads `name` and `arguments` and writes a buffer it allocated.
    let code = unsafe {
        proxy_call_foreign_function(name.as_ptr(), name.len(), arguments.as_ptr(), arguments.len(), &mut data, &mut size)
    };
    check(code)?;
    // SAFETY: as `take_host_buffer` requires, on Ok.
    Ok(unsafe { take_host_buffer(data, size) })
}

fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: the host reads `name` and writes one integer.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: no memory is passed.
    check(unsafe { proxy_increment_metric(id, offset) })
}

/// Starts an HTTP call to `cluster`; the answer comes to the root context's
/// `on_http_call_response` with the returned token.
///
/// Through the SDK, the one call that is: its wrapper registers the token with the SDK's
/// dispatcher, which otherwise would not route the answer back. The wrapper panics only on a
/// status other than Ok, BadArgument and InternalFailure, which is all `proxy_http_call` may
/// answer for arguments in the module's memory (the ABI, and Envoy's `httpCall`).
fn dispatch_http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<u32, proxy_wasm::types::Status> {
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers.to_vec(), None, vec![], timeout)
}

/// The ABI's header map: a count, then each name's and value's length, then each name and
/// value with a NUL after it (all integers u32, little-endian).
fn serialize_map(map: &[(&str, &str)]) -> Vec<u8> {
    let length = |text: &str| u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes();
    let count = u32::try_from(map.len()).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(4 + map.iter().map(|(n, v)| n.len() + v.len() + 10).sum::<usize>());
    bytes.extend_from_slice(&count.to_le_bytes());
    for (name, value) in map {
        bytes.extend_from_slice(&length(name));
        bytes.extend_from_slice(&length(value));
    }
    for (name, value) in map {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// The `log` crate's logger over [`log`]: the SDK's calls `unwrap` on the host's status.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            log(record.level(), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

/// Routes the `log` crate to the host at `level`, and a panic's message to the host's log
/// (a panic still aborts the VM: `panic = "abort"`; the message says where).
pub(super) fn install_logger(level: log::LevelFilter) {
    if log::set_logger(&LOGGER).is_ok() {
        std::panic::set_hook(Box::new(|info| {
            const CRITICAL: u32 = 5;
            let message = info.to_string();
            // SAFETY: as in `log`.
            let _ = unsafe { proxy_log(CRITICAL, message.as_ptr(), message.len()) };
        }));
    }
    log::set_max_level(level);
}

/// The proxy-wasm host (Envoy): [`Host`] over the functions above.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProxyWasm;

impl Host for ProxyWasm {
    fn now_ms(&self) -> u64 {
        current_time_ms().unwrap_or(0)
    }

    fn set_tick_period(&self, period: Duration) {
        let _ = set_tick_period(period);
    }

    fn request_header_pairs(&self) -> Option<Vec<u8>> {
        header_map_pairs(MapType::HttpRequestHeaders).ok().flatten()
    }

    fn remove_request_header(&self, name: &str) {
        let _ = remove_header(MapType::HttpRequestHeaders, name);
    }

    fn add_request_header(&self, name: &str, value: &str) {
        let _ = add_header(MapType::HttpRequestHeaders, name, value);
    }

    fn replace_request_header(&self, name: &str, value: &str) {
        let _ = replace_header(MapType::HttpRequestHeaders, name, value);
    }

    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let _ = send_response(status, headers, body);
    }

    fn resume_request(&self) {
        let _ = resume_request();
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), Status> {
        set_effective_context(context_id)
    }

    fn dispatch_http_call(&self, cluster: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<u32, Status> {
        dispatch_http_call(cluster, headers, timeout).map_err(|status| Status(status as u32))
    }

    fn call_response_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        header(MapType::HttpCallResponseHeaders, name)
    }

    fn call_response_body(&self, max_size: usize) -> Result<Option<Vec<u8>>, Status> {
        buffer(BufferType::HttpCallResponseBody, 0, max_size)
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
        shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
        set_shared_data(key, value, cas)
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        define_metric(MetricType::Counter, name).ok()
    }

    fn increment_counter(&self, id: u32, by: i64) {
        let _ = increment_metric(id, by);
    }

    fn call_foreign_function(&self, name: &str, arguments: &[u8]) -> Result<Option<Vec<u8>>, Status> {
        call_foreign_function(name, arguments)
    }
}

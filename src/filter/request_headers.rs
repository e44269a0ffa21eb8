//! The request's headers in one host call, read into a buffer the module keeps, so that the
//! request path borrows names and values from it ([`crate::headermap`]) instead of copying each.
//!
//! The host writes what it returns into memory it asks the module for
//! (`proxy_on_memory_allocate`). The SDK allocates a fresh buffer each time, which the reader
//! then frees: a malloc and a free per request, whose code (dlmalloc's) is as much of the
//! request's footprint in the CPU's instruction cache as the filter's own logic, and that
//! code is fetched from memory on every request (Envoy's own work in between pushes it out).
//! So while the request's headers are read, the allocation is the buffer kept here, lent to
//! the host; any other allocation the host asks for is the SDK's, as before.
//!
//! Self-contained: bench/noop-filter includes this file too, so that its floor of the job's
//! host calls reads the headers exactly as the filter does. Its export
//! `jcf_on_memory_allocate` is renamed into place by scripts/wasm-exports.py.

use std::cell::{Cell, RefCell};

#[link(wasm_import_module = "env")]
extern "C" {
    /// `proxy_get_header_map_pairs` as the ABI (0.2.1) defines it, with plain integers: the
    /// SDK's typed form would turn a status the enum does not list into undefined behaviour.
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
}

extern "C" {
    // The SDK's export (`#[no_mangle]` in the proxy-wasm crate): a boxed slice of exactly
    // `size` bytes, which the SDK's readers own and free. Resolved by the linker.
    #[link_name = "proxy_on_memory_allocate"]
    fn sdk_on_memory_allocate(size: usize) -> *mut u8;
}

const REQUEST_HEADERS: u32 = 0; // MapType::HttpRequestHeaders
const STATUS_OK: u32 = 0;

thread_local! {
    /// The buffer the request's headers are read into, kept from one request to the next. It
    /// grows to the largest header map seen (Envoy bounds that: `max_request_headers_kb`).
    static HEADER_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Set only during the read: where the host's next allocation goes, and how much fits.
    static LENT: Cell<Option<(*mut u8, usize)>> = const { Cell::new(None) };
}

/// `proxy_on_memory_allocate`, after scripts/wasm-exports.py renames it (the SDK's export of
/// that name is dropped): the lent buffer if one is lent and the size fits, else the SDK's.
#[no_mangle]
pub extern "C" fn jcf_on_memory_allocate(size: usize) -> *mut u8 {
    // Taken, not read: only the first allocation of a read gets it (a read makes one).
    match LENT.take() {
        Some((buffer, capacity)) if size <= capacity => buffer,
        // SAFETY: the SDK's own export with the ABI's signature, called as the host would.
        _ => unsafe { sdk_on_memory_allocate(size) },
    }
}

/// Runs `read` on the serialized request header map (empty if the host has none to give).
pub(super) fn with_request_header_buffer<R>(read: impl FnOnce(&[u8]) -> R) -> R {
    HEADER_BUFFER.with(|kept| {
        // Only a read nested in a read (nothing does that) finds it borrowed: it then gets a
        // buffer of its own from the SDK's allocator.
        let mut kept = kept.try_borrow_mut().ok();
        if let Some(kept) = kept.as_mut() {
            kept.clear();
            if kept.capacity() > 0 {
                LENT.set(Some((kept.as_mut_ptr(), kept.capacity())));
            }
        }
        let (data, size) = get_request_header_pairs();
        LENT.set(None);
        match kept {
            _ if data.is_null() => read(&[]),
            Some(mut kept) if data.cast_const() == kept.as_ptr() => {
                // SAFETY: the host wrote `size` bytes at the start of the lent buffer, which
                // `jcf_on_memory_allocate` lent only if they fit its capacity.
                unsafe { kept.set_len(size) };
                read(&kept)
            }
            kept => {
                // SAFETY: a buffer of exactly `size` bytes the SDK allocated for the host,
                // which hands it over: owned as the SDK's own readers own it, freed when dropped.
                let own = unsafe { Vec::from_raw_parts(data, size, size) };
                if let Some(mut kept) = kept {
                    kept.reserve(size); // too small, or the first read: it fits from now on
                }
                read(&own)
            }
        }
    })
}

/// The host's buffer and its size; null if it has nothing to give.
fn get_request_header_pairs() -> (*mut u8, usize) {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes the address and length of the buffer it filled into the two
    // locals; nothing else is read or written.
    let status = unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size) };
    if status == STATUS_OK {
        (data, size)
    } else {
        (std::ptr::null_mut(), 0)
    }
}

//! The request's headers in one host call, kept as the host's buffer so that the request path
//! can borrow names and values from it ([`crate::headermap`]) instead of copying each.

#[link(wasm_import_module = "env")]
extern "C" {
    /// `proxy_get_header_map_pairs` as the ABI (0.2.1) defines it, with plain integers: the
    /// SDK's typed form would turn a status the enum does not list into undefined behaviour.
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
}

const REQUEST_HEADERS: u32 = 0; // MapType::HttpRequestHeaders
const STATUS_OK: u32 = 0;

/// The serialized request header map; empty if the host has none to give.
pub(super) fn request_header_buffer() -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host has written the address and length of a buffer it filled,
    // which it allocated through the SDK's `proxy_on_memory_allocate` (a boxed slice of
    // exactly `size` bytes) and hands over to the module: owning it as a Vec of that
    // capacity is how the SDK's own readers take it, and it is freed when the Vec drops.
    unsafe {
        let status = proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut size);
        if status == STATUS_OK && !data.is_null() {
            Vec::from_raw_parts(data, size, size)
        } else {
            Vec::new()
        }
    }
}

//! Claim rendering: the input's first line is a claim header name (or an
//! `outputClaimToHeaders` claim), the rest a JSON claims value.
//!
//! The JSON also goes through the strict token JSON reader (`json::parse_strict`).
//!
//! Invariants: no panic; a parsed path has only non-empty keys; a rendered value is a valid
//! header value (no CR, LF or NUL), and lists render as their elements joined with `,`; what
//! the strict reader accepts, serde_json reads as the same value.
#![no_main]

use jwt_claims_filter::claims::{is_claim_header_family, is_header_value, render, ClaimPath};
use jwt_claims_filter::json::parse_strict;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_render(value: &Value) {
    if let Ok(text) = render(value) {
        assert!(is_header_value(&text), "rendered {value} as {text:?}");
        assert!(!text.contains(['\r', '\n', '\0']));
        if let Value::Array(items) = value {
            assert_eq!(text.split(',').count(), items.len().max(1), "{value} rendered as {text:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (name, rest) = data.split_at(split);
    let rest = rest.get(1..).unwrap_or_default();
    let name = String::from_utf8_lossy(name);
    let name: &str = &name;

    let lenient: Option<Value> = serde_json::from_slice(rest).ok();
    if let Some(strict) = parse_strict(rest) {
        assert_eq!(lenient.as_ref(), Some(&strict), "strict and serde_json disagree");
    }
    let rest = String::from_utf8_lossy(rest);
    let value: Value = lenient.unwrap_or_else(|| {
        // Not JSON: render the text as a list of its tab-separated parts, and each part.
        Value::Array(rest.split('\t').map(|s| Value::String(s.to_string())).collect())
    });
    check_render(&value);
    if let Value::Array(items) = &value {
        items.iter().for_each(check_render);
    }

    let paths = [ClaimPath::from_claim_header(name), ClaimPath::dotted(name)];
    if paths[0].is_ok() {
        assert!(is_claim_header_family(name.as_bytes()));
    }
    for path in paths.into_iter().flatten() {
        assert!(!path.keys().is_empty() && path.keys().iter().all(|k| !k.is_empty()));
        if let Some(found) = path.lookup(&value) {
            check_render(found);
        }
    }
});

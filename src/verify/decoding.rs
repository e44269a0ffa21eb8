//! A token's structure, before any signature: its three segments, header and claims, and
//! when it may be used (`exp`, `nbf`) and by whom (`aud`).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::Value;

use crate::json::parse_strict;
use crate::model::{Algorithm, Rejection};

/// A token whose structure has been checked but whose signature has not.
#[derive(Debug)]
pub struct DecodedToken<'a> {
    pub raw: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The payload as JSON; always an object.
    pub claims: Value,
    /// `exp` and `nbf` in whole seconds, read once by [`Validity::of_claims`].
    pub validity: Validity,
    /// The header `typ`, already checked to name a JWT (see `is_jwt_type`).
    pub typ: Option<String>,
    /// The payload segment as it appeared (base64url): `outputPayloadToHeader` forwards it.
    pub payload_b64: &'a str,
}

impl DecodedToken<'_> {
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Base64url segments and their JSON: only compact JWS with three segments, a header that
/// jwt-simple accepts naming a supported `alg`, and a JSON object payload whose registered
/// claims have their registered types. These are the structural checks jwt-simple applies
/// while verifying, done here up front so that every signature backend sees the same tokens.
pub fn decode(raw: &str, max_bytes: usize) -> Result<DecodedToken<'_>, Rejection> {
    if raw.len() > max_bytes {
        return Err(Rejection::TooLarge);
    }
    let mut parts = raw.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    // Strict JSON first (duplicate members, depth), then jwt-simple's reading of the header.
    decode_json_segment(header_b64)?;
    let header = Token::decode_metadata(raw).map_err(|_| Rejection::Malformed)?;
    let alg = Algorithm::from_name(header.algorithm()).ok_or(Rejection::UnsupportedAlgorithm)?;
    if signature_b64.is_empty() {
        return Err(Rejection::Malformed);
    }
    if header.critical().is_some() {
        return Err(Rejection::CriticalHeader);
    }
    let typ = header.signature_type().map(str::to_string);
    if typ.as_deref().is_some_and(|typ| !is_jwt_type(typ)) {
        return Err(Rejection::Malformed);
    }
    let kid = header.key_id().map(str::to_string);
    let claims = decode_json_segment(payload_b64)?;
    let Some(object) = claims.as_object() else {
        return Err(Rejection::Malformed);
    };
    let validity = Validity::of_claims(object)?;
    // null reads as absent, as jwt-simple reads it.
    let registered_types_ok = ["iss", "sub", "jti", "nonce"].iter().all(|k| object.get(*k).is_none_or(|v| v.is_string() || v.is_null()))
        && object.get("aud").is_none_or(|aud| match aud {
            Value::String(_) | Value::Null => true,
            Value::Array(list) => list.iter().all(Value::is_string),
            _ => false,
        });
    if !registered_types_ok {
        return Err(Rejection::Malformed);
    }
    Ok(DecodedToken { raw, alg, kid, claims, validity, typ, payload_b64 })
}

/// A header `typ` that says the token is a JWT: `JWT` or `application/jwt` (RFC 7519 §5.1,
/// RFC 7515 §4.1.9: media types, case-insensitive, `application/` optional), or a JWT
/// profile `*+jwt` such as `at+jwt` (RFC 8725 §3.11, RFC 9068).
pub fn is_jwt_type(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    let subtype = typ.strip_prefix("application/").unwrap_or(&typ);
    subtype == "jwt" || (subtype.len() > 4 && subtype.ends_with("+jwt"))
}

/// A NumericDate claim (RFC 7519 §2: seconds since the epoch, integer or not, in any JSON
/// number notation) as whole seconds, rounded both ways. What jwt_authn accepts (a number
/// read as a double, not negative, below 2^64), no more: anything else is `Malformed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumericDate {
    /// Rounded down: how an `exp` is compared (a token never expires later than it says).
    pub floor: u64,
    /// Rounded up: how an `nbf` is compared (a token never becomes valid earlier).
    pub ceil: u64,
}

impl NumericDate {
    /// 2^64, the first value jwt_authn refuses (`StructUtils::GetUInt64`).
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;

    pub fn read(value: &Value) -> Result<NumericDate, Rejection> {
        let Value::Number(number) = value else {
            return Err(Rejection::Malformed);
        };
        // Integers exactly (serde_json keeps every u64); anything else as the double it is.
        if let Some(secs) = number.as_u64() {
            // jwt_authn reads the number as a double: from 2^64 - 1024 up that is 2^64, refused.
            if secs as f64 >= Self::LIMIT {
                return Err(Rejection::Malformed);
            }
            return Ok(NumericDate { floor: secs, ceil: secs });
        }
        let secs = number.as_f64().ok_or(Rejection::Malformed)?;
        // NaN is in no range; -0.0 is zero.
        if !(0.0..Self::LIMIT).contains(&secs) {
            return Err(Rejection::Malformed);
        }
        // In range, so the casts are exact (every double at or above 2^53 is an integer).
        Ok(NumericDate { floor: secs.floor() as u64, ceil: secs.ceil() as u64 })
    }
}

/// When a token may be used: its `exp` (rounded down) and `nbf` (rounded up), whole seconds.
/// [`Validity::check`] is the one time rule, for tokens being verified and cached ones alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validity {
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
}

impl Validity {
    /// Reads `exp` and `nbf`, and checks that `iat` is a NumericDate too (it is not judged,
    /// as in Envoy). An absent claim is no limit; any other non-NumericDate is `Malformed`.
    pub fn of_claims(claims: &serde_json::Map<String, Value>) -> Result<Validity, Rejection> {
        let date = |name: &str| claims.get(name).map(NumericDate::read).transpose();
        date("iat")?;
        Ok(Validity { exp: date("exp")?.map(|d| d.floor), nbf: date("nbf")?.map(|d| d.ceil) })
    }

    /// `exp` and `nbf` against `now_secs`, allowing `clock_skew` either way (RFC 7519
    /// §4.1.4–5; Envoy's comparisons: expired once now > exp + skew, not yet valid while
    /// now + skew < nbf).
    pub fn check(&self, now_secs: u64, clock_skew: Duration) -> Result<(), Rejection> {
        let skew = clock_skew.as_secs();
        if self.exp.is_some_and(|exp| now_secs > exp.saturating_add(skew)) {
            return Err(Rejection::Expired);
        }
        if self.nbf.is_some_and(|nbf| now_secs.saturating_add(skew) < nbf) {
            return Err(Rejection::NotYetValid);
        }
        Ok(())
    }
}

fn decode_json_segment(segment: &str) -> Result<Value, Rejection> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| Rejection::Malformed)?;
    parse_strict(&bytes).ok_or(Rejection::Malformed)
}

/// `exp` and `nbf` against `now`, allowing `clock_skew` either way: [`Validity::check`].
pub fn check_time(token: &DecodedToken<'_>, now_secs: u64, clock_skew: Duration) -> Result<(), Rejection> {
    token.validity.check(now_secs, clock_skew)
}

/// Any of the rule's audiences in the token's `aud` (a string or a list); no audiences
/// configured accepts any token.
pub fn check_audience(token: &DecodedToken<'_>, audiences: &[String]) -> Result<(), Rejection> {
    if audiences.is_empty() {
        return Ok(());
    }
    let allowed = |aud: &Value| aud.as_str().is_some_and(|a| audiences.iter().any(|x| x == a));
    let ok = match token.claims.get("aud") {
        Some(Value::Array(list)) => list.iter().any(allowed),
        Some(aud) => allowed(aud),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Rejection::AudienceNotAllowed)
    }
}

//! One token against one rule and its key set: decode, check times, select the key by `kid`
//! and `alg`, verify the signature (jwt-simple; ES512 with the `p521` crate), check the
//! audience.
//!
//! Order of checks: structure, then issuer (which rule), then time, then signature, then
//! audience. Time before signature spends no RSA work on expired tokens; audience after
//! signature means an unsigned token learns nothing about audiences (Envoy checks audiences
//! first; the verdict is a denial either way, only 401 vs 403 can differ for forged tokens).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde_json::Value;

use crate::config::JwtRule;
use crate::json::parse_strict;
use crate::model::{Algorithm, Rejection};
use crate::jwks::{Jwk, KeyMiss, KeySet, VerifyingKey};

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
    /// The header `typ`, already checked to name a JWT (see [`is_jwt_type`]).
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

/// A signature check the host may do faster than the built-in one: Envoy's
/// `verify_signature` foreign function runs BoringSSL natively, an order of magnitude faster
/// than big-integer code inside the VM. It serves RS256/384/512 and ES256/384/512 (its
/// interface has no PSS padding and no Ed25519); everything else, and any host that does not
/// offer it, uses the built-in check.
pub trait HostVerifier {
    /// Whether to ask the host about `alg` at all (a host may have passed its start-up check
    /// for some curves and not others); `verify` may still answer `None`.
    fn offers(&self, alg: Algorithm) -> bool {
        let _ = alg;
        true
    }

    /// `Some(valid)` when the host checked `signature` over `signing_input` with the
    /// SubjectPublicKeyInfo `spki_der` and `hash` ("sha256", "sha384", "sha512"); `None` when
    /// it could not, and the built-in check decides.
    fn verify(&self, hash: &str, spki_der: &[u8], signing_input: &[u8], signature: &[u8]) -> Option<bool>;
}

/// No host help: jwt-simple checks every signature.
pub struct BuiltinOnly;

impl HostVerifier for BuiltinOnly {
    fn verify(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> Option<bool> {
        None
    }
}

/// The full check of a decoded token whose issuer is `rule`'s, against `keys`.
pub fn verify(
    token: &DecodedToken<'_>,
    rule: &JwtRule,
    keys: &KeySet,
    now_secs: u64,
    host: &dyn HostVerifier,
) -> Result<(), Rejection> {
    check_time(token, now_secs, rule.clock_skew)?;
    let candidates = keys.select(token.kid.as_deref(), token.alg).map_err(|miss| match miss {
        KeyMiss::UnknownKid => Rejection::UnknownKid,
        KeyMiss::AlgorithmMismatch => Rejection::AlgorithmMismatch,
    })?;
    let mut outcome = Err(Rejection::BadSignature);
    for jwk in candidates {
        outcome = match verify_on_host(token, jwk, host) {
            Some(outcome) => outcome,
            None => verify_signature(token, &jwk.key),
        };
        if outcome.is_ok() {
            break;
        }
    }
    outcome?;
    check_audience(token, &rule.audiences)
}

/// The host's answer for RS*/ES* with a key it can import; `None` to use jwt-simple.
fn verify_on_host(token: &DecodedToken<'_>, jwk: &Jwk, host: &dyn HostVerifier) -> Option<Result<(), Rejection>> {
    let spki_der = jwk.spki_der.as_deref()?;
    let (hash, ecdsa_width) = match token.alg {
        Algorithm::Rs256 => ("sha256", None),
        Algorithm::Rs384 => ("sha384", None),
        Algorithm::Rs512 => ("sha512", None),
        Algorithm::Es256 => ("sha256", Some(32)),
        Algorithm::Es384 => ("sha384", Some(48)),
        Algorithm::Es512 => ("sha512", Some(66)),
        _ => return None,
    };
    if !host.offers(token.alg) {
        return None;
    }
    let (signing_input, signature_b64) = token.raw.rsplit_once('.')?;
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
        return Some(Err(Rejection::Malformed));
    };
    let signature = match ecdsa_width {
        None => signature,
        // JWS carries ECDSA signatures as r || s (RFC 7518 §3.4); BoringSSL wants DER.
        Some(width) => match ecdsa_signature_der(&signature, width) {
            Some(der) => der,
            None => return Some(Err(Rejection::BadSignature)),
        },
    };
    let valid = host.verify(hash, spki_der, signing_input.as_bytes(), &signature)?;
    Some(if valid { Ok(()) } else { Err(Rejection::BadSignature) })
}

/// `r || s` (each `width` bytes: 32, 48 or 66) as a DER `ECDSA-Sig-Value`; `None` for a
/// wrong length or a zero component.
pub fn ecdsa_signature_der(raw: &[u8], width: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * width {
        return None;
    }
    let (r, s) = raw.split_at(width);
    let integer = |bytes: &[u8]| -> Option<Vec<u8>> {
        let start = bytes.iter().position(|b| *b != 0)?;
        let digits = bytes.get(start..)?;
        let mut out = vec![0x02];
        let pad = digits.first().is_some_and(|b| b & 0x80 != 0);
        out.push(u8::try_from(digits.len() + usize::from(pad)).ok()?);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(digits);
        Some(out)
    };
    let (r, s) = (integer(r)?, integer(s)?);
    let body_len = r.len() + s.len();
    let mut der = Vec::with_capacity(body_len + 3);
    der.push(0x30);
    if body_len >= 0x80 {
        der.push(0x81);
    }
    der.push(u8::try_from(body_len).ok()?);
    der.extend_from_slice(&r);
    der.extend_from_slice(&s);
    Some(der)
}

/// The signature (and jwt-simple's own structural checks) with one key.
fn verify_signature(token: &DecodedToken<'_>, key: &VerifyingKey) -> Result<(), Rejection> {
    let raw = token.raw;
    let options = VerificationOptions {
        // Time is `Validity::check`'s alone. jwt-simple's own checks are switched off: its
        // clock is set to 0 with no tolerance (so no `exp` is ever past: 0 - 0 <= exp) and
        // `accept_future` skips `nbf` and `iat`; its claim reading accepts every NumericDate
        // `decode` accepts.
        accept_future: true,
        time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(0)),
        artificial_time: Some(jwt_simple::prelude::Duration::from_secs(0)),
        // `decode` accepted the `typ` (`is_jwt_type`); jwt-simple alone would refuse
        // `application/jwt`, but accepts any `typ` equal to the one it is told to require.
        required_signature_type: token.typ.clone(),
        ..Default::default()
    };
    let result = match key {
        VerifyingKey::Rs256(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Rs384(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Rs512(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Ps256(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Ps384(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Ps512(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Es256(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Es384(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Es512(k) => return verify_es512(raw, k),
        VerifyingKey::EdDsa(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Hs256(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Hs384(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
        VerifyingKey::Hs512(k) => k.verify_token::<NoCustomClaims>(raw, Some(options)).map(drop),
    };
    result.map_err(|e| match e.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidSignature) | Some(JWTError::InvalidAuthenticationTag) => Rejection::BadSignature,
        Some(JWTError::TokenHasExpired) => Rejection::Expired,
        Some(JWTError::TokenNotValidYet) => Rejection::NotYetValid,
        Some(JWTError::AlgorithmMismatch) => Rejection::AlgorithmMismatch,
        Some(JWTError::UnknownCriticalExtension) => Rejection::CriticalHeader,
        // Everything else is structure jwt-simple refuses (e.g. a `typ` that is not a JWT).
        _ => Rejection::Malformed,
    })
}

/// ES512 (ECDSA P-521 with SHA-512, RFC 7518 §3.4), which jwt-simple does not offer. The
/// structure jwt-simple would check (header, `typ`, `crit`, claim types) `decode` has checked;
/// the key's algorithm was matched to the header's by key selection.
fn verify_es512(raw: &str, key: &p521::ecdsa::VerifyingKey) -> Result<(), Rejection> {
    use p521::ecdsa::signature::Verifier;
    let (signing_input, signature_b64) = raw.rsplit_once('.').ok_or(Rejection::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| Rejection::Malformed)?;
    // r || s, 66 bytes each, both in [1, n): anything else cannot be a signature.
    let signature = p521::ecdsa::Signature::from_slice(&signature).map_err(|_| Rejection::BadSignature)?;
    key.verify(signing_input.as_bytes(), &signature).map_err(|_| Rejection::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeySource;
    use crate::testkit::*;
    use serde_json::json;

    fn rule_and_keys(extra: serde_json::Value) -> (crate::config::FilterConfig, usize) {
        (config_with(extra, json!({})), 0)
    }

    fn check(token: &str, extra: serde_json::Value) -> Result<(), Rejection> {
        let (config, i) = rule_and_keys(extra);
        let rule = &config.rules[i];
        let KeySource::Inline(keys) = &rule.keys else { unreachable!() };
        let decoded = decode(token, 8192)?;
        verify(&decoded, rule, keys, NOW, &BuiltinOnly)
    }

    #[test]
    fn istio_samples_verify() {
        assert_eq!(check(GROUPS_SCOPE_JWT.trim(), json!({})), Ok(()));
        assert_eq!(check(DEMO_JWT.trim(), json!({})), Ok(()));
    }

    #[test]
    fn time_is_checked_with_clock_skew() {
        let expired = mint_with(json!({"exp": NOW - 61}));
        assert_eq!(check(&expired, json!({})), Err(Rejection::Expired));
        let within_skew = mint_with(json!({"exp": NOW - 59}));
        assert_eq!(check(&within_skew, json!({})), Ok(()));
        assert_eq!(check(&within_skew, json!({"clockSkew": "0s"})), Err(Rejection::Expired));
        let future = mint_with(json!({"nbf": NOW + 120}));
        assert_eq!(check(&future, json!({})), Err(Rejection::NotYetValid));
        // iat in the future is not judged, as in Envoy.
        assert_eq!(check(&mint_with(json!({"iat": NOW + 9999})), json!({})), Ok(()));
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let token = mint_with(json!({}));
        let forged = with_segment(&token, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
        assert_eq!(check(&forged, json!({})), Err(Rejection::BadSignature));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 5;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(check(&String::from_utf8(flipped).unwrap(), json!({})), Err(Rejection::BadSignature));
    }

    #[test]
    fn alg_none_and_confusion_are_refused() {
        let token = mint_with(json!({}));
        let none = with_segment(&token, 0, r#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(decode(&none, 8192).unwrap_err(), Rejection::UnsupportedAlgorithm);
        let parts: Vec<&str> = none.split('.').collect();
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(decode(&unsigned, 8192).unwrap_err(), Rejection::UnsupportedAlgorithm);
        let rs_unsigned = format!("{}.", token.rsplit_once('.').unwrap().0);
        assert_eq!(decode(&rs_unsigned, 8192).unwrap_err(), Rejection::Malformed);
        // HS256 "signed" with the RSA public key: the RSA key never becomes an HMAC key.
        let hs = with_segment(&token, 0, &format!(r#"{{"alg":"HS256","kid":"{ISTIO_KID}"}}"#));
        assert_eq!(check(&hs, json!({})), Err(Rejection::AlgorithmMismatch));
        let es = with_segment(&token, 0, &format!(r#"{{"alg":"ES256","kid":"{ISTIO_KID}"}}"#));
        assert_eq!(check(&es, json!({})), Err(Rejection::AlgorithmMismatch));
        // ES512 is supported, but never with an RSA key, with or without a kid.
        let es512 = with_segment(&token, 0, r#"{"alg":"ES512"}"#);
        assert_eq!(check(&es512, json!({})), Err(Rejection::AlgorithmMismatch));
        let es512 = with_segment(&token, 0, &format!(r#"{{"alg":"ES512","kid":"{ISTIO_KID}"}}"#));
        assert_eq!(check(&es512, json!({})), Err(Rejection::AlgorithmMismatch));
        for unsupported in ["ES256K", "none", "None", "RS1", "HS1"] {
            let header = format!(r#"{{"alg":"{unsupported}"}}"#);
            assert_eq!(decode(&with_segment(&token, 0, &header), 8192).err(), Some(Rejection::UnsupportedAlgorithm));
        }
    }

    #[test]
    fn kid_selects_the_key() {
        let token = mint_with(json!({}));
        let unknown = with_segment(&token, 0, r#"{"alg":"RS256","kid":"rotated"}"#);
        assert_eq!(check(&unknown, json!({})), Err(Rejection::UnknownKid));
        // No kid: every RS256 key is tried; the signature is over the original header so it
        // fails, but as a signature failure, not a key lookup failure.
        let no_kid = with_segment(&token, 0, r#"{"alg":"RS256"}"#);
        assert_eq!(check(&no_kid, json!({})), Err(Rejection::BadSignature));
    }

    #[test]
    fn audiences() {
        let aud = json!({"audiences": ["api", "web"]});
        assert_eq!(check(&mint_with(json!({"aud": "web"})), aud.clone()), Ok(()));
        assert_eq!(check(&mint_with(json!({"aud": ["x", "api"]})), aud.clone()), Ok(()));
        assert_eq!(check(&mint_with(json!({"aud": "other"})), aud.clone()), Err(Rejection::AudienceNotAllowed));
        assert_eq!(check(&mint_with(json!({})), aud), Err(Rejection::AudienceNotAllowed));
        assert_eq!(Rejection::AudienceNotAllowed.status(), 403);
    }

    #[test]
    fn hostile_structure_is_malformed_not_a_panic() {
        let token = mint_with(json!({}));
        let cases = [
            String::new(),
            "a".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            "!!.!!.!!".into(),
            with_segment(&token, 0, "[]"),
            with_segment(&token, 0, r#"{"alg":5}"#),
            with_segment(&token, 0, r#"{"alg":"RS256","kid":7}"#),
            with_segment(&token, 1, "\"just a string\""),
            with_segment(&token, 1, r#"{"iss":"x","exp":-1}"#),
            with_segment(&token, 1, &"[".repeat(5000)),
            with_segment(&token, 1, &format!(r#"{{"iss":"{ISSUER}","x":{}{}}}"#, "[".repeat(100), "]".repeat(100))),
            with_segment(&token, 1, &format!(r#"{{"iss":"evil","iss":"{ISSUER}"}}"#)),
            with_segment(&token, 0, r#"{"alg":"RS256","alg":"RS256"}"#),
        ];
        for case in cases {
            assert_eq!(decode(&case, 1 << 20).err(), Some(Rejection::Malformed), "{case:.40}");
        }
        let crit = with_segment(&token, 0, r#"{"alg":"RS256","crit":["exp"]}"#);
        assert_eq!(decode(&crit, 8192).unwrap_err(), Rejection::CriticalHeader);
        assert_eq!(decode(&token, 10).unwrap_err(), Rejection::TooLarge);
    }
}

#[cfg(test)]
mod acceptance_tests {
    use super::*;
    use crate::config::KeySource;
    use crate::testkit::*;
    use serde_json::json;

    fn check_at(token: &str, extra: Value, now: u64) -> Result<(), Rejection> {
        let config = config_with(extra, json!({}));
        let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
        verify(&decode(token, 8192)?, &config.rules[0], keys, now, &BuiltinOnly)
    }

    /// A token whose payload is exactly this text, with `exp`/`nbf`/`iat` as written (its
    /// signature is over other claims: for `decode` and `check_time` only).
    fn unsigned_with_times(times: &str) -> String {
        let mut claims = format!(r#"{{"iss":"{ISSUER}","groups":["group1"]"#);
        if !times.is_empty() {
            claims.push(',');
            claims.push_str(times);
        }
        claims.push('}');
        with_segment(&mint_with(json!({})), 1, &claims)
    }

    /// A token signed (jwt-simple, the Istio key) over exactly these claims.
    fn signed(claims: Value) -> String {
        let mut all = json!({"iss": ISSUER});
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        mint(all)
    }

    #[test]
    fn numeric_dates_in_any_json_number_notation_are_accepted() {
        for (exp, expect) in [
            ("1764700000", 1_764_700_000),
            ("1764700000.0", 1_764_700_000),
            ("1764700000.5", 1_764_700_000),
            ("1.7647e9", 1_764_700_000),
            ("4.1e9", 4_100_000_000),
            ("4.1E+9", 4_100_000_000),
            ("17647000000e-1", 1_764_700_000),
            ("0", 0),
            ("-0.0", 0),
            // The largest integer below 2^64 as a double (2^64 - 2048); 2^64 - 1024 and up are
            // 2^64 as doubles, and refused (below).
            ("18446744073709549568", 18_446_744_073_709_549_568),
            ("18446744073709550591", 18_446_744_073_709_550_591),
        ] {
            let token = unsigned_with_times(&format!(r#""exp":{exp},"nbf":{exp},"iat":{exp}"#));
            let decoded = decode(&token, 8192).unwrap_or_else(|e| panic!("exp {exp}: {e:?}"));
            assert_eq!(decoded.validity.exp, Some(expect), "exp {exp}");
            assert_eq!(decoded.validity.nbf.map(|nbf| nbf - u64::from(exp.contains(".5"))), Some(expect), "nbf {exp}");
        }
        // The whole check, signature included: jwt-simple's own claim reading must not refuse
        // what `decode` accepts, and its clock must not judge (an exp beyond 2106, where its
        // fixed-point timestamps saturate, and fractions).
        for times in [
            json!({"exp": 1_800_003_600.5}),
            json!({"exp": 1.8000036e9, "nbf": 1.7e9, "iat": 1.7999e9}),
            json!({"exp": 1e19, "nbf": 0.5, "iat": 0}),
            json!({"exp": 18_446_744_073_709_549_568_u64}),
            json!({}),
        ] {
            assert_eq!(check_at(&signed(times.clone()), json!({}), NOW), Ok(()), "{times}");
        }
    }

    #[test]
    fn numeric_dates_that_are_not_numbers_or_out_of_range_are_malformed() {
        for bad in [
            "-1",
            "-0.5",
            "-1e3",
            "18446744073709551616",
            "18446744073709551615",
            "18446744073709550592",
            "1.8446744073709552e19",
            "1e20",
            "\"1\"",
            "\"1764700000\"",
            "true",
            "null",
            "[1]",
            "{}",
        ] {
            for claim in ["exp", "nbf", "iat"] {
                let token = unsigned_with_times(&format!(r#""{claim}":{bad}"#));
                assert_eq!(decode(&token, 8192).err(), Some(Rejection::Malformed), "{claim}: {bad}");
            }
        }
        // Not JSON at all: JSON has no NaN or infinities, and 1e400 overflows a double.
        for bad in ["NaN", "Infinity", "-Infinity", "1e400"] {
            let token = unsigned_with_times(&format!(r#""exp":{bad}"#));
            assert_eq!(decode(&token, 8192).err(), Some(Rejection::Malformed), "{bad}");
        }
    }

    #[test]
    fn fractions_never_round_a_token_into_validity() {
        let at = |times: &str, now: u64| {
            let token = unsigned_with_times(times);
            check_time(&decode(&token, 8192).unwrap(), now, Duration::from_secs(0))
        };
        assert_eq!(at(r#""exp":100.5"#, 100), Ok(()));
        assert_eq!(at(r#""exp":100.5"#, 101), Err(Rejection::Expired), "exp 100.5 is down to 100");
        assert_eq!(at(r#""exp":100.999"#, 101), Err(Rejection::Expired));
        assert_eq!(at(r#""nbf":100.5"#, 100), Err(Rejection::NotYetValid), "nbf 100.5 is up to 101");
        assert_eq!(at(r#""nbf":100.5"#, 101), Ok(()));
        assert_eq!(at(r#""nbf":100.001"#, 100), Err(Rejection::NotYetValid));
        assert_eq!(at(r#""nbf":100,"exp":100"#, 100), Ok(()), "a one-second window at its second");
        // With skew, the same rounding first.
        let skewed = |times: &str, now: u64| {
            check_time(&decode(&unsigned_with_times(times), 8192).unwrap(), now, Duration::from_secs(60))
        };
        assert_eq!(skewed(r#""exp":100.5"#, 160), Ok(()));
        assert_eq!(skewed(r#""exp":100.5"#, 161), Err(Rejection::Expired));
        assert_eq!(skewed(r#""nbf":100.5"#, 40), Err(Rejection::NotYetValid));
        assert_eq!(skewed(r#""nbf":100.5"#, 41), Ok(()));
        // iat is read (its type is checked above) but not judged.
        assert_eq!(at(r#""iat":9999999999.5"#, 100), Ok(()));
        // The same rule in the full check, signature included.
        let no_skew = json!({"clockSkew": "0s"});
        assert_eq!(check_at(&signed(json!({"exp": 1_800_000_000.5})), no_skew.clone(), NOW), Ok(()));
        assert_eq!(check_at(&signed(json!({"exp": 1_800_000_000.5})), no_skew.clone(), NOW + 1), Err(Rejection::Expired));
        assert_eq!(check_at(&signed(json!({"nbf": 1_800_000_000.5})), no_skew.clone(), NOW), Err(Rejection::NotYetValid));
        assert_eq!(check_at(&signed(json!({"nbf": 1_800_000_000.5})), no_skew, NOW + 1), Ok(()));
    }

    #[test]
    fn the_time_rule_is_ours_alone() {
        // jwt-simple's own time checks never decide: its signature check passes tokens long
        // expired or not yet valid, whatever the real clock says...
        let config = config_with(json!({}), json!({}));
        let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
        let key = &keys.select(Some(ISTIO_KID), Algorithm::Rs256).unwrap()[0].key;
        for times in [json!({"exp": 1}), json!({"nbf": 18_446_744_073_709_549_568_u64}), json!({"iat": 1e19}), json!({"exp": 1e19})] {
            let token = signed(times.clone());
            assert_eq!(verify_signature(&decode(&token, 8192).unwrap(), key), Ok(()), "{times}");
        }
        // ...so only `Validity::check` does, before the signature, with the rule's skew.
        let soon = signed(json!({"nbf": NOW + 30}));
        assert_eq!(check_at(&soon, json!({"clockSkew": "30s"}), NOW), Ok(()));
        assert_eq!(check_at(&soon, json!({"clockSkew": "29s"}), NOW), Err(Rejection::NotYetValid));
        let validity = Validity { exp: Some(1000), nbf: Some(900) };
        assert_eq!(validity.check(1000, Duration::ZERO), Ok(()));
        assert_eq!(validity.check(1001, Duration::ZERO), Err(Rejection::Expired));
        assert_eq!(validity.check(899, Duration::ZERO), Err(Rejection::NotYetValid));
        assert_eq!(Validity { exp: Some(u64::MAX), nbf: None }.check(u64::MAX, Duration::from_secs(u64::MAX)), Ok(()));
    }

    /// Signed by jwt-simple with this header `typ`.
    fn signed_with_typ(typ: &str, claims: JWTClaims<NoCustomClaims>) -> String {
        let options = HeaderOptions { signature_type: Some(typ.into()), ..Default::default() };
        istio_key().sign_with_options(claims, &options).unwrap()
    }

    #[test]
    fn typ_jwt_in_its_spellings_verifies() {
        let claims = || Claims::create(jwt_simple::prelude::Duration::from_hours(1)).with_issuer(ISSUER);
        let now = Clock::now_since_epoch().as_secs();
        for typ in ["JWT", "jwt", "application/jwt", "APPLICATION/JWT", "at+jwt", "application/at+jwt", "secevent+jwt"] {
            let token = signed_with_typ(typ, claims());
            assert_eq!(check_at(&token, json!({}), now), Ok(()), "{typ}");
            let forged = with_segment(&token, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
            assert_eq!(check_at(&forged, json!({}), now), Err(Rejection::BadSignature), "{typ}");
        }
        for typ in ["JOSE", "application/jose+json", "JWS", "jwt; charset=utf-8", "+jwt"] {
            assert_eq!(check_at(&signed_with_typ(typ, claims()), json!({}), now), Err(Rejection::Malformed), "{typ}");
        }
    }

    #[test]
    fn a_jwk_without_kid_serves_tokens_with_any_kid() {
        let kidless = ISTIO_JWKS.replace(&format!(r#""kid":"{ISTIO_KID}","#), "");
        assert!(!kidless.contains("\"kid\""), "the fixture's kid was removed");
        let rule = json!({"jwks": kidless});
        let claims = || Claims::create(jwt_simple::prelude::Duration::from_hours(1)).with_issuer(ISSUER);
        let now = Clock::now_since_epoch().as_secs();
        let pair = || RS256KeyPair::from_pem(ISTIO_KEY_PEM).unwrap();
        let with_kid = pair().with_key_id(ISTIO_KID).sign(claims()).unwrap();
        let other_kid = pair().with_key_id("anything").sign(claims()).unwrap();
        let no_kid = pair().sign(claims()).unwrap();
        assert_eq!(decode(&no_kid, 8192).unwrap().kid, None);
        for token in [&with_kid, &other_kid, &no_kid] {
            assert_eq!(check_at(token, rule.clone(), now), Ok(()));
        }
        // Still only its own algorithm, and still a real signature check.
        let hs = HS256Key::from_bytes(b"a secret of thirty-two bytes....").authenticate(claims()).unwrap();
        assert_eq!(check_at(&hs, rule.clone(), now), Err(Rejection::AlgorithmMismatch));
        // With a kid no key has, and no kid-less HS256 key: no key could fit (a refetch may help).
        let hs = HS256Key::from_bytes(b"a secret of thirty-two bytes....").with_key_id("x").authenticate(claims()).unwrap();
        assert_eq!(check_at(&hs, rule.clone(), now), Err(Rejection::UnknownKid));
        let forged = with_segment(&other_kid, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
        assert_eq!(check_at(&forged, rule, now), Err(Rejection::BadSignature));
        // A JWK with a kid serves only that kid; a token without kid tries every key.
        assert_eq!(check_at(&other_kid, json!({}), now), Err(Rejection::UnknownKid));
        assert_eq!(check_at(&no_kid, json!({}), now), Ok(()));
    }

    /// A fixed P-521 key: the secret scalar is `seed` repeated.
    fn p521_key(seed: u8) -> p521::ecdsa::SigningKey {
        let mut scalar = [seed; 66];
        scalar[0] = 0; // below 2^520, so below the group order
        p521::ecdsa::SigningKey::from_slice(&scalar).unwrap()
    }

    fn p521_jwk(key: &p521::ecdsa::SigningKey, members: Value) -> Value {
        let point = key.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        let mut jwk = json!({"kty": "EC", "x": URL_SAFE_NO_PAD.encode(&bytes[1..67]), "y": URL_SAFE_NO_PAD.encode(&bytes[67..])});
        for (k, v) in members.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        jwk
    }

    fn es512_sign(key: &p521::ecdsa::SigningKey, header: &str, payload: &str) -> String {
        use p521::ecdsa::signature::Signer;
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let signature: p521::ecdsa::Signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn es512_rule(jwks: Value) -> Value {
        json!({"jwks": jwks.to_string()})
    }

    #[test]
    fn es512_verifies_in_pure_rust() {
        let key = p521_key(7);
        let rule = es512_rule(json!({"keys": [p521_jwk(&key, json!({"kid": "p521", "crv": "P-521"}))]}));
        let payload = format!(r#"{{"iss":"{ISSUER}","exp":{}}}"#, NOW + 60);
        let token = es512_sign(&key, r#"{"alg":"ES512","kid":"p521"}"#, &payload);
        assert_eq!(decode(&token, 8192).unwrap().alg, Algorithm::Es512);
        assert_eq!(check_at(&token, rule.clone(), NOW), Ok(()));
        assert_eq!(check_at(&token, rule.clone(), NOW + 120), Ok(()), "the default 60 s skew");
        assert_eq!(check_at(&token, rule.clone(), NOW + 121), Err(Rejection::Expired));
        let by_other = es512_sign(&p521_key(8), r#"{"alg":"ES512","kid":"p521"}"#, &payload);
        assert_eq!(check_at(&by_other, rule.clone(), NOW), Err(Rejection::BadSignature));
        let forged = with_segment(&token, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
        assert_eq!(check_at(&forged, rule.clone(), NOW), Err(Rejection::BadSignature));
        let (input, signature) = token.rsplit_once('.').unwrap();
        let raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
        for bad in [&raw[..131], &[0u8; 132][..], &[0xffu8; 132][..], &[]] {
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(bad));
            assert!(matches!(check_at(&token, rule.clone(), NOW), Err(Rejection::BadSignature | Rejection::Malformed)));
        }
        // ES512 through an ES256/RS256 key is refused, and an ES256 token through the P-521 key.
        let es256 = with_segment(&token, 0, r#"{"alg":"ES256","kid":"p521"}"#);
        assert_eq!(check_at(&es256, rule, NOW), Err(Rejection::AlgorithmMismatch));
    }

    #[test]
    fn es512_signed_by_another_implementation_verifies() {
        // PyJWT 2.15 on pyca/cryptography (OpenSSL), generated once offline.
        let jwks = r#"{"keys": [{"kty": "EC", "crv": "P-521", "x": "AC0PhJrrNBlzL1D3xc2KlVC8BHlr6al6qNtWht8DHO3SBrI8LsNYJYWhRwew4vpcKb6lOfxVJvMqvzOd4Y426vI2", "y": "AUyy3dNsC7vMpoFBntJ-EYz0InWhZMlhmX4wmofXi8sFl0l_aPRAcD8dt5oYJULoItL_1fA2Ek1vhy6d5855pFGe", "kid": "py-p521"}]}"#;
        let token = "eyJhbGciOiJFUzUxMiIsImtpZCI6InB5LXA1MjEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyIsInN1YiI6InB5IiwiZXhwIjo0MTAyNDQ0ODAwLCJncm91cHMiOlsicHkiXX0.ADHu2ZPah-vHQzmRONRadITvzlpxK6xnGmMBDkkbaIgTByM7Y6HGWA1SYIl6bT6Y0bX3AfXTgVxCJSe5W2XC8w4pAKwsIQhCpy6CjyeYiXCdhn6qCkFVnC5tm3GUUatGArHzbOMJbvPdIO3andHrXfv-SAz0crl0HU9PxffIiOndatkV";
        assert_eq!(check_at(token, json!({"jwks": jwks}), NOW), Ok(()));
        let tampered = format!("{}A", &token[..token.len() - 1]);
        assert_ne!(tampered, token);
        assert!(check_at(&tampered, json!({"jwks": jwks}), NOW).is_err());
    }

    #[test]
    fn ec_jwks_without_crv_take_the_curve_from_alg() {
        let key = p521_key(9);
        let payload = format!(r#"{{"iss":"{ISSUER}"}}"#);
        let token = es512_sign(&key, r#"{"alg":"ES512","kid":"k"}"#, &payload);
        let with = |members: Value| es512_rule(json!({"keys": [p521_jwk(&key, members)]}));
        assert_eq!(check_at(&token, with(json!({"kid": "k", "alg": "ES512"})), NOW), Ok(()), "no crv, alg ES512");
        assert_eq!(check_at(&token, with(json!({"kid": "k", "alg": "ES512", "crv": "P-521"})), NOW), Ok(()));
        assert_eq!(check_at(&token, with(json!({"alg": "ES512"})), NOW), Ok(()), "no crv, no kid");
        // ES256/ES384 curves from alg too (jwt-simple's keys, through the JWK path).
        let p256 = ES256KeyPair::generate().with_key_id("k");
        let mut jwk: Value = serde_json::from_str(&p256.public_key().to_jwk()).unwrap();
        jwk.as_object_mut().unwrap().remove("crv");
        jwk["alg"] = json!("ES256");
        jwk["kid"] = json!("k");
        let claims = Claims::create(jwt_simple::prelude::Duration::from_hours(1)).with_issuer(ISSUER);
        let now = Clock::now_since_epoch().as_secs();
        let es256 = p256.sign(claims).unwrap();
        assert_eq!(check_at(&es256, es512_rule(json!({"keys": [jwk]})), now), Ok(()));

        let parse = |members: Value| KeySet::parse(json!({"keys": [p521_jwk(&key, members)]}).to_string().as_bytes(), false);
        let no_usable = |members: Value| match parse(members) {
            Err(crate::jwks::JwksError::NoUsableKey { skipped: Some(why) }) => why,
            other => panic!("expected a skipped key, got {other:?}"),
        };
        assert!(no_usable(json!({})).contains("no crv or alg"));
        assert!(no_usable(json!({"alg": "ES384"})).contains("must be 48 bytes"), "the curve alg fixes");
        assert!(no_usable(json!({"alg": "ES256", "crv": "P-521"})).contains("contradicts"));
        assert!(no_usable(json!({"alg": "ES512", "crv": "P-256"})).contains("contradicts"));
        assert!(no_usable(json!({"alg": "RS256"})).contains("does not fit"));
        assert!(no_usable(json!({"crv": 521})).contains("not a string"));
        assert!(no_usable(json!({"crv": "P-192"})).contains("unsupported curve"));
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;
    use crate::config::KeySource;
    use crate::testkit::*;
    use serde_json::json;
    use std::cell::RefCell;

    /// What the host was asked: hash, key, signing input, signature.
    type HostCall = (String, Vec<u8>, Vec<u8>, Vec<u8>);

    /// A host that answers as told and records what it was asked.
    struct ScriptedHost {
        answer: Option<bool>,
        calls: RefCell<Vec<HostCall>>,
    }

    impl ScriptedHost {
        fn new(answer: Option<bool>) -> ScriptedHost {
            ScriptedHost { answer, calls: RefCell::new(Vec::new()) }
        }
    }

    impl HostVerifier for ScriptedHost {
        fn verify(&self, hash: &str, spki_der: &[u8], signing_input: &[u8], signature: &[u8]) -> Option<bool> {
            self.calls.borrow_mut().push((hash.into(), spki_der.into(), signing_input.into(), signature.into()));
            self.answer
        }
    }

    fn check_with(token: &str, host: &dyn HostVerifier) -> Result<(), Rejection> {
        let config = config_with(json!({}), json!({}));
        let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
        verify(&decode(token, 8192)?, &config.rules[0], keys, NOW, host)
    }

    #[test]
    fn rs256_goes_to_the_host_with_the_spki_key_and_the_signing_input() {
        let token = GROUPS_SCOPE_JWT.trim();
        let host = ScriptedHost::new(Some(true));
        assert_eq!(check_with(token, &host), Ok(()));
        let calls = host.calls.borrow();
        assert_eq!(calls.len(), 1);
        let (hash, der, input, signature) = &calls[0];
        assert_eq!(hash, "sha256");
        let expected_der = istio_key().public_key().to_der().unwrap();
        assert_eq!(der, &expected_der);
        let (signing_input, signature_b64) = token.rsplit_once('.').unwrap();
        assert_eq!(input, signing_input.as_bytes());
        assert_eq!(signature, &URL_SAFE_NO_PAD.decode(signature_b64).unwrap());
    }

    #[test]
    fn the_host_answer_decides_and_no_answer_falls_back() {
        let token = GROUPS_SCOPE_JWT.trim();
        assert_eq!(check_with(token, &ScriptedHost::new(Some(false))), Err(Rejection::BadSignature));
        let fallback = ScriptedHost::new(None);
        assert_eq!(check_with(token, &fallback), Ok(()), "jwt-simple decides when the host cannot");
        let tampered = with_segment(token, 1, &format!(r#"{{"iss":"{ISSUER}","groups":["admin"]}}"#));
        assert_eq!(check_with(&tampered, &ScriptedHost::new(None)), Err(Rejection::BadSignature));
        assert_eq!(fallback.calls.borrow().len(), 1);
    }

    #[test]
    fn pss_is_never_sent_to_the_host() {
        let key = PS256KeyPair::from_pem(ISTIO_KEY_PEM).unwrap().with_key_id(ISTIO_KID);
        let claims = Claims::create(jwt_simple::prelude::Duration::from_hours(1)).with_issuer(ISSUER);
        let token = key.sign(claims).unwrap();
        let host = ScriptedHost::new(Some(false));
        let config = config_with(json!({}), json!({}));
        let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
        let now = Clock::now_since_epoch().as_secs();
        assert_eq!(verify(&decode(&token, 8192).unwrap(), &config.rules[0], keys, now, &host), Ok(()));
        assert!(host.calls.borrow().is_empty());
    }

    #[test]
    fn ecdsa_signatures_become_minimal_der() {
        let mut raw = vec![0u8; 64];
        raw[31] = 1; // r = 1
        raw[32] = 0x80; // s has its high bit set: needs a leading zero
        let der = ecdsa_signature_der(&raw, 32).unwrap();
        let mut expected = vec![0x30, 3 + 35, 0x02, 1, 1, 0x02, 33, 0];
        expected.extend_from_slice(&raw[32..]);
        assert_eq!(der, expected);
        assert_eq!(ecdsa_signature_der(&raw, 48), None, "wrong length");
        assert_eq!(ecdsa_signature_der(&[0u8; 64], 32), None, "zero r");
        let long = ecdsa_signature_der(&[0xff; 96], 48).unwrap();
        assert_eq!(&long[..4], &[0x30, 2 * (2 + 49), 0x02, 49]);
        // P-521: 66-byte components, a body over 127 bytes (long-form length).
        let mut p521 = vec![0u8; 132];
        p521[0] = 0x01;
        p521[66] = 0x01;
        let der = ecdsa_signature_der(&p521, 66).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x81, 2 * (2 + 66), 0x02, 66]);
        assert_eq!(der.len(), 3 + 2 * (2 + 66));
        assert_eq!(ecdsa_signature_der(&p521, 64), None);
        // (A real P-521 signature against the p521 crate's own DER: the ES512 host test.)
    }

    #[test]
    fn es512_goes_to_the_host_as_sha512_with_der_when_offered() {
        use p521::ecdsa::signature::Signer;
        let mut scalar = [5u8; 66];
        scalar[0] = 0;
        let key = p521::ecdsa::SigningKey::from_slice(&scalar).unwrap();
        let point = key.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        let jwk = json!({"kty": "EC", "crv": "P-521", "kid": "p",
            "x": URL_SAFE_NO_PAD.encode(&bytes[1..67]), "y": URL_SAFE_NO_PAD.encode(&bytes[67..])});
        let config = config_with(json!({"jwks": json!({"keys": [jwk]}).to_string()}), json!({}));
        let KeySource::Inline(keys) = &config.rules[0].keys else { unreachable!() };
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(r#"{"alg":"ES512","kid":"p"}"#), URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"{ISSUER}"}}"#)));
        let signature: p521::ecdsa::Signature = key.sign(input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        let decoded = decode(&token, 8192).unwrap();

        let host = ScriptedHost::new(Some(false));
        assert_eq!(verify(&decoded, &config.rules[0], keys, NOW, &host), Err(Rejection::BadSignature), "the host decides");
        let calls = host.calls.borrow();
        let (hash, der, text, sig) = &calls[0];
        assert_eq!(hash, "sha512");
        assert_eq!(der.len(), 158);
        assert_eq!(&der[..25], &crate::jwks::p521_spki_der(&[])[..]);
        assert_eq!(&der[25..], bytes);
        assert_eq!(text, input.as_bytes());
        assert_eq!(sig, &p521::ecdsa::DerSignature::from(signature).to_bytes().to_vec());
        drop(calls);

        // A host that failed its P-521 probe is not asked; the built-in check decides.
        struct NoP521(ScriptedHost);
        impl HostVerifier for NoP521 {
            fn offers(&self, alg: Algorithm) -> bool {
                alg != Algorithm::Es512
            }
            fn verify(&self, hash: &str, spki: &[u8], text: &[u8], sig: &[u8]) -> Option<bool> {
                self.0.verify(hash, spki, text, sig)
            }
        }
        let host = NoP521(ScriptedHost::new(Some(false)));
        assert_eq!(verify(&decoded, &config.rules[0], keys, NOW, &host), Ok(()));
        assert!(host.0.calls.borrow().is_empty());
        assert_eq!(check_with(GROUPS_SCOPE_JWT.trim(), &host), Err(Rejection::BadSignature), "RS256 still asked");
    }

    #[test]
    fn structure_checks_match_jwt_simple() {
        let token = mint_with(json!({}));
        for header in [r#"{"alg":"RS256","typ":"JOSE"}"#, r#"{"alg":"RS256","x5c":5}"#] {
            assert_eq!(decode(&with_segment(&token, 0, header), 8192).err(), Some(Rejection::Malformed), "{header}");
        }
        for typ in ["at+jwt", "JWT", "jwt", "application/jwt", "Application/JWT", "application/at+JWT"] {
            let header = format!(r#"{{"alg":"RS256","typ":"{typ}"}}"#);
            assert!(decode(&with_segment(&token, 0, &header), 8192).is_ok(), "{typ}");
        }
        for typ in ["JOSE", "application/jose", "+jwt", "application/+jwt", "jwt+json", "application/json", "", "JWT "] {
            let header = format!(r#"{{"alg":"RS256","typ":"{typ}"}}"#);
            assert_eq!(decode(&with_segment(&token, 0, &header), 8192).err(), Some(Rejection::Malformed), "{typ:?}");
        }
        assert_eq!(decode(&with_segment(&token, 0, r#"{"alg":"RS256","typ":5}"#), 8192).err(), Some(Rejection::Malformed));
        for payload in [r#"{"iss":5}"#, r#"{"sub":[]}"#, r#"{"aud":[1]}"#, r#"{"aud":{}}"#, r#"{"jti":1}"#] {
            assert_eq!(decode(&with_segment(&token, 1, payload), 8192).err(), Some(Rejection::Malformed), "{payload}");
        }
    }
}

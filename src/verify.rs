//! One token against one rule and its key set: decode, check times, select the key by `kid`
//! and `alg`, verify the signature (jwt-simple), check the audience.
//!
//! Order of checks: structure, then issuer (which rule), then time, then signature, then
//! audience. Time before signature spends no RSA work on expired tokens; audience after
//! signature means an unsigned token learns nothing about audiences (Envoy checks audiences
//! first; the verdict is a denial either way, only 401 vs 403 can differ for forged tokens).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde_json::Value;

use crate::config::JwtRule;
use crate::jwks::{KeyMiss, KeySet, VerifyingKey};

/// The JWS algorithms the filter verifies (RFC 7518 names, plus RFC 8037 `EdDSA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Algorithm {
    pub const RSA: [Algorithm; 6] =
        [Algorithm::Rs256, Algorithm::Rs384, Algorithm::Rs512, Algorithm::Ps256, Algorithm::Ps384, Algorithm::Ps512];
    pub const HMAC: [Algorithm; 3] = [Algorithm::Hs256, Algorithm::Hs384, Algorithm::Hs512];

    /// The algorithm a header `alg` names; `None` for `none` and everything unsupported
    /// (ES512 among them: P-521 is not implemented by the verification backend).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "RS256" => Algorithm::Rs256,
            "RS384" => Algorithm::Rs384,
            "RS512" => Algorithm::Rs512,
            "PS256" => Algorithm::Ps256,
            "PS384" => Algorithm::Ps384,
            "PS512" => Algorithm::Ps512,
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "EdDSA" => Algorithm::EdDsa,
            "HS256" => Algorithm::Hs256,
            "HS384" => Algorithm::Hs384,
            "HS512" => Algorithm::Hs512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Hs256 => "HS256",
            Algorithm::Hs384 => "HS384",
            Algorithm::Hs512 => "HS512",
        }
    }
}

/// Why a request is refused. Each maps to a status, a short public message and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `requireToken` and no token was presented.
    Missing,
    TooLarge,
    Malformed,
    /// `alg: none`, an unknown `alg`, or one the backend does not implement (ES512).
    UnsupportedAlgorithm,
    /// A `crit` header parameter: no extension is understood, so none may be required.
    CriticalHeader,
    UnknownIssuer,
    UnknownKid,
    /// The key under this `kid` is of another type or algorithm than the header says.
    AlgorithmMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    AudienceNotAllowed,
    /// No key set could be fetched for the token's issuer.
    KeysUnavailable,
}

impl Rejection {
    /// 403 for a verified token that is not meant for us; 401 for everything else.
    pub fn status(self) -> u32 {
        match self {
            Rejection::AudienceNotAllowed => 403,
            _ => 401,
        }
    }

    /// The response body: says why, never echoes the token.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::Missing => "Jwt is missing",
            Rejection::TooLarge => "Jwt is too large",
            Rejection::Malformed => "Jwt is not well formed",
            Rejection::UnsupportedAlgorithm => "Jwt algorithm is not supported",
            Rejection::CriticalHeader => "Jwt has an unsupported critical header",
            Rejection::UnknownIssuer => "Jwt issuer is not configured",
            Rejection::UnknownKid => "Jwt key id is not in the key set",
            Rejection::AlgorithmMismatch => "Jwt algorithm does not match the key",
            Rejection::BadSignature => "Jwt verification fails",
            Rejection::Expired => "Jwt is expired",
            Rejection::NotYetValid => "Jwt not yet valid",
            Rejection::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Rejection::KeysUnavailable => "Jwt verification keys are unavailable",
        }
    }

    /// A stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::TooLarge => "too_large",
            Rejection::Malformed => "malformed",
            Rejection::UnsupportedAlgorithm => "unsupported_alg",
            Rejection::CriticalHeader => "crit_header",
            Rejection::UnknownIssuer => "unknown_issuer",
            Rejection::UnknownKid => "unknown_kid",
            Rejection::AlgorithmMismatch => "alg_mismatch",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::AudienceNotAllowed => "audience",
            Rejection::KeysUnavailable => "keys_unavailable",
        }
    }

    pub const ALL: [Rejection; 13] = [
        Rejection::Missing,
        Rejection::TooLarge,
        Rejection::Malformed,
        Rejection::UnsupportedAlgorithm,
        Rejection::CriticalHeader,
        Rejection::UnknownIssuer,
        Rejection::UnknownKid,
        Rejection::AlgorithmMismatch,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::AudienceNotAllowed,
        Rejection::KeysUnavailable,
    ];
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A token whose structure has been checked but whose signature has not.
#[derive(Debug)]
pub struct DecodedToken<'a> {
    pub raw: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// The payload as JSON; always an object.
    pub claims: Value,
    /// The payload segment as it appeared (base64url): `outputPayloadToHeader` forwards it.
    pub payload_b64: &'a str,
}

impl DecodedToken<'_> {
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Base64url segments and their JSON: only compact JWS with three segments, a JSON object
/// header naming a supported `alg`, and a JSON object payload.
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
    if signature_b64.is_empty() {
        // An empty signature is what `alg: none` tokens carry; never a valid JWS.
        return Err(Rejection::Malformed);
    }
    let header: Value = decode_json_segment(header_b64)?;
    let header = header.as_object().ok_or(Rejection::Malformed)?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or(Rejection::Malformed)?;
    let alg = Algorithm::from_name(alg).ok_or(Rejection::UnsupportedAlgorithm)?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Rejection::Malformed),
    };
    if header.contains_key("crit") {
        return Err(Rejection::CriticalHeader);
    }
    let claims = decode_json_segment(payload_b64)?;
    if !claims.is_object() {
        return Err(Rejection::Malformed);
    }
    for time_claim in ["exp", "nbf", "iat"] {
        if let Some(v) = claims.get(time_claim) {
            if v.as_u64().is_none() {
                return Err(Rejection::Malformed);
            }
        }
    }
    Ok(DecodedToken { raw, alg, kid, claims, payload_b64 })
}

fn decode_json_segment(segment: &str) -> Result<Value, Rejection> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| Rejection::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| Rejection::Malformed)
}

/// `exp` and `nbf` against `now`, allowing `clock_skew` either way (RFC 7519 §4.1.4–5).
pub fn check_time(token: &DecodedToken<'_>, now_secs: u64, clock_skew: Duration) -> Result<(), Rejection> {
    let skew = clock_skew.as_secs();
    if let Some(exp) = token.claims.get("exp").and_then(Value::as_u64) {
        if now_secs > exp.saturating_add(skew) {
            return Err(Rejection::Expired);
        }
    }
    if let Some(nbf) = token.claims.get("nbf").and_then(Value::as_u64) {
        if now_secs.saturating_add(skew) < nbf {
            return Err(Rejection::NotYetValid);
        }
    }
    Ok(())
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

/// The full check of a decoded token whose issuer is `rule`'s, against `keys`.
pub fn verify(token: &DecodedToken<'_>, rule: &JwtRule, keys: &KeySet, now_secs: u64) -> Result<(), Rejection> {
    check_time(token, now_secs, rule.clock_skew)?;
    let candidates = keys.select(token.kid.as_deref(), token.alg).map_err(|miss| match miss {
        KeyMiss::UnknownKid => Rejection::UnknownKid,
        KeyMiss::AlgorithmMismatch => Rejection::AlgorithmMismatch,
    })?;
    let mut outcome = Err(Rejection::BadSignature);
    for jwk in candidates {
        outcome = verify_signature(token.raw, &jwk.key, now_secs, rule.clock_skew);
        if outcome.is_ok() {
            break;
        }
    }
    outcome?;
    check_audience(token, &rule.audiences)
}

/// The signature (and jwt-simple's own structural checks) with one key.
fn verify_signature(raw: &str, key: &VerifyingKey, now_secs: u64, clock_skew: Duration) -> Result<(), Rejection> {
    let options = VerificationOptions {
        // Time is checked by `check_time` with Envoy's semantics; jwt-simple's own checks are
        // kept consistent (same clock, same skew) and `iat` is not judged, as in Envoy.
        accept_future: true,
        time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(clock_skew.as_secs())),
        artificial_time: Some(jwt_simple::prelude::Duration::from_secs(now_secs)),
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
        verify(&decoded, rule, keys, NOW)
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
        assert_eq!(decode(&unsigned, 8192).unwrap_err(), Rejection::Malformed);
        // HS256 "signed" with the RSA public key: the RSA key never becomes an HMAC key.
        let hs = with_segment(&token, 0, &format!(r#"{{"alg":"HS256","kid":"{ISTIO_KID}"}}"#));
        assert_eq!(check(&hs, json!({})), Err(Rejection::AlgorithmMismatch));
        let es = with_segment(&token, 0, &format!(r#"{{"alg":"ES256","kid":"{ISTIO_KID}"}}"#));
        assert_eq!(check(&es, json!({})), Err(Rejection::AlgorithmMismatch));
        let es512 = with_segment(&token, 0, r#"{"alg":"ES512"}"#);
        assert_eq!(decode(&es512, 8192).unwrap_err(), Rejection::UnsupportedAlgorithm);
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
            with_segment(&token, 1, r#"{"iss":"x","exp":1.5}"#),
            with_segment(&token, 1, r#"{"iss":"x","exp":-1}"#),
            with_segment(&token, 1, &"[".repeat(5000)),
        ];
        for case in cases {
            assert_eq!(decode(&case, 1 << 20).err(), Some(Rejection::Malformed), "{case:.40}");
        }
        let crit = with_segment(&token, 0, r#"{"alg":"RS256","crit":["exp"]}"#);
        assert_eq!(decode(&crit, 8192).unwrap_err(), Rejection::CriticalHeader);
        assert_eq!(decode(&token, 10).unwrap_err(), Rejection::TooLarge);
    }
}

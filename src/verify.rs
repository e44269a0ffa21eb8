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
use crate::json::parse_strict;
use crate::jwks::{Jwk, KeyMiss, KeySet, VerifyingKey};

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
    if let Some(typ) = header.signature_type() {
        let typ = typ.to_ascii_uppercase();
        if typ != "JWT" && !typ.ends_with("+JWT") {
            return Err(Rejection::Malformed);
        }
    }
    let kid = header.key_id().map(str::to_string);
    let claims = decode_json_segment(payload_b64)?;
    let Some(object) = claims.as_object() else {
        return Err(Rejection::Malformed);
    };
    let registered_types_ok = ["exp", "nbf", "iat"].iter().all(|k| object.get(*k).is_none_or(|v| v.as_u64().is_some()))
        // null reads as absent, as jwt-simple reads it.
        && ["iss", "sub", "jti", "nonce"].iter().all(|k| object.get(*k).is_none_or(|v| v.is_string() || v.is_null()))
        && object.get("aud").is_none_or(|aud| match aud {
            Value::String(_) | Value::Null => true,
            Value::Array(list) => list.iter().all(Value::is_string),
            _ => false,
        });
    if !registered_types_ok {
        return Err(Rejection::Malformed);
    }
    Ok(DecodedToken { raw, alg, kid, claims, payload_b64 })
}

fn decode_json_segment(segment: &str) -> Result<Value, Rejection> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| Rejection::Malformed)?;
    parse_strict(&bytes).ok_or(Rejection::Malformed)
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

/// A signature check the host may do faster than the built-in one: Envoy's
/// `verify_signature` foreign function runs BoringSSL natively, an order of magnitude faster
/// than big-integer code inside the VM. It serves RS256/384/512 and ES256/384 (its interface
/// has no PSS padding and no Ed25519); everything else, and any host that does not offer it,
/// uses jwt-simple.
pub trait HostVerifier {
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
            None => verify_signature(token.raw, &jwk.key, now_secs, rule.clock_skew),
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
        _ => return None,
    };
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

/// `r || s` (each `width` bytes) as a DER `ECDSA-Sig-Value`; `None` for a wrong length or a
/// zero component.
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
    }

    #[test]
    fn structure_checks_match_jwt_simple() {
        let token = mint_with(json!({}));
        for header in [r#"{"alg":"RS256","typ":"JOSE"}"#, r#"{"alg":"RS256","x5c":5}"#] {
            assert_eq!(decode(&with_segment(&token, 0, header), 8192).err(), Some(Rejection::Malformed), "{header}");
        }
        assert!(decode(&with_segment(&token, 0, r#"{"alg":"RS256","typ":"at+jwt"}"#), 8192).is_ok());
        for payload in [r#"{"iss":5}"#, r#"{"sub":[]}"#, r#"{"aud":[1]}"#, r#"{"aud":{}}"#, r#"{"jti":1}"#] {
            assert_eq!(decode(&with_segment(&token, 1, payload), 8192).err(), Some(Rejection::Malformed), "{payload}");
        }
    }
}

//! A decoded token's signature with one key: on the host where it offers the check,
//! otherwise jwt-simple (ES512: the `p521` crate).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use jwt_simple::JWTError;

use super::{DecodedToken, HostVerifier};
use crate::jwks::{Jwk, VerifyingKey};
use crate::model::{Algorithm, Rejection};

/// The host's answer for RS*/ES* with a key it can import; `None` to use jwt-simple.
pub(super) fn verify_on_host(token: &DecodedToken<'_>, jwk: &Jwk, host: &dyn HostVerifier) -> Option<Result<(), Rejection>> {
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
pub(super) fn verify_signature(token: &DecodedToken<'_>, key: &VerifyingKey) -> Result<(), Rejection> {
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

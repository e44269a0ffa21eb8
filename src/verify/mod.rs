//! One token against one rule and its key set: decode, check times, select the key by `kid`
//! and `alg`, verify the signature (jwt-simple; ES512 with the `p521` crate), check the
//! audience.
//!
//! Order of checks: structure, then issuer (which rule), then time, then signature, then
//! audience. Time before signature spends no RSA work on expired tokens; audience after
//! signature means an unsigned token learns nothing about audiences (Envoy checks audiences
//! first; the verdict is a denial either way, only 401 vs 403 can differ for forged tokens).

use crate::config::JwtRule;
use crate::jwks::{KeyMiss, KeySet};
use crate::model::{Algorithm, Rejection};

mod decoding;
mod signature;

use decoding::check_audience;
pub use decoding::{check_time, decode, DecodedToken, Validity};
use signature::{verify_on_host, verify_signature};

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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod acceptance_tests;

#[cfg(test)]
mod host_tests;

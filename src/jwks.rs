//! JWKS (RFC 7517) into typed verification keys.
//!
//! Every usable JWK becomes one [`Jwk`] per algorithm it may verify, so that a token's header
//! `alg` selects a key of exactly that type: a key can never be used with an algorithm it was
//! not built for (the jwt-simple key types fix the algorithm). A JWK that cannot be used
//! (unknown `kty`, missing or malformed members, `use: enc`, an unsupported curve) is skipped
//! and reported; the rest of the set still works. A set with no usable key is an error.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::{Map, Value};

use crate::verify::Algorithm;

/// A verification key of one algorithm.
pub enum VerifyingKey {
    Rs256(RS256PublicKey),
    Rs384(RS384PublicKey),
    Rs512(RS512PublicKey),
    Ps256(PS256PublicKey),
    Ps384(PS384PublicKey),
    Ps512(PS512PublicKey),
    Es256(ES256PublicKey),
    Es384(ES384PublicKey),
    EdDsa(Ed25519PublicKey),
    Hs256(HS256Key),
    Hs384(HS384Key),
    Hs512(HS512Key),
}

impl fmt::Debug for VerifyingKey {
    /// Key material never reaches logs: only the type is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({:?})", self.algorithm())
    }
}

impl VerifyingKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKey::Rs256(_) => Algorithm::Rs256,
            VerifyingKey::Rs384(_) => Algorithm::Rs384,
            VerifyingKey::Rs512(_) => Algorithm::Rs512,
            VerifyingKey::Ps256(_) => Algorithm::Ps256,
            VerifyingKey::Ps384(_) => Algorithm::Ps384,
            VerifyingKey::Ps512(_) => Algorithm::Ps512,
            VerifyingKey::Es256(_) => Algorithm::Es256,
            VerifyingKey::Es384(_) => Algorithm::Es384,
            VerifyingKey::EdDsa(_) => Algorithm::EdDsa,
            VerifyingKey::Hs256(_) => Algorithm::Hs256,
            VerifyingKey::Hs384(_) => Algorithm::Hs384,
            VerifyingKey::Hs512(_) => Algorithm::Hs512,
        }
    }
}

/// One key for one algorithm, with the `kid` it was published under.
#[derive(Debug)]
pub struct Jwk {
    pub kid: Option<String>,
    pub key: VerifyingKey,
    /// The public key as DER SubjectPublicKeyInfo, for RS*/ES* keys: what a host signature
    /// check (`verify::HostVerifier`) imports.
    pub spki_der: Option<Vec<u8>>,
}

impl Jwk {
    fn new(kid: Option<String>, key: VerifyingKey) -> Jwk {
        let spki_der = match &key {
            VerifyingKey::Rs256(k) => k.to_der().ok(),
            VerifyingKey::Rs384(k) => k.to_der().ok(),
            VerifyingKey::Rs512(k) => k.to_der().ok(),
            VerifyingKey::Es256(k) => k.to_der().ok(),
            VerifyingKey::Es384(k) => k.to_der().ok(),
            _ => None,
        };
        Jwk { kid, key, spki_der }
    }
}

/// A parsed key set. Keys keep the order of the document.
///
/// Duplicate `kid`s: all keys under one `kid` are kept, and a token naming that `kid` is tried
/// against each of them whose algorithm matches its header (as Envoy does), so an issuer that
/// reuses a `kid` across a rotation keeps working.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
    usable_jwks: usize,
    /// Why each skipped JWK was skipped, for the log (no key material).
    pub skipped: Vec<String>,
}

/// Why a JWKS document could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    NotJson,
    NoKeysArray,
    NoUsableKey { skipped: Vec<String> },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::NotJson => write!(f, "the JWKS is not a JSON object"),
            JwksError::NoKeysArray => write!(f, "the JWKS has no \"keys\" list"),
            JwksError::NoUsableKey { skipped } if skipped.is_empty() => {
                write!(f, "the JWKS holds no keys")
            }
            JwksError::NoUsableKey { skipped } => {
                write!(f, "the JWKS holds no usable key ({})", skipped.join("; "))
            }
        }
    }
}

/// Why no key fits a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMiss {
    /// The `kid` is not in the set: maybe the issuer rotated keys since the last fetch.
    UnknownKid,
    /// Keys exist under this `kid` (or, without a `kid`, in the set) but none of this algorithm.
    AlgorithmMismatch,
}

impl KeySet {
    /// Parses a JWKS document. `allow_symmetric` admits `oct` (HMAC) keys: only key sets
    /// inlined in the configuration may hold them, never fetched ones, since an HMAC key
    /// published over HTTP would let anyone sign.
    pub fn parse(bytes: &[u8], allow_symmetric: bool) -> Result<KeySet, JwksError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::NotJson)?;
        let doc = doc.as_object().ok_or(JwksError::NotJson)?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or(JwksError::NoKeysArray)?;
        let mut set = KeySet::default();
        for (i, entry) in entries.iter().enumerate() {
            match parse_jwk(entry, allow_symmetric) {
                Ok(keys) => {
                    set.usable_jwks += 1;
                    set.keys.extend(keys);
                }
                Err(why) => {
                    let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("-");
                    set.skipped.push(format!("keys[{i}] (kid {kid:?}): {why}"));
                }
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped: set.skipped });
        }
        Ok(set)
    }

    /// How many (key, algorithm) pairs the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys a token with this `kid` and `alg` may be verified with: those of that
    /// algorithm under that `kid`, or without a `kid`, every key of that algorithm (Envoy
    /// does the same).
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<&Jwk>, KeyMiss> {
        let under_kid = |k: &&Jwk| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid));
        let keys: Vec<&Jwk> = self.keys.iter().filter(under_kid).filter(|k| k.key.algorithm() == alg).collect();
        if !keys.is_empty() {
            Ok(keys)
        } else if kid.is_some() && !self.keys.iter().any(|k| under_kid(&k)) {
            Err(KeyMiss::UnknownKid)
        } else {
            Err(KeyMiss::AlgorithmMismatch)
        }
    }

    /// How many JWKs of the document were usable (each may serve several algorithms).
    pub fn usable_jwks(&self) -> usize {
        self.usable_jwks
    }
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("missing or non-string {name:?}"))
}

fn b64_member(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = member(jwk, name)?;
    // Some issuers pad their base64url; RFC 7518 says not to, but the bytes are the same.
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| format!("{name:?} is not base64url"))
}

/// One JWK into the keys it yields (RSA keys without `alg` yield one per RSA algorithm).
fn parse_jwk(entry: &Value, allow_symmetric: bool) -> Result<Vec<Jwk>, String> {
    let jwk = entry.as_object().ok_or("not an object")?;
    let kty = member(jwk, "kty")?;
    if let Some(usage) = jwk.get("use") {
        if usage.as_str() != Some("sig") {
            return Err(format!("\"use\" is {usage}, not \"sig\""));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("\"key_ops\" does not include \"verify\"".into());
        }
    }
    let declared_alg = match jwk.get("alg") {
        None => None,
        Some(a) => {
            let name = a.as_str().ok_or("\"alg\" is not a string")?;
            Some(Algorithm::from_name(name).ok_or_else(|| format!("unsupported \"alg\" {name:?}"))?)
        }
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(k) => Some(k.as_str().ok_or("\"kid\" is not a string")?.to_string()),
    };

    let candidates: Vec<Algorithm> = match kty {
        "RSA" => Algorithm::RSA.to_vec(),
        "EC" => match member(jwk, "crv")? {
            "P-256" => vec![Algorithm::Es256],
            "P-384" => vec![Algorithm::Es384],
            other => return Err(format!("unsupported EC curve {other:?}")),
        },
        "OKP" => match member(jwk, "crv")? {
            "Ed25519" => vec![Algorithm::EdDsa],
            other => return Err(format!("unsupported OKP curve {other:?}")),
        },
        "oct" if allow_symmetric => Algorithm::HMAC.to_vec(),
        "oct" => return Err("symmetric (oct) keys are only accepted in an inline \"jwks\"".into()),
        other => return Err(format!("unsupported \"kty\" {other:?}")),
    };
    let algorithms = match declared_alg {
        None => candidates,
        Some(alg) if candidates.contains(&alg) => vec![alg],
        Some(alg) => return Err(format!("\"alg\" {} does not fit kty {kty:?}", alg.name())),
    };

    let mut keys = Vec::with_capacity(algorithms.len());
    match kty {
        "RSA" => {
            let n = b64_member(jwk, "n")?;
            let e = b64_member(jwk, "e")?;
            for alg in algorithms {
                let key = rsa_key(alg, &n, &e).map_err(|_| "invalid RSA modulus or exponent".to_string())?;
                keys.push(Jwk::new(kid.clone(), key));
            }
        }
        "EC" => {
            let x = b64_member(jwk, "x")?;
            let y = b64_member(jwk, "y")?;
            let width = if algorithms.first() == Some(&Algorithm::Es256) { 32 } else { 48 };
            if x.len() != width || y.len() != width {
                return Err(format!("\"x\" and \"y\" must be {width} bytes for this curve"));
            }
            // SEC1 uncompressed point: 0x04 || x || y.
            let mut point = Vec::with_capacity(1 + 2 * width);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = if width == 32 {
                ES256PublicKey::from_bytes(&point).map(VerifyingKey::Es256)
            } else {
                ES384PublicKey::from_bytes(&point).map(VerifyingKey::Es384)
            };
            keys.push(Jwk::new(kid, key.map_err(|_| "the point is not on the curve".to_string())?));
        }
        "OKP" => {
            let x = b64_member(jwk, "x")?;
            let key = Ed25519PublicKey::from_bytes(&x).map_err(|_| "invalid Ed25519 public key".to_string())?;
            keys.push(Jwk::new(kid, VerifyingKey::EdDsa(key)));
        }
        _ => {
            let k = b64_member(jwk, "k")?;
            if k.is_empty() {
                return Err("empty \"k\"".into());
            }
            for alg in algorithms {
                let key = match alg {
                    Algorithm::Hs256 => VerifyingKey::Hs256(HS256Key::from_bytes(&k)),
                    Algorithm::Hs384 => VerifyingKey::Hs384(HS384Key::from_bytes(&k)),
                    _ => VerifyingKey::Hs512(HS512Key::from_bytes(&k)),
                };
                keys.push(Jwk::new(kid.clone(), key));
            }
        }
    }
    Ok(keys)
}

fn rsa_key(alg: Algorithm, n: &[u8], e: &[u8]) -> Result<VerifyingKey, jwt_simple::Error> {
    Ok(match alg {
        Algorithm::Rs256 => VerifyingKey::Rs256(RS256PublicKey::from_components(n, e)?),
        Algorithm::Rs384 => VerifyingKey::Rs384(RS384PublicKey::from_components(n, e)?),
        Algorithm::Rs512 => VerifyingKey::Rs512(RS512PublicKey::from_components(n, e)?),
        Algorithm::Ps256 => VerifyingKey::Ps256(PS256PublicKey::from_components(n, e)?),
        Algorithm::Ps384 => VerifyingKey::Ps384(PS384PublicKey::from_components(n, e)?),
        _ => VerifyingKey::Ps512(PS512PublicKey::from_components(n, e)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISTIO_JWKS: &str = include_str!("../tests/fixtures/istio-samples/jwks.json");
    const ISTIO_KID: &str = "DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ";

    fn found_algs(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Result<usize, String> {
        set.select(kid, alg).map(|keys| keys.len()).map_err(|miss| format!("{miss:?}"))
    }

    #[test]
    fn istio_sample_set_yields_every_rsa_algorithm_under_its_kid() {
        let set = KeySet::parse(ISTIO_JWKS.as_bytes(), false).unwrap();
        assert_eq!(set.len(), 6);
        assert!(set.skipped.is_empty());
        assert_eq!(found_algs(&set, Some(ISTIO_KID), Algorithm::Rs256), Ok(1));
        assert_eq!(found_algs(&set, Some(ISTIO_KID), Algorithm::Ps512), Ok(1));
        assert_eq!(found_algs(&set, Some("other"), Algorithm::Rs256), Err("UnknownKid".into()));
        assert_eq!(found_algs(&set, Some(ISTIO_KID), Algorithm::Es256), Err("AlgorithmMismatch".into()));
        assert_eq!(found_algs(&set, None, Algorithm::Rs256), Ok(1));
        assert_eq!(found_algs(&set, None, Algorithm::Hs256), Err("AlgorithmMismatch".into()));
    }

    #[test]
    fn declared_alg_restricts_the_key() {
        let doc = ISTIO_JWKS.replace("\"kty\":\"RSA\"", "\"kty\":\"RSA\",\"alg\":\"PS384\"");
        let set = KeySet::parse(doc.as_bytes(), false).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(found_algs(&set, Some(ISTIO_KID), Algorithm::Ps384), Ok(1));
        assert_eq!(found_algs(&set, Some(ISTIO_KID), Algorithm::Rs256), Err("AlgorithmMismatch".into()));
    }

    #[test]
    fn unusable_keys_are_skipped_and_the_rest_still_works() {
        let good = ISTIO_JWKS.trim().trim_start_matches("{ \"keys\":[").trim_end_matches("]}");
        let doc = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"}},
                {{"kty":"XYZ","kid":"future"}},
                {{"kty":"EC","kid":"p521","crv":"P-521","x":"AA","y":"AA"}},
                {{"kty":"EC","kid":"short","crv":"P-256","x":"AA","y":"AA"}},
                {{"kty":"RSA","kid":"no-n","e":"AQAB"}},
                {{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}},
                "not an object",
                {good}
            ]}}"#
        );
        let set = KeySet::parse(doc.as_bytes(), false).unwrap();
        assert_eq!(set.skipped.len(), 7, "{:?}", set.skipped);
        assert_eq!(found_algs(&set, Some(ISTIO_KID), Algorithm::Rs256), Ok(1));
        assert!(set.skipped.iter().all(|s| !s.contains("AQAB")), "no key material in reasons");
    }

    #[test]
    fn hmac_keys_only_inline() {
        let doc = r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}"#;
        assert!(matches!(KeySet::parse(doc.as_bytes(), false), Err(JwksError::NoUsableKey { .. })));
        let set = KeySet::parse(doc.as_bytes(), true).unwrap();
        assert_eq!(found_algs(&set, Some("h"), Algorithm::Hs256), Ok(1));
        assert_eq!(found_algs(&set, Some("h"), Algorithm::Rs256), Err("AlgorithmMismatch".into()));
    }

    #[test]
    fn documents_that_are_not_key_sets_are_errors() {
        assert_eq!(KeySet::parse(b"<html>", false).unwrap_err(), JwksError::NotJson);
        assert_eq!(KeySet::parse(b"[1]", false).unwrap_err(), JwksError::NotJson);
        assert_eq!(KeySet::parse(b"{\"keys\":{}}", false).unwrap_err(), JwksError::NoKeysArray);
        assert_eq!(KeySet::parse(b"{\"keys\":[]}", false).unwrap_err(), JwksError::NoUsableKey { skipped: vec![] });
    }

    #[test]
    fn duplicate_kids_try_every_key_of_the_matching_algorithm() {
        let good = ISTIO_JWKS.trim().trim_start_matches("{ \"keys\":[").trim_end_matches("]}");
        let doc = format!(r#"{{"keys":[{good},{good}]}}"#);
        let set = KeySet::parse(doc.as_bytes(), false).unwrap();
        assert_eq!(set.len(), 12);
        assert_eq!(set.usable_jwks(), 2);
        assert_eq!(found_algs(&set, Some(ISTIO_KID), Algorithm::Rs256), Ok(2));
        assert_eq!(found_algs(&set, None, Algorithm::Rs256), Ok(2));
    }
}

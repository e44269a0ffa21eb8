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

use crate::model::Algorithm;

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
    Es512(p521::ecdsa::VerifyingKey),
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
            VerifyingKey::Es512(_) => Algorithm::Es512,
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
            VerifyingKey::Es512(k) => Some(p521_spki_der(k.to_sec1_point(false).as_bytes())),
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
    /// The skipped JWKs as one line (none if nothing was skipped): read it through
    /// [`KeySet::skipped_summary`]. Visible in the crate, and a list, only until the fetch log
    /// in `filter/mod.rs` (which loops over it) reads it through that.
    pub(crate) skipped: Vec<String>,
}

/// Why a JWKS document could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    NotJson,
    NoKeysArray,
    /// `skipped` is the summary of why each JWK was skipped (`None`: the list is empty).
    NoUsableKey { skipped: Option<String> },
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::NotJson => write!(f, "the JWKS is not a JSON object"),
            JwksError::NoKeysArray => write!(f, "the JWKS has no \"keys\" list"),
            JwksError::NoUsableKey { skipped: None } => write!(f, "the JWKS holds no keys"),
            JwksError::NoUsableKey { skipped: Some(summary) } => {
                write!(f, "the JWKS holds no usable key ({summary})")
            }
        }
    }
}

/// Why no key fits a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMiss {
    /// No key could fit this `kid`: none is published under it and no key without a `kid` is
    /// of the token's algorithm. Maybe the issuer rotated keys since the last fetch.
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
        let mut skips = SkipTally::default();
        for (i, entry) in entries.iter().enumerate() {
            match parse_jwk(entry, allow_symmetric) {
                Ok(keys) => {
                    set.usable_jwks += 1;
                    set.keys.extend(keys);
                }
                Err(skip) => skips.add(i, entry, skip),
            }
        }
        let summary = skips.summary(entries.len());
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey { skipped: summary });
        }
        set.skipped.extend(summary);
        Ok(set)
    }

    /// How many (key, algorithm) pairs the set holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// One line on the JWKs the set skipped, for the log: how many of how many, counted by
    /// reason, and the first one's reason in full (its index and `kid`, never key material),
    /// e.g. `skipped 9,998 of 10,000 keys: 9,990 unsupported kty, 8 use is not sig (first:
    /// keys[0] kid "a": unsupported "kty" "XYZ")`. `None` when every JWK was usable.
    pub fn skipped_summary(&self) -> Option<&str> {
        self.skipped.first().map(String::as_str)
    }

    /// The keys a token with this `kid` and `alg` may be verified with, as Envoy chooses them:
    /// a JWK with a `kid` serves only tokens naming that `kid`, a JWK without one serves every
    /// token of its algorithm, and a token without a `kid` may use every key of its algorithm.
    /// Keys published under the token's `kid` come first.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<&Jwk>, KeyMiss> {
        let of_alg = self.keys.iter().filter(|k| k.key.algorithm() == alg);
        let keys: Vec<&Jwk> = match kid {
            None => of_alg.collect(),
            Some(kid) => {
                let under_kid = of_alg.clone().filter(|k| k.kid.as_deref() == Some(kid));
                under_kid.chain(of_alg.filter(|k| k.kid.is_none())).collect()
            }
        };
        match kid {
            _ if !keys.is_empty() => Ok(keys),
            Some(kid) if !self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)) => Err(KeyMiss::UnknownKid),
            _ => Err(KeyMiss::AlgorithmMismatch),
        }
    }

    /// How many JWKs of the document were usable (each may serve several algorithms).
    pub fn usable_jwks(&self) -> usize {
        self.usable_jwks
    }
}

/// Why one JWK was skipped: a fixed reason to count by, and the particulars (no key material).
#[derive(Debug)]
struct Skip {
    reason: &'static str,
    detail: String,
}

fn skip(reason: &'static str, detail: impl Into<String>) -> Skip {
    Skip { reason, detail: detail.into() }
}

const MALFORMED_MEMBER: &str = "missing or malformed member";

/// The skipped JWKs of one document, counted by reason.
#[derive(Default)]
struct SkipTally {
    total: usize,
    /// In the order the reasons first appeared.
    by_reason: Vec<(&'static str, usize)>,
    first: Option<String>,
}

impl SkipTally {
    fn add(&mut self, index: usize, entry: &Value, skip: Skip) {
        self.total += 1;
        match self.by_reason.iter_mut().find(|(reason, _)| *reason == skip.reason) {
            Some((_, count)) => *count += 1,
            None => self.by_reason.push((skip.reason, 1)),
        }
        if self.first.is_none() {
            let kid = match entry.get("kid").and_then(Value::as_str) {
                Some(kid) => format!(" kid {:?}", clip(kid, 64)),
                None => String::new(),
            };
            self.first = Some(format!("keys[{index}]{kid}: {}", clip(&skip.detail, 160)));
        }
    }

    fn summary(&self, of: usize) -> Option<String> {
        let first = self.first.as_ref()?;
        let counts: Vec<String> =
            self.by_reason.iter().map(|(reason, count)| format!("{} {reason}", thousands(*count))).collect();
        let keys = if of == 1 { "key" } else { "keys" };
        Some(format!(
            "skipped {} of {} {keys}: {} (first: {first})",
            thousands(self.total),
            thousands(of),
            counts.join(", ")
        ))
    }
}

/// At most `max` characters of `text`, marked when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}...", text.get(..at).unwrap_or_default()),
    }
}

/// `n` with thousands separators: 9,998.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, Skip> {
    jwk.get(name).and_then(Value::as_str).ok_or_else(|| skip(MALFORMED_MEMBER, format!("missing or non-string {name:?}")))
}

fn b64_member(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, Skip> {
    let text = member(jwk, name)?;
    // Some issuers pad their base64url; RFC 7518 says not to, but the bytes are the same.
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| skip(MALFORMED_MEMBER, format!("{name:?} is not base64url")))
}

/// The DER SubjectPublicKeyInfo of a P-521 key (RFC 5480): `id-ecPublicKey` on `secp521r1`
/// and the 133-byte uncompressed point, what BoringSSL's `d2i_PUBKEY` reads.
pub(crate) fn p521_spki_der(point: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 25] = [
        0x30, 0x81, 0x9b, // SEQUENCE, 155 bytes
        0x30, 0x10, // SEQUENCE, 16 bytes: the algorithm
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
        0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23, // secp521r1
        0x03, 0x81, 0x86, 0x00, // BIT STRING, 134 bytes, no unused bits
    ];
    let mut der = Vec::with_capacity(PREFIX.len() + point.len());
    der.extend_from_slice(&PREFIX);
    der.extend_from_slice(point);
    der
}

/// The curve of an EC JWK: its `crv`, or where it has none, the one its `alg` fixes.
fn ec_curve(jwk: &Map<String, Value>, declared_alg: Option<Algorithm>) -> Result<Algorithm, Skip> {
    let crv = match (jwk.get("crv"), declared_alg) {
        (Some(crv), _) => crv.as_str().ok_or_else(|| skip(MALFORMED_MEMBER, "\"crv\" is not a string"))?,
        (None, Some(Algorithm::Es256)) => "P-256",
        (None, Some(Algorithm::Es384)) => "P-384",
        (None, Some(Algorithm::Es512)) => "P-521",
        (None, Some(alg)) => return Err(skip(ALG_MISFIT, format!("\"alg\" {} does not fit kty \"EC\"", alg.name()))),
        (None, None) => return Err(skip("no crv or alg", "an EC key with neither \"crv\" nor \"alg\" to fix the curve")),
    };
    match crv {
        "P-256" => Ok(Algorithm::Es256),
        "P-384" => Ok(Algorithm::Es384),
        "P-521" => Ok(Algorithm::Es512),
        other => Err(skip("unsupported curve", format!("unsupported EC curve {:?}", clip(other, 32)))),
    }
}

const ALG_MISFIT: &str = "alg does not fit the key";
const INVALID_KEY: &str = "invalid key";

/// One JWK into the keys it yields (RSA keys without `alg` yield one per RSA algorithm).
fn parse_jwk(entry: &Value, allow_symmetric: bool) -> Result<Vec<Jwk>, Skip> {
    let jwk = entry.as_object().ok_or_else(|| skip("not an object", "not an object"))?;
    let kty = member(jwk, "kty")?;
    let (declared_alg, kid) = usage_alg_and_kid(jwk)?;
    let algorithms = key_algorithms(jwk, kty, declared_alg, allow_symmetric)?;
    key_material(jwk, kty, kid, algorithms)
}

/// A JWK's `use` and `key_ops` (it must be meant to verify), its `alg` and `kid`.
fn usage_alg_and_kid(jwk: &Map<String, Value>) -> Result<(Option<Algorithm>, Option<String>), Skip> {
    if let Some(usage) = jwk.get("use") {
        if usage.as_str() != Some("sig") {
            return Err(skip("use is not sig", format!("\"use\" is {}, not \"sig\"", clip(&usage.to_string(), 32))));
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err(skip("key_ops without verify", "\"key_ops\" does not include \"verify\""));
        }
    }
    let declared_alg = match jwk.get("alg") {
        None => None,
        Some(a) => {
            let name = a.as_str().ok_or_else(|| skip(MALFORMED_MEMBER, "\"alg\" is not a string"))?;
            let alg = Algorithm::from_name(name);
            Some(alg.ok_or_else(|| skip("unsupported alg", format!("unsupported \"alg\" {:?}", clip(name, 32))))?)
        }
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(k) => Some(k.as_str().ok_or_else(|| skip(MALFORMED_MEMBER, "\"kid\" is not a string"))?.to_string()),
    };
    Ok((declared_alg, kid))
}

/// The algorithms a key of this `kty` (and curve) serves, narrowed to its `alg` if it has one.
fn key_algorithms(
    jwk: &Map<String, Value>,
    kty: &str,
    declared_alg: Option<Algorithm>,
    allow_symmetric: bool,
) -> Result<Vec<Algorithm>, Skip> {
    let candidates: Vec<Algorithm> = match kty {
        "RSA" => Algorithm::RSA.to_vec(),
        "EC" => vec![ec_curve(jwk, declared_alg)?],
        "OKP" => match member(jwk, "crv")? {
            "Ed25519" => vec![Algorithm::EdDsa],
            other => return Err(skip("unsupported curve", format!("unsupported OKP curve {:?}", clip(other, 32)))),
        },
        "oct" if allow_symmetric => Algorithm::HMAC.to_vec(),
        "oct" => {
            return Err(skip("symmetric key in a fetched set", "symmetric (oct) keys are only accepted in an inline \"jwks\""))
        }
        other => return Err(skip("unsupported kty", format!("unsupported \"kty\" {:?}", clip(other, 32)))),
    };
    match declared_alg {
        None => Ok(candidates),
        Some(alg) if candidates.contains(&alg) => Ok(vec![alg]),
        Some(alg) if kty == "EC" => {
            let crv = candidates.first().map_or("?", |c| curve_name(*c));
            Err(skip(ALG_MISFIT, format!("\"alg\" {} contradicts \"crv\" {crv:?}", alg.name())))
        }
        Some(alg) => Err(skip(ALG_MISFIT, format!("\"alg\" {} does not fit kty {kty:?}", alg.name()))),
    }
}

/// The key material of a JWK whose `kty` [`key_algorithms`] accepted, one key per algorithm.
fn key_material(
    jwk: &Map<String, Value>,
    kty: &str,
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
) -> Result<Vec<Jwk>, Skip> {
    let mut keys = Vec::with_capacity(algorithms.len());
    match kty {
        "RSA" => {
            let n = b64_member(jwk, "n")?;
            let e = b64_member(jwk, "e")?;
            for alg in algorithms {
                let key = rsa_key(alg, &n, &e).map_err(|_| skip(INVALID_KEY, "invalid RSA modulus or exponent"))?;
                keys.push(Jwk::new(kid.clone(), key));
            }
        }
        "EC" => {
            let curve = algorithms.first().copied().unwrap_or(Algorithm::Es256);
            keys.push(Jwk::new(kid, ec_key(jwk, curve)?));
        }
        "OKP" => {
            let x = b64_member(jwk, "x")?;
            let key = Ed25519PublicKey::from_bytes(&x).map_err(|_| skip(INVALID_KEY, "invalid Ed25519 public key"))?;
            keys.push(Jwk::new(kid, VerifyingKey::EdDsa(key)));
        }
        _ => {
            let k = b64_member(jwk, "k")?;
            if k.is_empty() {
                return Err(skip(INVALID_KEY, "empty \"k\""));
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

/// An EC public key from `x` and `y` on the curve of `curve` (an ECDSA algorithm).
fn ec_key(jwk: &Map<String, Value>, curve: Algorithm) -> Result<VerifyingKey, Skip> {
    let x = b64_member(jwk, "x")?;
    let y = b64_member(jwk, "y")?;
    let width = match curve {
        Algorithm::Es256 => 32,
        Algorithm::Es384 => 48,
        _ => 66,
    };
    if x.len() != width || y.len() != width {
        return Err(skip(INVALID_KEY, format!("\"x\" and \"y\" must be {width} bytes for this curve")));
    }
    // SEC1 uncompressed point: 0x04 || x || y.
    let mut point = Vec::with_capacity(1 + 2 * width);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let key = match curve {
        Algorithm::Es256 => ES256PublicKey::from_bytes(&point).map(VerifyingKey::Es256).ok(),
        Algorithm::Es384 => ES384PublicKey::from_bytes(&point).map(VerifyingKey::Es384).ok(),
        _ => p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).map(VerifyingKey::Es512).ok(),
    };
    key.ok_or_else(|| skip(INVALID_KEY, "the point is not on the curve"))
}

/// The JWK `crv` of an ECDSA algorithm.
fn curve_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::Es256 => "P-256",
        Algorithm::Es384 => "P-384",
        Algorithm::Es512 => "P-521",
        _ => "?",
    }
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
        assert_eq!(set.skipped_summary(), None);
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
        let summary = set.skipped_summary().unwrap();
        assert_eq!(
            summary,
            "skipped 7 of 8 keys: 1 use is not sig, 1 unsupported kty, 2 invalid key, \
             1 missing or malformed member, 1 symmetric key in a fetched set, 1 not an object \
             (first: keys[0] kid \"enc\": \"use\" is \"enc\", not \"sig\")"
        );
        assert_eq!(found_algs(&set, Some(ISTIO_KID), Algorithm::Rs256), Ok(1));
        assert!(!summary.contains("AQAB") && !summary.contains("c2VjcmV0"), "no key material in reasons");
    }

    #[test]
    fn many_skipped_keys_are_one_bounded_line() {
        let good = ISTIO_JWKS.trim().trim_start_matches("{ \"keys\":[").trim_end_matches("]}");
        let mut keys: Vec<String> = (0..9_990).map(|i| format!(r#"{{"kty":"XYZ","kid":"k{i}"}}"#)).collect();
        keys.extend((0..8).map(|i| format!(r#"{{"kty":"RSA","use":"enc","kid":"e{i}","n":"AQAB","e":"AQAB"}}"#)));
        keys.push(good.to_string());
        keys.push(good.to_string());
        let doc = format!(r#"{{"keys":[{}]}}"#, keys.join(","));
        let set = KeySet::parse(doc.as_bytes(), false).unwrap();
        assert_eq!(set.usable_jwks(), 2);
        assert_eq!(
            set.skipped_summary(),
            Some(r#"skipped 9,998 of 10,000 keys: 9,990 unsupported kty, 8 use is not sig (first: keys[0] kid "k0": unsupported "kty" "XYZ")"#)
        );
        // Hostile particulars are cut: a huge kid or kty does not make a huge line.
        let doc = format!(r#"{{"keys":[{{"kty":"{}","kid":"{}"}},{good}]}}"#, "K".repeat(100_000), "i".repeat(100_000));
        let summary = KeySet::parse(doc.as_bytes(), false).unwrap().skipped_summary().unwrap().to_string();
        assert!(summary.len() < 300, "{} bytes", summary.len());
        assert!(summary.starts_with("skipped 1 of 2 keys: 1 unsupported kty (first: keys[0] kid \"iii"));
        // All skipped: the error carries the same line.
        let err = KeySet::parse(br#"{"keys":[{"kty":"XYZ"}]}"#, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"the JWKS holds no usable key (skipped 1 of 1 key: 1 unsupported kty (first: keys[0]: unsupported "kty" "XYZ"))"#
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(clip("ééé", 2), "éé...");
    }

    #[test]
    fn kidless_jwks_serve_every_kid_and_unknown_kid_means_no_key_could_fit() {
        let kidless = ISTIO_JWKS.replace(&format!(r#""kid":"{ISTIO_KID}","#), "");
        let set = KeySet::parse(kidless.as_bytes(), false).unwrap();
        assert_eq!(found_algs(&set, Some("any"), Algorithm::Rs256), Ok(1), "a kid-less JWK fits any kid");
        assert_eq!(found_algs(&set, None, Algorithm::Rs256), Ok(1));
        // No ES256 key could fit, under this kid or none: a refetch may bring one.
        assert_eq!(found_algs(&set, Some("any"), Algorithm::Es256), Err("UnknownKid".into()));
        assert_eq!(found_algs(&set, None, Algorithm::Es256), Err("AlgorithmMismatch".into()));

        // Mixed: a key under kid "a" and a kid-less EC key.
        let with_kid = ISTIO_JWKS.trim().trim_start_matches("{ \"keys\":[").trim_end_matches("]}").replace(ISTIO_KID, "a");
        let ec = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let doc = format!(r#"{{"keys":[{with_kid},{ec}]}}"#);
        let set = KeySet::parse(doc.as_bytes(), false).unwrap();
        assert_eq!(found_algs(&set, Some("a"), Algorithm::Rs256), Ok(1));
        assert_eq!(found_algs(&set, Some("a"), Algorithm::Es256), Ok(1), "the kid-less EC key fits kid a");
        assert_eq!(found_algs(&set, Some("b"), Algorithm::Es256), Ok(1));
        // No key under "b" and no kid-less RSA key: nothing could fit, so a refetch may help.
        assert_eq!(found_algs(&set, Some("b"), Algorithm::Rs256), Err("UnknownKid".into()));
        // Under "a" there are keys, but none of this algorithm (and no kid-less one).
        assert_eq!(found_algs(&set, Some("a"), Algorithm::Hs256), Err("AlgorithmMismatch".into()));

        // Keys under the token's kid come before kid-less ones.
        let doc = format!(r#"{{"keys":[{kidless_key},{with_kid}]}}"#, kidless_key = kidless.trim().trim_start_matches("{ \"keys\":[").trim_end_matches("]}"));
        let set = KeySet::parse(doc.as_bytes(), false).unwrap();
        let keys = set.select(Some("a"), Algorithm::Rs256).unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(), vec![Some("a"), None]);
        let keys = set.select(Some("z"), Algorithm::Rs256).unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(), vec![None]);
        let keys = set.select(None, Algorithm::Rs256).unwrap();
        assert_eq!(keys.len(), 2, "without a kid, every key of the algorithm in document order");
    }

    #[test]
    fn p521_keys_parse_and_their_spki_is_rfc5480() {
        // The public key of hostsig's P-521 probe, as a JWK.
        let point = [
            "AXzR9mH-GxIZFfV3AWH7xmbbcvPRjyiJKzFxeM0qD8PoPFnPaiPnOHcbZVX-FSCNwZ5L1tkp-f5bieQ9qUBWSdt8",
            "ATT_IaGW9BpkEPh-_gC_GVbzL4KbZJUi-O99uOCg49i3N3iDEaso1MXCtiGyw1qmSjgTnGrXfQfP3kJy8Q9ZBEVa",
        ];
        let doc = format!(r#"{{"keys":[{{"kty":"EC","crv":"P-521","kid":"p","x":"{}","y":"{}"}}]}}"#, point[0], point[1]);
        let set = KeySet::parse(doc.as_bytes(), false).unwrap();
        let keys = set.select(Some("p"), Algorithm::Es512).unwrap();
        let spki = keys[0].spki_der.as_deref().unwrap();
        assert_eq!(spki.len(), 158);
        assert_eq!(&spki[..27], &[
            0x30, 0x81, 0x9b, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81,
            0x04, 0x00, 0x23, 0x03, 0x81, 0x86, 0x00, 0x04, 0x01,
        ]);
        assert_eq!(format!("{:?}", keys[0].key), "VerifyingKey(Es512)");
        // A point off the curve, and short coordinates, are skipped.
        let off = doc.replace(point[1], &point[0].replace('A', "B"));
        assert!(KeySet::parse(off.as_bytes(), false).unwrap_err().to_string().contains("not on the curve"));
        let short = doc.replace(point[0], "AQAB");
        assert!(KeySet::parse(short.as_bytes(), false).unwrap_err().to_string().contains("66 bytes"));
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
        assert_eq!(KeySet::parse(b"{\"keys\":[]}", false).unwrap_err(), JwksError::NoUsableKey { skipped: None });
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

//! The domain's shared vocabulary: the algorithms, why a request is refused, what a valid
//! request gets. A leaf: it uses nothing else in the crate, so every module may use it.

use std::fmt;

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
    Es512,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Algorithm {
    pub const RSA: [Algorithm; 6] =
        [Algorithm::Rs256, Algorithm::Rs384, Algorithm::Rs512, Algorithm::Ps256, Algorithm::Ps384, Algorithm::Ps512];
    pub const HMAC: [Algorithm; 3] = [Algorithm::Hs256, Algorithm::Hs384, Algorithm::Hs512];

    /// The algorithm a header `alg` names; `None` for `none` and everything unsupported.
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
            "ES512" => Algorithm::Es512,
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
            Algorithm::Es512 => "ES512",
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
    /// `alg: none`, or an `alg` the filter does not implement.
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

/// What a valid request gets: headers to set, headers to remove, maybe a new `:path`.
#[derive(Debug, Default, PartialEq)]
pub struct Grant {
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    pub new_path: Option<String>,
}

//! jwt-claims-filter: a proxy-wasm HTTP filter that validates JWTs against JWKS key sets it
//! fetches and caches itself, and turns verified claims into request headers that Envoy
//! routes can match.
//!
//! The modules follow a request: [`config`] (parsed once), [`extract`] (tokens in, owned
//! headers out), [`verify`] (one token against one rule), [`jwks`] and [`keycache`] (keys and
//! their lifecycle), [`claims`] (claims into header values), [`authn`] (the verdict); the
//! vocabulary they share ([`model`]: algorithms, rejections, grants) is a leaf. They are
//! pure and tested natively. [`plugin`] puts them together for one filter configuration,
//! generic over the [`host`] seam; only `filter` (wasm32) knows the proxy-wasm SDK.

pub mod authn;
pub mod bytes;
pub mod claims;
pub mod conditions;
pub mod config;
pub mod extract;
pub mod headermap;
pub mod host;
pub mod hostsig;
pub mod json;
pub mod jwks;
pub mod keycache;
pub mod model;
pub mod plugin;
pub mod tokencache;
pub mod verify;

#[cfg(test)]
mod testkit;

#[cfg(target_os = "wasi")]
mod filter;

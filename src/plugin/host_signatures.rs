//! The host's signature check: Envoy's `verify_signature` foreign function.

use std::cell::Cell;

use crate::host::{Host, Status};

use crate::hostsig;
use crate::model::Algorithm;
use crate::verify::HostVerifier;

/// Envoy's `verify_signature` foreign function: BoringSSL, natively, for RS*/ES* tokens.
/// Trusted only after it passed `hostsig::host_answers_correctly` in this VM, and for ES512
/// only after `hostsig::host_answers_correctly_for_p521` too.
pub(super) struct EnvoySignatures<H: Host> {
    host: H,
    usable: Cell<bool>,
    p521: Cell<bool>,
}

impl<H: Host> EnvoySignatures<H> {
    const FUNCTION: &'static str = "verify_signature";

    pub(super) fn probe(host: H) -> EnvoySignatures<H> {
        let candidate = EnvoySignatures { host, usable: Cell::new(true), p521: Cell::new(true) };
        let usable = hostsig::host_answers_correctly(&candidate);
        let p521 = usable && hostsig::host_answers_correctly_for_p521(&candidate);
        match (usable, p521) {
            (true, true) => log::info!("signatures: RS*/ES* verified by the host (Envoy verify_signature)"),
            (true, false) => log::info!(
                "signatures: RS*/ES256/ES384 verified by the host (Envoy verify_signature); ES512 built in"
            ),
            _ => log::info!("signatures: host verification unavailable; the built-in code verifies all algorithms"),
        }
        candidate.usable.set(usable);
        candidate.p521.set(p521);
        candidate
    }
}

impl<H: Host> HostVerifier for EnvoySignatures<H> {
    fn offers(&self, alg: Algorithm) -> bool {
        self.usable.get() && (alg != Algorithm::Es512 || self.p521.get())
    }

    fn verify(&self, hash: &str, spki_der: &[u8], signing_input: &[u8], signature: &[u8]) -> Option<bool> {
        if !self.usable.get() {
            return None;
        }
        let arguments = hostsig::encode_arguments(hash, spki_der, signature, signing_input);
        match self.host.call_foreign_function(Self::FUNCTION, &arguments) {
            Ok(answer) => Some(answer.is_some_and(|bytes| hostsig::decode_result(&bytes))),
            Err(Status::NOT_FOUND) => {
                self.usable.set(false);
                None
            }
            // The host could not import the key or hash: let jwt-simple decide.
            Err(_) => None,
        }
    }
}

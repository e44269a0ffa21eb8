//! A remote rule's key set as this VM sees it: a snapshot of the shared record (proxy-wasm
//! shared data, one per Envoy process) and the key set parsed from it.

use crate::host::{Host, Status};

use crate::authn::KeysFor;
use crate::config::{JwtRule, RemoteJwks};
use crate::jwks::KeySet;
use crate::keycache::{Availability, KeyPolicy, KeyRecord};

/// Compare-and-swap attempts on a shared record before giving up for this round.
const CAS_ATTEMPTS: usize = 8;

/// One remote rule's view of its shared key record.
pub(super) struct RemoteKeys<H: Host> {
    host: H,
    /// The shared-data key: one record per (cluster, URI) per Envoy process.
    pub(super) shared_key: String,
    pub(super) policy: KeyPolicy,
    /// The record as last read or written by this VM.
    pub(super) record: KeyRecord,
    /// The key set parsed from the record's JWKS, with its generation.
    loaded: Option<(u64, KeySet)>,
}

impl<H: Host> RemoteKeys<H> {
    pub(super) fn new(host: H, rule: &JwtRule, remote: &RemoteJwks) -> RemoteKeys<H> {
        RemoteKeys {
            host,
            shared_key: format!(
                "jwt_claims_filter.jwks|{}|{}://{}{}",
                remote.cluster, remote.uri.scheme, remote.uri.authority, remote.uri.path
            ),
            policy: KeyPolicy {
                cache_duration: rule.jwks_cache_duration,
                min_refetch_interval: rule.jwks_min_refetch_interval,
                fetch_timeout: rule.timeout,
            },
            record: KeyRecord::default(),
            loaded: None,
        }
    }

    /// Takes a record as current, parsing its JWKS if this VM has not seen that generation.
    fn adopt(&mut self, record: KeyRecord) {
        if let Some(cached) = record.keys() {
            if self.loaded.as_ref().map(|(generation, _)| *generation) != Some(cached.generation) {
                match KeySet::parse(cached.jwks.as_bytes(), false) {
                    Ok(keys) => self.loaded = Some((cached.generation, keys)),
                    Err(e) => log::warn!("jwks: shared key set unusable: {e}"),
                }
            }
        }
        self.record = record;
    }

    /// Creates the shared record if no VM has yet. Envoy checks a CAS token only for a key
    /// that exists, so the first write cannot be conditional: two VMs that both found no
    /// record could both take the fetch lease. Writing an empty record at configuration time
    /// (the main thread's VM configures before any worker starts) means every lease is then
    /// taken by a real compare-and-swap.
    pub(super) fn ensure_record(&self) {
        if let Ok((None, _)) = self.host.shared_data(&self.shared_key) {
            let _ = self.host.set_shared_data(&self.shared_key, &KeyRecord::default().encode(), None);
        }
    }

    /// Re-reads the shared record.
    pub(super) fn sync(&mut self) {
        let (record, _) = read_record(&self.host, &self.shared_key);
        self.adopt(record);
    }

    /// Applies `change` to the shared record by compare-and-swap; `change` returns whether it
    /// changed anything (and so whether to write). Returns `true` when a change was written.
    pub(super) fn update(&mut self, mut change: impl FnMut(&mut KeyRecord) -> bool) -> bool {
        for _ in 0..CAS_ATTEMPTS {
            let (mut record, cas) = read_record(&self.host, &self.shared_key);
            if !change(&mut record) {
                self.adopt(record);
                return false;
            }
            match self.host.set_shared_data(&self.shared_key, &record.encode(), cas) {
                Ok(()) => {
                    self.adopt(record);
                    return true;
                }
                Err(Status::CAS_MISMATCH) => continue, // another worker wrote first: re-read
                Err(status) => {
                    log::warn!("jwks: cannot write shared data ({status})");
                    return false;
                }
            }
        }
        false
    }

    pub(super) fn keys_for(&self, now_ms: u64) -> KeysFor<'_> {
        match self.record.availability(now_ms) {
            Availability::Keys(_) => match &self.loaded {
                Some((generation, keys)) => KeysFor::Ready {
                    keys,
                    generation: *generation,
                    may_refetch: self.record.may_refetch_for_unknown_kid(now_ms, &self.policy),
                },
                None => KeysFor::Unavailable,
            },
            Availability::Pending => KeysFor::Pending,
            Availability::Unavailable => KeysFor::Unavailable,
        }
    }
}

/// The shared record and its CAS token; an empty record when there is none (or it is not
/// one this version understands).
fn read_record(host: &impl Host, key: &str) -> (KeyRecord, Option<u32>) {
    match host.shared_data(key) {
        Ok((Some(bytes), cas)) => (KeyRecord::decode(&bytes).unwrap_or_default(), cas),
        Ok((None, cas)) => (KeyRecord::default(), cas),
        Err(_) => (KeyRecord::default(), None),
    }
}

//! Where ServiceKeys and the keyring are looked up: by the REST routes, and by the token-file
//! agent of `serve --manifests` (which builds the index).
//!
//! Both sources (the cluster's watch cache and `--manifests`) reduce to the same immutable
//! [`KeyIndex`], rebuilt whenever the source changes and swapped in whole; a request only takes
//! a read lock long enough to clone an `Arc`. Keys are indexed by their SHA-256 digest, so a
//! lookup never compares key material with `==`: the map compares digests (which reveal
//! nothing about the key), and the hit is confirmed with a constant-time comparison.

use crate::crd::{Principal, ServiceKey, ServiceKeySpec};
use crate::keyring::Keyring;
use crate::token::claims::{Binding, key_fingerprint};
use crate::token::mint::Issuing;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Data key of a key Secret holding the service key.
pub const KEY_DATA_KEY: &str = "key";

/// SHA-256 of a presented or stored key.
pub type KeyDigest = [u8; 32];

pub fn digest(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// One usable ServiceKey: its spec and where it lives. Holds the key's digest and fingerprint,
/// never the key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub namespace: String,
    pub name: String,
    pub spec: ServiceKeySpec,
    /// `metadata.creationTimestamp`, reported by the Nexla routes.
    pub created: Option<Timestamp>,
    /// [`key_fingerprint`] of the key: derived tokens carry it, so a replaced key voids them.
    pub fingerprint: String,
    key_digest: KeyDigest,
    /// `namespace/name`, built once: every request that mints names it.
    reference: String,
}

impl KeyEntry {
    /// `namespace/name`: the `service_key` claim of session tokens and the non-secret
    /// `api_key` the Nexla routes report.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    pub fn principal(&self) -> &Principal {
        &self.spec.principal
    }

    /// What tokens minted with this key carry to name it.
    pub fn issuing(&self) -> Issuing<'_> {
        Issuing {
            service_key: &self.reference,
            key_fingerprint: &self.fingerprint,
        }
    }

    /// Whether a token's binding names this very key (same ServiceKey, same key material).
    pub fn binds(&self, binding: &Binding) -> bool {
        binding.service_key == self.reference() && binding.key_fingerprint == self.fingerprint
    }

    /// Lifetime of session tokens (`spec.sessionToken.ttl`, default 1h). A TTL the schema
    /// would have refused (only possible from manifests) falls back to the default.
    pub fn session_ttl(&self) -> Duration {
        self.spec
            .session_token
            .as_ref()
            .and_then(|s| s.ttl().ok())
            .unwrap_or(crate::crd::service_key::DEFAULT_SESSION_TTL)
    }

    /// Lifetime of user access tokens (`spec.accessTokenTTL`, default 24h).
    pub fn access_ttl(&self) -> Duration {
        self.spec
            .access_token_ttl()
            .unwrap_or(crate::crd::service_key::DEFAULT_ACCESS_TOKEN_TTL)
    }
}

/// An immutable snapshot of every usable ServiceKey, indexed by key digest and by
/// `namespace/name`.
#[derive(Debug, Default)]
pub struct KeyIndex {
    by_digest: HashMap<KeyDigest, Arc<KeyEntry>>,
    by_reference: HashMap<String, Arc<KeyEntry>>,
    /// `namespace/serviceaccount` -> the ServiceKey that lists it (the oldest listing wins).
    by_service_account: HashMap<String, Arc<KeyEntry>>,
}

impl KeyIndex {
    /// Joins ServiceKeys with their key Secrets (same namespace, name
    /// [`ServiceKey::key_secret_name`], data key `key`, owned by the ServiceKey when it has a
    /// uid). A ServiceKey without a readable,
    /// non-empty key is skipped: it cannot authenticate anyone yet. Two ServiceKeys with the
    /// same key are both skipped, since the key would not say who is calling.
    pub fn build<'a>(
        service_keys: impl IntoIterator<Item = &'a ServiceKey>,
        secrets: impl IntoIterator<Item = &'a Secret>,
    ) -> Self {
        let secrets: HashMap<(String, String), &Secret> = secrets
            .into_iter()
            .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
            .collect();
        // BTreeMap: deterministic order for the principal lists and duplicate handling.
        let mut entries: BTreeMap<String, KeyEntry> = BTreeMap::new();
        for sk in service_keys {
            let namespace = sk.namespace().unwrap_or_default();
            let Some(secret) = secrets.get(&(namespace.clone(), sk.key_secret_name())) else {
                continue;
            };
            // From the API server a ServiceKey has a uid, and its key Secret must be owned by it:
            // a same-named Secret it does not own is a conflict the operator refuses to use
            // (SecretConflict), and so do we. Manifests carry no uids.
            if let Some(uid) = sk.uid()
                && !secret.owner_references().iter().any(|o| o.uid == uid)
            {
                continue;
            }
            let Some(key) = secret_value(secret, KEY_DATA_KEY) else {
                continue;
            };
            if key.is_empty() {
                continue;
            }
            let name = sk.name_any();
            let entry = KeyEntry {
                reference: format!("{namespace}/{name}"),
                namespace,
                name,
                spec: sk.spec.clone(),
                created: sk.metadata.creation_timestamp.as_ref().map(|t| t.0),
                fingerprint: key_fingerprint(&key),
                key_digest: digest(&key),
            };
            entries.insert(entry.reference.clone(), entry);
        }
        let mut count: HashMap<KeyDigest, usize> = HashMap::new();
        for e in entries.values() {
            *count.entry(e.key_digest).or_default() += 1;
        }
        let mut index = KeyIndex::default();
        for (reference, entry) in entries {
            if count[&entry.key_digest] > 1 {
                tracing::warn!(
                    service_key = %reference,
                    "ServiceKey shares its key with another ServiceKey; it is ignored until the keys differ"
                );
                continue;
            }
            let entry = Arc::new(entry);
            index.by_digest.insert(entry.key_digest, entry.clone());
            index.by_reference.insert(reference, entry);
        }
        index.by_service_account = service_account_owners(&index.by_reference);
        index
    }

    /// The entry whose key is `key`.
    pub fn by_key(&self, key: &[u8]) -> Option<Arc<KeyEntry>> {
        self.by_digest(&digest(key))
    }

    /// The entry whose key's [`digest`] is `presented`.
    pub fn by_digest(&self, presented: &KeyDigest) -> Option<Arc<KeyEntry>> {
        let entry = self.by_digest.get(presented)?;
        bool::from(entry.key_digest.ct_eq(presented)).then(|| entry.clone())
    }

    /// The ServiceKey that `namespace/name` (a ServiceAccount) may act as.
    pub fn by_service_account(&self, namespace: &str, name: &str) -> Option<Arc<KeyEntry>> {
        self.by_service_account
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }

    /// The entry a token's binding names, if it still has that key.
    pub fn bound(&self, binding: &Binding) -> Option<Arc<KeyEntry>> {
        self.by_reference
            .get(&binding.service_key)
            .filter(|e| e.binds(binding))
            .cloned()
    }

    /// The entry named `namespace/name`.
    pub fn by_reference(&self, reference: &str) -> Option<Arc<KeyEntry>> {
        self.by_reference.get(reference).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// Which ServiceKey each listed ServiceAccount maps to: per namespace the oldest listing wins
/// (creation time, then name), as the operator reports with ServiceAccountConflict.
fn service_account_owners(
    entries: &HashMap<String, Arc<KeyEntry>>,
) -> HashMap<String, Arc<KeyEntry>> {
    let mut ordered: Vec<&Arc<KeyEntry>> = entries.values().collect();
    ordered.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
    let mut owners = HashMap::new();
    for entry in ordered {
        for account in &entry.spec.service_accounts {
            owners
                .entry(format!("{}/{account}", entry.namespace))
                .or_insert_with(|| entry.clone());
        }
    }
    owners
}

/// A value of a Secret: `stringData` wins over `data`, as when the API server merges them.
pub fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    if let Some(s) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(s.as_bytes().to_vec());
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
}

/// Why the token routes cannot answer yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The ServiceKey and Secret caches have not finished their initial list.
    Syncing,
    /// The keyring Secret does not exist (yet) or is unreadable.
    NoKeyring,
    /// These watches have been failing for longer than [`STALE_AFTER`].
    Stale(Vec<&'static str>),
    /// `--manifests`: the token files of these objects are past their renew time (or were
    /// never written) because writing them fails, or because the object is held (its manifest
    /// is refused).
    Overdue(Vec<String>),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotReady::Syncing => "the ServiceKey cache is not synced yet",
            NotReady::NoKeyring => {
                "no signing keyring yet: the keyring Secret does not exist or is unreadable"
            }
            NotReady::Stale(watches) => {
                return write!(
                    f,
                    "watches failing for over {}s (caches may be stale): {}",
                    STALE_AFTER.as_secs(),
                    watches.join(", ")
                );
            }
            NotReady::Overdue(objects) => {
                return write!(
                    f,
                    "token files past their renew time or missing: {}",
                    objects.join(", ")
                );
            }
        })
    }
}

/// The source of ServiceKeys and the keyring behind the REST routes.
pub trait KeyStore: Send + Sync + 'static {
    /// The current snapshot of usable keys.
    fn keys(&self) -> Arc<KeyIndex>;
    /// The current keyring, if one is loaded.
    fn keyring(&self) -> Option<Arc<Keyring>>;
    /// Whether the caches have completed their initial sync.
    fn synced(&self) -> bool;
    /// Watches that have failed for longer than [`STALE_AFTER`].
    fn stale(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Objects whose token files are overdue (`--manifests`).
    fn overdue(&self) -> Vec<String> {
        Vec::new()
    }

    /// `Ok` when tokens can be minted and verified (and, with `--manifests`, every token file
    /// is current).
    fn readiness(&self) -> Result<(), NotReady> {
        if !self.synced() {
            return Err(NotReady::Syncing);
        }
        if self.keyring().is_none() {
            return Err(NotReady::NoKeyring);
        }
        let stale = self.stale();
        if !stale.is_empty() {
            return Err(NotReady::Stale(stale));
        }
        let overdue = self.overdue();
        if !overdue.is_empty() {
            return Err(NotReady::Overdue(overdue));
        }
        Ok(())
    }
}

/// A store whose content is swapped in whole by its owner: fixed for `--manifests` and tests,
/// fed by watchers in a cluster.
#[derive(Debug, Default)]
pub struct SharedKeyStore {
    keys: RwLock<Arc<KeyIndex>>,
    keyring: RwLock<Option<Arc<Keyring>>>,
    synced: std::sync::atomic::AtomicBool,
    /// The watches feeding it (none for fixed content).
    health: crate::watch::Health,
    /// What the token-file agent could not keep current (`--manifests`).
    overdue: RwLock<Vec<String>>,
}

/// How long a watch may fail before `/readyz` says so. The caches keep serving what they hold
/// meanwhile: keys change rarely, and an API-server restart must not empty the Service.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

impl SharedKeyStore {
    /// A store fed by the watches whose health is `health`.
    pub fn with_health(health: crate::watch::Health) -> Self {
        SharedKeyStore {
            health,
            ..SharedKeyStore::default()
        }
    }

    /// A synced store with fixed content.
    pub fn fixed(keys: KeyIndex, keyring: Keyring) -> Self {
        let store = SharedKeyStore::default();
        store.set_keys(keys);
        store.set_keyring(Some(keyring));
        store.mark_synced();
        store
    }

    pub fn set_keys(&self, keys: KeyIndex) {
        // A poisoned lock only means a writer panicked mid-assignment of an Arc, which cannot
        // leave the value torn; keep serving.
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    pub fn set_keyring(&self, keyring: Option<Keyring>) {
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = keyring.map(Arc::new);
    }

    /// The objects whose token files are overdue, as of the agent's last pass.
    pub fn set_overdue(&self, objects: Vec<String>) {
        *self.overdue.write().unwrap_or_else(|e| e.into_inner()) = objects;
    }

    pub fn mark_synced(&self) {
        self.synced
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl KeyStore for SharedKeyStore {
    fn keys(&self) -> Arc<KeyIndex> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    fn stale(&self) -> Vec<&'static str> {
        self.health.unsynced_for(STALE_AFTER)
    }

    fn overdue(&self) -> Vec<String> {
        self.overdue
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn sk(ns: &str, name: &str, id: &str) -> ServiceKey {
        let mut sk: ServiceKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"principal": {"id": id, "email": "a@b.c", "name": "u"}}
        }))
        .unwrap();
        sk.metadata.namespace = Some(ns.into());
        sk
    }

    fn secret(ns: &str, name: &str, key: &str, string_data: bool) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some(ns.into());
        let map = [(KEY_DATA_KEY.to_owned(), key.to_owned())];
        if string_data {
            s.string_data = Some(map.into_iter().collect());
        } else {
            s.data = Some(
                map.into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes())))
                    .collect(),
            );
        }
        s
    }

    #[test]
    fn joins_keys_with_their_secrets() {
        let keys = [
            sk("a", "one", "1"),
            sk("b", "two", "1"),
            sk("a", "three", "3"),
        ];
        let secrets = [
            secret("a", "one-service-key", "k1", false),
            secret("b", "two-service-key", "k2", true),
            // Wrong namespace: does not belong to a/three.
            secret("b", "three-service-key", "k3", false),
        ];
        let index = KeyIndex::build(&keys, &secrets);
        assert_eq!(index.len(), 2);
        assert_eq!(index.by_key(b"k1").unwrap().reference(), "a/one");
        assert_eq!(index.by_key(b"k2").unwrap().reference(), "b/two");
        assert!(index.by_key(b"k3").is_none());
        assert!(index.by_key(b"k").is_none());
        assert!(index.by_reference("a/three").is_none());
        // A binding is honoured only with the same key material.
        let one = index.by_key(b"k1").unwrap();
        let binding = Binding {
            service_key: "a/one".into(),
            key_fingerprint: key_fingerprint(b"k1"),
        };
        assert!(index.bound(&binding).is_some());
        let replaced = Binding {
            key_fingerprint: key_fingerprint(b"old key"),
            ..binding.clone()
        };
        assert!(index.bound(&replaced).is_none());
        let namesake = Binding {
            service_key: "b/one".into(),
            ..binding
        };
        assert!(index.bound(&namesake).is_none());
        assert_eq!(one.fingerprint, key_fingerprint(b"k1"));
    }

    #[test]
    fn in_a_cluster_the_key_secret_must_be_owned_by_its_service_key() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let mut key = sk("a", "one", "1");
        key.metadata.uid = Some("uid-1".into());
        let mut secret = secret("a", "one-service-key", "k1", false);
        assert!(KeyIndex::build([&key], [&secret]).is_empty(), "not owned");
        secret.metadata.owner_references = Some(vec![OwnerReference {
            uid: "uid-1".into(),
            ..OwnerReference::default()
        }]);
        assert_eq!(KeyIndex::build([&key], [&secret]).len(), 1);
    }

    #[test]
    fn shared_keys_are_ambiguous_and_ignored() {
        let keys = [sk("a", "one", "1"), sk("a", "two", "2")];
        let secrets = [
            secret("a", "one-service-key", "same", false),
            secret("a", "two-service-key", "same", false),
        ];
        assert!(KeyIndex::build(&keys, &secrets).is_empty());
    }
}

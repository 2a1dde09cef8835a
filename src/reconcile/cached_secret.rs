//! The Secret watch cache: of each Secret tokenmint manages, only what a reconcile reads
//! without a GET — identity, version, controlling owner, role, and what revoking its token
//! needs (its id, issue time, expiry and ServiceKey uid) — by name and by owner.
//!
//! A Secret's metadata as the API sends it costs about 1.7 KB in memory (two maps of labels and
//! annotations with room for eleven entries each, owner references, timestamps); an entry here
//! is about 250 bytes with its indexes, for one Secret per managed object. Look-ups by owner go
//! through an index kept with the entries, never a scan; the same updates keep the
//! earliest-expiry gauge ([`Metrics::token_expiries`]) without a pass over the tokens.

use super::compact::Id;
use super::metrics::Metrics;
use super::owned_secret::{
    EXPIRES_AT_ANNOTATION, ISSUED_AT_ANNOTATION, SERVICE_KEY_UID_ANNOTATION, TOKEN_ID_ANNOTATION,
};
use crate::labels::{ROLE_KEY, ROLE_LABEL, ROLE_SESSION, ROLE_TOKEN};
use crate::revocation::Revocation;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What a Secret holds (its `tokenmint.dev/secret-role` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Token,
    Session,
    Key,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Token => ROLE_TOKEN,
            Role::Session => ROLE_SESSION,
            Role::Key => ROLE_KEY,
        }
    }

    pub fn from_label(label: &str) -> Option<Role> {
        match label {
            ROLE_TOKEN => Some(Role::Token),
            ROLE_SESSION => Some(Role::Session),
            ROLE_KEY => Some(Role::Key),
            _ => None,
        }
    }
}

/// What the cache keeps of one Secret besides its name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretMeta {
    pub uid: Option<Id>,
    pub resource_version: Option<Box<str>>,
    /// The uid of the controlling owner reference.
    pub controller_uid: Option<Id>,
    pub role: Option<Role>,
    /// `tokenmint.dev/token-id` and `tokenmint.dev/expires-at`.
    pub token_id: Option<Id>,
    pub expires_at: Option<Timestamp>,
    /// `tokenmint.dev/issued-at` and `tokenmint.dev/service-key-uid`.
    pub issued_at: Option<i64>,
    pub service_key_uid: Option<Id>,
}

/// A cached Secret: its name and what the cache keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSecret {
    pub namespace: String,
    pub name: String,
    pub meta: SecretMeta,
}

impl CachedSecret {
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        let annotation = |key: &str| meta.annotations.as_ref()?.get(key).map(String::as_str);
        CachedSecret {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            meta: SecretMeta {
                uid: meta.uid.as_deref().map(Id::new),
                resource_version: meta.resource_version.as_deref().map(Box::from),
                controller_uid: meta
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|r| r.controller == Some(true))
                    .map(|r| Id::new(&r.uid)),
                role: meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ROLE_LABEL))
                    .and_then(|role| Role::from_label(role)),
                token_id: annotation(TOKEN_ID_ANNOTATION).map(Id::new),
                expires_at: annotation(EXPIRES_AT_ANNOTATION).and_then(|t| t.parse().ok()),
                issued_at: annotation(ISSUED_AT_ANNOTATION).and_then(|t| t.parse().ok()),
                service_key_uid: annotation(SERVICE_KEY_UID_ANNOTATION).map(Id::new),
            },
        }
    }

    pub fn is_controlled_by(&self, owner_uid: &str) -> bool {
        self.meta
            .controller_uid
            .as_ref()
            .is_some_and(|uid| uid.is(owner_uid))
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.meta.role.is_some() && self.meta.role == Role::from_label(role)
    }

    /// The revocation of the token this Secret holds: none without a token id, nor for a
    /// token minted before tokens were bound to their ServiceKey's uid (refused anyway).
    pub fn revocation(&self, reason: &str, now: i64) -> Option<Revocation> {
        let meta = &self.meta;
        let token_id = meta.token_id.as_ref()?.to_string();
        let held = (
            token_id.as_str(),
            meta.issued_at,
            meta.expires_at.map(|t| t.as_second()),
        );
        Some(Revocation::of_held(
            held,
            meta.role == Some(Role::Session),
            meta.service_key_uid.as_ref()?.to_string(),
            reason.to_owned(),
            now,
        ))
    }

    /// The expiry of the token it holds, for the earliest-expiry gauge: a token or session
    /// Secret with an owner (an orphaned one — `kubectl delete --cascade=orphan` — is no
    /// longer managed, and nothing will ever rotate it).
    fn token_expiry(meta: &SecretMeta) -> Option<Timestamp> {
        (matches!(meta.role, Some(Role::Token | Role::Session)) && meta.controller_uid.is_some())
            .then_some(meta.expires_at)
            .flatten()
    }
}

impl From<&PartialObjectMeta<Secret>> for CachedSecret {
    fn from(meta: &PartialObjectMeta<Secret>) -> Self {
        CachedSecret::from_meta(&meta.metadata)
    }
}

type Entries = HashMap<Arc<str>, SecretMeta>;

#[derive(Default)]
struct Inner {
    /// By `namespace/name`.
    by_name: Entries,
    /// The names of the Secrets each owner controls.
    by_owner: HashMap<Id, Vec<Arc<str>>>,
    /// The entries of a relist in progress, swapped in when it is done.
    relist: Option<Entries>,
}

impl Inner {
    fn index(&mut self, key: &Arc<str>, meta: &SecretMeta) {
        if let Some(owner) = &meta.controller_uid {
            let names = self.by_owner.entry(owner.clone()).or_default();
            if !names.contains(key) {
                names.push(key.clone());
            }
        }
    }

    fn unindex(&mut self, key: &str, meta: &SecretMeta) {
        let Some(owner) = &meta.controller_uid else {
            return;
        };
        if let Some(names) = self.by_owner.get_mut(owner) {
            names.retain(|n| **n != *key);
            if names.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }
}

fn split(key: &str) -> (String, String) {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    (namespace.to_owned(), name.to_owned())
}

fn joined(key: &str, meta: &SecretMeta) -> CachedSecret {
    let (namespace, name) = split(key);
    CachedSecret {
        namespace,
        name,
        meta: meta.clone(),
    }
}

/// The Secrets labelled `app.kubernetes.io/managed-by=tokenmint`, as the watch reports them.
pub struct SecretCache {
    inner: RwLock<Inner>,
    metrics: Arc<Metrics>,
}

impl SecretCache {
    /// An empty cache whose token expiries feed `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        SecretCache {
            inner: RwLock::default(),
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The resourceVersion the cache shows for Secret `name` (`None`: not cached).
    pub fn version(&self, namespace: &str, name: &str) -> Option<Option<String>> {
        let key = format!("{namespace}/{name}");
        let inner = self.read();
        let meta = inner.by_name.get(key.as_str())?;
        Some(meta.resource_version.as_deref().map(str::to_owned))
    }

    /// The cached Secrets of `namespace` whose controlling owner is `owner_uid`.
    pub fn owned_by(&self, namespace: &str, owner_uid: &str) -> Vec<CachedSecret> {
        let inner = self.read();
        let Some(names) = inner.by_owner.get(&Id::new(owner_uid)) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|key| Some((key, inner.by_name.get(key)?)))
            .map(|(key, meta)| joined(key, meta))
            .filter(|secret| secret.namespace == namespace)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies a watch event. Returns the Secrets gone for good: the one a `Delete` names, and
    /// at the end of a relist those it no longer lists (or lists anew, with another uid).
    pub fn apply(&self, event: &watcher::Event<CachedSecret>) -> Vec<CachedSecret> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(secret) => {
                let key: Arc<str> = format!("{}/{}", secret.namespace, secret.name).into();
                let new = CachedSecret::token_expiry(&secret.meta);
                let old = inner.by_name.insert(key.clone(), secret.meta.clone());
                if let Some(old) = &old {
                    inner.unindex(&key, old);
                }
                inner.index(&key, &secret.meta);
                self.metrics
                    .token_expiries(old.as_ref().and_then(CachedSecret::token_expiry), new);
                Vec::new()
            }
            watcher::Event::Delete(secret) => {
                let key = format!("{}/{}", secret.namespace, secret.name);
                if let Some(old) = inner.by_name.remove(key.as_str()) {
                    inner.unindex(&key, &old);
                    self.metrics
                        .token_expiries(CachedSecret::token_expiry(&old), None);
                }
                vec![secret.clone()]
            }
            watcher::Event::Init => {
                inner.relist = Some(Entries::default());
                Vec::new()
            }
            watcher::Event::InitApply(secret) => {
                let key = format!("{}/{}", secret.namespace, secret.name);
                inner
                    .relist
                    .get_or_insert_default()
                    .insert(key.into(), secret.meta.clone());
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = inner.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut inner.by_name, listed);
                let Inner {
                    by_name, by_owner, ..
                } = &mut *inner;
                by_owner.clear();
                for (key, meta) in by_name.iter() {
                    if let Some(owner) = &meta.controller_uid {
                        by_owner.entry(owner.clone()).or_default().push(key.clone());
                    }
                    self.metrics
                        .token_expiries(None, CachedSecret::token_expiry(meta));
                }
                let mut gone = Vec::new();
                for (key, meta) in old {
                    self.metrics
                        .token_expiries(CachedSecret::token_expiry(&meta), None);
                    let listed = inner.by_name.get(&key);
                    if listed.is_none_or(|now| now.uid != meta.uid) {
                        gone.push(joined(&key, &meta));
                    }
                }
                gone
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn owner(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "tokenmint.dev/v1alpha1".into(),
            kind: "DatasourceGrant".into(),
            name: "g".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    fn secret(name: &str, uid: &str, owner_uid: &str, expires: &str) -> CachedSecret {
        CachedSecret::from_meta(&ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            uid: Some(uid.into()),
            resource_version: Some("42".into()),
            owner_references: Some(vec![owner("other", false), owner(owner_uid, true)]),
            labels: Some(BTreeMap::from([(ROLE_LABEL.into(), "token".into())])),
            annotations: Some(BTreeMap::from([
                (TOKEN_ID_ANNOTATION.into(), "jti-1".into()),
                (EXPIRES_AT_ANNOTATION.into(), expires.into()),
                (ISSUED_AT_ANNOTATION.into(), "1764759600".into()),
                (SERVICE_KEY_UID_ANNOTATION.into(), "uid-sk".into()),
                ("unrelated".into(), "dropped".into()),
            ])),
            ..ObjectMeta::default()
        })
    }

    #[test]
    fn keeps_what_reconciles_read() {
        let cached = secret("g-token", "s-1", "g-1", "2026-12-03T12:00:00Z");
        assert!(cached.is_controlled_by("g-1"));
        assert!(!cached.is_controlled_by("other"), "not the controller");
        assert!(cached.has_role("token") && !cached.has_role("service-key"));
        assert_eq!(cached.meta.resource_version.as_deref(), Some("42"));
        let revocation = cached.revocation("deleted", 0).unwrap();
        let exp: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        assert_eq!(
            revocation.target,
            crate::revocation::Target::Token {
                jti: "jti-1".into(),
                expires_at: exp.as_second()
            }
        );
        assert_eq!(revocation.service_key_uid, "uid-sk");
        // No token id, or no binding: nothing to revoke; a malformed expiry is no expiry.
        let bare = CachedSecret::from_meta(&ObjectMeta {
            annotations: Some(BTreeMap::from([
                (EXPIRES_AT_ANNOTATION.into(), "soon".into()),
                (TOKEN_ID_ANNOTATION.into(), "jti-2".into()),
            ])),
            ..ObjectMeta::default()
        });
        assert!(bare.revocation("deleted", 0).is_none() && bare.meta.expires_at.is_none());
    }

    fn earliest(metrics: &Metrics) -> String {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("tokenmint_token_earliest_expiry_timestamp_seconds "))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn looks_up_by_name_and_owner_and_keeps_the_earliest_expiry() {
        let metrics = Arc::new(Metrics::default());
        let cache = SecretCache::new(metrics.clone());
        let a = secret("a-token", "s-a", "g-a", "2030-01-01T00:00:00Z");
        let b = secret("b-token", "s-b", "g-b", "2030-01-01T00:00:10Z");
        for s in [&a, &b] {
            assert!(cache.apply(&watcher::Event::Apply(s.clone())).is_empty());
        }
        assert_eq!(cache.version("team-a", "a-token"), Some(Some("42".into())));
        assert_eq!(cache.version("team-a", "c-token"), None);
        assert_eq!(cache.owned_by("team-a", "g-a"), vec![a.clone()]);
        assert!(cache.owned_by("team-b", "g-a").is_empty());
        assert!(cache.owned_by("team-a", "other").is_empty());
        assert!(earliest(&metrics).ends_with(" 1893456000"));
        // Rotated: the expiry moves with the Secret.
        let a2 = secret("a-token", "s-a", "g-a", "2030-01-01T00:01:00Z");
        cache.apply(&watcher::Event::Apply(a2));
        assert!(earliest(&metrics).ends_with(" 1893456010"));
        assert_eq!(cache.apply(&watcher::Event::Delete(b.clone())), vec![b]);
        assert!(cache.owned_by("team-a", "g-b").is_empty());
        assert!(earliest(&metrics).ends_with(" 1893456060"));
        // A relist without a-token (deleted while no watch ran) and with a new c-token.
        let c = secret("c-token", "s-c", "g-c", "2030-01-01T00:00:05Z");
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(c.clone()));
        let gone = cache.apply(&watcher::Event::InitDone);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].name, "a-token");
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.owned_by("team-a", "g-c"), vec![c]);
        assert!(earliest(&metrics).ends_with(" 1893456005"));
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitDone);
        assert!(earliest(&metrics).ends_with(" 0"), "{}", earliest(&metrics));
    }
}

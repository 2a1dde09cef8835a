//! The operator's watch caches: each kind's objects as the controllers and reconcilers read
//! them, the indexes kept beside them, and the feed that keeps both from one watch.
//!
//! Every look-up a reconcile makes goes through a map, never a scan of a cache: by name (the
//! stores), by owner (the Secret cache, [`super::cached_secret`]), by the ServiceKey a grant or
//! guest token request names, and the ServiceKeys of a namespace that list ServiceAccounts
//! ([`Index`]). The work of a reconcile does not grow with the number of objects.

use super::cached_secret::{CachedSecret, SecretCache};
use super::recent::{self, Recent};
use crate::crd::ServiceKey;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::mpsc;

/// Trigger events buffered per controller before the cache waits for it.
const TRIGGER_BUFFER: usize = 1024;

/// A cache kept by one watch.
pub trait Cache<K> {
    /// What a deletion hands on.
    type Gone;

    /// Applies one watch event. Returns what it removed for good: the object of a `Delete`
    /// and, at the end of a relist, what the list no longer has (deleted while no watch ran),
    /// or has anew under the same name.
    fn apply(&mut self, event: &watcher::Event<K>) -> Vec<Self::Gone>;
}

/// Names of objects by namespace and a key of theirs.
type Groups = HashMap<Box<str>, HashMap<Box<str>, HashSet<Box<str>>>>;

/// The names of a kind's objects grouped by namespace and a key of theirs (the ServiceKey a
/// grant names, say), kept beside its store: who refers to what, without a scan.
#[derive(Default)]
pub struct Index(RwLock<Groups>);

impl Index {
    /// The names of the objects of `namespace` whose key is `key`.
    pub fn names(&self, namespace: &str, key: &str) -> Vec<String> {
        let groups = self.0.read().unwrap_or_else(|e| e.into_inner());
        groups
            .get(namespace)
            .and_then(|keys| keys.get(key))
            .map(|names| names.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default()
    }
}

/// What an object is indexed under, if anything.
type KeyOf<K> = fn(&K) -> Option<Cow<'_, str>>;

fn add<K: Resource>(groups: &mut Groups, obj: &K, key_of: KeyOf<K>) {
    let (Some(key), Some(namespace)) = (key_of(obj), obj.meta().namespace.as_deref()) else {
        return;
    };
    groups
        .entry(namespace.into())
        .or_default()
        .entry(key.into())
        .or_default()
        .insert(obj.name_any().into());
}

fn remove<K: Resource>(groups: &mut Groups, obj: &K, key_of: KeyOf<K>) {
    let (Some(key), Some(namespace)) = (key_of(obj), obj.meta().namespace.as_deref()) else {
        return;
    };
    let Some(keys) = groups.get_mut(namespace) else {
        return;
    };
    if let Some(names) = keys.get_mut(key.as_ref()) {
        names.remove(obj.name_any().as_str());
        if names.is_empty() {
            keys.remove(key.as_ref());
        }
    }
    if keys.is_empty() {
        groups.remove(namespace);
    }
}

/// A kube-runtime store (what a controller reads) with [`Index`]es beside it, kept by one
/// feed. It also forgets the status writes ([`Recent`]) the watch has caught up with.
pub struct Indexed<K: Resource<DynamicType = ()> + Clone + 'static> {
    writer: Writer<K>,
    indexes: Vec<(Arc<Index>, KeyOf<K>)>,
    /// While a relist runs: what the store held before, and the indexes it builds.
    relist: Option<(Vec<Arc<K>>, Vec<Groups>)>,
    recent: Option<Arc<Recent>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Indexed<K> {
    /// An empty store indexed by `key_of`: the store, its index, and the writer to feed.
    pub fn new(key_of: KeyOf<K>) -> (Store<K>, Arc<Index>, Self) {
        let (store, writer) = reflector::store();
        let mut this = Indexed {
            writer,
            indexes: Vec::new(),
            relist: None,
            recent: None,
        };
        let index = this.also_by(key_of);
        (store, index, this)
    }

    /// One more index, by `key_of` (before the first event).
    pub fn also_by(&mut self, key_of: KeyOf<K>) -> Arc<Index> {
        let index = Arc::new(Index::default());
        self.indexes.push((index.clone(), key_of));
        index
    }

    /// Forgets the status writes in `recent` that the watch shows.
    pub fn with_recent(mut self, recent: Arc<Recent>) -> Self {
        self.recent = Some(recent);
        self
    }

    fn seen(&self, obj: &K) {
        if let Some(recent) = &self.recent {
            let key = recent::key(
                &K::kind(&()),
                obj.meta().namespace.as_deref().unwrap_or_default(),
                &obj.name_any(),
            );
            recent.caught_up(&key, obj.meta().resource_version.as_deref());
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Cache<K> for Indexed<K> {
    type Gone = Arc<K>;

    fn apply(&mut self, event: &watcher::Event<K>) -> Vec<Arc<K>> {
        let store = self.writer.as_reader();
        let before = match event {
            watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => {
                let old = store.get(&ObjectRef::from_obj(obj));
                for (index, key_of) in &self.indexes {
                    let mut groups = index.0.write().unwrap_or_else(|e| e.into_inner());
                    remove(&mut groups, old.as_deref().unwrap_or(obj), *key_of);
                    if matches!(event, watcher::Event::Apply(_)) {
                        add(&mut groups, obj, *key_of);
                    }
                }
                None
            }
            watcher::Event::Init => {
                let fresh = self.indexes.iter().map(|_| Groups::default()).collect();
                self.relist = Some((store.state(), fresh));
                None
            }
            watcher::Event::InitApply(obj) => {
                if let Some((_, fresh)) = &mut self.relist {
                    for ((_, key_of), groups) in self.indexes.iter().zip(fresh) {
                        add(groups, obj, *key_of);
                    }
                }
                None
            }
            watcher::Event::InitDone => {
                let (before, fresh) = self.relist.take().unwrap_or_default();
                let fresh = fresh
                    .into_iter()
                    .chain(std::iter::repeat_with(Groups::default));
                for ((index, _), groups) in self.indexes.iter().zip(fresh) {
                    *index.0.write().unwrap_or_else(|e| e.into_inner()) = groups;
                }
                Some(before)
            }
        };
        self.writer.apply_watcher_event(event);
        // Only once the store shows it (a relist's objects: once it is done): a reconcile in
        // between would find neither.
        match event {
            watcher::Event::Apply(obj) => self.seen(obj),
            watcher::Event::InitDone if self.recent.as_ref().is_some_and(|r| !r.is_empty()) => {
                store.state().iter().for_each(|obj| self.seen(obj))
            }
            _ => {}
        }
        match (event, before) {
            (watcher::Event::Delete(obj), _) => vec![Arc::new(obj.clone())],
            // Absent from the list, or a new object of the same name: the old one was deleted.
            (_, Some(before)) => before
                .into_iter()
                .filter(|old| {
                    store
                        .get(&ObjectRef::from_obj(&**old))
                        .is_none_or(|now| now.uid() != old.uid())
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The ServiceKeys, by name, by uid (whose revocation marker rose), by the Secret of their
/// session token, and — those listing ServiceAccounts — by namespace.
#[derive(Clone)]
pub struct ServiceKeys {
    pub store: Store<ServiceKey>,
    with_accounts: Arc<Index>,
    /// By `spec.sessionToken.secretName`.
    pub by_session_secret: Arc<Index>,
    by_uid: Arc<RwLock<HashMap<Box<str>, ObjectRef<ServiceKey>>>>,
}

/// The ServiceKey cache's feed: its store and indexes, kept from one watch.
pub struct KeyFeed {
    indexed: Indexed<ServiceKey>,
    store: Store<ServiceKey>,
    by_uid: Arc<RwLock<HashMap<Box<str>, ObjectRef<ServiceKey>>>>,
}

impl KeyFeed {
    /// Forgets the status writes in `recent` that the watch shows.
    pub fn with_recent(mut self, recent: Arc<Recent>) -> Self {
        self.indexed = self.indexed.with_recent(recent);
        self
    }
}

impl Cache<ServiceKey> for KeyFeed {
    type Gone = Arc<ServiceKey>;

    fn apply(&mut self, event: &watcher::Event<ServiceKey>) -> Vec<Arc<ServiceKey>> {
        // A new object under a known name replaces the old one (and its uid).
        let replaced = match event {
            watcher::Event::Apply(obj) => self
                .store
                .get(&ObjectRef::from_obj(obj))
                .filter(|old| old.uid() != obj.uid()),
            _ => None,
        };
        let gone = self.indexed.apply(event);
        let mut by_uid = self.by_uid.write().unwrap_or_else(|e| e.into_inner());
        for old in replaced.iter().chain(&gone) {
            if let Some(uid) = old.meta().uid.as_deref() {
                by_uid.remove(uid);
            }
        }
        if let watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) = event
            && let Some(uid) = obj.meta().uid.as_deref()
        {
            by_uid.insert(uid.into(), ObjectRef::from_obj(obj));
        }
        gone
    }
}

/// The key the ServiceKeys listing ServiceAccounts are indexed under (in their namespace).
const LISTS_ACCOUNTS: &str = "";

impl ServiceKeys {
    /// An empty cache and the writer its watch feeds.
    pub fn new() -> (Self, KeyFeed) {
        let (store, with_accounts, mut indexed) = Indexed::new(|key: &ServiceKey| {
            (!key.spec.service_accounts.is_empty()).then_some(LISTS_ACCOUNTS.into())
        });
        let by_session_secret = indexed.also_by(|key: &ServiceKey| {
            let session = key.spec.session_token.as_ref()?;
            Some(session.secret_name.as_str().into())
        });
        let by_uid = Arc::new(RwLock::new(HashMap::new()));
        (
            ServiceKeys {
                store: store.clone(),
                with_accounts,
                by_session_secret,
                by_uid: by_uid.clone(),
            },
            KeyFeed {
                indexed,
                store,
                by_uid,
            },
        )
    }

    /// The ServiceKey whose uid is `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<Arc<ServiceKey>> {
        let by_uid = self.by_uid.read().unwrap_or_else(|e| e.into_inner());
        self.store.get(by_uid.get(uid)?)
    }

    /// The ServiceKey `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceKey>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// The ServiceKeys of `namespace` that list ServiceAccounts.
    pub fn listing_accounts(&self, namespace: &str) -> Vec<Arc<ServiceKey>> {
        self.with_accounts
            .names(namespace, LISTS_ACCOUNTS)
            .iter()
            .filter_map(|name| self.get(namespace, name))
            .collect()
    }
}

/// The objects of `namespace` whose key in `index` is `key`.
pub fn refs<K: Resource<DynamicType = ()>>(
    index: &Index,
    namespace: &str,
    key: &str,
) -> Vec<ObjectRef<K>> {
    index
        .names(namespace, key)
        .iter()
        .map(|name| ObjectRef::new(name).within(namespace))
        .collect()
}

/// The objects of a store whose key (by [`Indexed`]) is the name of ServiceKey `key`.
pub fn referrers<K: Resource<DynamicType = ()> + Clone + 'static>(
    index: &Index,
    key: &ServiceKey,
) -> Vec<ObjectRef<K>> {
    refs(index, &key.namespace().unwrap_or_default(), &key.name_any())
}

/// The Secret cache fed from a metadata watch.
pub struct SecretFeed(pub Arc<SecretCache>);

impl Cache<PartialObjectMeta<Secret>> for SecretFeed {
    type Gone = CachedSecret;

    fn apply(&mut self, event: &watcher::Event<PartialObjectMeta<Secret>>) -> Vec<CachedSecret> {
        self.0.apply(&match event {
            watcher::Event::Apply(meta) => watcher::Event::Apply(CachedSecret::from(meta)),
            watcher::Event::InitApply(meta) => watcher::Event::InitApply(CachedSecret::from(meta)),
            watcher::Event::Delete(meta) => watcher::Event::Delete(CachedSecret::from(meta)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        })
    }
}

/// Hands every object a cache sees to the controllers subscribed to it.
pub struct Fanout<K> {
    subscribers: Mutex<Vec<mpsc::Sender<K>>>,
}

impl<K: Clone + Send + 'static> Fanout<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(Fanout {
            subscribers: Mutex::new(Vec::new()),
        })
    }

    pub fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, rx) = mpsc::channel(TRIGGER_BUFFER);
        self.subscribers.lock().expect("fanout lock").push(tx);
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|obj| (Ok(obj), rx))
        })
    }

    pub(super) async fn send(&self, obj: &K) {
        let subscribers: Vec<mpsc::Sender<K>> =
            self.subscribers.lock().expect("fanout lock").clone();
        for tx in subscribers {
            // A controller that has stopped (shutdown) has dropped its receiver.
            let _ = tx.send(obj.clone()).await;
        }
    }
}

/// Feeds one cache from `events`: the cache (and its indexes) first, then the subscribed
/// controllers, then `on_delete` for what is gone — deleted objects the watch saw, and those a
/// relist no longer finds (deleted while no watch ran: an API-server restart, a 410, an
/// outage).
pub async fn feed<K, C, F, Fut>(
    events: impl Stream<Item = watcher::Event<K>>,
    mut cache: C,
    fanout: Arc<Fanout<K>>,
    mut on_delete: F,
) where
    K: Clone + Send + 'static,
    C: Cache<K>,
    F: FnMut(C::Gone) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let gone = cache.apply(&event);
        match &event {
            watcher::Event::Apply(obj)
            | watcher::Event::InitApply(obj)
            | watcher::Event::Delete(obj) => fanout.send(obj).await,
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        for gone in gone {
            on_delete(gone).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DatasourceGrant;

    fn grant(name: &str, uid: &str, key: &str) -> DatasourceGrant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant",
            "metadata": {"name": name, "namespace": "team-a", "uid": uid},
            "spec": {"serviceKeyRef": {"name": key}, "dataSource": "d"}
        }))
        .unwrap()
    }

    fn key(name: &str) -> ServiceKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"principal": {"id": "1", "email": "a@b.c", "name": "a"}}
        }))
        .unwrap()
    }

    fn names(refs: Vec<ObjectRef<DatasourceGrant>>) -> Vec<String> {
        let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn the_index_follows_changes_deletions_and_relists() {
        let (store, index, mut cache) =
            Indexed::new(|g: &DatasourceGrant| Some(g.spec.service_key_ref.name.as_str().into()));
        let by_secret = cache.also_by(|g: &DatasourceGrant| Some(g.token_secret_name().into()));
        let apply = |cache: &mut Indexed<DatasourceGrant>, e| cache.apply(&e);
        apply(&mut cache, watcher::Event::Init);
        apply(&mut cache, watcher::Event::InitApply(grant("a", "1", "k1")));
        apply(&mut cache, watcher::Event::InitApply(grant("b", "2", "k1")));
        assert!(apply(&mut cache, watcher::Event::InitDone).is_empty());
        assert_eq!(names(referrers(&index, &key("k1"))), ["a", "b"]);
        // `b` now names another key.
        apply(&mut cache, watcher::Event::Apply(grant("b", "2", "k2")));
        assert_eq!(names(referrers(&index, &key("k1"))), ["a"]);
        assert_eq!(names(referrers(&index, &key("k2"))), ["b"]);
        let gone = apply(&mut cache, watcher::Event::Delete(grant("a", "1", "k1")));
        assert_eq!(gone.len(), 1);
        assert!(referrers::<DatasourceGrant>(&index, &key("k1")).is_empty());
        // A relist: `b` was deleted meanwhile and a new `b` (another uid) created, with `c`.
        apply(&mut cache, watcher::Event::Init);
        apply(&mut cache, watcher::Event::InitApply(grant("b", "3", "k1")));
        apply(&mut cache, watcher::Event::InitApply(grant("c", "4", "k1")));
        let gone = apply(&mut cache, watcher::Event::InitDone);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].metadata.uid.as_deref(), Some("2"));
        assert_eq!(names(referrers(&index, &key("k1"))), ["b", "c"]);
        assert!(referrers::<DatasourceGrant>(&index, &key("k2")).is_empty());
        assert_eq!(store.len(), 2);
        // The second index, by token Secret, followed the same events.
        assert_eq!(names(refs(&by_secret, "team-a", "c-token")), ["c"]);
        assert!(refs::<DatasourceGrant>(&by_secret, "team-a", "a-token").is_empty());
    }

    #[test]
    fn service_keys_listing_accounts_are_found_by_namespace() {
        let (keys, mut writer) = ServiceKeys::new();
        let mut listing = key("with");
        listing.spec.service_accounts = vec!["sa".into()];
        writer.apply(&watcher::Event::Apply(listing.clone()));
        writer.apply(&watcher::Event::Apply(key("without")));
        let found: Vec<String> = keys
            .listing_accounts("team-a")
            .iter()
            .map(|k| k.name_any())
            .collect();
        assert_eq!(found, ["with"]);
        assert!(keys.listing_accounts("team-b").is_empty());
        listing.spec.service_accounts.clear();
        writer.apply(&watcher::Event::Apply(listing));
        assert!(keys.listing_accounts("team-a").is_empty());
        assert!(keys.get("team-a", "without").is_some());
    }

    #[test]
    fn service_keys_are_found_by_uid_until_gone_or_replaced() {
        let (keys, mut writer) = ServiceKeys::new();
        let with_uid = |name: &str, uid: &str| {
            let mut k = key(name);
            k.metadata.uid = Some(uid.into());
            k
        };
        writer.apply(&watcher::Event::Apply(with_uid("a", "u1")));
        writer.apply(&watcher::Event::Apply(with_uid("b", "u2")));
        assert_eq!(
            keys.by_uid("u1").map(|k| k.name_any()).as_deref(),
            Some("a")
        );
        // Deleted and created again under the same name: a new uid, the old one unknown.
        writer.apply(&watcher::Event::Apply(with_uid("a", "u3")));
        assert!(keys.by_uid("u1").is_none());
        assert_eq!(
            keys.by_uid("u3").map(|k| k.name_any()).as_deref(),
            Some("a")
        );
        writer.apply(&watcher::Event::Delete(with_uid("b", "u2")));
        assert!(keys.by_uid("u2").is_none());
        // A relist that no longer has "a" (deleted while no watch ran).
        writer.apply(&watcher::Event::Init);
        writer.apply(&watcher::Event::InitApply(with_uid("c", "u4")));
        writer.apply(&watcher::Event::InitDone);
        assert!(keys.by_uid("u3").is_none());
        assert_eq!(
            keys.by_uid("u4").map(|k| k.name_any()).as_deref(),
            Some("c")
        );
    }
}

//! The key store in a cluster: watch caches over ServiceKeys and the key Secrets tokenmint
//! manages, in all namespaces or each `--watch-namespace`, a watch on the keyring Secret and
//! one on the revocation ConfigMaps. No request ever calls the API server: every change to the
//! caches rebuilds the [`KeyIndex`] in the background and swaps it in. Every watch heals itself
//! ([`crate::watch::resilient`]) and reports its health for `/readyz`.
//!
//! API calls made (and so the RBAC the serve container needs):
//! - `tokenmint.dev/servicekeys`: list, watch (cluster-wide, or in each watched namespace);
//! - `""/secrets` with labels `app.kubernetes.io/managed-by=tokenmint` and
//!   `tokenmint.dev/secret-role=service-key` (key Secrets only: token Secrets, rotated all the
//!   time, are neither cached nor a reason to rebuild the index): list, watch (same scope);
//! - `""/secrets` named `--keyring-secret` in `--namespace` (field selector on the name): list,
//!   watch;
//! - `""/configmaps` labelled as revocations in `--namespace`: list, watch (and create, by
//!   `POST /oauth/revoke`).

use crate::cli::CommonArgs;
use crate::crd::ServiceKey;
use crate::key_store::{KeyIndex, SharedKeyStore, Source};
use crate::keyring::{self, Keyring};
use crate::labels::{MANAGED_SELECTOR, ROLE_KEY, ROLE_LABEL};
use crate::revocation::Denylist;
use crate::watch::{Health, Probe, RestartCounter};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Label selector of the Secrets the key index needs: the key Secrets the operator writes for
/// ServiceKeys, and no token Secret.
pub fn key_secret_selector() -> String {
    format!("{MANAGED_SELECTOR},{ROLE_LABEL}={ROLE_KEY}")
}
/// Changes arriving within this window are folded into one index rebuild.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts the watches on the runtime and returns the store they feed. It reports not ready
/// until every cache has listed once and a keyring was read. `denylist` follows the revocation
/// ConfigMaps of `--namespace`.
pub fn start(
    client: Client,
    args: &CommonArgs,
    restarts: &RestartCounter,
    denylist: Arc<Denylist>,
) -> Arc<SharedKeyStore> {
    let health = Health::default();
    let store = Arc::new(SharedKeyStore::with_health(health.clone()));
    let changed = Arc::new(Notify::new());
    let scopes: Vec<Option<String>> = if args.watch_namespaces.is_empty() {
        vec![None]
    } else {
        args.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let mut key_stores = Vec::new();
    let mut secret_stores = Vec::new();
    let mut probes = Vec::new();
    for scope in &scopes {
        let sk_api: Api<ServiceKey> = crate::watch::scoped(&client, scope.as_deref());
        let secret_api: Api<Secret> = crate::watch::scoped(&client, scope.as_deref());
        let probe = health.probe("servicekeys", restarts);
        probes.push(probe.clone());
        key_stores.push(cache(
            sk_api,
            watcher::Config::default(),
            probe,
            changed.clone(),
        ));
        let probe = health.probe("secrets", restarts);
        probes.push(probe.clone());
        secret_stores.push(cache(
            secret_api,
            watcher::Config::default().labels(&key_secret_selector()),
            probe,
            changed.clone(),
        ));
    }
    tokio::spawn(rebuild(
        store.clone(),
        key_stores,
        secret_stores,
        probes,
        changed,
    ));
    tokio::spawn(watch_keyring(
        store.clone(),
        Api::namespaced(client.clone(), &args.namespace),
        args.keyring_secret.clone(),
        health.probe("keyring", restarts),
    ));
    tokio::spawn(crate::revocation::follow(
        Api::namespaced(client, &args.namespace),
        denylist,
        health.probe("revocations", restarts),
    ));
    store
}

/// A cache over `api`, kept by a self-healing watch; every event notifies `changed`.
fn cache<K: crate::watch::Watchable>(
    api: Api<K>,
    config: watcher::Config,
    probe: Probe,
    changed: Arc<Notify>,
) -> Store<K> {
    let (reader, mut writer) = reflector::store();
    let events = crate::watch::slim_watch(api, config, probe);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            writer.apply_watcher_event(&event);
            changed.notify_one();
        }
    });
    reader
}

/// Rebuilds the key index whenever a cache changes, once all caches have listed.
async fn rebuild(
    store: Arc<SharedKeyStore>,
    key_stores: Vec<Store<ServiceKey>>,
    secret_stores: Vec<Store<Secret>>,
    probes: Vec<Probe>,
    changed: Arc<Notify>,
) {
    while !probes.iter().all(Probe::is_synced) {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    loop {
        let keys: Vec<Arc<ServiceKey>> = key_stores.iter().flat_map(Store::state).collect();
        let secrets: Vec<Arc<Secret>> = secret_stores.iter().flat_map(Store::state).collect();
        let index = KeyIndex::build(
            keys.iter().map(Arc::as_ref),
            secrets.iter().map(Arc::as_ref),
            Source::Cluster,
        );
        tracing::debug!(
            service_keys = keys.len(),
            usable = index.len(),
            "key index rebuilt"
        );
        store.set_keys(index);
        store.mark_synced();
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// Follows the keyring Secret. A deleted or unreadable keyring keeps the last good one: tokens
/// already issued keep verifying until the operator writes a new one.
async fn watch_keyring(store: Arc<SharedKeyStore>, api: Api<Secret>, name: String, probe: Probe) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut seen = false;
    let events =
        crate::watch::resilient(move || watcher(api.clone(), config.clone()).boxed(), probe);
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            watcher::Event::Apply(secret) | watcher::Event::InitApply(secret) => {
                seen = true;
                load_keyring(&store, &secret);
            }
            watcher::Event::Delete(secret) => tracing::warn!(
                secret = %secret.name_any(),
                "keyring Secret deleted; keeping the last keyring until the operator writes a new one"
            ),
            watcher::Event::InitDone if !seen => tracing::warn!(
                secret = %name,
                "keyring Secret not found; token routes answer 503 until the operator creates it"
            ),
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

fn load_keyring(store: &SharedKeyStore, secret: &Secret) {
    let Some(bytes) = crate::key_store::secret_value(secret, keyring::SECRET_KEY) else {
        tracing::error!(
            secret = %secret.name_any(),
            "keyring Secret has no {:?}; keeping the previous keyring",
            keyring::SECRET_KEY
        );
        return;
    };
    match Keyring::from_json(&bytes) {
        Ok(ring) => {
            tracing::info!(active_kid = %ring.active_kid(), "keyring loaded");
            store.set_keyring(Some(ring));
        }
        Err(e) => tracing::error!(
            secret = %secret.name_any(),
            "keyring Secret is unreadable, keeping the previous keyring: {e}"
        ),
    }
}

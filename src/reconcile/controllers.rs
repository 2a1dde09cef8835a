//! Wiring: one Controller per kind and watched scope, sharing a watch cache of the Secrets
//! tokenmint manages and the ServiceKey cache.
//!
//! Triggers of a reconcile:
//! - the object itself changed (spec, metadata, status);
//! - one of its Secrets changed or was deleted (`.owns`, label-selected so memory stays
//!   bounded by tokenmint's own Secrets);
//! - for grants and guest tokens: the ServiceKey they reference changed (`.watches`, mapped
//!   through the controller's own cache by namespace + `serviceKeyRef.name`);
//! - the keyring changed (rotation): everything is reconciled and tokens signed by a retired
//!   key are re-minted;
//! - the requeue at the exact renew time of the token.

use super::events::Events;
use super::metrics::Metrics;
use super::restart::{self, Restarter};
use super::{
    Clock, Context, MANAGED_SELECTOR, SharedKeyring, error_policy, reconcile_datasource_grant,
    reconcile_guest_token, reconcile_service_key,
};
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use tokio::sync::watch;

/// Reconciles run in parallel per controller (distinct objects only, as kube-runtime ensures).
const CONCURRENCY: u16 = 8;

/// What every scope's controllers share.
#[derive(Clone)]
pub struct Shared {
    pub client: Client,
    pub keyring: SharedKeyring,
    /// Bumped on every keyring change.
    pub keyring_changed: watch::Receiver<u64>,
    pub issuer: String,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

/// What `/readyz` reports: ready once the keyring is loaded and either this replica is a
/// follower waiting for the Lease, or it leads and every watch cache has its first list.
#[derive(Debug, Default)]
pub struct Readiness {
    keyring_loaded: AtomicBool,
    /// 0 starting, 1 follower, 2 leader.
    role: AtomicU8,
    scopes: AtomicUsize,
    scopes_synced: AtomicUsize,
}

impl Readiness {
    pub fn keyring_loaded(&self) {
        self.keyring_loaded.store(true, Ordering::SeqCst);
    }

    pub fn follower(&self) {
        self.role.store(1, Ordering::SeqCst);
    }

    pub fn leader(&self, scopes: usize) {
        self.scopes.store(scopes, Ordering::SeqCst);
        self.role.store(2, Ordering::SeqCst);
    }

    fn scope_synced(&self) {
        self.scopes_synced.fetch_add(1, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.keyring_loaded.load(Ordering::SeqCst)
            && match self.role.load(Ordering::SeqCst) {
                1 => true,
                2 => {
                    self.scopes_synced.load(Ordering::SeqCst) >= self.scopes.load(Ordering::SeqCst)
                }
                _ => false,
            }
    }
}

/// A stream yielding once per change of `rx`.
fn changes(rx: watch::Receiver<u64>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// Completes when `rx` turns true (or its sender is gone).
pub async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The objects of `store` referencing the ServiceKey `key`.
fn referrers<K>(store: &Store<K>, key: &ServiceKey, key_ref: fn(&K) -> &str) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = key.namespace();
    let name = key.name_any();
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == namespace && key_ref(o) == name)
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

async fn log_results<K: Resource + Debug, E: std::fmt::Display>(
    kind: &'static str,
    results: impl Stream<Item = Result<(ObjectRef<K>, kube::runtime::controller::Action), E>>,
) {
    results
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => tracing::debug!(kind, object = %obj, ?action, "reconciled"),
                Err(e) => tracing::debug!(kind, error = %e, "reconcile did not complete"),
            }
        })
        .await;
}

/// Runs the controllers of every scope (`namespaces` empty: all namespaces) until `shutdown`.
pub async fn run(
    shared: Shared,
    namespaces: &[String],
    shutdown: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    readiness.leader(scopes.len());
    // One restart worker for every scope, so restarts of one workload coalesce.
    let (restarts, restart_worker) = Restarter::spawn(
        shared.client.clone(),
        shared.events.clone(),
        shared.metrics.clone(),
        restart::COALESCE_WINDOW,
        shutdown.clone(),
    );
    futures::future::join_all(scopes.into_iter().map(|scope| {
        run_scope(
            shared.clone(),
            scope,
            shutdown.clone(),
            readiness.clone(),
            restarts.clone(),
        )
    }))
    .await;
    restart_worker.abort();
}

/// The three controllers of one scope.
async fn run_scope(
    shared: Shared,
    namespace: Option<String>,
    shutdown: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
    restarts: Restarter,
) {
    let ns = namespace.as_deref();
    let client = &shared.client;
    let secrets_api: Api<Secret> = scoped(client, ns);
    let keys_api: Api<ServiceKey> = scoped(client, ns);
    let managed = watcher::Config::default().labels(MANAGED_SELECTOR);
    let config = controller::Config::default().concurrency(CONCURRENCY);

    // The shared cache of managed Secrets, read by every reconciler.
    let (secrets, writer) = reflector::store::<Secret>();
    let secret_cache = reflector::reflector(writer, watcher(secrets_api.clone(), managed.clone()))
        .default_backoff()
        .touched_objects()
        .for_each(|_| futures::future::ready(()));

    let keys = Controller::new(keys_api.clone(), watcher::Config::default())
        .with_config(config.clone())
        .owns(secrets_api.clone(), managed.clone());
    let key_store = keys.store();

    let grants = Controller::new(
        scoped::<DatasourceGrant>(client, ns),
        watcher::Config::default(),
    )
    .with_config(config.clone());
    let grant_store = grants.store();
    let grants = grants.owns(secrets_api.clone(), managed.clone()).watches(
        keys_api.clone(),
        watcher::Config::default(),
        {
            let store = grant_store.clone();
            move |key| {
                referrers(&store, &key, |g: &DatasourceGrant| {
                    &g.spec.service_key_ref.name
                })
            }
        },
    );

    let guests = Controller::new(
        scoped::<GuestTokenRequest>(client, ns),
        watcher::Config::default(),
    )
    .with_config(config);
    let guest_store = guests.store();
    let guests = guests
        .owns(secrets_api, managed)
        .watches(keys_api, watcher::Config::default(), {
            let store = guest_store.clone();
            move |key| {
                referrers(&store, &key, |g: &GuestTokenRequest| {
                    &g.spec.service_key_ref.name
                })
            }
        });

    let ctx = Arc::new(
        Context::new(
            shared.client.clone(),
            shared.keyring.clone(),
            shared.issuer.clone(),
            shared.clock.clone(),
            shared.events.clone(),
            shared.metrics.clone(),
            key_store.clone(),
            secrets.clone(),
        )
        .with_restarter(restarts),
    );

    let keys = keys
        .reconcile_all_on(changes(shared.keyring_changed.clone()))
        .graceful_shutdown_on(signalled(shutdown.clone()))
        .run(reconcile_service_key, error_policy, ctx.clone());
    let grants = grants
        .reconcile_all_on(changes(shared.keyring_changed.clone()))
        .graceful_shutdown_on(signalled(shutdown.clone()))
        .run(reconcile_datasource_grant, error_policy, ctx.clone());
    let guests = guests
        .reconcile_all_on(changes(shared.keyring_changed.clone()))
        .graceful_shutdown_on(signalled(shutdown))
        .run(reconcile_guest_token, error_policy, ctx);

    let synced = async move {
        let _ = secrets.wait_until_ready().await;
        let _ = key_store.wait_until_ready().await;
        let _ = grant_store.wait_until_ready().await;
        let _ = guest_store.wait_until_ready().await;
        readiness.scope_synced();
        tracing::info!(
            scope = ns.unwrap_or("all namespaces"),
            "watch caches synced"
        );
        futures::future::pending::<()>().await;
    };
    let controllers = futures::future::join3(
        log_results("ServiceKey", keys),
        log_results("DatasourceGrant", grants),
        log_results("GuestTokenRequest", guests),
    );
    tokio::select! {
        _ = controllers => {}
        _ = secret_cache => tracing::error!("the Secret watch ended"),
        _ = synced => {}
    }
}

//! Wiring: one watch cache per kind and scope, shared by the three controllers, and the
//! controllers on top.
//!
//! Every cache is filled by a self-healing watch ([`crate::watch::resilient`]: a 410 relists at
//! once, other failures retry within seconds) and holds slimmed objects (no managedFields;
//! Secrets as metadata only, see [`super::verified`]). The controllers start only once every
//! cache has its first list, and then reconcile everything once: no reconciler ever waits on a
//! cache, so none can miss the moment it fills.
//!
//! Triggers of a reconcile:
//! - the object itself changed (spec, metadata, status);
//! - one of its Secrets changed or was deleted (label-selected, so memory stays bounded by
//!   tokenmint's own Secrets);
//! - for grants and guest tokens: the ServiceKey they reference changed; for ServiceKeys:
//!   another ServiceKey of the namespace changed (ServiceAccount conflicts);
//! - the keyring changed (rotation): everything is reconciled and tokens signed by a retired
//!   key are re-minted;
//! - the requeue at the exact renew time of the token.
//!
//! A deleted DatasourceGrant or GuestTokenRequest has its token revoked from here, as the
//! watch reports the deletion.

use super::cached_secret::CachedSecret;
use super::events::Events;
use super::metrics::Metrics;
use super::owned_secret::metric_key;
use super::restart::{self, Restarter};
use super::verified::Verified;
use super::{
    Clock, Context, Error, SharedKeyring, error_policy, reconcile_datasource_grant,
    reconcile_guest_token, reconcile_service_key,
};
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey, TokenStatus};
use crate::fence::Fence;
use crate::labels::MANAGED_SELECTOR;
use crate::labels::ROLE_TOKEN;
use crate::revocation::{Revocation, Revoker};
use crate::watch::{Health, Probe, scoped, slim_watch};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Reconciles run in parallel per controller (distinct objects only, as kube-runtime ensures).
/// Each is mostly waiting on the API server, so a cold start with thousands of pending objects
/// is bound by request latency: more in flight, sooner done.
const CONCURRENCY: u16 = 32;
/// Trigger events buffered per controller before the cache waits for it.
const TRIGGER_BUFFER: usize = 1024;

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
    pub revoker: Revoker,
    pub fence: Fence,
}

/// What `/readyz` reports: ready once the keyring is loaded and either this replica is a
/// follower waiting for the Lease, or it leads and every watch is synced (listed, and not
/// failing since).
#[derive(Debug, Default)]
pub struct Readiness {
    keyring_loaded: AtomicBool,
    /// 0 starting, 1 follower, 2 leader.
    role: AtomicU8,
    pub health: Health,
}

impl Readiness {
    pub fn keyring_loaded(&self) {
        self.keyring_loaded.store(true, Ordering::SeqCst);
    }

    pub fn follower(&self) {
        self.role.store(1, Ordering::SeqCst);
    }

    pub fn leader(&self) {
        self.role.store(2, Ordering::SeqCst);
    }

    /// Why this replica is not ready (`None`: ready).
    pub fn not_ready(&self) -> Option<String> {
        if !self.keyring_loaded.load(Ordering::SeqCst) {
            return Some("the keyring is not loaded".into());
        }
        match self.role.load(Ordering::SeqCst) {
            1 => None,
            2 => {
                let unsynced = self.health.unsynced();
                (!unsynced.is_empty())
                    .then(|| format!("watches not synced: {}", unsynced.join(", ")))
            }
            _ => Some("starting".into()),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }
}

/// A stream yielding once at once, then once per change of `rx`.
fn now_and_on_change(rx: watch::Receiver<u64>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::once(async {}).chain(futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    }))
}

/// Completes when `rx` turns true (or its sender is gone).
pub async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The objects of `store` referencing the ServiceKey `key`.
fn referrers<K>(store: &Store<K>, key: &ServiceKey, key_ref: fn(&K) -> &str) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let namespace = key.namespace();
    let name = key.name_any();
    store
        .state_filter(|o| o.namespace() == namespace && key_ref(o) == name)
        .iter()
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

/// Hands every object a cache sees to the controllers subscribed to it.
struct Fanout<K> {
    subscribers: Mutex<Vec<mpsc::Sender<K>>>,
}

impl<K: Clone + Send + 'static> Fanout<K> {
    fn new() -> Arc<Self> {
        Arc::new(Fanout {
            subscribers: Mutex::new(Vec::new()),
        })
    }

    fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, rx) = mpsc::channel(TRIGGER_BUFFER);
        self.subscribers.lock().expect("fanout lock").push(tx);
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|obj| (Ok(obj), rx))
        })
    }

    async fn send(&self, obj: &K) {
        let subscribers: Vec<mpsc::Sender<K>> =
            self.subscribers.lock().expect("fanout lock").clone();
        for tx in subscribers {
            // A controller that has stopped (shutdown) has dropped its receiver.
            let _ = tx.send(obj.clone()).await;
        }
    }
}

/// Feeds one cache from `events`: the store first (of what `cached` keeps of each object),
/// then the subscribed controllers, then `on_delete` for deleted objects — those the watch saw
/// deleted, and those a relist no longer finds (deleted while no watch ran: an API-server
/// restart, a 410, an outage).
async fn feed<K, C, F, Fut>(
    events: impl Stream<Item = watcher::Event<K>>,
    mut writer: Writer<C>,
    cached: fn(&K) -> C,
    fanout: Arc<Fanout<K>>,
    mut on_delete: F,
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    C: reflector::Lookup<DynamicType = ()> + Clone + 'static,
    F: FnMut(Arc<C>) -> Fut,
    Fut: Future<Output = ()>,
{
    let store = writer.as_reader();
    // What the store held when a list began.
    let mut before_list: Vec<Arc<C>> = Vec::new();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if matches!(event, watcher::Event::Init) {
            before_list = store.state();
        }
        writer.apply_watcher_event(&match &event {
            watcher::Event::Apply(obj) => watcher::Event::Apply(cached(obj)),
            watcher::Event::InitApply(obj) => watcher::Event::InitApply(cached(obj)),
            watcher::Event::Delete(obj) => watcher::Event::Delete(cached(obj)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitDone => watcher::Event::InitDone,
        });
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => fanout.send(&obj).await,
            watcher::Event::Delete(obj) => {
                fanout.send(&obj).await;
                on_delete(Arc::new(cached(&obj))).await;
            }
            watcher::Event::InitDone => {
                for old in std::mem::take(&mut before_list) {
                    let now = store.get(&old.to_object_ref(()));
                    // Absent, or a new object of the same name: the old one was deleted.
                    if now.is_none_or(|now| now.uid() != old.uid()) {
                        on_delete(old).await;
                    }
                }
            }
            watcher::Event::Init => {}
        }
    }
}

/// The ServiceKeys of `keys` whose revocation marker rose (their never-expiring guest tokens
/// issued up to it are revoked), so that the guest tokens held for them are judged again; all
/// of them after a subscriber fell behind.
fn markers_raised(
    denylist: Option<&Arc<crate::revocation::Denylist>>,
    keys: Store<ServiceKey>,
) -> futures::stream::BoxStream<'static, Result<ServiceKey, watcher::Error>> {
    use tokio::sync::broadcast::error::RecvError;
    let Some(rx) = denylist.map(|d| d.subscribe()) else {
        return futures::stream::empty().boxed();
    };
    futures::stream::unfold((rx, keys), |(mut rx, keys)| async move {
        let raised = match rx.recv().await {
            Ok(uid) => keys.state_filter(|k| k.uid().as_deref() == Some(&*uid)),
            Err(RecvError::Lagged(_)) => keys.state(),
            Err(RecvError::Closed) => return None,
        };
        let raised = raised.iter().map(|k| Ok((**k).clone())).collect::<Vec<_>>();
        Some((futures::stream::iter(raised), (rx, keys)))
    })
    .flatten()
    .boxed()
}

/// Runs the controller of a kind holding a token of a ServiceKey (grants, guest tokens) until
/// shutdown: triggered by its objects, the Secrets they own, the ServiceKeys they name (as
/// they change, and as `raised` yields them), and every keyring change (`signals`: the
/// keyring's change counter and the shutdown flag).
#[allow(clippy::too_many_arguments)]
async fn run_token_controller<K, R, Fut>(
    kind: &'static str,
    (objects, store): (&Fanout<K>, Store<K>),
    secrets: &Fanout<PartialObjectMeta<Secret>>,
    (keys, raised): (
        &Fanout<ServiceKey>,
        futures::stream::BoxStream<'static, Result<ServiceKey, watcher::Error>>,
    ),
    key_name: fn(&K) -> &str,
    reconcile: R,
    config: controller::Config,
    (keyring_changed, shutdown): (watch::Receiver<u64>, watch::Receiver<bool>),
    ctx: Arc<Context>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let referring = store.clone();
    let results = Controller::for_stream(objects.subscribe(), store.clone())
        .with_config(config)
        .owns_stream(secrets.subscribe())
        .watches_stream(keys.subscribe(), move |key| {
            referrers(&store, &key, key_name)
        })
        .watches_stream(raised, move |key| referrers(&referring, &key, key_name))
        .reconcile_all_on(now_and_on_change(keyring_changed))
        .graceful_shutdown_on(signalled(shutdown))
        .run(
            move |obj, ctx: Arc<Context>| timed(kind, ctx.clone(), reconcile(obj, ctx)),
            error_policy,
            ctx,
        );
    log_results(kind, results).await;
}

/// The token Secrets of `owner_uid` (as the cache knows them) and what revoking them needs.
fn owned_tokens(
    secrets: &Store<CachedSecret>,
    owner_uid: &str,
    reason: &str,
    now: i64,
) -> Vec<Revocation> {
    secrets
        .state_filter(|s| s.is_controlled_by(owner_uid) && s.has_role(ROLE_TOKEN))
        .iter()
        .filter_map(|s| s.revocation(reason, now))
        .collect()
}

/// What a deletion undoes; each kind's watch calls it on deletions: the resource's tokens are
/// revoked and its token leaves the expiry metric (no reconcile follows a deletion).
#[derive(Clone)]
struct Deletions {
    secrets: Store<CachedSecret>,
    service_keys: Store<ServiceKey>,
    revoker: Revoker,
    fence: Fence,
    metrics: Arc<Metrics>,
}

/// First wait before a revocation of a deleted resource is tried again; it doubles up to
/// [`super::BACKOFF_CAP`].
const REVOKE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a kind's deletion handler reads of a deleted object: its status, and the name of the
/// ServiceKey its token is issued with.
type Bound<K> = (fn(&K) -> Option<&TokenStatus>, fn(&K) -> &str);

impl Deletions {
    /// The deletion handler of a kind whose status is `status` and whose token is issued with
    /// the ServiceKey `key_name` names; `None` for a ServiceKey itself, whose tokens die with
    /// it (they are bound to its uid and key): nothing to revoke.
    fn on_delete<K>(
        &self,
        bound: Option<Bound<K>>,
    ) -> impl FnMut(Arc<K>) -> futures::future::BoxFuture<'static, ()> + use<K>
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        let this = self.clone();
        move |obj: Arc<K>| {
            let this = this.clone();
            Box::pin(async move {
                let key = metric_key(
                    &K::kind(&()),
                    &obj.namespace().unwrap_or_default(),
                    &obj.name_any(),
                    ROLE_TOKEN,
                );
                this.metrics.token_expiry(&key, None);
                if let Some((status, key_name)) = bound {
                    this.revoke(&*obj, status(&obj), key_name(&obj));
                }
            })
        }
    }

    /// Revokes the tokens a deleted resource held: from its Secrets (still cached: the garbage
    /// collector deletes them after the owner), else the one its status names. Retried in the
    /// background until recorded (or this replica stops leading): the watch that reported the
    /// deletion goes on meanwhile.
    fn revoke<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        status: Option<&TokenStatus>,
        key_name: &str,
    ) {
        let Some(uid) = obj.uid() else {
            return;
        };
        let namespace = obj.namespace().unwrap_or_default();
        let reason = format!(
            "{} {namespace}/{} was deleted",
            K::kind(&()),
            obj.name_any()
        );
        let now = jiff::Timestamp::now().as_second();
        let mut revocations = owned_tokens(&self.secrets, &uid, &reason, now);
        if revocations.is_empty()
            && let Some(revocation) =
                status.and_then(|s| self.revocation_of(s, &namespace, key_name, reason, now))
        {
            revocations.push(revocation);
        }
        if revocations.is_empty() {
            return;
        }
        let (revoker, fence) = (self.revoker.clone(), self.fence.clone());
        tokio::spawn(async move {
            for revocation in revocations {
                let mut wait = REVOKE_RETRY;
                while fence.is_valid() {
                    match revoker.revoke(&revocation).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(target = ?revocation.target, error = %e, retry_in = ?wait, "cannot revoke the token of a deleted resource yet");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(super::BACKOFF_CAP);
                        }
                    }
                }
            }
        });
    }

    /// The revocation of the token a status names, for when its Secret is no longer cached:
    /// bound to the ServiceKey the resource names, as it is cached (gone: the token died with
    /// it). A never-expiring token's issue time is not in status: its ServiceKey's marker rises
    /// to now, and the operator mints the others it holds again.
    fn revocation_of(
        &self,
        status: &TokenStatus,
        namespace: &str,
        key_name: &str,
        reason: String,
        now: i64,
    ) -> Option<Revocation> {
        let jti = status.token_id.as_deref()?;
        let key = self
            .service_keys
            .get(&ObjectRef::new(key_name).within(namespace))?;
        let expires_at = status
            .expires_at
            .as_deref()
            .and_then(|at| at.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second());
        Some(Revocation::of_held(
            (jti, None, expires_at),
            false,
            key.uid()?,
            reason,
            now,
        ))
    }
}

/// Waits until every probe reports synced (polling: one waiter, nothing to miss).
async fn synced(probes: &[Probe], mut shutdown: watch::Receiver<bool>) -> bool {
    loop {
        if probes.iter().all(Probe::is_synced) {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            _ = shutdown.wait_for(|s| *s) => return false,
        }
    }
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
    readiness.leader();
    // One restart worker for every scope, so restarts of one workload coalesce.
    let (restarts, restart_worker) = Restarter::spawn(
        shared.client.clone(),
        shared.events.clone(),
        shared.metrics.clone(),
        restart::COALESCE_WINDOW,
        shared.fence.clone(),
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

/// Times a reconcile into the duration histogram.
async fn timed(
    kind: &'static str,
    ctx: Arc<Context>,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile.await;
    ctx.metrics.reconciled(kind, started.elapsed());
    result
}

/// The caches and the three controllers of one scope.
async fn run_scope(
    shared: Shared,
    namespace: Option<String>,
    shutdown: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
    restarts: Restarter,
) {
    let ns = namespace.as_deref();
    let client = &shared.client;
    let restarts_counter = shared.metrics.watch_restarts();
    let probe = |resource| readiness.health.probe(resource, &restarts_counter);
    let probes = [
        probe("servicekeys"),
        probe("datasourcegrants"),
        probe("guesttokenrequests"),
        probe("secrets"),
    ];
    let verified = Arc::new(Verified::default());

    let (key_store, key_writer) = reflector::store::<ServiceKey>();
    let (grant_store, grant_writer) = reflector::store::<DatasourceGrant>();
    let (guest_store, guest_writer) = reflector::store::<GuestTokenRequest>();
    let (secret_store, secret_writer) = reflector::store::<CachedSecret>();
    let key_fanout = Fanout::new();
    let grant_fanout = Fanout::new();
    let guest_fanout = Fanout::new();
    let secret_fanout = Fanout::new();

    let deletions = Deletions {
        secrets: secret_store.clone(),
        service_keys: key_store.clone(),
        revoker: shared.revoker.clone(),
        fence: shared.fence.clone(),
        metrics: shared.metrics.clone(),
    };
    let caches = {
        let config = watcher::Config::default();
        let keys = feed(
            slim_watch(
                scoped::<ServiceKey>(client, ns),
                config.clone(),
                probes[0].clone(),
            ),
            key_writer,
            Clone::clone,
            key_fanout.clone(),
            deletions.on_delete::<ServiceKey>(None),
        );
        let grants = feed(
            slim_watch(
                scoped::<DatasourceGrant>(client, ns),
                config.clone(),
                probes[1].clone(),
            ),
            grant_writer,
            Clone::clone,
            grant_fanout.clone(),
            deletions.on_delete(Some((
                |grant: &DatasourceGrant| grant.status.as_ref(),
                |grant: &DatasourceGrant| grant.spec.service_key_ref.name.as_str(),
            ))),
        );
        let guests = feed(
            slim_watch(
                scoped::<GuestTokenRequest>(client, ns),
                config,
                probes[2].clone(),
            ),
            guest_writer,
            Clone::clone,
            guest_fanout.clone(),
            deletions.on_delete(Some((
                |request: &GuestTokenRequest| request.status.as_ref(),
                |request: &GuestTokenRequest| request.spec.service_key_ref.name.as_str(),
            ))),
        );
        let secrets = {
            // An Api of PartialObjectMeta lists and watches metadata only.
            let api: Api<PartialObjectMeta<Secret>> = scoped(client, ns);
            let config = watcher::Config::default().labels(MANAGED_SELECTOR);
            let events = slim_watch(api, config, probes[3].clone());
            let verified = verified.clone();
            feed(
                events,
                secret_writer,
                |meta: &PartialObjectMeta<Secret>| CachedSecret::from(meta),
                secret_fanout.clone(),
                move |secret: Arc<CachedSecret>| {
                    verified.forget(&secret.namespace, &secret.name);
                    async {}
                },
            )
        };
        async {
            futures::future::join4(keys, grants, guests, secrets).await;
        }
    };

    let start = async {
        if !synced(&probes, shutdown.clone()).await {
            return;
        }
        tracing::info!(
            scope = ns.unwrap_or("all namespaces"),
            service_keys = key_store.len(),
            datasource_grants = grant_store.len(),
            guest_token_requests = guest_store.len(),
            secrets = secret_store.len(),
            "watch caches synced; starting the controllers"
        );
        let ctx = Arc::new(
            Context::new(
                shared.client.clone(),
                shared.keyring.clone(),
                shared.issuer.clone(),
                shared.clock.clone(),
                shared.events.clone(),
                shared.metrics.clone(),
                key_store.clone(),
                secret_store.clone(),
            )
            .with_verified(verified.clone())
            .with_restarter(restarts)
            .with_revoker(shared.revoker.clone())
            .with_fence(shared.fence.clone()),
        );
        let config = controller::Config::default().concurrency(CONCURRENCY);
        let keys = Controller::for_stream(key_fanout.subscribe(), key_store.clone())
            .with_config(config.clone())
            .owns_stream(secret_fanout.subscribe())
            .watches_stream(key_fanout.subscribe(), {
                let store = key_store.clone();
                // Another ServiceKey of the namespace may now conflict, or no longer.
                move |changed: ServiceKey| {
                    store
                        .state_filter(|k| {
                            k.namespace() == changed.namespace()
                                && k.uid() != changed.uid()
                                && !k.spec.service_accounts.is_empty()
                        })
                        .iter()
                        .map(|k| ObjectRef::from_obj(&**k))
                        .collect::<Vec<_>>()
                }
            })
            .reconcile_all_on(now_and_on_change(shared.keyring_changed.clone()))
            .graceful_shutdown_on(signalled(shutdown.clone()))
            .run(
                |obj, ctx: Arc<Context>| {
                    timed("ServiceKey", ctx.clone(), reconcile_service_key(obj, ctx))
                },
                error_policy,
                ctx.clone(),
            );
        let grants = run_token_controller(
            "DatasourceGrant",
            (&grant_fanout, grant_store.clone()),
            &secret_fanout,
            (&key_fanout, futures::stream::empty().boxed()),
            |g: &DatasourceGrant| &g.spec.service_key_ref.name,
            reconcile_datasource_grant,
            config.clone(),
            (shared.keyring_changed.clone(), shutdown.clone()),
            ctx.clone(),
        );
        let guests = run_token_controller(
            "GuestTokenRequest",
            (&guest_fanout, guest_store.clone()),
            &secret_fanout,
            (
                &key_fanout,
                markers_raised(shared.revoker.denylist(), key_store.clone()),
            ),
            |g: &GuestTokenRequest| &g.spec.service_key_ref.name,
            reconcile_guest_token,
            config,
            (shared.keyring_changed.clone(), shutdown.clone()),
            ctx,
        );
        futures::future::join3(log_results("ServiceKey", keys), grants, guests).await;
    };
    tokio::select! {
        _ = start => {}
        _ = caches => tracing::error!("a watch cache ended"),
    }
}

async fn log_results<K: Resource + Debug, E: std::fmt::Display>(
    kind: &'static str,
    results: impl Stream<Item = Result<(ObjectRef<K>, Action), E>>,
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

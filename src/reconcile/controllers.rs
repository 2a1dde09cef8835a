//! Wiring: one watch cache per kind and scope, shared by the three controllers, and the
//! controllers on top.
//!
//! Every cache is filled by a self-healing watch ([`crate::watch::resilient`]: a 410 relists at
//! once, other failures retry within seconds) and holds slimmed objects (no managedFields;
//! Secrets as metadata only, see [`super::verified`]), with the indexes every look-up goes
//! through ([`super::caches`]). The controllers start only once every
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
//! - a workload started or stopped reading a token Secret, or reads it another way (the
//!   consumer watch, [`crate::consumers`]): the owner of that Secret, found by the name of its
//!   token Secret (grants, guest tokens) or session token Secret (ServiceKeys);
//! - the requeue at the exact renew time of the token.
//!
//! A deleted DatasourceGrant or GuestTokenRequest has its token revoked as the watch reports
//! the deletion ([`super::deletions`]).
//!
//! Everything here lives for one run (a term of leadership): caches, indexes, the statuses
//! written, the restart worker. The next run starts from fresh lists; only what was verified
//! of Secrets ([`Shared::verified`]: facts about a resourceVersion) carries over.

use super::cached_secret::{CachedSecret, SecretCache};
use super::caches::{Fanout, Index, Indexed, SecretFeed, ServiceKeys, feed, referrers};
use super::deletions::Deletions;
use super::events::Events;
use super::metrics::Metrics;
use super::recent::Recent;
use super::restart::Restarter;
use super::triggers::{Owners, markers_raised, named, now_and_on_change};
use super::verified::Verified;
use super::{
    Clock, Context, Error, SharedKeyring, error_policy, reconcile_datasource_grant,
    reconcile_guest_token, reconcile_service_key,
};
use crate::consumers::index::ConsumerIndex;
use crate::consumers::{self, Kind};
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey};
use crate::fence::Fence;
use crate::labels::MANAGED_SELECTOR;
use crate::revocation::Revoker;
use crate::stop::signalled;
use crate::watch::{Probe, scoped, slim_watch};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use super::readiness::Readiness;

/// Reconciles run in parallel per controller (distinct objects only, as kube-runtime ensures).
/// Each is mostly waiting on the API server, so a cold start with thousands of pending objects
/// is bound by request latency: more in flight, sooner done.
const CONCURRENCY: u16 = 32;

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
    /// Whether workloads are watched for the consumers of each token (`--consumers`).
    pub consumers: bool,
    /// How long a consumer restart waits for further rotations to join it
    /// ([`restart::COALESCE_WINDOW`]).
    pub restart_window: Duration,
    /// What this process verified of the Secrets' content, kept from one term to the next:
    /// each record holds for one resourceVersion, so a term after an outage reads only the
    /// Secrets that changed meanwhile instead of every one.
    pub verified: Arc<Verified>,
}

/// Runs the controller of a kind holding a token of a ServiceKey (grants, guest tokens) until
/// shutdown: triggered by its objects, the Secrets they own, the ServiceKeys they name (found
/// through `by_key`, as they change and as `raised` yields them), the readers of their token
/// Secrets (`consumers`), and every keyring change (`signals`: the keyring's change counter and
/// the shutdown flag).
#[allow(clippy::too_many_arguments)]
async fn run_token_controller<K, R, Fut>(
    kind: &'static str,
    (objects, store, by_key): (&Fanout<K>, Store<K>, Arc<Index>),
    consumers: &Fanout<ObjectRef<K>>,
    secrets: &Fanout<PartialObjectMeta<Secret>>,
    (keys, raised): (
        &Fanout<ServiceKey>,
        futures::stream::BoxStream<'static, Result<ServiceKey, watcher::Error>>,
    ),
    reconcile: R,
    config: controller::Config,
    (keyring_changed, shutdown): (watch::Receiver<u64>, watch::Receiver<bool>),
    ctx: Arc<Context>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let raised_by_key = by_key.clone();
    let results = Controller::for_stream(objects.subscribe(), store)
        .with_config(config)
        .owns_stream(secrets.subscribe())
        .watches_stream(keys.subscribe(), move |key| referrers(&by_key, &key))
        .watches_stream(raised, move |key| referrers(&raised_by_key, &key))
        .reconcile_on(named(consumers))
        .reconcile_all_on(now_and_on_change(keyring_changed))
        .graceful_shutdown_on(signalled(shutdown))
        .run(
            move |obj, ctx: Arc<Context>| timed(kind, ctx.clone(), reconcile(obj, ctx)),
            error_policy,
            ctx,
        );
    log_results(kind, results).await;
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
    // Every watch of the term is registered before the term says it leads: `/readyz` must not
    // report a leader ready while none of its watches exists yet.
    let probes: Vec<ScopeProbes> = scopes
        .iter()
        .map(|_| ScopeProbes::register(&shared, &readiness))
        .collect();
    readiness.leader();
    // One restart worker for every scope, so restarts of one workload coalesce.
    let (restarts, restart_worker) = Restarter::spawn(
        shared.client.clone(),
        shared.events.clone(),
        shared.metrics.clone(),
        shared.restart_window,
        shared.fence.clone(),
        shutdown.clone(),
    );
    futures::future::join_all(scopes.into_iter().zip(probes).map(|(scope, probes)| {
        run_scope(
            shared.clone(),
            (scope, probes),
            shutdown.clone(),
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

/// The readiness probes of one scope's watches: ServiceKeys, DatasourceGrants,
/// GuestTokenRequests and Secrets, then the workload kinds when consumers are watched.
struct ScopeProbes {
    all: Vec<Probe>,
    /// The workload watches: synced before any reconcile, so that the first status already
    /// names the consumers (and a restart rewrites nothing).
    workloads: Option<[Probe; Kind::ALL.len()]>,
}

impl ScopeProbes {
    fn register(shared: &Shared, readiness: &Readiness) -> Self {
        let restarts_counter = shared.metrics.watch_restarts();
        let probe = |resource| readiness.health.probe(resource, &restarts_counter);
        let mut all = vec![
            probe("servicekeys"),
            probe("datasourcegrants"),
            probe("guesttokenrequests"),
            probe("secrets"),
        ];
        let workloads = shared
            .consumers
            .then(|| Kind::ALL.map(|k| probe(k.plural())));
        all.extend(workloads.iter().flatten().cloned());
        ScopeProbes { all, workloads }
    }
}

/// The caches and the three controllers of one scope.
async fn run_scope(
    shared: Shared,
    (
        namespace,
        ScopeProbes {
            all: probes,
            workloads: workload_probes,
        },
    ): (Option<String>, ScopeProbes),
    shutdown: watch::Receiver<bool>,
    restarts: Restarter,
) {
    let ns = namespace.as_deref();
    let client = &shared.client;
    let verified = shared.verified.clone();
    let recent = Arc::new(Recent::default());
    let secrets = Arc::new(SecretCache::new(shared.metrics.clone()));
    let (keys, key_writer) = ServiceKeys::new();
    let (grant_store, grants_by_key, mut grant_writer) =
        Indexed::new(|g: &DatasourceGrant| Some(g.spec.service_key_ref.name.as_str().into()));
    let grants_by_secret =
        grant_writer.also_by(|g: &DatasourceGrant| Some(g.token_secret_name().into()));
    let (guest_store, guests_by_key, mut guest_writer) =
        Indexed::new(|g: &GuestTokenRequest| Some(g.spec.service_key_ref.name.as_str().into()));
    let guests_by_secret =
        guest_writer.also_by(|g: &GuestTokenRequest| Some(g.token_secret_name().into()));
    let key_fanout = Fanout::new();
    let grant_fanout = Fanout::new();
    let guest_fanout = Fanout::new();
    let secret_fanout = Fanout::new();
    let owners = Owners {
        keys: (keys.by_session_secret.clone(), Fanout::new()),
        grants: (grants_by_secret, Fanout::new()),
        guests: (guests_by_secret, Fanout::new()),
    };
    let consumer_index = workload_probes
        .as_ref()
        .map(|_| Arc::new(ConsumerIndex::default()));

    let deletions = Deletions {
        secrets: secrets.clone(),
        service_keys: keys.clone(),
        revoker: shared.revoker.clone(),
        fence: shared.fence.clone(),
    };
    let caches = {
        let config = watcher::Config::default();
        let keys = feed(
            slim_watch(
                scoped::<ServiceKey>(client, ns),
                config.clone(),
                probes[0].clone(),
            ),
            key_writer.with_recent(recent.clone()),
            key_fanout.clone(),
            // Its tokens die with it (bound to its uid and key): nothing to revoke.
            |_: Arc<ServiceKey>| async {},
        );
        let grants = feed(
            slim_watch(
                scoped::<DatasourceGrant>(client, ns),
                config.clone(),
                probes[1].clone(),
            ),
            grant_writer.with_recent(recent.clone()),
            grant_fanout.clone(),
            deletions.on_delete((
                |grant: &DatasourceGrant| grant.status.as_ref(),
                |grant: &DatasourceGrant| grant.spec.service_key_ref.name.as_str(),
            )),
        );
        let guests = feed(
            slim_watch(
                scoped::<GuestTokenRequest>(client, ns),
                config,
                probes[2].clone(),
            ),
            guest_writer.with_recent(recent.clone()),
            guest_fanout.clone(),
            deletions.on_delete((
                |request: &GuestTokenRequest| request.status.as_ref(),
                |request: &GuestTokenRequest| request.spec.service_key_ref.name.as_str(),
            )),
        );
        let secrets = {
            // An Api of PartialObjectMeta lists and watches metadata only.
            let api: Api<PartialObjectMeta<Secret>> = scoped(client, ns);
            let config = watcher::Config::default().labels(MANAGED_SELECTOR);
            let events = slim_watch(api, config, probes[3].clone());
            let verified = verified.clone();
            feed(
                events,
                SecretFeed(secrets.clone()),
                secret_fanout.clone(),
                move |secret: CachedSecret| {
                    verified.forget(&secret.namespace, &secret.name);
                    async {}
                },
            )
        };
        let workloads = {
            let watched = workload_probes.clone().zip(consumer_index.clone());
            let owners = owners.clone();
            async move {
                let Some((probes, index)) = watched else {
                    return std::future::pending().await;
                };
                consumers::watch::feed(client, ns, probes, index, move |changed| {
                    let owners = owners.clone();
                    async move { owners.reconcile(changed).await }
                })
                .await
            }
        };
        async {
            futures::future::join5(keys, grants, guests, secrets, workloads).await;
        }
    };

    let start = async {
        if !synced(&probes, shutdown.clone()).await {
            return;
        }
        // Records of Secrets deleted while no watch of this scope ran.
        verified.retain_present(ns, |namespace, name| {
            secrets.version(namespace, name).is_some()
        });
        tracing::info!(
            scope = ns.unwrap_or("all namespaces"),
            service_keys = keys.store.len(),
            datasource_grants = grant_store.len(),
            guest_token_requests = guest_store.len(),
            secrets = secrets.len(),
            workloads_reading_secrets = consumer_index.as_ref().map(|i| i.workloads()),
            "watch caches synced; starting the controllers"
        );
        let ctx = Context::new(
            shared.client.clone(),
            shared.keyring.clone(),
            shared.issuer.clone(),
            shared.clock.clone(),
            shared.events.clone(),
            shared.metrics.clone(),
            keys.clone(),
            secrets.clone(),
        )
        .with_verified(verified.clone())
        .with_recent(recent.clone())
        .with_stores(grant_store.clone(), guest_store.clone())
        .with_restarter(restarts)
        .with_revoker(shared.revoker.clone())
        .with_fence(shared.fence.clone());
        let ctx = Arc::new(match consumer_index.clone() {
            Some(index) => ctx.with_consumers(index),
            None => ctx,
        });
        let config = controller::Config::default().concurrency(CONCURRENCY);
        let raised = markers_raised(shared.revoker.denylist(), keys.clone());
        let keys = Controller::for_stream(key_fanout.subscribe(), keys.store.clone())
            .with_config(config.clone())
            .owns_stream(secret_fanout.subscribe())
            .watches_stream(key_fanout.subscribe(), {
                let keys = keys.clone();
                // Another ServiceKey of the namespace may now conflict, or no longer.
                move |changed: ServiceKey| {
                    keys.listing_accounts(&changed.namespace().unwrap_or_default())
                        .iter()
                        .filter(|k| k.uid() != changed.uid())
                        .map(|k| ObjectRef::from_obj(&**k))
                        .collect::<Vec<_>>()
                }
            })
            .reconcile_on(named(&owners.keys.1))
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
            (&grant_fanout, grant_store.clone(), grants_by_key),
            &owners.grants.1,
            &secret_fanout,
            (&key_fanout, futures::stream::empty().boxed()),
            reconcile_datasource_grant,
            config.clone(),
            (shared.keyring_changed.clone(), shutdown.clone()),
            ctx.clone(),
        );
        let guests = run_token_controller(
            "GuestTokenRequest",
            (&guest_fanout, guest_store.clone(), guests_by_key),
            &owners.guests.1,
            &secret_fanout,
            (&key_fanout, raised),
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

//! `tokenmint operator`: the Kubernetes controller.
//!
//! Start-up: connect (a clear error when no cluster is reachable), load or create the keyring,
//! serve the admin port, then campaign for the leader Lease. Every replica is ready as a
//! follower; only the leader runs the controllers (and so writes), and only while its Lease is
//! fresh ([`Fence`]). A leader that loses the Lease stops its controllers and exits
//! non-zero: the pod restarts as a follower with fresh caches, which is simpler and safer than
//! resuming with state from the previous term. SIGTERM stops everything within
//! [`SHUTDOWN_DEADLINE`] and releases the Lease, so a standby takes over at once.

pub mod admin;
pub mod lease;

use crate::cli::OperatorArgs;
use crate::crd::ServiceKey;
use crate::fence::Fence;
use crate::reconcile::controllers::{self, Readiness, Shared};
use crate::reconcile::events::Events;
use crate::reconcile::metrics::Metrics;
use crate::reconcile::{Clock, SharedKeyring, keyring};
use crate::revocation::{Denylist, Revoker};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use lease::{Elector, LeaseTiming};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How long the controllers get to finish in-flight reconciles after SIGTERM; the Lease is
/// released after, within the chart's termination grace period.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

const NO_CLUSTER_HINT: &str = "set KUBECONFIG (or ~/.kube/config) to a reachable cluster, or run in a pod; to serve tokens without a cluster, run `tokenmint serve --manifests DIR`";

pub async fn run(args: OperatorArgs) -> Result<(), crate::BoxError> {
    let client = connect().await?;
    let namespace = args.common.namespace.clone();
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::http::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .map_err(|e| format!("cannot listen on --admin-listen {}: {e}", args.admin_listen))?;
    let admin = admin::router(admin::AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    });
    tracing::info!(address = %args.admin_listen, "admin endpoints (/healthz, /readyz, /metrics) listening");
    let admin_stop = controllers::signalled(stop_rx.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin)
            .with_graceful_shutdown(admin_stop)
            .await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    });

    let keyring_api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let (ring, _) = keyring::load_or_create(
        &keyring_api,
        &namespace,
        &args.common.keyring_secret,
        args.common.algorithm,
        jiff::Timestamp::now(),
        &metrics,
    )
    .await
    .map_err(|e| match e {
        keyring::KeyringStoreError::Kube(kube::Error::Api(s)) if s.is_not_found() => format!(
            "namespace {namespace} does not exist: create it or pass --namespace (the keyring Secret and leader Lease live there)"
        )
        .into(),
        other => crate::BoxError::from(other.to_string()),
    })?;
    tracing::info!(namespace = %namespace, secret = %args.common.keyring_secret, active = ring.active_kid(), "keyring loaded");
    let shared_ring: SharedKeyring = Arc::new(RwLock::new(ring));
    readiness.keyring_loaded();

    let identity = lease::unique_identity(&base_identity(&args));
    let elector = Elector::new(
        Api::namespaced(client.clone(), &namespace),
        &args.lease_name,
        &identity,
        LeaseTiming::default(),
    );
    let fence = elector.fence();
    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(elector.run(leading_tx, stop_rx.clone()));

    let (changed_tx, changed_rx) = watch::channel(0u64);
    tokio::spawn(keyring::watch(
        keyring_api.clone(),
        args.common.keyring_secret.clone(),
        args.common.algorithm,
        shared_ring.clone(),
        changed_tx,
        fence.clone(),
        metrics.clone(),
    ));

    readiness.follower();
    tracing::info!(%identity, lease = %args.lease_name, "waiting for leadership");
    let mut stop = stop_rx.clone();
    tokio::select! {
        led = leading.wait_for(|l| *l) => { led.map_err(|_| "the leader election task ended")?; }
        _ = stop.wait_for(|s| *s) => {
            tracing::info!("shutting down");
            let _ = election.await;
            return Ok(());
        }
    }
    tracing::info!(%identity, "became the leader; starting controllers");
    metrics.set_leader(true);
    handle_pending_rotation(&keyring_api, &args, &metrics).await;

    // The revocations, followed as every `serve` replica does: the quota and bucket sizes its
    // own writes need, and the markers its never-expiring guest tokens are judged by.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let revocations = Arc::new(Denylist::default());
    tokio::spawn(crate::revocation::follow(
        configmaps.clone(),
        revocations.clone(),
        readiness
            .health
            .probe("revocations", &metrics.watch_restarts()),
    ));
    tokio::spawn(sweep_revocations(
        configmaps.clone(),
        shared_ring.clone(),
        fence.clone(),
        (revocations.clone(), service_key_apis(&client, &args)),
    ));
    let reporter = Reporter {
        controller: "tokenmint".into(),
        instance: Some(identity.clone()),
    };
    let shared = Shared {
        client: client.clone(),
        keyring: shared_ring,
        keyring_changed: changed_rx,
        issuer: args.common.issuer.clone(),
        events: Events::Kube(Recorder::new(client, reporter)),
        metrics: metrics.clone(),
        clock: Clock::system(),
        revoker: Revoker::Kube {
            api: configmaps,
            denylist: revocations,
        },
        fence,
    };
    let controllers = controllers::run(
        shared,
        &args.common.watch_namespaces,
        stop_rx.clone(),
        readiness,
    );
    let mut controllers = std::pin::pin!(controllers);
    let mut stop = stop_rx.clone();
    let result = tokio::select! {
        _ = &mut controllers => Ok(()),
        _ = stop.wait_for(|s| *s) => {
            tracing::info!("shutting down: finishing in-flight reconciles");
            if tokio::time::timeout(SHUTDOWN_DEADLINE, &mut controllers).await.is_err() {
                tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, "reconciles still running at the shutdown deadline; stopping them");
            }
            Ok(())
        }
        _ = leading.wait_for(|l| !*l) => {
            Err("lost the leader Lease; exiting so this replica restarts as a follower".into())
        }
    };
    metrics.set_leader(false);
    // The election task releases the Lease once stopped (SIGTERM) or has stepped down.
    if tokio::time::timeout(Duration::from_secs(3), election)
        .await
        .is_err()
    {
        tracing::warn!("the leader election task did not finish in time");
    }
    tracing::info!("stopped");
    result
}

/// A rotation requested while no replica led is handled now. (The keyring watch may handle it
/// at the same moment: the loser gets a conflict.)
async fn handle_pending_rotation(
    keyring_api: &Api<Secret>,
    args: &OperatorArgs,
    metrics: &Metrics,
) {
    match keyring_api.get_opt(&args.common.keyring_secret).await {
        Ok(Some(secret)) => {
            if let Err(e) = keyring::rotate_if_requested(
                keyring_api,
                &secret,
                args.common.algorithm,
                jiff::Timestamp::now(),
                metrics,
            )
            .await
            {
                tracing::warn!(error = %e, "pending keyring rotation not handled now");
            }
        }
        Ok(None) => tracing::warn!("the keyring Secret is gone; running with the loaded keyring"),
        Err(e) => tracing::warn!(error = %e, "cannot re-read the keyring Secret"),
    }
}

/// The ServiceKeys of every watched scope (all namespaces, or each `--watch-namespace`).
fn service_key_apis(client: &Client, args: &OperatorArgs) -> Vec<Api<ServiceKey>> {
    if args.common.watch_namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        args.common
            .watch_namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

/// The uids of every ServiceKey, when they can all be listed.
async fn service_key_uids(apis: &[Api<ServiceKey>]) -> Option<HashSet<String>> {
    let mut uids = HashSet::new();
    for api in apis {
        let keys = api
            .list_metadata(&kube::api::ListParams::default())
            .await
            .map_err(
                |e| tracing::warn!(error = %e, "cannot list ServiceKeys; markers are swept later"),
            )
            .ok()?;
        uids.extend(keys.into_iter().filter_map(|k| k.metadata.uid));
    }
    Some(uids)
}

/// Deletes the revocations that deny nothing any more, every
/// [`crate::revocation::SWEEP_EVERY`]: buckets whose day has passed, legacy ConfigMaps, and
/// (when there are any) the markers of ServiceKeys that are gone.
async fn sweep_revocations(
    api: Api<ConfigMap>,
    keyring: SharedKeyring,
    fence: Fence,
    (revocations, service_keys): (Arc<Denylist>, Vec<Api<ServiceKey>>),
) {
    loop {
        tokio::time::sleep(crate::revocation::SWEEP_EVERY).await;
        if !fence.is_valid() {
            continue;
        }
        let kids: Vec<String> = {
            let ring = keyring.read().expect("keyring lock");
            ring.kids().map(str::to_owned).collect()
        };
        let known = if revocations.has_markers() {
            service_key_uids(&service_keys).await
        } else {
            None
        };
        let fence = fence.clone();
        let swept = crate::revocation::sweep(
            &api,
            &kids,
            known.as_ref(),
            jiff::Timestamp::now(),
            move || fence.is_valid(),
        )
        .await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "revocation sweep failed; retrying later");
        }
    }
}

/// A client for the cluster from KUBECONFIG or the pod's service account, checked with one
/// request so a missing cluster fails now with a clear message.
async fn connect() -> Result<Client, crate::BoxError> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes cluster configured ({e}): {NO_CLUSTER_HINT}"))?;
    client
        .apiserver_version()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API server ({e}): {NO_CLUSTER_HINT}"))?;
    Ok(client)
}

/// `--identity`, else `$POD_NAME` (clap reads it into the same flag), else the host name; a
/// random suffix is added by [`lease::unique_identity`].
fn base_identity(args: &OperatorArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tokenmint".to_owned())
}

//! `tokenmint operator`: the Kubernetes controller.
//!
//! Start-up: connect (a clear error when no cluster is reachable), load or create the keyring,
//! serve the admin port, then wait for the leader Lease. Every replica is ready as a follower;
//! only the leader runs the controllers (and so writes). A leader that loses the Lease stops
//! its controllers and exits non-zero: the pod restarts as a follower with fresh caches, which
//! is simpler and safer than resuming with state from the previous term.

pub mod admin;

use crate::cli::OperatorArgs;
use crate::reconcile::controllers::{self, Readiness, Shared};
use crate::reconcile::events::Events;
use crate::reconcile::metrics::Metrics;
use crate::reconcile::{Clock, keyring};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube_lease_manager::LeaseManagerBuilder;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Seconds a Lease stays valid without renewal (a dead leader is replaced after this long).
const LEASE_DURATION_SECS: u64 = 15;
/// How long before expiry the leader renews.
const LEASE_GRACE_SECS: u64 = 5;

const NO_CLUSTER_HINT: &str = "set KUBECONFIG (or ~/.kube/config) to a reachable cluster, or run in a pod; to serve tokens without a cluster, run `tokenmint serve --manifests DIR`";

pub async fn run(args: OperatorArgs) -> Result<(), crate::BoxError> {
    let client = connect().await?;
    let namespace = args.common.namespace.clone();
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
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
    let shared_ring = Arc::new(RwLock::new(ring));
    readiness.keyring_loaded();

    let (changed_tx, changed_rx) = watch::channel(0u64);
    let (leader_tx, leader_rx) = watch::channel(false);
    tokio::spawn(keyring::watch(
        keyring_api.clone(),
        args.common.keyring_secret.clone(),
        args.common.algorithm,
        shared_ring.clone(),
        changed_tx,
        leader_rx,
        metrics.clone(),
    ));

    let identity = identity(&args);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(LEASE_DURATION_SECS)
        .with_grace(LEASE_GRACE_SECS)
        .build()
        .await
        .map_err(|e| {
            format!(
                "cannot use the leader Lease {namespace}/{}: {e}",
                args.lease_name
            )
        })?;
    let (mut lease, lease_task) = manager.watch().await;
    readiness.follower();
    tracing::info!(%identity, lease = %args.lease_name, "waiting for leadership");

    let mut stop = stop_rx.clone();
    loop {
        if *lease.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = lease.changed() => changed.map_err(|_| "the leader election task ended")?,
            _ = stop.wait_for(|s| *s) => {
                drop(lease);
                let _ = lease_task.await;
                return Ok(());
            }
        }
    }
    tracing::info!(%identity, "became the leader; starting controllers");
    metrics.set_leader(true);
    let _ = leader_tx.send(true);
    // A rotation requested while no replica led is handled now.
    // (The keyring watch may handle it at the same moment: the loser gets a conflict.)
    match keyring_api.get_opt(&args.common.keyring_secret).await {
        Ok(Some(secret)) => {
            if let Err(e) = keyring::rotate_if_requested(
                &keyring_api,
                &secret,
                args.common.algorithm,
                jiff::Timestamp::now(),
                &metrics,
            )
            .await
            {
                tracing::warn!(error = %e, "pending keyring rotation not handled now");
            }
        }
        Ok(None) => tracing::warn!("the keyring Secret is gone; running with the loaded keyring"),
        Err(e) => tracing::warn!(error = %e, "cannot re-read the keyring Secret"),
    }

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
    };
    let result = tokio::select! {
        _ = controllers::run(shared, &args.common.watch_namespaces, stop_rx, readiness) => Ok(()),
        _ = lease.wait_for(|leading| !*leading) => {
            metrics.set_leader(false);
            Err("lost the leader Lease; exiting so this replica restarts as a follower".into())
        }
    };
    drop(lease);
    // Dropping the channel makes the lease task release the Lease, so a follower takes over
    // at once instead of after the Lease expires.
    let _ = lease_task.await;
    result
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

/// `--identity`, else `$POD_NAME` (clap reads it into the same flag), else the host name.
fn identity(args: &OperatorArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("tokenmint-{}", uuid::Uuid::new_v4()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

//! `tokenmint operator`: the Kubernetes controller.
//!
//! Start-up: connect (a clear error when no cluster is reachable), serve the admin port, load or
//! create the keyring, then campaign for the leader Lease. Every replica is ready as a follower;
//! only the leader runs the controllers (and so writes), and only while its Lease is fresh
//! ([`Fence`]). A leader that loses the Lease — the API server away for longer than the renew
//! deadline, say — is fenced at once, stops its controllers and stays up as a follower that
//! campaigns again; when it leads again, a new [`term`] starts from fresh caches and reconciles
//! everything. Nothing of the previous term carries over. SIGTERM stops everything within
//! [`SHUTDOWN_DEADLINE`] and releases the Lease, so a standby takes over at once.

pub mod admin;
pub mod lease;
mod term;

use crate::cli::{CommonArgs, OperatorArgs};
use crate::reconcile::controllers::Readiness;
use crate::reconcile::metrics::Metrics;
use crate::reconcile::{SharedKeyring, keyring};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use lease::{Elector, Heartbeat, LeaseTiming};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How long the controllers get to finish in-flight reconciles after SIGTERM (or a step-down);
/// the Lease is released meanwhile, within the chart's termination grace period.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(3);

const NO_CLUSTER_HINT: &str = "set KUBECONFIG (or ~/.kube/config) to a reachable cluster, or run in a pod; to serve tokens without a cluster, run `tokenmint serve --manifests DIR`";

pub async fn run(args: OperatorArgs) -> Result<(), crate::BoxError> {
    let client = connect().await?;
    let replica = Replica {
        client,
        common: args.common.clone(),
        lease_name: args.lease_name.clone(),
        identity: lease::unique_identity(&base_identity(&args)),
        timing: LeaseTiming::default(),
        consumers: args.consumers,
        metrics: Arc::new(Metrics::default()),
        readiness: Arc::new(Readiness::default()),
        heartbeat: Heartbeat::default(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::http::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .map_err(|e| format!("cannot listen on --admin-listen {}: {e}", args.admin_listen))?;
    let admin = admin::router(admin::AdminState {
        metrics: replica.metrics.clone(),
        readiness: replica.readiness.clone(),
        heartbeat: replica.heartbeat.clone(),
    });
    tracing::info!(address = %args.admin_listen, "admin endpoints (/healthz, /readyz, /metrics) listening");
    let admin_stop = crate::stop::signalled(stop_rx.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin)
            .with_graceful_shutdown(admin_stop)
            .await
        {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    replica.run(stop_rx).await
}

/// One operator replica, connected: what it runs with.
pub struct Replica {
    pub client: Client,
    pub common: CommonArgs,
    pub lease_name: String,
    /// Unique per process ([`lease::unique_identity`]).
    pub identity: String,
    pub timing: LeaseTiming,
    /// Whether workloads are watched for the consumers of each token (`--consumers`).
    pub consumers: bool,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The pulse of the election loop, for `/healthz`.
    pub heartbeat: Heartbeat,
}

impl Replica {
    /// Loads the keyring, then follows and leads in turn until `stop`: a lost Lease ends a term,
    /// never the process. Fails only when it cannot start (no keyring, no namespace).
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), crate::BoxError> {
        let namespace = &self.common.namespace;
        let keyring_api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let (ring, _) = keyring::load_or_create(
            &keyring_api,
            namespace,
            &self.common.keyring_secret,
            self.common.algorithm,
            jiff::Timestamp::now(),
            &self.metrics,
        )
        .await
        .map_err(|e| match e {
            keyring::KeyringStoreError::Kube(kube::Error::Api(s)) if s.is_not_found() => format!(
                "namespace {namespace} does not exist: create it or pass --namespace (the keyring Secret and leader Lease live there)"
            )
            .into(),
            other => crate::BoxError::from(other.to_string()),
        })?;
        tracing::info!(namespace = %namespace, secret = %self.common.keyring_secret, active = ring.active_kid(), "keyring loaded");
        let ring: SharedKeyring = Arc::new(RwLock::new(ring));
        self.readiness.keyring_loaded();

        let elector = Elector::new(
            Api::namespaced(self.client.clone(), namespace),
            &self.lease_name,
            &self.identity,
            self.timing,
        )
        .with_heartbeat(self.heartbeat.clone());
        let fence = elector.fence();
        let (leading_tx, leading) = watch::channel(false);
        let election = tokio::spawn(elector.run(leading_tx, stop.clone()));

        let (changed_tx, changed) = watch::channel(0u64);
        let keyring_watch = tokio::spawn(keyring::watch(
            keyring_api,
            self.common.keyring_secret.clone(),
            self.common.algorithm,
            ring.clone(),
            changed_tx,
            fence.clone(),
            self.metrics.clone(),
        ));

        let terms = term::Terms {
            replica: &self,
            keyring: ring,
            keyring_changed: changed,
            fence,
            verified: Default::default(),
        };
        let result = terms.follow_and_lead(leading, stop).await;
        self.metrics.set_leader(false);
        keyring_watch.abort();
        // The election task releases the Lease once stopped (SIGTERM).
        if tokio::time::timeout(Duration::from_secs(3), election)
            .await
            .is_err()
        {
            tracing::warn!("the leader election task did not finish in time");
        }
        tracing::info!("stopped");
        result
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

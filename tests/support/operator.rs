//! An operator replica (`tokenmint::operator::Replica`, as `tokenmint operator` runs it once
//! connected) against the fake API server, with a short Lease.

use super::fake_api::Fake;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokenmint::cli::CommonArgs;
use tokenmint::fence::Fence;
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::operator::Replica;
use tokenmint::operator::lease::{Heartbeat, LeaseTiming};
use tokenmint::reconcile::controllers::{self, Readiness, Shared};
use tokenmint::reconcile::events::Events;
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::{Clock, SharedKeyring};
use tokenmint::revocation::{Denylist, Revoker};
use tokio::sync::watch;

/// A 3 s Lease, renewed every 200 ms, fenced 2 s after the last renewal began.
pub const TIMING: LeaseTiming = LeaseTiming {
    duration: Duration::from_secs(3),
    renew_deadline: Duration::from_secs(2),
    retry: Duration::from_millis(200),
};

pub const RELEASE_NS: &str = "tokenmint-system";
pub const LEASE: &str = "tokenmint-leader";

/// A replica called `identity` of an operator in `tokenmint-system`, watching all namespaces.
pub fn replica(fake: &Fake, identity: &str) -> Replica {
    Replica {
        client: fake.client(),
        common: CommonArgs {
            algorithm: Algorithm::HS256,
            issuer: "tokenmint".into(),
            namespace: RELEASE_NS.into(),
            watch_namespaces: Vec::new(),
            keyring_secret: "tokenmint-keyring".into(),
        },
        lease_name: LEASE.into(),
        identity: identity.into(),
        timing: TIMING,
        consumers: true,
        metrics: Arc::new(Metrics::default()),
        readiness: Arc::new(Readiness::default()),
        heartbeat: Heartbeat::default(),
    }
}

/// A gauge (or any unlabelled sample) of `metrics`; -1 when absent.
pub fn gauge(metrics: &Metrics, name: &str) -> i64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// Requests of `phase` that write, other than the Lease's (the elector campaigns throughout).
pub fn writes_in(fake: &Fake, phase: &str) -> Vec<String> {
    fake.calls()
        .iter()
        .filter(|c| {
            c.phase == phase
                && c.origin == super::fake_api::Origin::Request
                && c.resource != "leases"
        })
        .filter(|c| matches!(c.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .map(|c| c.request.clone())
        .collect()
}

/// A fresh keyring.
pub fn keyring() -> SharedKeyring {
    Arc::new(RwLock::new(
        Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap(),
    ))
}

/// The controllers of a term (`reconcile::controllers::run`, all namespaces) against the fake,
/// with Events and revocations in memory.
pub struct Controllers {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    pub events: Events,
    pub denylist: Arc<Denylist>,
}

impl Controllers {
    /// Starts them with `keyring`, watching workloads for consumers (or not), restarting
    /// consumers `restart_window` after a rotation.
    pub fn start(
        fake: &Fake,
        keyring: SharedKeyring,
        consumers: bool,
        restart_window: Duration,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (changed, changed_rx) = watch::channel(0u64);
        let readiness = Arc::new(Readiness::default());
        readiness.keyring_loaded();
        let (metrics, events) = (Arc::new(Metrics::default()), Events::memory());
        let denylist = Arc::new(Denylist::default());
        let shared = Shared {
            client: fake.client(),
            keyring,
            keyring_changed: changed_rx,
            issuer: "tokenmint".into(),
            events: events.clone(),
            metrics: metrics.clone(),
            clock: Clock::system(),
            revoker: Revoker::Memory(denylist.clone()),
            fence: Fence::always(),
            consumers,
            restart_window,
            verified: Default::default(),
        };
        let task = tokio::spawn({
            let readiness = readiness.clone();
            async move {
                controllers::run(shared, &[], stop_rx, readiness).await;
                drop(changed);
            }
        });
        Controllers {
            stop,
            task,
            readiness,
            metrics,
            events,
            denylist,
        }
    }

    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the controllers did not stop")
            .unwrap();
    }
}

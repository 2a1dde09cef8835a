//! An operator replica (`tokenmint::operator::Replica`, as `tokenmint operator` runs it once
//! connected) against the fake API server, with a short Lease.

use super::fake_api::Fake;
use std::sync::Arc;
use std::time::Duration;
use tokenmint::cli::CommonArgs;
use tokenmint::keyring::Algorithm;
use tokenmint::operator::Replica;
use tokenmint::operator::lease::{Heartbeat, LeaseTiming};
use tokenmint::reconcile::controllers::Readiness;
use tokenmint::reconcile::metrics::Metrics;

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

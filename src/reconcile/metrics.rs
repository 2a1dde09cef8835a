//! Prometheus metrics of the operator, served as text on the admin port's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    verb: String,
    resource: String,
}

pub struct Metrics {
    registry: Registry,
    minted: Family<KindLabels, Counter>,
    rotated: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    writes: Family<WriteLabels, Counter>,
    earliest_expiry: Gauge,
    leader: Gauge,
    durations: Family<KindLabels, Histogram, fn() -> Histogram>,
    watch_restarts: crate::watch::RestartCounter,
    /// Expiry (Unix seconds) of every managed token, by `kind/namespace/name`, so the gauge is
    /// the minimum over the tokens in place.
    expiries: Mutex<HashMap<String, i64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let minted = Family::<KindLabels, Counter>::default();
        let rotated = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let writes = Family::<WriteLabels, Counter>::default();
        let earliest_expiry = Gauge::default();
        let leader = Gauge::default();
        let durations: Family<KindLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| {
                // 1 ms .. ~16 s: a quiet reconcile reads caches only, a mint waits on writes.
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            });
        registry.register(
            "tokenmint_tokens_minted",
            "Tokens minted into Secrets, by kind",
            minted.clone(),
        );
        registry.register(
            "tokenmint_tokens_rotated",
            "Tokens replaced before expiry (due, spec change, key rotation, edited Secret), by kind",
            rotated.clone(),
        );
        registry.register(
            "tokenmint_reconcile_errors",
            "Failed reconciles, by kind and reason",
            errors.clone(),
        );
        registry.register(
            "tokenmint_kube_writes",
            "Kubernetes API writes issued, by verb and resource",
            writes.clone(),
        );
        registry.register(
            "tokenmint_token_earliest_expiry_timestamp_seconds",
            "Earliest expiry (Unix seconds) among the managed tokens; 0 when none expires",
            earliest_expiry.clone(),
        );
        registry.register(
            "tokenmint_leader",
            "1 when this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "tokenmint_reconcile_duration_seconds",
            "Time a reconcile took, by kind",
            durations.clone(),
        );
        let watch_restarts = crate::watch::RestartCounter::default();
        crate::watch::register_restarts(&mut registry, &watch_restarts);
        Metrics {
            registry,
            minted,
            rotated,
            errors,
            writes,
            earliest_expiry,
            leader,
            durations,
            watch_restarts,
            expiries: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn minted(&self, kind: &str, replaced: bool) {
        let labels = KindLabels { kind: kind.into() };
        self.minted.get_or_create(&labels).inc();
        if replaced {
            self.rotated.get_or_create(&labels).inc();
        }
    }

    pub fn reconcile_error(&self, kind: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn write(&self, verb: &str, resource: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    pub fn reconciled(&self, kind: &str, took: std::time::Duration) {
        self.durations
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    /// The watch-restart counter, for the operator's watches.
    pub fn watch_restarts(&self) -> crate::watch::RestartCounter {
        self.watch_restarts.clone()
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records the expiry of the token of `key` (`None`: no token, or one that never expires).
    pub fn token_expiry(&self, key: &str, expires_at: Option<i64>) {
        let mut expiries = self.expiries.lock().expect("expiries lock");
        match expires_at {
            Some(at) => expiries.insert(key.to_owned(), at),
            None => expiries.remove(key),
        };
        self.earliest_expiry
            .set(expiries.values().copied().min().unwrap_or(0));
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

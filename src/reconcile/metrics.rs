//! Prometheus metrics of the operator, served as text on the admin port's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The kinds the operator reconciles: the `kind` label of its families.
pub const KINDS: [&str; 3] = ["ServiceKey", "DatasourceGrant", "GuestTokenRequest"];
/// Reasons of transient reconcile failures ([`super::Error::reason`]); the permanent ones are
/// [`crate::desired::Reason`]'s.
pub const ERROR_REASONS: [&str; 5] = [
    "KubeError",
    "SigningError",
    "MissingMetadata",
    "RevocationError",
    "NotLeader",
];
/// Every (verb, resource) the operator writes: the labels of `tokenmint_kube_writes_total`.
pub const WRITES: [(&str, &str); 11] = [
    ("create", "secrets"),
    ("apply", "secrets"),
    ("patch", "secrets"),
    ("update", "secrets"),
    ("delete", "secrets"),
    ("apply", "servicekeys/status"),
    ("apply", "datasourcegrants/status"),
    ("apply", "guesttokenrequests/status"),
    ("patch", "deployments"),
    ("patch", "statefulsets"),
    ("patch", "daemonsets"),
];
/// The operator's watches: the `resource` label of `tokenmint_watch_restarts_total`.
pub const WATCHES: [&str; 6] = [
    "servicekeys",
    "datasourcegrants",
    "guesttokenrequests",
    "secrets",
    "keyring",
    "revocations",
];

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
    /// How many managed tokens expire at each second (Unix), so that the gauge is the first
    /// key: O(log n) per change, no pass over every token.
    expiries: Mutex<BTreeMap<i64, u32>>,
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
        let metrics = Metrics {
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
        };
        metrics.create_series();
        metrics
    }
}

impl Metrics {
    /// Every series of the known label values, at zero: a panel or a rate-based alert tells
    /// "nothing happened" from "not scraped" from the start.
    fn create_series(&self) {
        let reasons = ERROR_REASONS
            .into_iter()
            .chain(crate::desired::Reason::ALL.map(crate::desired::Reason::as_str));
        for kind in KINDS {
            let labels = KindLabels { kind: kind.into() };
            let _ = self.minted.get_or_create(&labels);
            let _ = self.rotated.get_or_create(&labels);
            let _ = self.durations.get_or_create(&labels);
            for reason in reasons.clone() {
                let _ = self.errors.get_or_create(&ErrorLabels {
                    kind: kind.into(),
                    reason: reason.into(),
                });
            }
        }
        for (verb, resource) in WRITES {
            let _ = self.writes.get_or_create(&WriteLabels {
                verb: verb.into(),
                resource: resource.into(),
            });
        }
        for resource in WATCHES {
            let _ = self
                .watch_restarts
                .get_or_create(&crate::watch::ResourceLabel { resource });
        }
    }

    pub fn minted(&self, kind: &str, replaced: bool) {
        debug_assert!(KINDS.contains(&kind), "unknown kind {kind}");
        let labels = KindLabels { kind: kind.into() };
        self.minted.get_or_create(&labels).inc();
        if replaced {
            self.rotated.get_or_create(&labels).inc();
        }
    }

    pub fn reconcile_error(&self, kind: &str, reason: &str) {
        debug_assert!(
            ERROR_REASONS.contains(&reason)
                || crate::desired::Reason::ALL
                    .iter()
                    .any(|r| r.as_str() == reason),
            "reason {reason} missing from the series created at start"
        );
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn write(&self, verb: &str, resource: &str) {
        debug_assert!(
            WRITES.contains(&(verb, resource)),
            "write {verb} {resource} missing from the series created at start"
        );
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

    /// A managed token's expiry changed: `removed` is gone (the token was replaced or its
    /// Secret deleted), `added` is in place (`None`: nothing, or a token that never expires).
    pub fn token_expiries(&self, removed: Option<jiff::Timestamp>, added: Option<jiff::Timestamp>) {
        if removed == added {
            return;
        }
        let mut expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = removed
            && let Some(count) = expiries.get_mut(&at.as_second())
        {
            *count -= 1;
            if *count == 0 {
                expiries.remove(&at.as_second());
            }
        }
        if let Some(at) = added {
            *expiries.entry(at.as_second()).or_default() += 1;
        }
        self.earliest_expiry
            .set(expiries.first_key_value().map_or(0, |(at, _)| *at));
    }

    /// Forgets every token's expiry: this replica no longer manages them (it stepped down).
    pub fn forget_expiries(&self) {
        self.expiries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.earliest_expiry.set(0);
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_expiry_follows_additions_and_removals() {
        let metrics = Metrics::default();
        let at = |s| jiff::Timestamp::from_second(s).unwrap();
        let gauge = |m: &Metrics| {
            m.encode()
                .lines()
                .find_map(|l| l.strip_prefix("tokenmint_token_earliest_expiry_timestamp_seconds "))
                .unwrap()
                .to_owned()
        };
        assert_eq!(gauge(&metrics), "0");
        metrics.token_expiries(None, Some(at(2000)));
        metrics.token_expiries(None, Some(at(1000)));
        metrics.token_expiries(None, Some(at(1000)));
        assert_eq!(gauge(&metrics), "1000");
        metrics.token_expiries(Some(at(1000)), Some(at(3000)));
        assert_eq!(gauge(&metrics), "1000", "another token still expires then");
        metrics.token_expiries(Some(at(1000)), None);
        assert_eq!(gauge(&metrics), "2000");
        metrics.forget_expiries();
        assert_eq!(gauge(&metrics), "0");
    }
}

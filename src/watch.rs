//! Watches that recover by themselves, for every cache tokenmint keeps (the operator's
//! controllers, the keyring, the REST sidecar's key index and the revocation denylist).
//!
//! kube-runtime's watcher resumes a broken watch from the last resourceVersion it saw. After an
//! API-server restart that version can be older than the new watch cache holds, and the watch
//! then fails with `410 Gone` again and again while the default backoff grows towards a minute.
//! client-go's reflector answers a 410 by relisting at once; so does this: on any failure the
//! watcher is dropped and started afresh (a consistent list, then a watch from the list's
//! version), immediately after a 410 and otherwise after a short backoff capped at
//! [`MAX_RETRY_DELAY`], so a cache serves again within seconds of the API server's return.
//!
//! Errors are counted here, logged as an [`Outage`] (a warning when a watch starts failing, a
//! summary once a minute, one line when it recovers) and never reach the consumer, which sees a plain stream
//! of events: `Init`/`InitApply`/`InitDone` after every (re)list, `Apply`/`Delete` in between.
//! [`Probe`] reports whether the watch is synced (for `/readyz`).

use crate::outage::{self, Outage};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait between two attempts of a failing watch (list or watch request).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(4);
/// First wait after a failure other than 410 Gone.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Label of the watch-restart counter: which cache restarted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: &'static str,
}

/// `tokenmint_watch_restarts_total{resource}`, shared by the operator and `serve`.
pub type RestartCounter = Family<ResourceLabel, Counter>;

/// Registers `restarts` in `registry`.
pub fn register_restarts(
    registry: &mut prometheus_client::registry::Registry,
    restarts: &RestartCounter,
) {
    registry.register(
        "tokenmint_watch_restarts",
        "Watches restarted with a fresh list after a failure (410 Gone, dropped connection, API error), by resource",
        restarts.clone(),
    );
}

/// Whether each watch of a process is synced: listed, and not failing since.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<Mutex<Vec<Registered>>>);

/// A registered watch: its resource and state.
type Registered = (&'static str, Arc<ProbeState>);

#[derive(Debug)]
struct ProbeState {
    synced: AtomicBool,
    /// When the watch last stopped being synced (start-up counts).
    since: Mutex<Instant>,
}

impl Health {
    /// A probe for one more watch, unsynced until its first list completes. Its restart
    /// series exists from now on (at zero), and it counts until every clone of it is dropped.
    pub fn probe(&self, resource: &'static str, restarts: &RestartCounter) -> Probe {
        let state = Arc::new(ProbeState {
            synced: AtomicBool::new(false),
            since: Mutex::new(Instant::now()),
        });
        let _ = restarts.get_or_create(&ResourceLabel { resource });
        let mut registered = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Watches of an earlier term of leadership are gone: forget them.
        registered.retain(|(_, state)| Arc::strong_count(state) > 1);
        registered.push((resource, state.clone()));
        drop(registered);
        Probe {
            resource,
            state,
            restarts: restarts.clone(),
        }
    }

    /// The resources whose watch is not synced (empty: all are).
    pub fn unsynced(&self) -> Vec<&'static str> {
        self.unsynced_for(Duration::ZERO)
    }

    /// The resources whose watch has not been synced for at least `at_least`.
    pub fn unsynced_for(&self, at_least: Duration) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, state)| {
                Arc::strong_count(state) > 1
                    && !state.synced.load(Ordering::Acquire)
                    && state
                        .since
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .elapsed()
                        >= at_least
            })
            .map(|(resource, _)| *resource)
            .collect()
    }
}

/// One watch's health and restart counter.
#[derive(Clone, Debug)]
pub struct Probe {
    resource: &'static str,
    state: Arc<ProbeState>,
    restarts: RestartCounter,
}

impl Probe {
    /// A probe registered nowhere (tests, one-off watches).
    pub fn detached(resource: &'static str) -> Self {
        Health::default().probe(resource, &RestartCounter::default())
    }

    pub fn is_synced(&self) -> bool {
        self.state.synced.load(Ordering::Acquire)
    }

    fn set_synced(&self, synced: bool) {
        let was = self.state.synced.swap(synced, Ordering::AcqRel);
        if was && !synced {
            *self.state.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// Whether the API server answered 410 Gone: the resourceVersion is too old, only a relist helps.
pub fn is_gone(error: &watcher::Error) -> bool {
    let status_code = |e: &kube::Error| match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    };
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => status_code(e) == Some(410),
        watcher::Error::NoResourceVersion => false,
    }
}

/// How long to wait before restarting a watch that failed `failures` times in a row (0: first
/// failure since it last served for [`STABLE_AFTER`]): no wait after a first 410, else 250 ms doubling up to
/// [`MAX_RETRY_DELAY`], with up to 20% jitter off so that replicas spread their retries.
pub fn retry_delay(error: &watcher::Error, failures: u32) -> Duration {
    if failures == 0 && is_gone(error) {
        return Duration::ZERO;
    }
    let base = FIRST_RETRY_DELAY
        .saturating_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
        .min(MAX_RETRY_DELAY);
    let jitter = rand::random::<f64>() * 0.2;
    base.mul_f64(1.0 - jitter)
}

/// How long a watch must have served since its list for its next failure to count as the
/// first one again. A list that succeeds is no proof: with `list` allowed but `watch` refused,
/// every list succeeds and every watch fails at once, which must still back off.
const STABLE_AFTER: Duration = Duration::from_secs(10);

struct State<T, F> {
    start: F,
    inner: Option<BoxStream<'static, watcher::Result<watcher::Event<T>>>>,
    failures: u32,
    /// When the current watcher finished its list.
    listed_at: Option<tokio::time::Instant>,
    probe: Probe,
    /// What the log says about the failures.
    outage: Outage,
}

/// The events of the watcher `start` makes, restarted from scratch after every failure.
/// `start` is called again for each restart, e.g. `move || watcher(api.clone(), config.clone()).boxed()`.
pub fn resilient<T, F>(start: F, probe: Probe) -> impl Stream<Item = watcher::Event<T>> + Send
where
    T: Send + 'static,
    F: FnMut() -> BoxStream<'static, watcher::Result<watcher::Event<T>>> + Send + 'static,
{
    let state = State {
        start,
        inner: None,
        failures: 0,
        listed_at: None,
        probe,
        outage: Outage::new(STABLE_AFTER),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            let inner = match &mut s.inner {
                Some(inner) => inner,
                none => none.insert((s.start)()),
            };
            match inner.next().await {
                Some(Ok(event)) => {
                    if matches!(event, watcher::Event::InitDone) {
                        if let Some(ended) = s.outage.succeeded() {
                            tracing::info!(
                                resource = s.probe.resource,
                                failed_for_s = ended.lasted.as_secs(),
                                attempts = ended.attempts,
                                "watch recovered: relisted and watching again"
                            );
                        }
                        s.listed_at = Some(tokio::time::Instant::now());
                        s.probe.set_synced(true);
                    }
                    return Some((event, s));
                }
                Some(Err(error)) => {
                    s.inner = None;
                    if s.listed_at
                        .take()
                        .is_some_and(|at| at.elapsed() >= STABLE_AFTER)
                    {
                        s.failures = 0;
                    }
                    s.probe.set_synced(false);
                    s.probe
                        .restarts
                        .get_or_create(&ResourceLabel {
                            resource: s.probe.resource,
                        })
                        .inc();
                    let delay = retry_delay(&error, s.failures);
                    let resource = s.probe.resource;
                    match s.outage.failed() {
                        outage::Failure::Started => {
                            tracing::warn!(resource, %error, retry_in = ?delay, "watch failed; relisting (while it keeps failing, a summary once a minute)")
                        }
                        outage::Failure::Ongoing { lasted, attempts } => {
                            tracing::warn!(resource, %error, failing_for_s = lasted.as_secs(), attempts, "watch still failing; relisting")
                        }
                        outage::Failure::Again => {
                            tracing::debug!(resource, %error, retry_in = ?delay, "watch failed again; relisting")
                        }
                    }
                    s.failures = s.failures.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
                // kube's watcher never ends; should one end anyway, start a new one.
                None => s.inner = None,
            }
        }
    })
}

/// What a watch can list, watch and cache.
pub trait Watchable:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watchable for K where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// The slimmed objects of `api` ([`slim`]), watched by a [`resilient`] watch.
pub fn slim_watch<K: Watchable>(
    api: kube::Api<K>,
    config: watcher::Config,
    probe: Probe,
) -> impl Stream<Item = watcher::Event<K>> + Send {
    resilient(
        move || -> BoxStream<'static, watcher::Result<watcher::Event<K>>> {
            watcher::watcher(api.clone(), config.clone())
                .map(|e| e.map(|e| e.modify(slim)))
                .boxed()
        },
        probe,
    )
}

/// An Api over one namespace, or all of them.
pub fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    }
}

/// Drops what tokenmint never reads from every cached object: `managedFields` and kubectl's
/// `last-applied-configuration` (a second copy of the whole object). Halves a cache's memory.
pub fn slim<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn gone() -> watcher::Error {
        watcher::Error::WatchError(Box::new(
            Status::failure("too old resource version", "Expired").with_code(410),
        ))
    }

    fn refused() -> watcher::Error {
        let status = Status::failure("service unavailable", "ServiceUnavailable").with_code(503);
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn gone_is_recognised_in_every_form() {
        assert!(is_gone(&gone()));
        let start_410 = watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(
            Status::failure("gone", "Expired").with_code(410),
        )));
        assert!(is_gone(&start_410));
        assert!(!is_gone(&refused()));
        assert!(!is_gone(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn a_first_410_relists_at_once_and_backoff_is_capped() {
        assert_eq!(retry_delay(&gone(), 0), Duration::ZERO);
        // A 410 right after a relist is not free: the list itself is then failing.
        assert!(retry_delay(&gone(), 1) > Duration::ZERO);
        let first = retry_delay(&refused(), 0);
        assert!(first <= FIRST_RETRY_DELAY && first >= FIRST_RETRY_DELAY.mul_f64(0.8));
        for failures in [5, 10, 31, 32, 1000] {
            let d = retry_delay(&refused(), failures);
            assert!(
                d <= MAX_RETRY_DELAY && d >= MAX_RETRY_DELAY.mul_f64(0.8),
                "{failures}: {d:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_restart_the_watcher_and_are_hidden_from_the_consumer() {
        use std::sync::atomic::AtomicUsize;
        let starts = Arc::new(AtomicUsize::new(0));
        let probe = Probe::detached("things");
        let script = {
            let starts = starts.clone();
            move || {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                let events: Vec<watcher::Result<watcher::Event<u32>>> = match n {
                    // First run: lists, then the watch gets 410.
                    0 => vec![
                        Ok(watcher::Event::Init),
                        Ok(watcher::Event::InitApply(1)),
                        Ok(watcher::Event::InitDone),
                        Ok(watcher::Event::Apply(2)),
                        Err(gone()),
                    ],
                    // The relist fails twice (API server still starting)...
                    1 | 2 => vec![Err(refused())],
                    // ...then works.
                    _ => vec![
                        Ok(watcher::Event::Init),
                        Ok(watcher::Event::InitApply(3)),
                        Ok(watcher::Event::InitDone),
                    ],
                };
                futures::stream::iter(events)
                    .chain(futures::stream::pending())
                    .boxed()
            }
        };
        let mut stream = std::pin::pin!(resilient(script, probe.clone()));
        let mut seen = Vec::new();
        let started = tokio::time::Instant::now();
        while seen.len() < 7 {
            let event = stream.next().await.unwrap();
            seen.push(match event {
                watcher::Event::Init => "init".to_owned(),
                watcher::Event::InitApply(n) => format!("list {n}"),
                watcher::Event::InitDone => "done".to_owned(),
                watcher::Event::Apply(n) => format!("apply {n}"),
                watcher::Event::Delete(n) => format!("delete {n}"),
            });
            if seen.len() == 4 {
                assert!(probe.is_synced());
            }
        }
        assert_eq!(
            seen,
            [
                "init", "list 1", "done", "apply 2", "init", "list 3", "done"
            ]
        );
        assert_eq!(starts.load(Ordering::SeqCst), 4);
        assert!(probe.is_synced());
        // The 410: no wait; then the two refusals, second and third failures in a row: 500 ms
        // and 1 s at most.
        assert!(
            started.elapsed() <= Duration::from_millis(1_500),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_fails_right_after_every_list_backs_off() {
        use std::sync::atomic::AtomicUsize;
        let starts = Arc::new(AtomicUsize::new(0));
        let forbidden = || {
            let status = Status::failure("watch is forbidden", "Forbidden").with_code(403);
            watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(status)))
        };
        let script = {
            let starts = starts.clone();
            move || {
                starts.fetch_add(1, Ordering::SeqCst);
                // `list` allowed, `watch` refused: the list succeeds every time.
                let events: Vec<watcher::Result<watcher::Event<u32>>> = vec![
                    Ok(watcher::Event::Init),
                    Ok(watcher::Event::InitApply(1)),
                    Ok(watcher::Event::InitDone),
                    Err(forbidden()),
                ];
                futures::stream::iter(events)
                    .chain(futures::stream::pending())
                    .boxed()
            }
        };
        let stream = resilient(script, Probe::detached("things"));
        let drained = tokio::time::timeout(Duration::from_secs(20), stream.for_each(|_| async {}));
        assert!(drained.await.is_err(), "the stream never ends");
        // 250 ms doubling to 4 s (up to 20% less): 9 or 10 lists in 20 s. Reset by every list, it
        // relisted every 250 ms: about 90.
        let n = starts.load(Ordering::SeqCst);
        assert!((6..=10).contains(&n), "{n} lists in 20 s");
    }
}

//! Kubernetes Events on the resources: each mint, rotation and failure.
//!
//! Publishing is best effort: a failed Event is logged, never a reconcile error (the status
//! already carries the outcome). Notes never contain a token or key.
//!
//! [`Recorder`] folds repeats (same object, type, reason and action within [`SERIES_WINDOW`])
//! into one Event with a series count, as client-go's and kube-runtime's recorders do; unlike
//! kube-runtime's, it forgets old Events in the order they were published, so its bookkeeping
//! costs O(1) per Event and about 60 bytes per Event of the window, not a pass over every
//! remembered Event (with a copy of each) on every publish.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// How long a published Event is remembered, for a repeat to join its series.
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// One published event, as kept by [`Events::memory`] for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `namespace/name` of the regarding object.
    pub object: String,
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub note: String,
}

/// What is remembered of one published Event: enough to name it and count its series.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    /// The nanosecond timestamp in its name (`<object>.<hex nanos>`).
    nanos: i64,
    count: i32,
    /// When it was last published (Unix seconds).
    last: i64,
}

#[derive(Debug, Default)]
struct Series {
    by_key: HashMap<u64, Remembered>,
    /// Keys in the order they were published, with when each is forgotten.
    order: VecDeque<(i64, u64)>,
}

impl Series {
    /// Forgets the Events published longer than [`SERIES_WINDOW`] ago: the oldest first, so
    /// each is looked at once.
    fn expire(&mut self, now: i64) {
        while let Some(&(until, key)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            // Published again since: a later entry of `order` covers it.
            if self
                .by_key
                .get(&key)
                .is_some_and(|r| r.last + SERIES_WINDOW.as_secs() <= now)
            {
                self.by_key.remove(&key);
            }
        }
    }

    fn remember(&mut self, key: u64, remembered: Remembered) {
        self.by_key.insert(key, remembered);
        self.order
            .push_back((remembered.last + SERIES_WINDOW.as_secs(), key));
    }
}

/// Publishes Events through the `events.k8s.io/v1` API.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    series: Arc<Mutex<Series>>,
}

impl Recorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            series: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The series an Event belongs to: its regarding object, type, reason and action. (A
    /// 64-bit hash: two series sharing one would only be counted together.)
    fn key(ev: &Event, regarding: &ObjectReference) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        (ev.type_ == EventType::Warning).hash(&mut hasher);
        (&ev.reason, &ev.action).hash(&mut hasher);
        (&regarding.api_version, &regarding.kind).hash(&mut hasher);
        (&regarding.namespace, &regarding.name, &regarding.uid).hash(&mut hasher);
        hasher.finish()
    }

    fn name(regarding: &ObjectReference, nanos: i64) -> String {
        format!(
            "{}.{nanos:x}",
            regarding.name.as_deref().unwrap_or("tokenmint")
        )
    }

    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Self::key(ev, regarding);
        let known = {
            let mut series = self.lock();
            series.expire(now.as_second());
            series.by_key.get(&key).copied()
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), namespace);
        let mut published = Remembered {
            nanos: i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX),
            count: 1,
            last: now.as_second(),
        };
        let repeat = match known {
            Some(known) => {
                let patch = serde_json::json!({"series": {
                    "count": known.count.saturating_add(1).max(2),
                    "lastObservedTime": MicroTime(now),
                }});
                match api
                    .patch(
                        &Self::name(regarding, known.nanos),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => Some(known),
                    // The Event is gone (expired on the server): start a new one.
                    Err(kube::Error::Api(s)) if s.is_not_found() => None,
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        match repeat {
            Some(known) => {
                published.nanos = known.nanos;
                published.count = known.count.saturating_add(1).max(2);
            }
            None => {
                api.create(
                    &PostParams::default(),
                    &self.event(ev, regarding, now, published.nanos),
                )
                .await?;
            }
        }
        self.lock().remember(key, published);
        Ok(())
    }

    fn event(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
        now: Timestamp,
        nanos: i64,
    ) -> KubeEvent {
        KubeEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(Self::name(regarding, nanos)),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            related: ev.secondary.clone(),
            ..KubeEvent::default()
        }
    }
}

#[derive(Clone)]
pub enum Events {
    /// Events through the Kubernetes Events API.
    Kube(Recorder),
    /// Events kept in memory (tests), so API request assertions see only the writes that
    /// matter.
    Memory(Arc<Mutex<Vec<Published>>>),
    /// Events dropped (benchmarks).
    Discard,
}

impl Events {
    pub fn memory() -> Self {
        Events::Memory(Arc::default())
    }

    /// What was published so far (empty for the Kubernetes recorder).
    pub fn published(&self) -> Vec<Published> {
        match self {
            Events::Kube(_) | Events::Discard => Vec::new(),
            Events::Memory(list) => list.lock().expect("events lock").clone(),
        }
    }

    pub async fn normal(&self, regarding: &ObjectReference, reason: &str, note: String) {
        self.publish(regarding, EventType::Normal, reason, reason, note)
            .await;
    }

    /// A Normal Event whose action differs from its reason. The recorder folds Events of one
    /// reason and action into a series keeping the first note, so the action must separate
    /// notes that say different things.
    pub async fn normal_with_action(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish(regarding, EventType::Normal, reason, action, note)
            .await;
    }

    pub async fn warning(&self, regarding: &ObjectReference, reason: &str, note: String) {
        self.publish(regarding, EventType::Warning, reason, reason, note)
            .await;
    }

    async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        match self {
            Events::Kube(recorder) => {
                let event = Event {
                    type_,
                    reason: reason.to_owned(),
                    note: Some(note),
                    action: action.to_owned(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&event, regarding).await {
                    tracing::warn!(
                        namespace = regarding.namespace.as_deref().unwrap_or_default(),
                        name = regarding.name.as_deref().unwrap_or_default(),
                        reason,
                        error = %e,
                        "cannot publish event"
                    );
                }
            }
            Events::Discard => {}
            Events::Memory(list) => list.lock().expect("events lock").push(Published {
                object: format!(
                    "{}/{}",
                    regarding.namespace.as_deref().unwrap_or_default(),
                    regarding.name.as_deref().unwrap_or_default()
                ),
                warning: type_ == EventType::Warning,
                reason: reason.to_owned(),
                action: action.to_owned(),
                note,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(last: i64) -> Remembered {
        Remembered {
            nanos: last * 1_000_000_000,
            count: 1,
            last,
        }
    }

    #[test]
    fn series_are_forgotten_in_publish_order_and_kept_while_repeated() {
        let window = SERIES_WINDOW.as_secs();
        let mut series = Series::default();
        series.remember(1, published(0));
        series.remember(2, published(10));
        // 1 is published again later: its first entry in the order no longer forgets it.
        series.remember(1, published(20));
        series.expire(window);
        assert_eq!(series.by_key.len(), 2);
        series.expire(10 + window);
        assert!(series.by_key.contains_key(&1) && !series.by_key.contains_key(&2));
        series.expire(20 + window);
        assert!(series.by_key.is_empty() && series.order.is_empty());
        // Each entry of the order is looked at once: 100,000 Events cost 100,000 steps.
        for key in 0..100_000 {
            series.remember(key, published(30));
        }
        series.expire(30 + window);
        assert!(series.by_key.is_empty() && series.order.is_empty());
    }
}

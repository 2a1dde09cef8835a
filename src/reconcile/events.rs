//! Kubernetes Events on the resources: each mint, rotation and failure.
//!
//! Publishing is best effort: a failed Event is logged, never a reconcile error (the status
//! already carries the outcome). Notes never contain a token or key.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use std::sync::{Arc, Mutex};

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

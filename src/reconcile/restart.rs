//! Consumer restarts (`restartConsumers`, `rolloutRestart`): after a rotation, the pods of the
//! workloads that read the token from an environment variable or a `subPath` mount, which the
//! kubelet never refreshes (found by [`super::delivery`]), and of the listed ones, are
//! restarted once. A kind without a rollout (CronJob, Job, a bare ReplicaSet) is not: a Warning
//! Event says it cannot be.
//!
//! Crash-safe and coalesced:
//! - whether the consumers of a token still need a restart is recorded on its Secret: the
//!   annotation [`RESTARTED_FOR_ANNOTATION`] names the token id the consumers were last
//!   restarted for (or that they started with, for a first token). A rotation writes a new
//!   token without it, so "annotation ≠ current token id" survives an operator restart;
//! - requests wait [`COALESCE_WINDOW`] per workload; every rotation in that window joins the
//!   pending restart, so many grants rotating together restart a Deployment once;
//! - a restart is a merge patch of one pod template annotation, as `kubectl rollout restart`
//!   does; then the Secrets it served are marked with their token id.

use super::events::Events;
use super::metrics::Metrics;
use crate::consumers::Workload;
use crate::crd::WorkloadKind;
use crate::fence::Fence;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// On a token Secret: the token id whose consumers have been restarted (or started with it).
pub const RESTARTED_FOR_ANNOTATION: &str = "tokenmint.dev/restarted-for";
/// On a workload's pod template: when tokenmint last restarted it.
pub const RESTARTED_AT_ANNOTATION: &str = "tokenmint.dev/restartedAt";
/// Field manager of the restart patches (separate from the Secret applies, so a rotation's
/// apply of a new token does not carry the marker over).
pub const RESTART_FIELD_MANAGER: &str = "tokenmint-restart";
/// How long a restart waits for further rotations to join it.
pub const COALESCE_WINDOW: Duration = Duration::from_secs(30);
/// After a failed restart (other than "not found" or "forbidden"), the retry waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// What a token Secret records of its consumers' restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restarts {
    /// Whether it records them at all ([`RESTARTED_FOR_ANNOTATION`]): when consumers are known
    /// or listed.
    pub tracked: bool,
    /// Whether a rotation leaves consumers that hold the old token until restarted (else a new
    /// token is recorded as theirs as it is written).
    pub after_rotation: bool,
}

/// Whether the consumers of the token `token_id` in a Secret whose
/// [`RESTARTED_FOR_ANNOTATION`] is `marked` still wait for their restart.
pub fn pending(marked: Option<&str>, token_id: &str) -> bool {
    marked != Some(token_id)
}

/// Restart the `workloads` in `namespace` for the token `token_id` now in Secret `secret`.
#[derive(Debug, Clone)]
pub struct Request {
    pub namespace: String,
    pub secret: String,
    pub token_id: String,
    pub workloads: Vec<Workload>,
    /// The resource the restart is reported on (Events).
    pub regarding: ObjectReference,
}

/// Handle to the restart worker; cheap to clone. A disabled handle drops requests (tests of
/// the reconcilers that do not exercise restarts).
#[derive(Clone, Debug, Default)]
pub struct Restarter(Option<mpsc::UnboundedSender<Request>>);

impl Restarter {
    pub fn disabled() -> Self {
        Restarter(None)
    }

    /// Starts the worker; it runs until `shutdown` turns true or every handle is dropped.
    pub fn spawn(
        client: Client,
        events: Events,
        metrics: Arc<Metrics>,
        window: Duration,
        fence: Fence,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            client,
            events,
            metrics,
            window,
            fence,
            pending: HashMap::new(),
        };
        (Restarter(Some(tx)), tokio::spawn(worker.run(rx, shutdown)))
    }

    /// A handle whose requests arrive on the returned receiver instead of a worker (tests, or
    /// an embedding that schedules restarts itself).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Request>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Restarter(Some(tx)), rx)
    }

    pub fn request(&self, request: Request) {
        if let Some(tx) = &self.0 {
            // The worker only stops at shutdown, when no restart matters any more.
            let _ = tx.send(request);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WorkloadKey {
    namespace: String,
    workload: Workload,
}

/// A restart waiting for its window to close.
struct Pending {
    due: Instant,
    /// The latest token id of each Secret to mark once the workload is restarted: a Secret
    /// rotated twice in the window is marked with its newest token only (marking an older one
    /// would ask for another restart).
    tokens: BTreeMap<String, String>,
    regarding: Vec<ObjectReference>,
}

struct Worker {
    client: Client,
    events: Events,
    metrics: Arc<Metrics>,
    window: Duration,
    /// No restart or mark once this replica may have lost the Lease.
    fence: Fence,
    pending: HashMap<WorkloadKey, Pending>,
}

impl Worker {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        shutdown: watch::Receiver<bool>,
    ) {
        let stop = crate::stop::signalled(shutdown);
        tokio::pin!(stop);
        loop {
            let next_due = self.pending.values().map(|p| p.due).min();
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.add(request),
                    None => return,
                },
                _ = sleep_until(next_due) => self.fire_due().await,
                _ = &mut stop => return,
            }
        }
    }

    fn add(&mut self, request: Request) {
        let due = Instant::now() + self.window;
        for workload in request.workloads {
            let key = WorkloadKey {
                namespace: request.namespace.clone(),
                workload,
            };
            // A pending restart keeps its deadline: joining it never delays it.
            let entry = self.pending.entry(key).or_insert_with(|| Pending {
                due,
                tokens: BTreeMap::new(),
                regarding: Vec::new(),
            });
            entry
                .tokens
                .insert(request.secret.clone(), request.token_id.clone());
            if !entry.regarding.contains(&request.regarding) {
                entry.regarding.push(request.regarding.clone());
            }
        }
    }

    async fn fire_due(&mut self) {
        let now = Instant::now();
        if !self.fence.is_valid() {
            // Not the leader any more (or not sure): the next leader restarts what is pending,
            // as the marks on the Secrets say.
            self.pending.clear();
            return;
        }
        let due: Vec<WorkloadKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        // (namespace, Secret) -> the token id its consumers now run with.
        let mut served: BTreeMap<(String, String), String> = BTreeMap::new();
        for key in due {
            let Some(pending) = self.pending.remove(&key) else {
                continue;
            };
            let workload = &key.workload;
            let restarted = match workload.kind.restartable() {
                Some(kind) => self.restart(&key, kind).await,
                None => Err(Unrestartable),
            };
            let (reason, note, warning) = match restarted {
                Ok(()) => (
                    "RolloutRestarted",
                    format!("Restarted {workload} for the rotated token"),
                    false,
                ),
                // None of these is fixed by retrying: reported once, and the Secret marked as
                // served (the next rotation tries again).
                Err(Unrestartable) => (
                    "RolloutRestartUnsupported",
                    format!(
                        "Cannot restart {workload} for the rotated token: {}",
                        workload.kind.why_not_restartable()
                    ),
                    true,
                ),
                Err(Failed(kube::Error::Api(status))) if status.is_forbidden() => (
                    "RolloutRestartForbidden",
                    format!(
                        "Not allowed (RBAC: the chart's rbac.allowWorkloadRestarts) to restart {workload} for the rotated token"
                    ),
                    true,
                ),
                Err(Failed(kube::Error::Api(status))) if status.is_not_found() => (
                    "RolloutRestartFailed",
                    format!("Did not find {workload} for the rotated token"),
                    true,
                ),
                Err(Failed(e)) => {
                    tracing::warn!(namespace = %key.namespace, %workload, error = %e, "restart failed; retrying");
                    self.pending.insert(
                        key,
                        Pending {
                            due: now + RETRY_AFTER,
                            ..pending
                        },
                    );
                    continue;
                }
            };
            self.note(&pending, reason, note, warning).await;
            served.extend(
                pending
                    .tokens
                    .into_iter()
                    .map(|(secret, id)| ((key.namespace.clone(), secret), id)),
            );
        }
        // A Secret is marked once none of its workloads is still pending.
        for ((namespace, secret), token_id) in served {
            let still_pending = self
                .pending
                .iter()
                .any(|(k, p)| k.namespace == namespace && p.tokens.contains_key(&secret));
            if !still_pending {
                self.mark(&namespace, &secret, &token_id).await;
            }
        }
    }

    async fn restart(&self, key: &WorkloadKey, kind: WorkloadKind) -> Result<(), Unrestarted> {
        let patch = Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: Timestamp::now().to_string()
        }}}}}));
        let params = restart_params();
        let (client, ns, name) = (self.client.clone(), &key.namespace, &key.workload.name);
        match kind {
            WorkloadKind::Deployment => {
                Api::<Deployment>::namespaced(client, ns)
                    .patch(name, &params, &patch)
                    .await?;
            }
            WorkloadKind::StatefulSet => {
                Api::<StatefulSet>::namespaced(client, ns)
                    .patch(name, &params, &patch)
                    .await?;
            }
            WorkloadKind::DaemonSet => {
                Api::<DaemonSet>::namespaced(client, ns)
                    .patch(name, &params, &patch)
                    .await?;
            }
        }
        self.metrics
            .write("patch", crate::consumers::Kind::from(kind).plural());
        tracing::info!(namespace = %ns, workload = ?key.workload, "restarted workload after token rotation");
        Ok(())
    }

    /// Records on the Secret that its token's consumers were restarted. A merge patch, so a
    /// Secret deleted meanwhile is not recreated.
    async fn mark(&self, namespace: &str, secret: &str, token_id: &str) {
        let patch = Patch::Merge(json!({"metadata": {"annotations": {
            RESTARTED_FOR_ANNOTATION: token_id
        }}}));
        let params = restart_params();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.patch(secret, &params, &patch).await {
            Ok(_) => self.metrics.write("patch", "secrets"),
            // The next reconcile sees the marker missing and asks again.
            Err(e) => {
                tracing::warn!(%namespace, %secret, error = %e, "cannot record the restart on the Secret")
            }
        }
    }

    async fn note(&self, pending: &Pending, reason: &str, note: String, warning: bool) {
        for regarding in &pending.regarding {
            if warning {
                self.events.warning(regarding, reason, note.clone()).await;
            } else {
                self.events.normal(regarding, reason, note.clone()).await;
            }
        }
    }
}

/// Why a workload was not restarted.
enum Unrestarted {
    /// A kind without a rollout.
    Unrestartable,
    Failed(kube::Error),
}
use Unrestarted::{Failed, Unrestartable};

impl From<kube::Error> for Unrestarted {
    fn from(e: kube::Error) -> Self {
        Failed(e)
    }
}

/// Merge patches recorded under [`RESTART_FIELD_MANAGER`].
fn restart_params() -> PatchParams {
    PatchParams {
        field_manager: Some(RESTART_FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

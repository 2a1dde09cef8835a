//! Leader election through a `coordination.k8s.io` Lease, with fencing.
//!
//! The algorithm is client-go's: a candidate polls the Lease every [`LeaseTiming::retry`];
//! it takes the Lease when it is free (no holder) or when the holder's record has not changed
//! for the lease duration *as observed locally* (so clocks need not agree); the leader renews
//! every retry period. Every write carries the resourceVersion it read, so two candidates
//! never both win.
//!
//! Fencing: the leader may write only until `renew_deadline` after the start of its last
//! successful renewal ([`Fence`]). A standby cannot take over before `duration` has passed
//! since it last saw the record change, which is later; so a leader cut off from the API server
//! stops writing before anyone else can start. On shutdown the leader releases the Lease (empty
//! holder), and a standby takes over at its next poll instead of after the lease duration.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fence::Fence;
use crate::outage::{self, Outage};

/// Field manager of the Lease writes.
const FIELD_MANAGER: &str = "tokenmint-leader-election";

/// Durations of the election.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long a Lease stays valid without renewal (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How long after the start of its last successful renewal the leader keeps writing.
    /// Shorter than `duration`, so the leader stops before a standby may start.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby polls.
    pub retry: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// When the election loop last started a round: the pulse of the process. The loop never
/// waits longer than a round's timeout plus the retry period, API server or not; a loop that
/// stops beating is a process that can no longer act (a wedged runtime, a deadlock), which is
/// what `/healthz` reports.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat(Arc<Mutex<Option<Instant>>>);

impl Heartbeat {
    fn beat(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// How long since the last beat (`None`: the loop has not started).
    pub fn silent_for(&self) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|at| at.elapsed())
    }
}

/// An identity unique per process: `base` (the pod or host name) and 8 random hex digits, so
/// that two processes on one host never both believe they hold the Lease.
pub fn unique_identity(base: &str) -> String {
    format!("{base}-{:08x}", rand::random::<u32>())
}

/// One candidate for the Lease `name`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    fence: Fence,
    /// The holder record last seen and when it was first seen locally.
    observed: Option<(String, Instant)>,
    leading: bool,
    heartbeat: Heartbeat,
}

#[derive(Debug, thiserror::Error)]
#[error("the leader Lease request failed: {0}")]
pub struct LeaseError(#[from] kube::Error);

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    pub fn new(
        api: Api<Lease>,
        name: impl Into<String>,
        identity: impl Into<String>,
        timing: LeaseTiming,
    ) -> Self {
        Elector {
            api,
            name: name.into(),
            identity: identity.into(),
            timing,
            fence: Fence::closed(),
            observed: None,
            leading: false,
            heartbeat: Heartbeat::default(),
        }
    }

    /// Beats `heartbeat` instead of a heartbeat of its own (made before the elector).
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// The fence of this candidate's leadership.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// One round: takes or renews the Lease when possible. Returns whether this candidate leads.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let started = Instant::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return self.create(started).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        // The record's identity: any renewal changes the resourceVersion.
        let record = lease.resource_version().unwrap_or_default();
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.observed = Some((record.clone(), started));
                started
            }
        };
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map_or(self.timing.duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        let expired = started.duration_since(first_seen) >= duration;
        if !ours && holder.is_some() && !expired {
            self.lost();
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let now = micro_now();
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": record},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.timing.duration.as_secs(),
                "renewTime": now,
                "acquireTime": if ours { spec.acquire_time.clone().unwrap_or(now.clone()) } else { now.clone() },
                "leaseTransitions": if ours { transitions } else { transitions + 1 },
            }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match self
            .api
            .patch(&self.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(written) => {
                self.observed = Some((written.resource_version().unwrap_or_default(), started));
                self.won(started);
                Ok(true)
            }
            // Someone else wrote first: they lead (or renewed); we see it next round.
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                self.lost();
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn create(&mut self, started: Instant) -> Result<bool, LeaseError> {
        let now = micro_now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.timing.duration.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self.api.create(&params, &lease).await {
            Ok(written) => {
                self.observed = Some((written.resource_version().unwrap_or_default(), started));
                self.won(started);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                self.lost();
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn won(&mut self, started: Instant) {
        if !self.leading {
            tracing::info!(identity = %self.identity, lease = %self.name, "acquired the leader Lease");
        }
        self.leading = true;
        self.fence.extend(started + self.timing.renew_deadline);
    }

    fn lost(&mut self) {
        if self.leading {
            tracing::warn!(identity = %self.identity, lease = %self.name, "lost the leader Lease");
        }
        self.leading = false;
        self.fence.close();
    }

    /// Gives the Lease up (empty holder, 1 s duration) if this candidate holds it, so a standby
    /// takes over at its next poll.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let was_leading = self.leading;
        self.fence.close();
        self.leading = false;
        if !was_leading {
            return Ok(());
        }
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.identity.as_str()) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": lease.resource_version()},
            "spec": {"holderIdentity": null, "leaseDurationSeconds": 1, "renewTime": micro_now()}
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.name, &params, &Patch::Merge(&patch))
            .await?;
        tracing::info!(identity = %self.identity, lease = %self.name, "released the leader Lease");
        Ok(())
    }

    /// Campaigns until `stop` turns true: `leading` follows whether this candidate leads. A
    /// leader that cannot renew within the renew deadline steps down (its fence is already
    /// closed by then) and goes on campaigning as a follower. Releases the Lease on the way out.
    ///
    /// Failed rounds are logged as an outage: a warning at the first, a summary once a minute,
    /// a line when the Lease answers again.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut outage = Outage::new(Duration::ZERO);
        loop {
            if *stop.borrow() {
                break;
            }
            self.heartbeat.beat();
            let round = tokio::time::timeout(
                self.timing.retry.max(Duration::from_secs(1)) * 2,
                self.try_acquire_or_renew(),
            )
            .await;
            let error = match round {
                Ok(Ok(lead)) => {
                    leading.send_if_modified(|l| std::mem::replace(l, lead) != lead);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the request timed out".to_owned()),
            };
            self.log_round(&mut outage, error);
            if self.leading && !self.fence.is_valid() {
                tracing::error!(identity = %self.identity, deadline = ?self.timing.renew_deadline, "could not renew the leader Lease within its deadline; stepping down (writes are fenced) and campaigning again as a follower");
                self.leading = false;
                self.fence.close();
                leading.send_if_modified(|l| std::mem::replace(l, false));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        match tokio::time::timeout(Duration::from_secs(2), self.release()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader Lease"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out"),
        }
        leading.send_if_modified(|l| std::mem::replace(l, false));
    }

    fn log_round(&self, outage: &mut Outage, error: Option<String>) {
        let identity = &self.identity;
        let Some(error) = error else {
            if let Some(ended) = outage.succeeded() {
                tracing::info!(%identity, leading = self.leading, failed_for_s = ended.lasted.as_secs(), attempts = ended.attempts, "the leader Lease answers again");
            }
            return;
        };
        match outage.failed() {
            outage::Failure::Started if self.leading => {
                tracing::warn!(%identity, %error, retry_every = ?self.timing.retry, renew_deadline = ?self.timing.renew_deadline, "cannot renew the leader Lease; retrying (writes stop at the renew deadline; while this lasts, a summary once a minute)")
            }
            outage::Failure::Started => {
                tracing::warn!(%identity, %error, retry_every = ?self.timing.retry, "cannot reach the leader Lease; retrying as a follower (while this lasts, a summary once a minute)")
            }
            outage::Failure::Ongoing { lasted, attempts } => {
                tracing::warn!(%identity, %error, failing_for_s = lasted.as_secs(), attempts, "the leader Lease still cannot be reached; retrying")
            }
            outage::Failure::Again => {
                tracing::debug!(%identity, %error, "leader election round failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_unique_per_process_and_keep_the_base() {
        let a = unique_identity("pod-1");
        let b = unique_identity("pod-1");
        assert!(a.starts_with("pod-1-") && a.len() == "pod-1-".len() + 8);
        assert_ne!(a, b);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fence_closes_at_its_deadline() {
        let fence = Fence::closed();
        assert!(!fence.is_valid());
        fence.extend(Instant::now() + Duration::from_secs(10));
        assert!(fence.is_valid());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(fence.is_valid());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!fence.is_valid(), "no write after the deadline");
        assert!(Fence::always().is_valid());
    }
}

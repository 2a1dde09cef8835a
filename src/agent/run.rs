//! The agent's loop: a pass on every change in the manifests directory, at every renew time,
//! and — after a write that failed — again with backoff, so that a full or read-only OUT
//! heals by itself once freed. Each pass is published: the key index and the objects whose
//! token files are overdue to the REST side (`/readyz`), counts to the metrics.

use super::{Agent, Pass, SETTLE, dir_watch};
use crate::http::metrics::Metrics;
use crate::key_store::{KeyIndex, SharedKeyStore};
use crate::manifests::{LiveManifests, ManifestError, Manifests};
use jiff::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// Longest sleep between two looks at the tokens (a safety net: renewals are scheduled).
const IDLE: Duration = Duration::from_secs(300);
/// First wait before retrying a pass whose writes failed; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between retries: a freed disk is used within 5 s.
pub const RETRY_MAX: Duration = Duration::from_secs(4);

/// The wait before the next retry: none while passes succeed.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// After `pass`: how long until a retry (`None`: no retry needed).
    fn after(&mut self, pass: &Pass) -> Option<Duration> {
        if !pass.needs_retry() {
            self.next = None;
            return None;
        }
        let wait = self.next.unwrap_or(RETRY_FIRST);
        self.next = Some((wait * 2).min(RETRY_MAX));
        Some(wait)
    }
}

/// Makes what a pass found visible: the key index to the routes, the overdue objects to
/// `/readyz`, the minted tokens and failed writes to the metrics.
pub fn publish(store: &SharedKeyStore, metrics: &Metrics, index: KeyIndex, pass: &Pass) {
    store.set_keys(index);
    store.set_overdue(pass.overdue.clone());
    metrics.token_files(pass.minted_kinds(), pass.earliest_expiry);
    metrics.token_file_errors(pass.counted.iter().copied());
}

/// Logs what a read of the manifests refused and what it holds (at start and each reload).
pub fn report(refused: &[ManifestError], manifests: &Manifests) {
    for e in refused {
        tracing::error!(error = %e, "manifest refused");
    }
    for ((kind, namespace, name), why) in manifests.refused() {
        tracing::warn!(object = %format!("{kind} {namespace}/{name}"), reason = %why, "held: no admitted version; its files stay as they are (not rotated, not removed, not revoked) until a version is admitted or the document is removed");
    }
    for place in manifests.unread() {
        tracing::warn!(manifest = %place, "cannot tell which objects it declares: no token files are removed or revoked, and no key generated where a key Secret may be declared, until it can be read or is removed");
    }
}

/// Runs the agent until `stop`, `first` being the pass made at start.
pub async fn run(
    mut agent: Agent,
    mut live: LiveManifests,
    store: Arc<SharedKeyStore>,
    metrics: Arc<Metrics>,
    first: Pass,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (_watcher, mut changed) = match dir_watch::watch(&agent.paths.manifests) {
        Ok((watcher, changed)) => (Some(watcher), changed),
        Err(e) => {
            tracing::error!(dir = %agent.paths.manifests.display(), error = %e, "cannot watch the manifests directory; edits need a restart");
            (None, dir_watch::signalled_once())
        }
    };
    let mut backoff = Backoff::default();
    let mut last = first;
    loop {
        let renewal = until(last.next_renewal, agent.clock.now());
        let wait = match backoff.after(&last) {
            Some(retry) => retry.min(renewal),
            None => renewal,
        };
        let mut refused = None;
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            Some(()) = changed.recv() => {
                // Let a burst of edits settle.
                tokio::time::sleep(SETTLE).await;
                while changed.try_recv().is_ok() {}
                match live.reload(&agent.paths.manifests) {
                    Ok(errors) => refused = Some(errors),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the manifests directory; keeping the last good state");
                        continue;
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let manifests = live.merged();
        if let Some(refused) = refused {
            report(&refused, &manifests);
        }
        let (index, pass) = agent.pass(&manifests).await;
        publish(&store, &metrics, index, &pass);
        last = pass;
    }
}

/// How long until `next` (a renew time already past is due now), between 1 s and [`IDLE`].
fn until(next: Option<Timestamp>, now: Timestamp) -> Duration {
    next.map(|at| {
        at.duration_since(now)
            .max(jiff::SignedDuration::ZERO)
            .unsigned_abs()
    })
    .unwrap_or(IDLE)
    .clamp(Duration::from_secs(1), IDLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::metrics::FileError;

    #[test]
    fn failed_writes_are_retried_at_500ms_doubling_to_4s_and_conflicts_are_not() {
        let failed = Pass {
            errors: vec![("DatasourceGrant default/g".into(), FileError::read_only)],
            ..Pass::default()
        };
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..6)
            .map(|_| backoff.after(&failed).unwrap().as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 4000, 4000]);
        // A good pass resets it.
        assert_eq!(backoff.after(&Pass::default()), None);
        assert_eq!(backoff.after(&failed), Some(RETRY_FIRST));
        let conflict = Pass {
            errors: vec![("DatasourceGrant default/g".into(), FileError::conflict)],
            ..Pass::default()
        };
        assert_eq!(Backoff::default().after(&conflict), None);
    }
}

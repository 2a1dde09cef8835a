//! Terms of leadership: from taking the Lease to losing it (or SIGTERM), and the follower's
//! wait in between. Everything a term builds — watch caches and their indexes, controllers,
//! the statuses it wrote, its Event series, the restart worker, the revocation sweep, and a
//! write fence pinned to the term — is its own and ends with it. The next term starts from a
//! fresh list and reconciles everything, so nothing seen in one term can suppress a write, or
//! cause one, in the next. Only what was verified of Secrets carries over: each record is a fact
//! about one resourceVersion, and a Secret changed meanwhile has another, so it spares a read,
//! never a write.

use super::{Replica, SHUTDOWN_DEADLINE};
use crate::crd::ServiceKey;
use crate::fence::Fence;
use crate::reconcile::controllers::{self, Shared};
use crate::reconcile::events::{Events, Recorder};
use crate::reconcile::verified::Verified;
use crate::reconcile::{Clock, SharedKeyring, keyring};
use crate::revocation::{Denylist, Revoker};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use kube::runtime::events::Reporter;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::watch;

/// How a term ended.
enum End {
    /// SIGTERM.
    Stopped,
    /// The Lease was lost (or could not be renewed in time).
    SteppedDown,
}

/// The terms of one replica.
pub(super) struct Terms<'a> {
    pub replica: &'a Replica,
    pub keyring: SharedKeyring,
    pub keyring_changed: watch::Receiver<u64>,
    /// The elector's fence; each term writes through a copy pinned to it.
    pub fence: Fence,
    /// What was verified of Secrets, from term to term (facts about a resourceVersion).
    pub verified: Arc<Verified>,
}

impl Terms<'_> {
    /// Follows until the elector leads, leads until it steps down, and so on until `stop`.
    pub async fn follow_and_lead(
        &self,
        mut leading: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), crate::BoxError> {
        let replica = self.replica;
        let identity = &replica.identity;
        tracing::info!(%identity, lease = %replica.lease_name, "waiting for leadership");
        let mut term = 0u64;
        loop {
            replica.readiness.follower();
            replica.metrics.set_leader(false);
            let elector_ended = tokio::select! {
                led = leading.wait_for(|l| *l) => led.is_err(),
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            if elector_ended {
                // It ends only when stopped (SIGTERM).
                return match *stop.borrow() {
                    true => Ok(()),
                    false => Err("the leader election task ended".into()),
                };
            }
            // Any change from now on ends the term, even one undone before it is seen.
            leading.borrow_and_update();
            term += 1;
            match self.lead(term, &mut leading, &mut stop).await? {
                End::Stopped => return Ok(()),
                End::SteppedDown => {
                    tracing::warn!(%identity, term, "stepped down: the controllers are stopped and writes fenced; staying up as a follower and campaigning for the Lease again")
                }
            }
        }
    }

    /// One term: the controllers on fresh caches, until the Lease is lost or `stop`.
    async fn lead(
        &self,
        term: u64,
        leading: &mut watch::Receiver<bool>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<End, crate::BoxError> {
        let replica = self.replica;
        let client = &replica.client;
        let common = &replica.common;
        tracing::info!(identity = %replica.identity, term, "became the leader; starting the controllers on fresh caches");
        let fence = self.fence.pinned();
        replica.metrics.forget_expiries();
        replica.metrics.set_leader(true);

        // The revocations, followed as every `serve` replica does: the quota and bucket sizes
        // this term's own writes need, and the markers its never-expiring guest tokens are
        // judged by.
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &common.namespace);
        let revocations = Arc::new(Denylist::default());
        let follower = tokio::spawn(crate::revocation::follow(
            configmaps.clone(),
            revocations.clone(),
            replica
                .readiness
                .health
                .probe("revocations", &replica.metrics.watch_restarts()),
        ));
        let sweeper = tokio::spawn(sweep_revocations(
            configmaps.clone(),
            self.keyring.clone(),
            fence.clone(),
            (
                revocations.clone(),
                service_key_apis(client, &common.watch_namespaces),
            ),
        ));
        let reporter = Reporter {
            controller: "tokenmint".into(),
            instance: Some(replica.identity.clone()),
        };
        let shared = Shared {
            client: client.clone(),
            keyring: self.keyring.clone(),
            keyring_changed: self.keyring_changed.clone(),
            issuer: common.issuer.clone(),
            events: Events::Kube(Recorder::new(client.clone(), reporter)),
            metrics: replica.metrics.clone(),
            clock: Clock::system(),
            revoker: Revoker::Kube {
                api: configmaps,
                denylist: revocations,
            },
            fence,
            consumers: replica.consumers,
            restart_window: crate::reconcile::restart::COALESCE_WINDOW,
            verified: self.verified.clone(),
        };
        let (end_term, term_ended) = watch::channel(false);
        let pending_fence = shared.fence.clone();
        let controllers = async {
            handle_pending_rotation(replica, &pending_fence).await;
            controllers::run(
                shared,
                &common.watch_namespaces,
                term_ended,
                replica.readiness.clone(),
            )
            .await;
        };
        let mut controllers = std::pin::pin!(controllers);
        let end = tokio::select! {
            _ = &mut controllers => None,
            _ = stop.wait_for(|s| *s) => {
                tracing::info!("shutting down: finishing in-flight reconciles");
                Some(End::Stopped)
            }
            _ = leading.changed() => Some(End::SteppedDown),
        };
        let _ = end_term.send(true);
        if tokio::time::timeout(SHUTDOWN_DEADLINE, &mut controllers)
            .await
            .is_err()
        {
            tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, "reconciles still running at the deadline; stopping them (their writes are fenced)");
        }
        sweeper.abort();
        follower.abort();
        replica.metrics.set_leader(false);
        // A follower manages no token.
        replica.metrics.forget_expiries();
        end.ok_or_else(|| "the controllers ended on their own".into())
    }
}

/// A rotation requested while no replica led is handled now. (The keyring watch may handle it
/// at the same moment: the loser gets a conflict.)
async fn handle_pending_rotation(replica: &Replica, fence: &Fence) {
    let common = &replica.common;
    if !fence.is_valid() {
        return;
    }
    let keyring_api: Api<Secret> = Api::namespaced(replica.client.clone(), &common.namespace);
    match keyring_api.get_opt(&common.keyring_secret).await {
        Ok(Some(secret)) => {
            if let Err(e) = keyring::rotate_if_requested(
                &keyring_api,
                &secret,
                common.algorithm,
                jiff::Timestamp::now(),
                &replica.metrics,
            )
            .await
            {
                tracing::warn!(error = %e, "pending keyring rotation not handled now");
            }
        }
        Ok(None) => tracing::warn!("the keyring Secret is gone; running with the loaded keyring"),
        Err(e) => tracing::warn!(error = %e, "cannot re-read the keyring Secret"),
    }
}

/// The ServiceKeys of every watched scope (all namespaces, or each `--watch-namespace`).
fn service_key_apis(client: &Client, watch_namespaces: &[String]) -> Vec<Api<ServiceKey>> {
    if watch_namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        watch_namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

/// The uids of every ServiceKey, when they can all be listed.
async fn service_key_uids(apis: &[Api<ServiceKey>]) -> Option<HashSet<String>> {
    let mut uids = HashSet::new();
    for api in apis {
        let keys = api
            .list_metadata(&kube::api::ListParams::default())
            .await
            .map_err(
                |e| tracing::warn!(error = %e, "cannot list ServiceKeys; markers are swept later"),
            )
            .ok()?;
        uids.extend(keys.into_iter().filter_map(|k| k.metadata.uid));
    }
    Some(uids)
}

/// Deletes the revocations that deny nothing any more, every
/// [`crate::revocation::SWEEP_EVERY`]: buckets whose day has passed, legacy ConfigMaps, and
/// (when there are any) the markers of ServiceKeys that are gone.
async fn sweep_revocations(
    api: Api<ConfigMap>,
    keyring: SharedKeyring,
    fence: Fence,
    (revocations, service_keys): (Arc<Denylist>, Vec<Api<ServiceKey>>),
) {
    loop {
        tokio::time::sleep(crate::revocation::SWEEP_EVERY).await;
        if !fence.is_valid() {
            continue;
        }
        let kids: Vec<String> = {
            let ring = keyring.read().expect("keyring lock");
            ring.kids().map(str::to_owned).collect()
        };
        let known = if revocations.has_markers() {
            service_key_uids(&service_keys).await
        } else {
            None
        };
        let fence = fence.clone();
        let swept = crate::revocation::sweep(
            &api,
            &kids,
            known.as_ref(),
            jiff::Timestamp::now(),
            move || fence.is_valid(),
        )
        .await;
        if let Err(e) = swept {
            tracing::warn!(error = %e, "revocation sweep failed; retrying later");
        }
    }
}

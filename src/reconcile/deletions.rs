//! What a deletion undoes: each kind's watch hands its deleted objects here (no reconcile
//! follows a deletion), and the tokens they held are revoked. Their Secrets go with the garbage
//! collector, and their expiries with the Secrets ([`super::cached_secret`]). A ServiceKey's
//! own tokens need nothing: they are bound to its uid and key, and die with it.

use super::cached_secret::SecretCache;
use super::caches::ServiceKeys;
use crate::crd::TokenStatus;
use crate::fence::Fence;
use crate::labels::{ROLE_SESSION, ROLE_TOKEN};
use crate::revocation::{Revocation, Revoker};
use kube::{Resource, ResourceExt};
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct Deletions {
    pub secrets: Arc<SecretCache>,
    pub service_keys: ServiceKeys,
    pub revoker: Revoker,
    pub fence: Fence,
}

/// First wait before a revocation of a deleted resource is tried again; it doubles up to
/// [`super::BACKOFF_CAP`].
const REVOKE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a kind's deletion handler reads of a deleted object: its status, and the name of the
/// ServiceKey its token is issued with.
pub(crate) type Bound<K> = (fn(&K) -> Option<&TokenStatus>, fn(&K) -> &str);

impl Deletions {
    /// The deletion handler of a kind whose status is `status` and whose token is issued with
    /// the ServiceKey `key_name` names. (A ServiceKey itself needs none: its tokens die with it,
    /// bound to its uid and key.)
    pub fn on_delete<K>(
        &self,
        (status, key_name): Bound<K>,
    ) -> impl FnMut(Arc<K>) -> futures::future::BoxFuture<'static, ()> + use<K>
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        let this = self.clone();
        move |obj: Arc<K>| {
            let this = this.clone();
            Box::pin(async move { this.revoke(&*obj, status(&obj), key_name(&obj)) })
        }
    }

    /// Revokes the tokens a deleted resource held: from its Secrets (still cached: the garbage
    /// collector deletes them after the owner), else the one its status names. Retried in the
    /// background until recorded (or this term of leadership ends): the watch that reported the
    /// deletion goes on meanwhile.
    fn revoke<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        status: Option<&TokenStatus>,
        key_name: &str,
    ) {
        let Some(uid) = obj.uid() else {
            return;
        };
        let namespace = obj.namespace().unwrap_or_default();
        let reason = format!(
            "{} {namespace}/{} was deleted",
            K::kind(&()),
            obj.name_any()
        );
        let now = jiff::Timestamp::now().as_second();
        let mut revocations: Vec<Revocation> = self
            .secrets
            .owned_by(&namespace, &uid)
            .iter()
            .filter(|s| s.has_role(ROLE_TOKEN) || s.has_role(ROLE_SESSION))
            .filter_map(|s| s.revocation(&reason, now))
            .collect();
        if revocations.is_empty()
            && let Some(revocation) =
                status.and_then(|s| self.revocation_of(s, &namespace, key_name, reason, now))
        {
            revocations.push(revocation);
        }
        if revocations.is_empty() {
            return;
        }
        let (revoker, fence) = (self.revoker.clone(), self.fence.clone());
        tokio::spawn(async move {
            for revocation in revocations {
                let mut wait = REVOKE_RETRY;
                while fence.is_valid() {
                    match revoker.revoke(&revocation).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(target = ?revocation.target, error = %e, retry_in = ?wait, "cannot revoke the token of a deleted resource yet");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(super::BACKOFF_CAP);
                        }
                    }
                }
            }
        });
    }

    /// The revocation of the token a status names, for when its Secret is no longer cached:
    /// bound to the ServiceKey the resource names, as it is cached (gone: the token died with
    /// it). A never-expiring token's issue time is not in status: its ServiceKey's marker rises
    /// to now, and the operator mints the others it holds again.
    fn revocation_of(
        &self,
        status: &TokenStatus,
        namespace: &str,
        key_name: &str,
        reason: String,
        now: i64,
    ) -> Option<Revocation> {
        let jti = status.token_id.as_deref()?;
        let key = self.service_keys.get(namespace, key_name)?;
        let expires_at = status
            .expires_at
            .as_deref()
            .and_then(|at| at.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second());
        Some(Revocation::of_held(
            (jti, None, expires_at),
            false,
            key.uid()?,
            reason,
            now,
        ))
    }
}

//! What a deletion undoes: each kind's watch hands its deleted objects here (no reconcile
//! follows a deletion), and the tokens they held are revoked. Their Secrets go with the garbage
//! collector, and their expiries with the Secrets ([`super::cached_secret`]).

use super::SharedKeyring;
use super::cached_secret::SecretCache;
use crate::crd::TokenStatus;
use crate::fence::Fence;
use crate::labels::{ROLE_SESSION, ROLE_TOKEN};
use crate::revocation::{Revocation, Revoker};
use kube::{Resource, ResourceExt};
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct Deletions {
    pub secrets: Arc<SecretCache>,
    pub revoker: Revoker,
    pub fence: Fence,
    pub keyring: SharedKeyring,
}

impl Deletions {
    /// The deletion handler of a kind whose status is `status`.
    pub fn on_delete<K>(
        &self,
        status: fn(&K) -> Option<&TokenStatus>,
    ) -> impl FnMut(Arc<K>) -> futures::future::BoxFuture<'static, ()> + use<K>
    where
        K: Resource<DynamicType = ()> + Send + Sync + 'static,
    {
        let this = self.clone();
        move |obj: Arc<K>| {
            let this = this.clone();
            Box::pin(async move { this.revoke(&*obj, status(&obj)).await })
        }
    }

    /// Revokes the tokens a deleted resource held: from its Secrets (still cached: the garbage
    /// collector deletes them after the owner), else the one its status names.
    async fn revoke<K: Resource<DynamicType = ()>>(&self, obj: &K, status: Option<&TokenStatus>) {
        let Some(uid) = obj.uid() else {
            return;
        };
        let namespace = obj.namespace().unwrap_or_default();
        let reason = format!(
            "{} {namespace}/{} was deleted",
            K::kind(&()),
            obj.name_any()
        );
        let mut revocations: Vec<Revocation> = self
            .secrets
            .owned_by(&namespace, &uid)
            .iter()
            .filter(|s| s.has_role(ROLE_TOKEN) || s.has_role(ROLE_SESSION))
            .filter_map(|s| s.revocation(&reason))
            .collect();
        if revocations.is_empty()
            && let Some(revocation) = status.and_then(|s| self.revocation_of(s, reason))
        {
            revocations.push(revocation);
        }
        for revocation in revocations {
            if !self.fence.is_valid() {
                return;
            }
            if let Err(e) = self.revoker.revoke(&revocation).await {
                tracing::error!(token_id = %revocation.jti, error = %e, "cannot revoke the token of a deleted resource");
            }
        }
    }

    /// The revocation of the token a status names, for when its Secret is no longer cached.
    /// It carries the token's expiry, or for a token that never expires the active key (the
    /// signing key retires no later), so that the revocation can be dropped one day.
    fn revocation_of(&self, status: &TokenStatus, reason: String) -> Option<Revocation> {
        let jti = status.token_id.clone()?;
        let expires_at = status
            .expires_at
            .as_deref()
            .and_then(|at| at.parse::<jiff::Timestamp>().ok());
        let kid = expires_at.is_none().then(|| {
            self.keyring
                .read()
                .expect("keyring lock")
                .active_kid()
                .to_owned()
        });
        Some(Revocation {
            jti,
            expires_at,
            kid,
            reason,
        })
    }
}

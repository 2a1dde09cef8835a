//! Status of the three kinds: built from the outcome of a reconcile, compared with what is
//! there, and applied only when it differs.
//!
//! No churning timestamps: `lastTransitionTime` moves only when the Ready status flips, and
//! `expiresAt`/`renewAt`/`tokenId` derive from the token in the Secret, so they change only
//! when a token is minted.

use super::delivery::{CONSUMER_MISSES_ROTATION, Delivery};
use super::owned_secret::Owner;
use super::{CONFLICT_RECHECK, Context, Error, Failure, IDLE_RESYNC, MIN_REQUEUE, Reason, rfc3339};
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey, TokenStatus};
use crate::labels::FIELD_MANAGER;
use crate::token::assess::TokenInfo;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;

pub const READY: &str = "Ready";
/// Reason of Ready=True on DatasourceGrants and GuestTokenRequests (and ServiceKeys with a
/// session token).
pub const TOKEN_READY: &str = "TokenReady";
/// Reason of Ready=True on ServiceKeys without a session token.
pub const KEY_READY: &str = "KeyReady";

/// The three kinds: namespaced, with a [`TokenStatus`].
pub trait HasTokenStatus:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn token_status(&self) -> Option<&TokenStatus>;

    /// The object as the watch cache shows it now.
    fn cached(ctx: &Context, namespace: &str, name: &str) -> Option<Arc<Self>>;
}

macro_rules! has_token_status {
    ($($kind:ty => $($store:ident).+),*) => {$(
        impl HasTokenStatus for $kind {
            fn token_status(&self) -> Option<&TokenStatus> {
                self.status.as_ref()
            }

            fn cached(ctx: &Context, namespace: &str, name: &str) -> Option<Arc<Self>> {
                ctx.$($store).+.get(&ObjectRef::new(name).within(namespace))
            }
        }
    )*};
}
has_token_status!(
    ServiceKey => service_keys.store,
    DatasourceGrant => grants,
    GuestTokenRequest => guests
);

/// What a reconcile concluded, for the status.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ready {
        reason: &'static str,
        message: String,
        token: Option<TokenInfo>,
    },
    Failed(Failure),
}

/// The status describing `outcome` (and, for a ServiceKey, the fingerprint of its key in
/// place), keeping the transition time of an unchanged Ready status.
pub fn desired(
    current: Option<&TokenStatus>,
    generation: Option<i64>,
    secret_name: &str,
    (outcome, key_fingerprint): (&Outcome, Option<&str>),
    now: Timestamp,
) -> TokenStatus {
    let (status, reason, message, token) = match outcome {
        Outcome::Ready {
            reason,
            message,
            token,
        } => ("True", *reason, message.clone(), token.as_ref()),
        Outcome::Failed(f) => ("False", f.reason.as_str(), f.message.clone(), None),
    };
    let condition = self::condition(current, (READY, status, reason), message, generation, now);
    // Keep conditions of other types someone else may maintain.
    let mut conditions: Vec<Condition> = current
        .map(|s| {
            s.conditions
                .iter()
                .filter(|c| c.type_ != READY)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    conditions.insert(0, condition);
    TokenStatus {
        conditions,
        observed_generation: generation,
        // Only a Secret that holds what the status describes: after a failure the token
        // Secret is gone (or, on a conflict, is someone else's).
        secret_name: matches!(outcome, Outcome::Ready { .. }).then(|| secret_name.to_owned()),
        expires_at: token.and_then(|t| t.expires_at).map(rfc3339),
        renew_at: token.and_then(|t| t.schedule.renew_at).map(rfc3339),
        token_id: token.map(|t| t.jti.clone()),
        key_fingerprint: key_fingerprint.map(str::to_owned),
        ..TokenStatus::default()
    }
}

/// A condition of `type_` with `status` and `reason`, keeping the transition time of the one
/// in `current` when its status is the same.
pub(super) fn condition(
    current: Option<&TokenStatus>,
    (type_, status, reason): (&str, &str, &str),
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let previous = current.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Whether it wrote (and so whether the outcome is news, e.g. worth an Event).
    pub written: bool,
    /// Written with a new Delivered=False condition: its message ([`Delivery::news`]).
    pub undelivered: Option<String>,
}

/// Applies the status of `obj` (with what `delivery` says of its consumers) when it differs
/// from the current one.
pub async fn apply<K: HasTokenStatus>(
    ctx: &Context,
    obj: &K,
    secret_name: &str,
    outcome: (&Outcome, Option<&str>),
    delivery: Option<&Delivery>,
) -> Result<Applied, Error> {
    let key = super::recent::key(
        &K::kind(&()),
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
    );
    // Our own last write, when the cache predates it. Looked up before the cache: the feed
    // forgets it only once the store shows it.
    let written = ctx.recent.written(&key);
    // The cache may have moved on since this reconcile took `obj` from it.
    let version = |o: &K| super::verified::resource_version(o.meta().resource_version.as_deref());
    let latest = K::cached(ctx, &obj.namespace().unwrap_or_default(), &obj.name_any())
        .filter(|latest| version(latest) > version(obj));
    let cached = latest.as_deref().unwrap_or(obj);
    let ours: Option<TokenStatus> = match (written, version(cached)) {
        (Some((at, status)), Some(seen)) if seen < at => Some(status),
        (Some(_), _) => {
            ctx.recent
                .caught_up(&key, cached.resource_version().as_deref());
            None
        }
        (None, _) => None,
    };
    let current = ours.as_ref().or(cached.token_status());
    let (generation, now) = (obj.meta().generation, ctx.clock.now());
    let mut wanted = desired(current, generation, secret_name, outcome, now);
    Delivery::set(delivery, &mut wanted, current, generation, now);
    if current == Some(&wanted) {
        return Ok(Applied::default());
    }
    let undelivered = Delivery::news(current, &wanted);
    let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    ctx.may_write()?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": wanted,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api
        .patch_status(&obj.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    ctx.metrics
        .write("apply", &format!("{}/status", K::plural(&())));
    ctx.recent
        .remember(key, written.resource_version().as_deref(), wanted);
    Ok(Applied {
        written: true,
        undelivered,
    })
}

/// Ends a reconcile: applies the status (when changed), records metrics, publishes a Warning
/// Event for a new failure or a new set of consumers missing rotations, and picks the next
/// run: the exact renew time of the token, a wait for a change of a permanently failing
/// object, or an idle resync. `key_fingerprint`: a ServiceKey's key in place, published in its
/// status for the tokens bound to it.
pub async fn conclude<K: HasTokenStatus>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    secret_name: &str,
    (outcome, key_fingerprint): (Outcome, Option<&str>),
    delivery: Option<&Delivery>,
) -> Result<Action, Error> {
    let Applied {
        written,
        undelivered,
    } = apply(ctx, obj, secret_name, (&outcome, key_fingerprint), delivery).await?;
    ctx.succeeded(obj);
    if let Some(message) = undelivered {
        tracing::warn!(kind = %owner.kind, namespace = %owner.namespace, name = %owner.name, %message, "consumers miss rotations");
        ctx.events
            .warning(&owner.object_ref, CONSUMER_MISSES_ROTATION, message)
            .await;
    }
    match outcome {
        Outcome::Failed(failure) => {
            ctx.metrics
                .reconcile_error(&owner.kind, failure.reason.as_str());
            if written {
                tracing::warn!(
                    kind = %owner.kind,
                    namespace = %owner.namespace,
                    name = %owner.name,
                    reason = failure.reason.as_str(),
                    message = %failure.message,
                    "not ready"
                );
                ctx.events
                    .warning(&owner.object_ref, failure.reason.as_str(), failure.message)
                    .await;
            }
            Ok(match failure.reason {
                // Resolved by deleting or relabelling a Secret we do not watch (it lacks our
                // label): re-check slowly — one GET, no write.
                Reason::SecretConflict => Action::requeue(CONFLICT_RECHECK),
                // The other ServiceKey may go away: re-check now and then.
                Reason::ServiceAccountConflict => Action::requeue(CONFLICT_RECHECK),
                _ => Action::await_change(),
            })
        }
        Outcome::Ready { token, .. } => {
            let next = token.and_then(|t| t.schedule.until_renewal(ctx.clock.now()));
            // A floor, so that no schedule can ever spin the controller.
            Ok(Action::requeue(
                next.map_or(IDLE_RESYNC, |d| d.max(MIN_REQUEUE)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_a_transition() {
        let fail = |m: &str| Outcome::Failed(Failure::new(Reason::Forbidden, m));
        let first = desired(None, Some(1), "s", (&fail("a"), None), ts(100));
        assert_eq!(first.conditions[0].last_transition_time, Time(ts(100)));
        assert_eq!(first.secret_name, None, "no Secret after a failure");
        // Same status, new message: the time stays.
        let second = desired(Some(&first), Some(2), "s", (&fail("b"), None), ts(200));
        assert_eq!(second.conditions[0].last_transition_time, Time(ts(100)));
        assert_eq!(second.conditions[0].message, "b");
        assert_eq!(second.observed_generation, Some(2));
        // A flip to True moves it.
        let ready = Outcome::Ready {
            reason: TOKEN_READY,
            message: "ok".into(),
            token: None,
        };
        let third = desired(Some(&second), Some(2), "s", (&ready, None), ts(300));
        assert_eq!(third.conditions[0].last_transition_time, Time(ts(300)));
        assert_eq!(third.secret_name.as_deref(), Some("s"));
        assert_eq!(third.conditions[0].status, "True");
        // Recomputing the same outcome later changes nothing: no write.
        assert_eq!(
            desired(Some(&third), Some(2), "s", (&ready, None), ts(999)),
            third
        );
        // A ServiceKey's key fingerprint is published (and changes with the key).
        let keyed = desired(Some(&third), Some(2), "s", (&ready, Some("fp1")), ts(999));
        assert_eq!(keyed.key_fingerprint.as_deref(), Some("fp1"));
        assert_ne!(keyed, third);
    }
}

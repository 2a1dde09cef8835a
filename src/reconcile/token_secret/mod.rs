//! The one mint-and-store path of every kind: given the token a resource should have
//! ([`Desired`]), the Secret that is there and the keyring, keep the token (zero writes) or mint
//! a new one and write the Secret. The keep-or-mint decision is [`crate::token::assess`], which
//! the cluster-less agent shares; this module adds what is particular to Secrets: ownership,
//! labels, annotations and the metadata-only cache ([`verified`]); the Secret as an object
//! (owner, create versus apply, deletion) is [`super::owned_secret`].

mod verdict;

use verdict::{InPlace, Verdict, in_place, judge_fetched, judge_known, mint};

use super::delivery::Plan;
use super::owned_secret::{
    EXPIRES_AT_ANNOTATION, EXPIRES_AT_KEY, ISSUED_AT_ANNOTATION, KID_ANNOTATION, Owner,
    RENEW_ANNOTATION, RENEW_AT_ANNOTATION, RENEW_HANDLED_ANNOTATION, REVOKE_ANNOTATION,
    REVOKE_HANDLED_ANNOTATION, SERVICE_KEY_UID_ANNOTATION, SPEC_HASH_ANNOTATION,
    TOKEN_ID_ANNOTATION, TOKEN_KEY, TOKEN_SECRET_TYPE, delete_owned, fetch_secret, managed_labels,
    write_secret,
};
use super::restart::{RESTARTED_FOR_ANNOTATION, Restarts};
use super::status;
use super::verified::{Content, TokenRecord};
use super::{Context, Error, Failure, Reason, rfc3339};
use crate::desired::Desired;
use crate::labels::{ROLE_SESSION, ROLE_TOKEN};
use crate::revocation::Revocation;
use crate::token::assess::{Held, MintReason, Renewal, TokenInfo};
use crate::token::mint::Minted;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the token of a resource must look like.
#[derive(Debug, Clone)]
pub struct TokenTarget<'a> {
    pub owner: &'a Owner,
    pub secret_name: &'a str,
    /// [`ROLE_TOKEN`] or [`ROLE_SESSION`].
    pub role: &'static str,
    pub desired: &'a Desired<'a>,
    /// What the Secret records of its consumers' restarts.
    pub restarts: Restarts,
    /// The resource's `tokenmint.dev/revoke` value, when set.
    pub revoke: Option<&'a str>,
    /// The resource's `tokenmint.dev/renew` value, when set.
    pub renew: Option<&'a str>,
}

impl TokenTarget<'_> {
    fn renewal(&self) -> Renewal<'_> {
        Renewal {
            renew_before: self.desired.renew_before,
            jitter_seed: &self.owner.uid,
        }
    }

    /// What the resource's annotations ask for that the token in place, minted after
    /// `revoke_handled` and `renew_handled`, does not answer yet; a revocation first (it also
    /// renews).
    fn requested(
        &self,
        revoke_handled: Option<&str>,
        renew_handled: Option<&str>,
    ) -> Option<MintReason> {
        if pending(self.revoke, revoke_handled) {
            Some(MintReason::Revoked)
        } else if pending(self.renew, renew_handled) {
            Some(MintReason::Renewed)
        } else {
            None
        }
    }
}

/// Whether an annotation's value `asked` (any new value asks again) differs from the value the
/// token in place was minted after.
fn pending(asked: Option<&str>, handled: Option<&str>) -> bool {
    asked.is_some_and(|asked| handled != Some(asked))
}

/// The result of [`ensure_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Kept {
        info: TokenInfo,
        /// Whether the token's consumers still wait for their restart (see [`restart`]).
        restart_pending: bool,
    },
    Minted {
        info: TokenInfo,
        restart_pending: bool,
    },
    /// A mint is needed but the resource was minted less than [`super::MIN_MINT_INTERVAL`]
    /// ago: try again after this long.
    Deferred(Duration),
}

impl Stored {
    pub fn info(&self) -> Option<&TokenInfo> {
        match self {
            Stored::Kept { info, .. } | Stored::Minted { info, .. } => Some(info),
            Stored::Deferred(_) => None,
        }
    }

    pub fn restart_pending(&self) -> bool {
        match self {
            Stored::Kept {
                restart_pending, ..
            }
            | Stored::Minted {
                restart_pending, ..
            } => *restart_pending,
            Stored::Deferred(_) => false,
        }
    }
}

/// The Secret holding `minted` for `target`. `consumers_current`: no consumer can hold an older
/// token (a first token), so none needs a restart for this one.
pub fn token_secret(
    target: &TokenTarget,
    minted: &Minted,
    info: &TokenInfo,
    consumers_current: bool,
) -> Secret {
    let mut data = BTreeMap::from([(
        TOKEN_KEY.to_owned(),
        ByteString(minted.token.clone().into_bytes()),
    )]);
    let mut annotations = BTreeMap::from([
        (
            SPEC_HASH_ANNOTATION.to_owned(),
            target.desired.spec_hash.clone(),
        ),
        (TOKEN_ID_ANNOTATION.to_owned(), minted.jti.clone()),
        (KID_ANNOTATION.to_owned(), minted.kid.clone()),
        (
            ISSUED_AT_ANNOTATION.to_owned(),
            minted.issued_at.as_second().to_string(),
        ),
        (
            SERVICE_KEY_UID_ANNOTATION.to_owned(),
            target.desired.service_key_uid().to_owned(),
        ),
    ]);
    if let Some(exp) = minted.expires_at {
        data.insert(EXPIRES_AT_KEY.into(), ByteString(rfc3339(exp).into_bytes()));
        annotations.insert(EXPIRES_AT_ANNOTATION.into(), rfc3339(exp));
    }
    if let Some(at) = info.schedule.renew_at {
        annotations.insert(RENEW_AT_ANNOTATION.into(), rfc3339(at));
    }
    if consumers_current {
        annotations.insert(RESTARTED_FOR_ANNOTATION.into(), minted.jti.clone());
    }
    // Any fresh token answers what the resource asked for so far.
    if let Some(asked) = target.revoke {
        annotations.insert(REVOKE_HANDLED_ANNOTATION.into(), asked.to_owned());
    }
    if let Some(asked) = target.renew {
        annotations.insert(RENEW_HANDLED_ANNOTATION.into(), asked.to_owned());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(target.secret_name.to_owned()),
            namespace: Some(target.owner.namespace.clone()),
            labels: Some(managed_labels(target.owner, target.role)),
            annotations: Some(annotations),
            owner_references: Some(vec![target.owner.owner_ref.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some(TOKEN_SECRET_TYPE.into()),
        data: Some(data),
        ..Secret::default()
    }
}

fn conflict(target: &TokenTarget) -> Failure {
    Failure::secret_conflict(target.secret_name, &target.owner.kind)
}

/// Keeps the token of `target` in its Secret: the shared path of every kind. A fresh token is
/// signed only when one is written, or to compare with a token read from the API server.
pub async fn ensure_token(
    ctx: &Context,
    target: &TokenTarget<'_>,
) -> Result<Result<Stored, Failure>, Error> {
    let now = ctx.clock.now();
    let owner = target.owner;
    let mut verdict = match in_place(ctx, target).await? {
        InPlace::Known(record, version) => judge_known(ctx, target, *record, version, now),
        InPlace::Fetched(secret) => judge_fetched(ctx, target, &secret, now)?,
        InPlace::Unknown => Verdict::Mint {
            reason: MintReason::Missing,
            previous: None,
            version: None,
            candidate: None,
        },
    };
    loop {
        let (reason, previous, version, candidate) = match verdict {
            Verdict::Keep {
                info,
                restart_pending,
            } => {
                return Ok(Ok(Stored::Kept {
                    info,
                    restart_pending,
                }));
            }
            Verdict::Conflict => return Ok(Err(conflict(target))),
            Verdict::Mint {
                reason,
                previous,
                version,
                candidate,
            } => (reason, previous, version, candidate),
        };
        let mint_key = owner.mint_key(target.role);
        if let Some(wait) = ctx.mint_wait(&mint_key) {
            tracing::debug!(kind = %owner.kind, namespace = %owner.namespace, name = %owner.name, ?wait, %reason, "minted less than a second ago; deferring");
            return Ok(Ok(Stored::Deferred(wait)));
        }
        if reason == MintReason::Revoked
            && let Some(held) = &previous
        {
            // Revoked before it is replaced: a crash in between revokes twice, never not at all.
            ctx.may_write()?;
            let times = (
                held.jti.as_str(),
                Some(held.issued_at.as_second()),
                held.expires_at.map(|t| t.as_second()),
            );
            let revocation = Revocation::of_held(
                times,
                target.role == ROLE_SESSION,
                target.desired.service_key_uid().to_owned(),
                format!(
                    "{} {}/{}: {REVOKE_ANNOTATION}",
                    owner.kind, owner.namespace, owner.name
                ),
                now.as_second(),
            );
            ctx.revoker.revoke(&revocation).await?;
        }
        let candidate = match candidate {
            Some(c) => c,
            None => mint(ctx, target, now)?,
        };
        let info = TokenInfo::new(
            candidate.jti.clone(),
            candidate.issued_at,
            candidate.expires_at,
            target.renewal(),
        );
        let replaced = version.is_some();
        // A first token is the one every consumer starts with; after a rotation, so is the new
        // one when no consumer holds on to the old.
        let restarts = target.restarts;
        let consumers_current = restarts.tracked && (!replaced || !restarts.after_rotation);
        let secret = token_secret(target, &candidate, &info, consumers_current);
        let written = match write_secret(ctx, version.clone(), secret).await {
            Ok(written) => written,
            // Created by someone else since we looked (or a Secret without our label): read it
            // and decide again, which refuses a foreign Secret.
            Err(Error::Kube(kube::Error::Api(s))) if version.is_none() && s.is_already_exists() => {
                verdict = match fetch_secret(ctx, &owner.namespace, target.secret_name).await? {
                    Some(secret) => judge_fetched(ctx, target, &secret, now)?,
                    None => return Err(Error::Kube(kube::Error::Api(s))),
                };
                continue;
            }
            Err(e) => return Err(e),
        };
        ctx.minted_now(mint_key);
        ctx.verified.remember(
            &owner.namespace,
            target.secret_name,
            written.resource_version().as_deref(),
            Content::Token(TokenRecord {
                held: Held {
                    jti: candidate.jti.clone(),
                    kid: candidate.kid.clone(),
                    issued_at: candidate.issued_at,
                    expires_at: candidate.expires_at,
                },
                owner_uid: owner.uid.clone(),
                role: target.role.to_owned(),
                spec_hash: target.desired.spec_hash.clone(),
                restarted_for: consumers_current.then(|| candidate.jti.clone()),
                revoke_handled: target.revoke.map(str::to_owned),
                renew_handled: target.renew.map(str::to_owned),
            }),
        );
        ctx.metrics.minted(&owner.kind, replaced);
        tracing::info!(
            kind = %owner.kind,
            namespace = %owner.namespace,
            name = %owner.name,
            secret = target.secret_name,
            token_id = %info.jti,
            kid = %candidate.kid,
            reason = reason.as_str(),
            "minted token"
        );
        let (event, verb) = if replaced {
            ("Rotated", "Replaced the token in")
        } else {
            ("Minted", "Minted a token into")
        };
        // kube-runtime folds Events of one reason and action into a series that keeps the first
        // note: the action names the cause, so a series only groups notes that say the same.
        ctx.events
            .normal_with_action(
                &owner.object_ref,
                event,
                reason.as_str(),
                format!(
                    "{verb} Secret {} because {reason}; the token id is in status.tokenId",
                    target.secret_name
                ),
            )
            .await;
        return Ok(Ok(Stored::Minted {
            info,
            restart_pending: restarts.tracked && restarts.after_rotation && replaced,
        }));
    }
}

/// The reconcile of a kind whose only product is one token Secret (DatasourceGrant,
/// GuestTokenRequest), once [`Desired`] says what the token should be, or why there is none;
/// `plan`: who reads it and who is restarted after rotations.
pub async fn keep_token<K: status::HasTokenStatus>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    secret_name: &str,
    plan: &Plan,
    desired: Result<Desired<'_>, Failure>,
) -> Result<Action, Error> {
    let result = match &desired {
        Ok(desired) => {
            let target = TokenTarget {
                owner,
                secret_name,
                role: ROLE_TOKEN,
                desired,
                restarts: plan.restarts(),
                revoke: obj.annotations().get(REVOKE_ANNOTATION).map(String::as_str),
                renew: obj.annotations().get(RENEW_ANNOTATION).map(String::as_str),
            };
            ensure_token(ctx, &target).await?
        }
        Err(failure) => Err(failure.clone()),
    };
    settle(ctx, obj, owner, secret_name, plan, result).await
}

/// Ends the reconcile of a kind whose only product is one token Secret (DatasourceGrant,
/// GuestTokenRequest): asks for consumer restarts after a rotation, removes Secrets the
/// resource no longer should have — all of them when it may not have a token (a withdrawn
/// permission must not leave a usable token behind: its token is revoked too), the old one
/// after a `secretName` rename — and concludes with the status, consumers included while a
/// token is in place.
pub async fn settle<K: status::HasTokenStatus>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    secret_name: &str,
    plan: &Plan,
    result: Result<Stored, Failure>,
) -> Result<Action, Error> {
    let mut delivery = None;
    let outcome = match result {
        Ok(Stored::Deferred(wait)) => return Ok(Action::requeue(wait)),
        Ok(stored) => {
            let info = stored.info().cloned();
            plan.restart_if_pending(ctx, owner, &stored);
            delivery = plan.delivery();
            delete_owned(ctx, owner, ROLE_TOKEN, Some(secret_name), None).await?;
            status::Outcome::Ready {
                reason: status::TOKEN_READY,
                message: format!("token in Secret {secret_name}"),
                token: info,
            }
        }
        Err(failure) => {
            let why = format!(
                "{} {}/{}: {}",
                owner.kind,
                owner.namespace,
                owner.name,
                failure.reason.as_str()
            );
            let revoke = failure
                .reason
                .withdraws_permission()
                .then_some(why.as_str());
            // Without a key in place nothing is bound or minted, and nothing is taken away:
            // a token in place is bound to the key it was minted with, and lives or dies with it.
            if failure.reason != Reason::ServiceKeyNotReady {
                delete_owned(ctx, owner, ROLE_TOKEN, None, revoke).await?;
            }
            status::Outcome::Failed(failure)
        }
    };
    status::conclude(
        ctx,
        obj,
        owner,
        secret_name,
        (outcome, None),
        delivery.as_ref(),
    )
    .await
}

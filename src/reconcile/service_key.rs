//! ServiceKey: the key, generated once into its Secret, and the optional session token.

use super::delivery::Plan;
use super::owned_secret::{
    self, Owner, RENEW_ANNOTATION, cached_version, data_str, delete_owned, fetch_secret,
    managed_labels,
};
use super::status::{self, KEY_READY, Outcome, TOKEN_READY};
use super::token_secret::{self, Stored, TokenTarget};
use super::verified::Content;
use super::{Context, Error, Failure, Reason, is_controlled_by};
use crate::crd::ServiceKey;
use crate::desired;
use crate::labels::{ROLE_KEY, ROLE_SESSION, SERVICE_KEY_LABEL};
use crate::token::claims::key_fingerprint;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use rand::RngCore;
use rand::rngs::OsRng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Type of the key Secret.
pub const KEY_SECRET_TYPE: &str = "tokenmint.dev/service-key";
pub const KEY_KEY: &str = "key";
pub const USERNAME_KEY: &str = "username";
/// Prefix of generated keys, so they are recognisable in leaks and by secret scanners.
pub const KEY_PREFIX: &str = "tmk_";
const KEY_BYTES: usize = 32;

pub async fn reconcile_service_key(
    key: Arc<ServiceKey>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if key.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let owner = Owner::of(&*key)?;
    let key_secret = key.key_secret_name();
    // Who reads the session token, and who is restarted after its rotations.
    let session_plan = key.spec.session_token.as_ref().map(|session| {
        let restart = (
            session.restart_consumers,
            "spec.sessionToken.restartConsumers",
        );
        Plan::new(&ctx, &owner.namespace, &session.secret_name, restart, &[])
    });
    let (outcome, fingerprint) = match ensure_key(&ctx, &key, &owner, &key_secret).await? {
        Err(failure) => (Outcome::Failed(failure), None),
        Ok(fingerprint) => {
            // After a `secretName` rename the old key Secret would hold a key nobody uses.
            delete_owned(&ctx, &owner, ROLE_KEY, Some(&key_secret), None).await?;
            let session = (fingerprint.as_str(), session_plan.as_ref());
            let Some(outcome) = session_outcome(&ctx, &key, &owner, &key_secret, session).await?
            else {
                return Ok(Action::requeue(super::MIN_MINT_INTERVAL));
            };
            let outcome = match (&outcome, service_account_conflict(&ctx, &key)) {
                // The key works; only its ServiceAccounts are not all its own.
                (Outcome::Ready { .. }, Some(conflict)) => Outcome::Failed(conflict),
                _ => outcome,
            };
            // Published whatever else failed: the key is in place, and the grants and guest
            // tokens of this ServiceKey bind their tokens to it.
            (outcome, Some(fingerprint))
        }
    };
    let delivery = match (&outcome, &session_plan) {
        (Outcome::Ready { token: Some(_), .. }, Some(plan)) => plan.delivery(),
        _ => None,
    };
    status::conclude(
        &ctx,
        &*key,
        &owner,
        &key_secret,
        (outcome, fingerprint.as_deref()),
        delivery.as_ref(),
    )
    .await
}

/// The first ServiceAccount this ServiceKey lists that an older ServiceKey of its namespace
/// lists too (the oldest listing wins; ties by name).
fn service_account_conflict(ctx: &Context, key: &ServiceKey) -> Option<Failure> {
    if key.spec.service_accounts.is_empty() {
        return None;
    }
    let namespace = key.namespace();
    let rank = |k: &ServiceKey| {
        (
            k.metadata.creation_timestamp.clone().map(|t| t.0),
            k.name_any(),
        )
    };
    let mine = rank(key);
    let older: Vec<Arc<ServiceKey>> = ctx
        .service_keys
        .listing_accounts(&namespace.unwrap_or_default())
        .into_iter()
        .filter(|other| other.uid() != key.uid() && rank(other) < mine)
        .collect();
    key.spec.service_accounts.iter().find_map(|account| {
        let first = older
            .iter()
            .filter(|o| o.spec.service_accounts.contains(account))
            .min_by_key(|o| rank(o))?;
        Some(Failure::new(
            Reason::ServiceAccountConflict,
            format!(
                "ServiceAccount {account} is already listed by ServiceKey {} (the oldest listing wins); this ServiceKey is not used for it",
                first.name_any()
            ),
        ))
    })
}

/// With the key in place (its fingerprint): the session token, when the ServiceKey asks for
/// one (`plan`: its consumers). `None`: minted less than a second ago, retry shortly.
async fn session_outcome(
    ctx: &Context,
    key: &ServiceKey,
    owner: &Owner,
    key_secret: &str,
    (fingerprint, plan): (&str, Option<&Plan>),
) -> Result<Option<Outcome>, Error> {
    let Some(session) = &key.spec.session_token else {
        delete_owned(ctx, owner, ROLE_SESSION, None, None).await?;
        return Ok(Some(Outcome::Ready {
            reason: KEY_READY,
            message: format!("key in Secret {key_secret}"),
            token: None,
        }));
    };
    let bound = desired::KeyRef {
        spec: &key.spec,
        uid: &owner.uid,
        fingerprint: Some(fingerprint),
    };
    let desired =
        desired::session_token(&owner.namespace, &owner.name, bound, session, &ctx.issuer);
    let result = match &desired {
        Ok(desired) => {
            let target = TokenTarget {
                owner,
                secret_name: &session.secret_name,
                role: ROLE_SESSION,
                desired,
                restarts: plan.map(Plan::restarts).unwrap_or_default(),
                revoke: None,
                renew: key.annotations().get(RENEW_ANNOTATION).map(String::as_str),
            };
            token_secret::ensure_token(ctx, &target).await?
        }
        Err(failure) => Err(failure.clone()),
    };
    Ok(match result {
        Ok(Stored::Deferred(_)) => None,
        Ok(stored) => {
            if let Some(plan) = plan {
                plan.restart_if_pending(ctx, owner, &stored);
            }
            delete_owned(ctx, owner, ROLE_SESSION, Some(&session.secret_name), None).await?;
            Some(Outcome::Ready {
                reason: TOKEN_READY,
                message: format!(
                    "key in Secret {key_secret}, session token in Secret {}",
                    session.secret_name
                ),
                token: stored.info().cloned(),
            })
        }
        Err(failure) => {
            // A conflicting session Secret is someone else's: nothing of ours to remove.
            if failure.reason != Reason::SecretConflict {
                delete_owned(ctx, owner, ROLE_SESSION, None, None).await?;
            }
            Some(Outcome::Failed(failure))
        }
    })
}

/// A new key: 256 bits of OS randomness, base64url, prefixed.
pub fn generate_key() -> String {
    let mut bytes = [0u8; KEY_BYTES];
    OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn key_secret(key: &ServiceKey, owner: &Owner, name: &str, value: &str) -> Secret {
    let mut labels = managed_labels(owner, ROLE_KEY);
    // Label values are limited to 63 characters; object names are not.
    if owner.name.len() <= 63 {
        labels.insert(SERVICE_KEY_LABEL.into(), owner.name.clone());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(owner.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner.owner_ref.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some(KEY_SECRET_TYPE.into()),
        data: Some(BTreeMap::from([
            (KEY_KEY.to_owned(), ByteString(value.as_bytes().to_vec())),
            (
                USERNAME_KEY.to_owned(),
                ByteString(key.spec.principal.name.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

/// Generates the key once and returns its fingerprint. An existing key in a Secret we own is
/// never changed: only the username and our metadata are re-applied when they drifted (and a
/// key that is gone from the Secret is generated anew, as there is nothing left to keep).
async fn ensure_key(
    ctx: &Context,
    key: &ServiceKey,
    owner: &Owner,
    name: &str,
) -> Result<Result<String, Failure>, Error> {
    let namespace = &owner.namespace;
    let cached = cached_version(ctx, namespace, name);
    let known = ctx
        .verified
        .current(namespace, name, cached.as_ref().map(Option::as_deref));
    // Known: unchanged since verified. Read it again only when the user name must change.
    let read_first = match known {
        Some((
            Content::Key {
                fingerprint,
                username,
            },
            _,
        )) => {
            if username == key.spec.principal.name {
                return Ok(Ok(fingerprint));
            }
            true
        }
        // Someone else's last time: not cached, so read rather than attempt a create.
        Some((Content::Foreign, _)) => true,
        _ => cached.is_some(),
    };
    let mut current = if read_first {
        fetch_secret(ctx, namespace, name).await?
    } else {
        None
    };
    let (written, value) = loop {
        if let Some(secret) = &current
            && !is_controlled_by(&secret.metadata, &owner.uid)
        {
            ctx.verified.remember(
                namespace,
                name,
                secret.resource_version().as_deref(),
                Content::Foreign,
            );
            return Ok(Err(conflict(name)));
        }
        let existing = current.as_ref().and_then(|secret| {
            data_str(secret, KEY_KEY)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
        });
        if let (Some(secret), Some(value)) = (&current, existing) {
            let desired = key_secret(key, owner, name, &value);
            if !drifted(secret, &desired) {
                break (secret.clone(), value);
            }
            let written =
                owned_secret::write_secret(ctx, secret.resource_version(), desired).await?;
            tracing::info!(namespace = %owner.namespace, name = %owner.name, secret = name, "re-applied the key Secret's username and labels (key unchanged)");
            break (written, value);
        }
        let value = generate_key();
        let fresh = key_secret(key, owner, name, &value);
        let version = current.as_ref().and_then(|s| s.resource_version());
        match owned_secret::write_secret(ctx, version.clone(), fresh).await {
            Ok(written) => {
                ctx.metrics.minted(&owner.kind, false);
                tracing::info!(namespace = %owner.namespace, name = %owner.name, secret = name, "generated the service key");
                ctx.events
                    .normal(
                        &owner.object_ref,
                        "KeyGenerated",
                        format!("Generated the service key into Secret {name}"),
                    )
                    .await;
                break (written, value);
            }
            // Someone created it since (or it lacks our label, so the cache does not show it):
            // read it and decide again; a foreign Secret is refused above.
            Err(Error::Kube(kube::Error::Api(s))) if version.is_none() && s.is_already_exists() => {
                current = fetch_secret(ctx, namespace, name).await?;
                if current.is_none() {
                    return Err(Error::Kube(kube::Error::Api(s)));
                }
            }
            Err(e) => return Err(e),
        }
    };
    let fingerprint = key_fingerprint(value.as_bytes());
    ctx.verified.remember(
        namespace,
        name,
        written.resource_version().as_deref(),
        Content::Key {
            fingerprint: fingerprint.clone(),
            username: key.spec.principal.name.clone(),
        },
    );
    Ok(Ok(fingerprint))
}

fn conflict(name: &str) -> Failure {
    Failure::secret_conflict(name, "ServiceKey")
}

/// Whether an existing key Secret lost our labels, type or the current username (the key
/// itself is never compared: it is kept as it is).
fn drifted(current: &Secret, desired: &Secret) -> bool {
    let labels_kept = desired
        .labels()
        .iter()
        .all(|(k, v)| current.labels().get(k) == Some(v));
    !labels_kept
        || current.type_ != desired.type_
        || data_str(current, USERNAME_KEY) != data_str(desired, USERNAME_KEY)
}

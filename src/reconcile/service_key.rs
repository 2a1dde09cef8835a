//! ServiceKey: the key, generated once into its Secret, and the optional session token.

use super::status::{self, KEY_READY, Outcome, TOKEN_READY};
use super::token_secret::{
    self, Owner, ROLE_KEY, ROLE_SESSION, Stored, TokenTarget, current_secret, data_str,
    managed_labels,
};
use super::{Context, Error, Failure, Reason, SERVICE_KEY_LABEL, is_controlled_by};
use crate::crd::{ServiceKey, SessionTokenSpec};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::controller::Action;
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
    let owner = Owner::of(&*key)?;
    let key_secret = key.key_secret_name();
    let outcome = match ensure_key(&ctx, &key, &owner, &key_secret).await? {
        Err(failure) => Outcome::Failed(failure),
        Ok(()) => {
            // After a `secretName` rename the old key Secret would hold a key nobody uses.
            token_secret::delete_owned(&ctx, &owner, ROLE_KEY, Some(&key_secret)).await?;
            session_outcome(&ctx, &key, &owner, &key_secret).await?
        }
    };
    status::conclude(&ctx, &*key, &owner, &key_secret, outcome).await
}

/// With the key in place: the session token, when the ServiceKey asks for one.
async fn session_outcome(
    ctx: &Context,
    key: &ServiceKey,
    owner: &Owner,
    key_secret: &str,
) -> Result<Outcome, Error> {
    let Some(session) = &key.spec.session_token else {
        token_secret::delete_owned(ctx, owner, ROLE_SESSION, None).await?;
        return Ok(Outcome::Ready {
            reason: KEY_READY,
            message: format!("key in Secret {key_secret}"),
            token: None,
        });
    };
    Ok(match session_token(ctx, key, owner, session).await? {
        Ok(stored) => {
            token_secret::delete_owned(ctx, owner, ROLE_SESSION, Some(&session.secret_name))
                .await?;
            Outcome::Ready {
                reason: TOKEN_READY,
                message: format!(
                    "key in Secret {key_secret}, session token in Secret {}",
                    session.secret_name
                ),
                token: Some(stored.info().clone()),
            }
        }
        Err(failure) => {
            // A conflicting session Secret is someone else's: nothing of ours to remove.
            if failure.reason != Reason::SecretConflict {
                token_secret::delete_owned(ctx, owner, ROLE_SESSION, None).await?;
            }
            Outcome::Failed(failure)
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

/// Generates the key once. An existing key in a Secret we own is never changed: only the
/// username and our metadata are re-applied when they drifted (and a key that is gone from
/// the Secret is generated anew, as there is nothing left to keep).
async fn ensure_key(
    ctx: &Context,
    key: &ServiceKey,
    owner: &Owner,
    name: &str,
) -> Result<Result<(), Failure>, Error> {
    let current = current_secret(ctx, &owner.namespace, name).await?;
    if let Some(secret) = &current
        && !is_controlled_by(&secret.metadata, &owner.uid)
    {
        return Ok(Err(Failure::new(
            Reason::SecretConflict,
            format!(
                "Secret {name} exists and is not owned by this ServiceKey; tokenmint never overwrites it"
            ),
        )));
    }
    let existing = current.as_ref().and_then(|secret| {
        data_str(secret, KEY_KEY)
            .filter(|k| !k.is_empty())
            .map(|k| (secret, k.to_owned()))
    });
    match existing {
        Some((secret, value)) => {
            let desired = key_secret(key, owner, name, &value);
            if !drifted(secret, &desired) {
                return Ok(Ok(()));
            }
            token_secret::write_secret(ctx, Some(secret), desired).await?;
            tracing::info!(namespace = %owner.namespace, name = %owner.name, secret = name, "re-applied the key Secret's username and labels (key unchanged)");
        }
        None => {
            let fresh = key_secret(key, owner, name, &generate_key());
            token_secret::write_secret(ctx, current.as_ref(), fresh).await?;
            ctx.metrics.minted(&owner.kind, false);
            tracing::info!(namespace = %owner.namespace, name = %owner.name, secret = name, "generated the service key");
            ctx.events
                .normal(
                    &owner.object_ref,
                    "KeyGenerated",
                    format!("Generated the service key into Secret {name}"),
                )
                .await;
        }
    }
    Ok(Ok(()))
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

async fn session_token(
    ctx: &Context,
    key: &ServiceKey,
    owner: &Owner,
    session: &SessionTokenSpec,
) -> Result<Result<Stored, Failure>, Error> {
    let ttl = match session.ttl() {
        Ok(ttl) => ttl,
        Err(e) => {
            return Ok(Err(Failure::new(
                Reason::InvalidSpec,
                format!("sessionToken.ttl: {e}"),
            )));
        }
    };
    let principal = &key.spec.principal;
    let service_key = format!("{}/{}", owner.namespace, owner.name);
    let target = TokenTarget {
        owner,
        secret_name: &session.secret_name,
        role: ROLE_SESSION,
        spec_hash: token_secret::spec_hash(&serde_json::json!({
            "kind": "ServiceKey/session",
            "session": session,
            "principal": principal,
            "issuer": ctx.issuer,
        })),
        renew_before: None,
        restart_consumers: false,
        require_exp: true,
    };
    token_secret::ensure_token(ctx, &target, |minter, now| {
        minter
            .session_token(principal, &service_key, ttl, now)
            .map(|(minted, _)| minted)
            .map_err(Into::into)
    })
    .await
}

//! The one mint-and-store path of every kind: given the token a resource should have
//! ([`Desired`]), the Secret that is there and the keyring, keep the token (zero writes) or mint
//! a new one and write the Secret. The keep-or-mint decision is [`crate::token::assess`], which
//! the cluster-less agent shares; this module adds what is particular to Secrets: ownership,
//! labels, annotations, create versus apply, and the metadata-only cache ([`verified`]).

use super::restart::{self, RESTARTED_FOR_ANNOTATION};
use super::status;
use super::verified::{Content, TokenRecord};
use super::{Context, Error, Failure, Reason, is_controlled_by, rfc3339};
use crate::crd::WorkloadRef;
use crate::desired::Desired;
use crate::keyring::Expect;
use crate::labels::{
    FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_KIND_LABEL, ROLE_LABEL, ROLE_TOKEN,
};
use crate::revocation::Revocation;
use crate::token::assess::{self, Held, MintReason, Record, Renewal, TokenInfo};
use crate::token::mint::{MintError, Minted, Minter};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Type of every token Secret (CONTRACT §5).
pub const TOKEN_SECRET_TYPE: &str = "tokenmint.dev/token";
pub const TOKEN_KEY: &str = "token";
pub const EXPIRES_AT_KEY: &str = "expires-at";
pub const SPEC_HASH_ANNOTATION: &str = "tokenmint.dev/spec-hash";
pub const TOKEN_ID_ANNOTATION: &str = "tokenmint.dev/token-id";
pub const KID_ANNOTATION: &str = "tokenmint.dev/kid";
pub const RENEW_AT_ANNOTATION: &str = "tokenmint.dev/renew-at";
/// The token's expiry in the Secret's metadata (the cache holds metadata only), absent for a
/// token that never expires.
pub const EXPIRES_AT_ANNOTATION: &str = "tokenmint.dev/expires-at";
/// On a DatasourceGrant or GuestTokenRequest: set to a new value to revoke its token and mint a
/// fresh one.
pub const REVOKE_ANNOTATION: &str = "tokenmint.dev/revoke";
/// On a token Secret: the `tokenmint.dev/revoke` value its token was minted after.
pub const REVOKE_HANDLED_ANNOTATION: &str = "tokenmint.dev/revoke-handled";

/// The resource a Secret belongs to.
#[derive(Debug, Clone)]
pub struct Owner {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub owner_ref: OwnerReference,
    pub object_ref: ObjectReference,
}

impl Owner {
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Result<Self, Error> {
        let namespace = obj.namespace().ok_or(Error::MissingMetadata("namespace"))?;
        let uid = obj.uid().ok_or(Error::MissingMetadata("uid"))?;
        let owner_ref = OwnerReference {
            block_owner_deletion: Some(true),
            ..obj
                .controller_owner_ref(&())
                .ok_or(Error::MissingMetadata("name"))?
        };
        Ok(Owner {
            kind: K::kind(&()).into_owned(),
            namespace,
            name: obj.name_any(),
            uid,
            owner_ref,
            object_ref: obj.object_ref(&()),
        })
    }

    /// Key of this resource's token in the expiry metric.
    pub fn metric_key(&self, role: &str) -> String {
        format!("{}/{}/{}/{role}", self.kind, self.namespace, self.name)
    }

    /// Key of this resource's token of `role` in the mint-interval record.
    fn mint_key(&self, role: &str) -> String {
        format!("{}/{role}", self.uid)
    }
}

/// What the token of a resource must look like.
#[derive(Debug, Clone)]
pub struct TokenTarget<'a> {
    pub owner: &'a Owner,
    pub secret_name: &'a str,
    /// [`ROLE_TOKEN`] or [`ROLE_SESSION`].
    pub role: &'static str,
    pub desired: &'a Desired<'a>,
    /// Whether workloads are restarted after a rotation (`rolloutRestart` is set).
    pub restart_consumers: bool,
    /// The resource's `tokenmint.dev/revoke` value, when set.
    pub revoke: Option<&'a str>,
}

impl TokenTarget<'_> {
    fn renewal(&self) -> Renewal<'_> {
        Renewal {
            renew_before: self.desired.renew_before,
            jitter_seed: &self.owner.uid,
        }
    }

    /// Whether the revocation the resource asks for is still to be done for a token minted
    /// after `handled`.
    fn revocation_pending(&self, handled: Option<&str>) -> bool {
        self.revoke.is_some_and(|asked| handled != Some(asked))
    }
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

pub(crate) fn data_str<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
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
    if let Some(asked) = target.revoke {
        annotations.insert(REVOKE_HANDLED_ANNOTATION.into(), asked.to_owned());
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

/// Labels of every Secret tokenmint writes for `owner`.
pub fn managed_labels(owner: &Owner, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (OWNER_KIND_LABEL.to_owned(), owner.kind.clone()),
        (ROLE_LABEL.to_owned(), role.to_owned()),
    ])
}

/// The resourceVersion the metadata cache shows for Secret `name` (`None`: not cached).
pub(crate) fn cached_version(ctx: &Context, namespace: &str, name: &str) -> Option<Option<String>> {
    ctx.secrets
        .get(&ObjectRef::new(name).within(namespace))
        .map(|cached| cached.resource_version.clone())
}

/// Fetches the Secret `name` (absent: `None`).
pub(crate) async fn fetch_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api.get_opt(name).await?)
}

/// Writes the Secret we own entirely, given the resourceVersion of what is there now:
/// - none: a create, which fails (409) rather than touch a Secret someone else created since
///   we looked — a foreign Secret is never written, not even in a race;
/// - ours: a server-side apply carrying that resourceVersion (a conflict if it changed
///   meanwhile), then removal of data keys the new content no longer has (a field first written
///   by the create is not owned by the apply, so the apply alone would leave it behind).
pub async fn write_secret(
    ctx: &Context,
    current_version: Option<String>,
    mut desired: Secret,
) -> Result<Secret, Error> {
    ctx.may_write()?;
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let written = match current_version {
        None => {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            let created = api.create(&params, &desired).await?;
            ctx.metrics.write("create", "secrets");
            created
        }
        Some(version) => {
            desired.metadata.resource_version = Some(version);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let mut applied = api.patch(&name, &params, &Patch::Apply(&desired)).await?;
            ctx.metrics.write("apply", "secrets");
            let stale: serde_json::Map<String, Value> = applied
                .data
                .iter()
                .flatten()
                .filter(|(k, _)| !desired.data.as_ref().is_some_and(|d| d.contains_key(*k)))
                .map(|(k, _)| (k.clone(), Value::Null))
                .collect();
            if !stale.is_empty() {
                ctx.may_write()?;
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                let patch = serde_json::json!({"data": stale});
                applied = api.patch(&name, &params, &Patch::Merge(&patch)).await?;
                ctx.metrics.write("patch", "secrets");
            }
            applied
        }
    };
    Ok(written)
}

/// Deletes the Secrets of `role` controlled by `owner` (all, or all but `keep`), as the watch
/// cache knows them, revoking their tokens first when `revoke` gives a reason. Returns the
/// names deleted.
pub async fn delete_owned(
    ctx: &Context,
    owner: &Owner,
    role: &str,
    keep: Option<&str>,
    revoke: Option<&str>,
) -> Result<Vec<String>, Error> {
    let doomed = ctx.secrets.state_filter(|s| {
        s.namespace == owner.namespace
            && s.is_controlled_by(&owner.uid)
            && s.has_role(role)
            && Some(s.name.as_str()) != keep
    });
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let mut deleted = Vec::new();
    for secret in doomed {
        let name = secret.name.clone();
        // Revoked first: a crash in between leaves a revoked token behind, never a live one.
        if let Some(reason) = revoke
            && let Some(revocation) = secret.revocation(reason)
        {
            ctx.may_write()?;
            ctx.revoker.revoke(&revocation).await?;
        }
        ctx.may_write()?;
        // The uid precondition: never delete a Secret that replaced ours in the meantime.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        ctx.metrics.write("delete", "secrets");
        ctx.verified.forget(&owner.namespace, &name);
        tracing::info!(namespace = %owner.namespace, owner = %owner.name, secret = %name, "deleted token Secret");
        deleted.push(name);
    }
    Ok(deleted)
}

/// The state of the token Secret before a decision.
enum InPlace {
    /// Not in the cache and not known: absent, or someone else's (unlabelled) Secret.
    Unknown,
    /// Read from the API server just now.
    Fetched(Box<Secret>),
    /// Known from our own write or an earlier verification, at this resourceVersion.
    Known(Box<TokenRecord>, String),
}

/// A decision about the token in place.
enum Verdict {
    Keep {
        info: TokenInfo,
        restart_pending: bool,
    },
    Mint {
        reason: MintReason,
        /// The token to replace, when there is one.
        previous: Option<Held>,
        /// resourceVersion of the Secret to replace (`None`: create).
        version: Option<String>,
        /// A candidate signed for the comparison, reusable as the new token.
        candidate: Option<Minted>,
    },
    Conflict,
}

fn minter<'a>(ring: &'a crate::keyring::Keyring, issuer: &'a str) -> Minter<'a> {
    Minter {
        keyring: ring,
        issuer,
    }
}

/// Mints the desired token with the current keyring.
fn mint(ctx: &Context, target: &TokenTarget, now: Timestamp) -> Result<Minted, Error> {
    let ring = ctx.keyring.read().expect("keyring lock");
    target
        .desired
        .mint(&minter(&ring, &ctx.issuer), now)
        .map_err(|e| match e {
            MintError::Keyring(e) => Error::Signing(e),
            // The request was validated when `Desired` was built.
            MintError::Request(e) => Error::Signing(crate::keyring::KeyringError::Malformed(
                format!("request refused after validation: {e}"),
            )),
        })
}

fn keep_or_mint(
    judged: Result<TokenInfo, MintReason>,
    target: &TokenTarget,
    held: Held,
    restarted_for: Option<&str>,
    version: String,
    candidate: Option<Minted>,
) -> Verdict {
    match judged {
        Ok(info) => {
            let restart_pending =
                target.restart_consumers && restart::pending(restarted_for, &info.jti);
            Verdict::Keep {
                info,
                restart_pending,
            }
        }
        Err(reason) => Verdict::Mint {
            reason,
            previous: Some(held),
            version: Some(version),
            candidate,
        },
    }
}

/// Judges a token known from the cache, without reading it.
fn judge_known(
    ctx: &Context,
    target: &TokenTarget,
    record: TokenRecord,
    version: String,
    now: Timestamp,
) -> Verdict {
    if target.revocation_pending(record.revoke_handled.as_deref()) {
        return Verdict::Mint {
            reason: MintReason::Revoked,
            previous: Some(record.held),
            version: Some(version),
            candidate: None,
        };
    }
    let expires = record.held.expires_at.map(rfc3339);
    let judged = {
        let ring = ctx.keyring.read().expect("keyring lock");
        assess::judge(
            &record.held,
            Record {
                spec_hash: Some(&record.spec_hash),
                token_id: Some(&record.held.jti),
                expires_at: expires.as_deref(),
            },
            &target.desired.spec_hash,
            &ring,
            target.renewal(),
            now,
        )
    };
    keep_or_mint(
        judged,
        target,
        record.held,
        record.restarted_for.as_deref(),
        version,
        None,
    )
}

/// Judges a Secret read from the API server: ownership, labels, then the token itself.
fn judge_fetched(
    ctx: &Context,
    target: &TokenTarget,
    secret: &Secret,
    now: Timestamp,
) -> Result<Verdict, Error> {
    let owner = target.owner;
    let version = secret.resource_version();
    if !is_controlled_by(&secret.metadata, &owner.uid) {
        ctx.verified.remember(
            &owner.namespace,
            target.secret_name,
            version.as_deref(),
            Content::Foreign,
        );
        return Ok(Verdict::Conflict);
    }
    let mint_over = |reason: MintReason, previous: Option<Held>, candidate: Option<Minted>| {
        Ok(Verdict::Mint {
            reason,
            previous,
            version: version.clone(),
            candidate,
        })
    };
    let edited = |what: &str| MintReason::Edited(what.to_owned());
    if secret.type_.as_deref() != Some(TOKEN_SECRET_TYPE)
        || secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE)
        || secret.labels().get(ROLE_LABEL).map(String::as_str) != Some(target.role)
    {
        return mint_over(edited("type or labels"), None, None);
    }
    let Some(token) = data_str(secret, TOKEN_KEY) else {
        return mint_over(edited("no token"), None, None);
    };
    let candidate = mint(ctx, target, now)?;
    let held = {
        let ring = ctx.keyring.read().expect("keyring lock");
        let expect = Expect {
            issuer: &ctx.issuer,
            require_exp: target.desired.require_exp,
        };
        assess::inspect(token, &ring, expect, &candidate.token)
    };
    let held = match held {
        Ok(held) => held,
        Err(reason) => return mint_over(reason, None, Some(candidate)),
    };
    let meta = &secret.metadata;
    let revoke_handled = annotation(meta, REVOKE_HANDLED_ANNOTATION);
    if target.revocation_pending(revoke_handled) {
        return mint_over(MintReason::Revoked, Some(held), Some(candidate));
    }
    let record = Record {
        spec_hash: annotation(meta, SPEC_HASH_ANNOTATION),
        token_id: annotation(meta, TOKEN_ID_ANNOTATION),
        expires_at: data_str(secret, EXPIRES_AT_KEY),
    };
    let judged = {
        let ring = ctx.keyring.read().expect("keyring lock");
        assess::judge(
            &held,
            record,
            &target.desired.spec_hash,
            &ring,
            target.renewal(),
            now,
        )
    };
    let restarted_for = annotation(meta, RESTARTED_FOR_ANNOTATION);
    if judged.is_ok() {
        // Verified at this version: later reconciles need not read it again.
        ctx.verified.remember(
            &owner.namespace,
            target.secret_name,
            version.as_deref(),
            Content::Token(TokenRecord {
                held: held.clone(),
                owner_uid: owner.uid.clone(),
                role: target.role.to_owned(),
                spec_hash: target.desired.spec_hash.clone(),
                restarted_for: restarted_for.map(str::to_owned),
                revoke_handled: revoke_handled.map(str::to_owned),
            }),
        );
    }
    Ok(keep_or_mint(
        judged,
        target,
        held,
        restarted_for,
        version.unwrap_or_default(),
        Some(candidate),
    ))
}

/// What is known of the token Secret of `target` without a read, or read now.
async fn in_place(ctx: &Context, target: &TokenTarget<'_>) -> Result<InPlace, Error> {
    let namespace = &target.owner.namespace;
    let cached = cached_version(ctx, namespace, target.secret_name);
    let known = ctx.verified.current(
        namespace,
        target.secret_name,
        cached.as_ref().map(Option::as_deref),
    );
    let foreign = match known {
        Some((Content::Token(record), version))
            if record.owner_uid == target.owner.uid && record.role == target.role =>
        {
            return Ok(InPlace::Known(Box::new(record), version));
        }
        Some((Content::Foreign, _)) => true,
        _ => false,
    };
    // Absent from the cache of labelled Secrets: absent, or someone else's. A create finds
    // out without a read — unless this name was someone else's last time: read it then.
    if cached.is_none() && !foreign {
        return Ok(InPlace::Unknown);
    }
    Ok(
        match fetch_secret(ctx, namespace, target.secret_name).await? {
            Some(secret) => InPlace::Fetched(Box::new(secret)),
            None => InPlace::Unknown,
        },
    )
}

fn conflict(target: &TokenTarget) -> Failure {
    Failure::new(
        Reason::SecretConflict,
        format!(
            "Secret {} exists and is not owned by this {}; tokenmint never overwrites it",
            target.secret_name, target.owner.kind
        ),
    )
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
            ctx.revoker
                .revoke(&Revocation {
                    jti: held.jti.clone(),
                    expires_at: held.expires_at,
                    kid: Some(held.kid.clone()),
                    reason: format!(
                        "{} {}/{}: {REVOKE_ANNOTATION}",
                        owner.kind, owner.namespace, owner.name
                    ),
                })
                .await?;
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
        let consumers_current = target.restart_consumers && !replaced;
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
            restart_pending: target.restart_consumers && replaced,
        }));
    }
}

/// The reconcile of a kind whose only product is one token Secret (DatasourceGrant,
/// GuestTokenRequest), once [`Desired`] says what the token should be, or why there is none.
pub async fn keep_token<K: status::HasTokenStatus>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    secret_name: &str,
    consumers: &[WorkloadRef],
    desired: Result<Desired<'_>, Failure>,
) -> Result<Action, Error> {
    let result = match &desired {
        Ok(desired) => {
            let target = TokenTarget {
                owner,
                secret_name,
                role: ROLE_TOKEN,
                desired,
                restart_consumers: !consumers.is_empty(),
                revoke: obj.annotations().get(REVOKE_ANNOTATION).map(String::as_str),
            };
            ensure_token(ctx, &target).await?
        }
        Err(failure) => Err(failure.clone()),
    };
    settle(ctx, obj, owner, secret_name, consumers, result).await
}

/// Ends the reconcile of a kind whose only product is one token Secret (DatasourceGrant,
/// GuestTokenRequest): asks for consumer restarts after a rotation, removes Secrets the
/// resource no longer should have — all of them when it may not have a token (a withdrawn
/// permission must not leave a usable token behind: its token is revoked too), the old one
/// after a `secretName` rename — and concludes with the status.
pub async fn settle<K: status::HasTokenStatus>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    secret_name: &str,
    consumers: &[WorkloadRef],
    result: Result<Stored, Failure>,
) -> Result<Action, Error> {
    let outcome = match result {
        Ok(Stored::Deferred(wait)) => return Ok(Action::requeue(wait)),
        Ok(stored) => {
            let info = stored.info().cloned();
            if stored.restart_pending()
                && let Some(info) = &info
            {
                ctx.restarts.request(restart::Request {
                    namespace: owner.namespace.clone(),
                    secret: secret_name.to_owned(),
                    token_id: info.jti.clone(),
                    workloads: consumers.to_vec(),
                    regarding: owner.object_ref.clone(),
                });
            }
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
            delete_owned(ctx, owner, ROLE_TOKEN, None, revoke).await?;
            status::Outcome::Failed(failure)
        }
    };
    status::conclude(ctx, obj, owner, secret_name, outcome).await
}

//! The one mint-and-store path of every kind: given the token a resource should have, the
//! Secret that is there and the keyring, keep the token (zero writes) or mint a new one and
//! apply the Secret.
//!
//! A token is kept only when all of this holds; anything else re-mints:
//! - the Secret exists, is controlled by the resource (else: SecretConflict, never a write),
//!   and has our type and label;
//! - its `tokenmint.dev/spec-hash` annotation matches the inputs (spec, principal, issuer);
//! - the token verifies with the keyring (signature, issuer, expiry), its `kid` is the active
//!   key, and its claims equal those a fresh mint would carry (times and jti aside) with the
//!   same lifetime — so a hand-edited or swapped token is replaced;
//! - the `tokenmint.dev/token-id` annotation and the `expires-at` key agree with the token;
//! - it is not due: now < renew time (`Schedule`, from the token's own iat/exp).

use super::restart::{self, RESTARTED_FOR_ANNOTATION};
use super::status;
use super::{
    Context, Error, FIELD_MANAGER, Failure, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_KIND_LABEL,
    ROLE_LABEL, Reason, is_controlled_by, rfc3339,
};
use crate::crd::WorkloadRef;
use crate::keyring::{Expect, Keyring, VerifyError};
use crate::token::mint::{MintError, Minted, Minter, RequestError};
use crate::token::renew::Schedule;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
/// Roles of Secrets ([`ROLE_LABEL`]).
pub const ROLE_TOKEN: &str = "token";
pub const ROLE_SESSION: &str = "session-token";
pub const ROLE_KEY: &str = "service-key";

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
}

/// What the token of a resource must look like.
#[derive(Debug, Clone)]
pub struct TokenTarget<'a> {
    pub owner: &'a Owner,
    pub secret_name: &'a str,
    /// [`ROLE_TOKEN`] or [`ROLE_SESSION`].
    pub role: &'static str,
    /// [`spec_hash`] of every input that shapes the token.
    pub spec_hash: String,
    pub renew_before: Option<Duration>,
    /// Whether the token must expire (all but never-expiring guest tokens).
    pub require_exp: bool,
    /// Whether workloads are restarted after a rotation (`rolloutRestart` is set).
    pub restart_consumers: bool,
}

/// The token in place, as recorded in status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub jti: String,
    pub issued_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub schedule: Schedule,
}

impl TokenInfo {
    fn new(
        jti: String,
        issued_at: Timestamp,
        expires_at: Option<Timestamp>,
        target: &TokenTarget,
    ) -> Self {
        let mut schedule = Schedule::new(
            issued_at,
            expires_at,
            target.renew_before,
            &target.owner.uid,
        );
        // Whole seconds (rounded down, so never later than `exp - renewBefore`): the renewAt in
        // status and the requeue are then the same instant.
        schedule.renew_at = schedule.renew_at.map(floor_second);
        TokenInfo {
            schedule,
            jti,
            issued_at,
            expires_at,
        }
    }
}

/// Why a token is (re-)minted; shown in logs and Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintReason {
    Missing,
    SpecChanged,
    Due,
    KeyRetired,
    Expired,
    Edited(String),
}

impl std::fmt::Display for MintReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MintReason::Missing => f.write_str("the Secret did not exist"),
            MintReason::SpecChanged => f.write_str("the spec changed"),
            MintReason::Due => f.write_str("the token was due for renewal"),
            MintReason::KeyRetired => f.write_str("its signing key was retired"),
            MintReason::Expired => f.write_str("the token had expired"),
            MintReason::Edited(what) => write!(f, "the Secret was edited ({what})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    Keep(TokenInfo),
    Mint(MintReason),
    /// A Secret of the name exists and is not controlled by the resource.
    Conflict,
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
        reason: MintReason,
        /// Whether a previous token was replaced (a rotation).
        replaced: bool,
        restart_pending: bool,
    },
}

impl Stored {
    pub fn info(&self) -> &TokenInfo {
        match self {
            Stored::Kept { info, .. } | Stored::Minted { info, .. } => info,
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
        }
    }
}

/// A stable hash of token inputs: FNV-1a 64 of the canonical JSON (keys sorted). Change
/// detection only, not a security boundary (the token itself is verified).
pub fn spec_hash(inputs: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, canonical(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let bytes = serde_json::to_vec(&canonical(inputs)).expect("JSON values serialise");
    format!("{:016x}", crate::token::renew::fnv1a(&bytes))
}

/// The claims of a JWT without verifying it (for our own fresh token).
fn payload(token: &str) -> Option<Value> {
    let part = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// Splits claims into their time-independent part and (iat, exp, jti).
fn split_claims(mut claims: Value) -> Option<(Value, i64, Option<i64>, String)> {
    let map = claims.as_object_mut()?;
    let iat = map.remove("iat")?.as_i64()?;
    map.remove("nbf");
    let jti = map.remove("jti")?.as_str()?.to_owned();
    let exp = match map.remove("exp") {
        Some(v) => Some(v.as_i64()?),
        None => None,
    };
    Some((claims, iat, exp, jti))
}

fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(Timestamp::MAX)
}

pub(crate) fn data_str<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Decides whether the token in `current` can stay. Pure: the heart of the write discipline.
pub fn assess(
    current: Option<&Secret>,
    target: &TokenTarget,
    ring: &Keyring,
    issuer: &str,
    candidate: &Minted,
    now: Timestamp,
) -> Assessment {
    let Some(secret) = current else {
        return Assessment::Mint(MintReason::Missing);
    };
    if !is_controlled_by(&secret.metadata, &target.owner.uid) {
        return Assessment::Conflict;
    }
    let edited = |what: &str| Assessment::Mint(MintReason::Edited(what.to_owned()));
    if secret.type_.as_deref() != Some(TOKEN_SECRET_TYPE)
        || secret.labels().get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE)
        || secret.labels().get(ROLE_LABEL).map(String::as_str) != Some(target.role)
    {
        return edited("type or labels");
    }
    if annotation(secret, SPEC_HASH_ANNOTATION) != Some(target.spec_hash.as_str()) {
        return Assessment::Mint(MintReason::SpecChanged);
    }
    let Some(token) = data_str(secret, TOKEN_KEY) else {
        return edited("no token");
    };
    let expect = Expect {
        issuer,
        require_exp: target.require_exp,
    };
    let claims: Value = match ring.verify(token, expect) {
        Ok(claims) => claims,
        Err(VerifyError::Expired) => return Assessment::Mint(MintReason::Expired),
        Err(e) => return edited(&e.to_string()),
    };
    let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
    if !kid.is_some_and(|kid| ring.is_active(&kid)) {
        return Assessment::Mint(MintReason::KeyRetired);
    }
    let (Some((have, iat, exp, jti)), Some((want, want_iat, want_exp, _))) = (
        split_claims(claims),
        payload(&candidate.token).and_then(split_claims),
    ) else {
        return edited("claims");
    };
    if have != want || exp.map(|e| e - iat) != want_exp.map(|e| e - want_iat) {
        return Assessment::Mint(MintReason::SpecChanged);
    }
    if annotation(secret, TOKEN_ID_ANNOTATION) != Some(jti.as_str())
        || data_str(secret, EXPIRES_AT_KEY) != exp.map(|e| rfc3339(ts(e))).as_deref()
    {
        return edited("token id or expires-at");
    }
    let info = TokenInfo::new(jti, ts(iat), exp.map(ts), target);
    if info.schedule.is_due(now) {
        return Assessment::Mint(MintReason::Due);
    }
    Assessment::Keep(info)
}

/// The Secret holding `minted` for `target`. `consumers_current`: no consumer can hold an older
/// token (a first token), so none needs a restart for this one.
pub fn token_secret(
    target: &TokenTarget,
    minted: &Minted,
    info: &TokenInfo,
    kid: &str,
    consumers_current: bool,
) -> Secret {
    let mut data = BTreeMap::from([(
        TOKEN_KEY.to_owned(),
        ByteString(minted.token.clone().into_bytes()),
    )]);
    if let Some(exp) = minted.expires_at {
        data.insert(EXPIRES_AT_KEY.into(), ByteString(rfc3339(exp).into_bytes()));
    }
    let mut annotations = BTreeMap::from([
        (SPEC_HASH_ANNOTATION.to_owned(), target.spec_hash.clone()),
        (TOKEN_ID_ANNOTATION.to_owned(), minted.jti.clone()),
        (KID_ANNOTATION.to_owned(), kid.to_owned()),
    ]);
    if let Some(at) = info.schedule.renew_at {
        annotations.insert(RENEW_AT_ANNOTATION.into(), rfc3339(at));
    }
    if consumers_current {
        annotations.insert(RESTARTED_FOR_ANNOTATION.into(), minted.jti.clone());
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

fn recent_key(namespace: &str, name: &str) -> String {
    format!("secret/{namespace}/{name}")
}

/// The Secret `name`: from the watch cache (or our newer write); a Secret missing from the
/// cache is fetched, since a Secret without our label (someone else's) is not in it.
pub async fn current_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, Error> {
    ctx.secrets_synced().await?;
    if let Some(cached) = ctx.secrets.get(&ObjectRef::new(name).within(namespace)) {
        let ours = ctx
            .recent
            .newer_than(
                &recent_key(namespace, name),
                cached.resource_version().as_deref(),
            )
            .and_then(|v| serde_json::from_value(v).ok());
        return Ok(Some(ours.unwrap_or_else(|| (*cached).clone())));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api.get_opt(name).await?)
}

/// Writes the Secret we own entirely, given what is there now:
/// - none: a create, which fails (409) rather than touch a Secret someone else created since
///   we looked — a foreign Secret is never written, not even in a race;
/// - ours: a server-side apply carrying the observed resourceVersion (a conflict if it changed
///   meanwhile), then removal of data keys the new content no longer has (a field first written
///   by the create is not owned by the apply, so the apply alone would leave it behind).
pub async fn write_secret(
    ctx: &Context,
    current: Option<&Secret>,
    mut desired: Secret,
) -> Result<Secret, Error> {
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let written = match current {
        None => {
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            let created = api.create(&params, &desired).await?;
            ctx.metrics.write("create", "secrets");
            created
        }
        Some(existing) => {
            desired.metadata.resource_version = existing.resource_version();
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
    ctx.recent.remember(
        recent_key(&namespace, &name),
        written.resource_version().as_deref(),
        serde_json::to_value(&written).unwrap_or_default(),
    );
    Ok(written)
}

/// Deletes the Secrets of `role` controlled by `owner` (all, or all but `keep`), as the watch
/// cache knows them. Returns the names deleted.
pub async fn delete_owned(
    ctx: &Context,
    owner: &Owner,
    role: &str,
    keep: Option<&str>,
) -> Result<Vec<String>, Error> {
    // Before the first list, an empty cache would hide Secrets that must go.
    ctx.secrets_synced().await?;
    let doomed: Vec<_> = ctx
        .secrets
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(owner.namespace.as_str())
                && is_controlled_by(&s.metadata, &owner.uid)
                && s.labels().get(ROLE_LABEL).map(String::as_str) == Some(role)
                && Some(s.name_any().as_str()) != keep
        })
        .collect();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let mut deleted = Vec::new();
    for secret in doomed {
        let name = secret.name_any();
        // The uid precondition: never delete a Secret that replaced ours in the meantime.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.uid(),
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
        ctx.recent.forget(&recent_key(&owner.namespace, &name));
        tracing::info!(namespace = %owner.namespace, owner = %owner.name, secret = %name, "deleted token Secret");
        deleted.push(name);
    }
    Ok(deleted)
}

/// Maps a refused request to the status reason.
fn request_failure(e: RequestError) -> Failure {
    match e {
        RequestError::Filter(_) => Failure::new(Reason::InvalidFilter, e.to_string()),
        _ => Failure::new(Reason::InvalidSpec, e.to_string()),
    }
}

/// Keeps the token of `target` in its Secret: the shared path of every kind. `mint` builds the
/// token the resource should have; it runs on every call (its claims are the reference the
/// token in place is compared with), but its output is written only when the token in place
/// cannot stay.
pub async fn ensure_token(
    ctx: &Context,
    target: &TokenTarget<'_>,
    mint: impl FnOnce(&Minter, Timestamp) -> Result<Minted, MintError>,
) -> Result<Result<Stored, Failure>, Error> {
    let now = ctx.clock.now();
    let owner = target.owner;
    // Mint first: a refused request needs no look at the Secret.
    let candidate = {
        let ring = ctx.keyring.read().expect("keyring lock");
        let minter = Minter {
            keyring: &ring,
            issuer: &ctx.issuer,
        };
        match mint(&minter, now) {
            Ok(minted) => minted,
            Err(MintError::Request(e)) => return Ok(Err(request_failure(e))),
            Err(MintError::Keyring(e)) => return Err(e.into()),
        }
    };
    let current = current_secret(ctx, &owner.namespace, target.secret_name).await?;
    // Should the keyring rotate during the lookup, the rotation triggers another reconcile,
    // which re-mints a candidate signed by the new key.
    let assessment = {
        let ring = ctx.keyring.read().expect("keyring lock");
        assess(
            current.as_ref(),
            target,
            &ring,
            &ctx.issuer,
            &candidate,
            now,
        )
    };
    let kid = jsonwebtoken::decode_header(&candidate.token)
        .ok()
        .and_then(|h| h.kid)
        .unwrap_or_default();
    let reason = match assessment {
        Assessment::Keep(info) => {
            let restart_pending = target.restart_consumers
                && restart::pending(
                    current
                        .as_ref()
                        .and_then(|s| s.metadata.annotations.as_ref()),
                    &info.jti,
                );
            return Ok(Ok(Stored::Kept {
                info,
                restart_pending,
            }));
        }
        Assessment::Conflict => {
            return Ok(Err(Failure::new(
                Reason::SecretConflict,
                format!(
                    "Secret {} exists and is not owned by this {}; tokenmint never overwrites it",
                    target.secret_name, owner.kind
                ),
            )));
        }
        Assessment::Mint(reason) => reason,
    };
    let info = TokenInfo::new(
        candidate.jti.clone(),
        candidate.issued_at,
        candidate.expires_at,
        target,
    );
    let replaced = current.is_some();
    let first_with_consumers = target.restart_consumers && !replaced;
    write_secret(
        ctx,
        current.as_ref(),
        token_secret(target, &candidate, &info, &kid, first_with_consumers),
    )
    .await?;
    ctx.metrics.minted(&owner.kind, replaced);
    tracing::info!(
        kind = %owner.kind,
        namespace = %owner.namespace,
        name = %owner.name,
        secret = target.secret_name,
        token_id = %info.jti,
        kid = %kid,
        %reason,
        "minted token"
    );
    let expiry = info.expires_at.map_or_else(
        || "never expires".to_owned(),
        |e| format!("expires at {}", rfc3339(e)),
    );
    let (event, verb) = if replaced {
        ("Rotated", "Replaced the token in")
    } else {
        ("Minted", "Minted a token into")
    };
    ctx.events
        .normal(
            &owner.object_ref,
            event,
            format!(
                "{verb} Secret {} because {reason}; token id {}, {expiry}",
                target.secret_name, info.jti
            ),
        )
        .await;
    Ok(Ok(Stored::Minted {
        info,
        reason,
        replaced,
        restart_pending: target.restart_consumers && replaced,
    }))
}

/// Ends the reconcile of a kind whose only product is one token Secret (DatasourceGrant,
/// GuestTokenRequest): asks for consumer restarts after a rotation, removes Secrets the
/// resource no longer should have — all of them when it may not have a token (a withdrawn
/// permission must not leave a usable token behind), the old one after a `secretName` rename —
/// and concludes with the status.
pub async fn settle<K: status::HasTokenStatus>(
    ctx: &Context,
    obj: &K,
    owner: &Owner,
    secret_name: &str,
    consumers: &[WorkloadRef],
    result: Result<Stored, Failure>,
) -> Result<Action, Error> {
    let outcome = match result {
        Ok(stored) => {
            if stored.restart_pending() {
                ctx.restarts.request(restart::Request {
                    namespace: owner.namespace.clone(),
                    secret: secret_name.to_owned(),
                    token_id: stored.info().jti.clone(),
                    workloads: consumers.to_vec(),
                    regarding: owner.object_ref.clone(),
                });
            }
            delete_owned(ctx, owner, ROLE_TOKEN, Some(secret_name)).await?;
            status::Outcome::Ready {
                reason: status::TOKEN_READY,
                message: format!("token in Secret {secret_name}"),
                token: Some(stored.info().clone()),
            }
        }
        Err(failure) => {
            delete_owned(ctx, owner, ROLE_TOKEN, None).await?;
            status::Outcome::Failed(failure)
        }
    };
    status::conclude(ctx, obj, owner, secret_name, outcome).await
}

//! The Secrets tokenmint owns, as Kubernetes objects: the resource a Secret belongs to, the
//! names of what it carries, and how it is read, written (create or apply, never a foreign
//! Secret) and deleted (its token revoked first). [`super::token_secret`] decides what goes in.

use super::{Context, Error};
use crate::labels::{
    FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OWNER_KIND_LABEL, ROLE_LABEL,
};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use std::collections::BTreeMap;

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
/// The token's issue time (Unix seconds) and the uid of the ServiceKey it is bound to: what
/// revoking it needs, from the metadata the cache holds.
pub const ISSUED_AT_ANNOTATION: &str = "tokenmint.dev/issued-at";
pub const SERVICE_KEY_UID_ANNOTATION: &str = "tokenmint.dev/service-key-uid";
/// On a DatasourceGrant or GuestTokenRequest: set to a new value to revoke its token and mint a
/// fresh one.
pub const REVOKE_ANNOTATION: &str = "tokenmint.dev/revoke";
/// On a token Secret: the `tokenmint.dev/revoke` value its token was minted after.
pub const REVOKE_HANDLED_ANNOTATION: &str = "tokenmint.dev/revoke-handled";
/// On a DatasourceGrant, GuestTokenRequest or ServiceKey (its session token): set to a new
/// value to mint a fresh token now, without revoking the one in place (it stays valid until it
/// expires, as after any rotation).
pub const RENEW_ANNOTATION: &str = "tokenmint.dev/renew";
/// On a token Secret: the `tokenmint.dev/renew` value its token was minted after.
pub const RENEW_HANDLED_ANNOTATION: &str = "tokenmint.dev/renew-handled";

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

    /// Key of this resource's token of `role` in the mint-interval record.
    pub(crate) fn mint_key(&self, role: &str) -> String {
        format!("{}/{role}", self.uid)
    }
}

pub(crate) fn data_str<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
}

pub(crate) fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
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
    ctx.secrets.version(namespace, name)
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
    let doomed: Vec<_> = ctx
        .secrets
        .owned_by(&owner.namespace, &owner.uid)
        .into_iter()
        .filter(|s| s.has_role(role) && Some(s.name.as_str()) != keep)
        .collect();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let mut deleted = Vec::new();
    for secret in doomed {
        let name = secret.name.clone();
        // Revoked first: a crash in between leaves a revoked token behind, never a live one.
        if let Some(reason) = revoke
            && let Some(revocation) = secret.revocation(reason, ctx.clock.now().as_second())
        {
            ctx.may_write()?;
            ctx.revoker.revoke(&revocation).await?;
        }
        ctx.may_write()?;
        // The uid precondition: never delete a Secret that replaced ours in the meantime.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.meta.uid.as_ref().map(ToString::to_string),
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

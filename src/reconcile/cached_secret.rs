//! The Secret watch cache keeps, of each Secret tokenmint manages, only what a reconcile reads
//! without a GET: identity, version, controlling owner, role, and what revoking its token needs
//! (its id, issue time, expiry and ServiceKey uid).
//!
//! A Secret's metadata as the API sends it costs about 1.7 KB in memory (two maps of labels and
//! annotations with room for eleven entries each, owner references, timestamps); this is about
//! a quarter of that, for one Secret per managed object.

use super::owned_secret::{
    EXPIRES_AT_ANNOTATION, ISSUED_AT_ANNOTATION, SERVICE_KEY_UID_ANNOTATION, TOKEN_ID_ANNOTATION,
};
use crate::labels::{ROLE_LABEL, ROLE_SESSION};
use crate::revocation::Revocation;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Lookup;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSecret {
    pub name: String,
    pub namespace: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// The uid of the controlling owner reference.
    pub controller_uid: Option<String>,
    /// The `tokenmint.dev/secret-role` label.
    pub role: Option<String>,
    /// `tokenmint.dev/token-id` and `tokenmint.dev/expires-at`.
    pub token_id: Option<String>,
    pub expires_at: Option<Timestamp>,
    /// `tokenmint.dev/issued-at` and `tokenmint.dev/service-key-uid`.
    pub issued_at: Option<i64>,
    pub service_key_uid: Option<String>,
}

impl CachedSecret {
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        let annotation = |key: &str| meta.annotations.as_ref()?.get(key).map(String::to_owned);
        CachedSecret {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            controller_uid: meta
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true))
                .map(|r| r.uid.clone()),
            role: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(ROLE_LABEL))
                .cloned(),
            token_id: annotation(TOKEN_ID_ANNOTATION),
            expires_at: annotation(EXPIRES_AT_ANNOTATION).and_then(|t| t.parse().ok()),
            issued_at: annotation(ISSUED_AT_ANNOTATION).and_then(|t| t.parse().ok()),
            service_key_uid: annotation(SERVICE_KEY_UID_ANNOTATION),
        }
    }

    pub fn is_controlled_by(&self, owner_uid: &str) -> bool {
        self.controller_uid.as_deref() == Some(owner_uid)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.role.as_deref() == Some(role)
    }

    /// The revocation of the token this Secret holds: none without a token id, nor for a
    /// token minted before tokens were bound to their ServiceKey's uid (refused anyway).
    pub fn revocation(&self, reason: &str, now: i64) -> Option<Revocation> {
        let held = (
            self.token_id.as_deref()?,
            self.issued_at,
            self.expires_at.map(|t| t.as_second()),
        );
        Some(Revocation::of_held(
            held,
            self.has_role(ROLE_SESSION),
            self.service_key_uid.clone()?,
            reason.to_owned(),
            now,
        ))
    }
}

impl From<&PartialObjectMeta<Secret>> for CachedSecret {
    fn from(meta: &PartialObjectMeta<Secret>) -> Self {
        CachedSecret::from_meta(&meta.metadata)
    }
}

impl Lookup for CachedSecret {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        "Secret".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "secrets".into()
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(self.name.as_str().into())
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        Some(self.namespace.as_str().into())
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        self.resource_version.as_deref().map(Cow::Borrowed)
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        self.uid.as_deref().map(Cow::Borrowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn owner(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "tokenmint.dev/v1alpha1".into(),
            kind: "DatasourceGrant".into(),
            name: "g".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    #[test]
    fn keeps_what_reconciles_read() {
        let meta = ObjectMeta {
            name: Some("g-token".into()),
            namespace: Some("team-a".into()),
            uid: Some("s-1".into()),
            resource_version: Some("42".into()),
            owner_references: Some(vec![owner("other", false), owner("g-1", true)]),
            labels: Some(BTreeMap::from([(ROLE_LABEL.into(), "token".into())])),
            annotations: Some(BTreeMap::from([
                (TOKEN_ID_ANNOTATION.into(), "jti-1".into()),
                ("tokenmint.dev/kid".into(), "hs256-1".into()),
                (EXPIRES_AT_ANNOTATION.into(), "2026-12-03T12:00:00Z".into()),
                (ISSUED_AT_ANNOTATION.into(), "1764759600".into()),
                (SERVICE_KEY_UID_ANNOTATION.into(), "uid-sk".into()),
                ("unrelated".into(), "dropped".into()),
            ])),
            ..ObjectMeta::default()
        };
        let cached = CachedSecret::from_meta(&meta);
        assert!(cached.is_controlled_by("g-1"));
        assert!(!cached.is_controlled_by("other"), "not the controller");
        assert!(cached.has_role("token") && !cached.has_role("service-key"));
        assert_eq!(cached.resource_version(), Some("42".into()));
        let revocation = cached.revocation("deleted", 0).unwrap();
        let exp: Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        assert_eq!(
            revocation.target,
            crate::revocation::Target::Token {
                jti: "jti-1".into(),
                expires_at: exp.as_second()
            }
        );
        assert_eq!(revocation.service_key_uid, "uid-sk");
        // No token id, or no binding: nothing to revoke; a malformed expiry is no expiry.
        let bare = CachedSecret::from_meta(&ObjectMeta {
            annotations: Some(BTreeMap::from([
                (EXPIRES_AT_ANNOTATION.into(), "soon".into()),
                (TOKEN_ID_ANNOTATION.into(), "jti-2".into()),
            ])),
            ..ObjectMeta::default()
        });
        assert!(bare.revocation("deleted", 0).is_none() && bare.expires_at.is_none());
    }
}

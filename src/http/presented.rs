//! Tokens presented back to tokenmint (a user access token for a data source token, a session
//! token to refresh, a user-token to describe, any token to introspect or revoke): verified
//! with the keyring, recognised by kind, checked against the revocation denylist, and resolved
//! to the ServiceKey they are bound to. A token carries exactly the authority of that key, as
//! it is now: a deleted ServiceKey or a replaced key voids it.

use crate::key_store::{KeyEntry, KeyIndex};
use crate::keyring::{Expect, Keyring, VerifyError};
use crate::revocation::Denylist;
use crate::token::claims::{ACCESS_TYPE, Binding, GUEST_TYPE, SESSION_TYPE};
use serde_json::Value;
use std::sync::Arc;

/// The kinds of token tokenmint mints, as introspection names them (`token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Access,
    Datasource,
    Guest,
    Session,
    UserToken,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Access => "access",
            Kind::Datasource => "datasource",
            Kind::Guest => "guest",
            Kind::Session => "session",
            Kind::UserToken => "user-token",
        }
    }

    /// Whether tokens of this kind carry the key fingerprint (they are presented back).
    pub fn is_bound(self) -> bool {
        matches!(self, Kind::Access | Kind::Session | Kind::UserToken)
    }

    /// The kind of a verified claim set, by its layout.
    pub fn of(claims: &Value) -> Option<Kind> {
        match claims.get("type").and_then(Value::as_str) {
            Some(ACCESS_TYPE) => {
                let identity = claims.get("identity")?.as_object()?;
                Some(if identity.contains_key("source_role") {
                    Kind::Datasource
                } else {
                    Kind::Access
                })
            }
            Some(GUEST_TYPE) => Some(Kind::Guest),
            Some(SESSION_TYPE) => Some(Kind::Session),
            None if claims.get("user").is_some() && claims.get("database").is_some() => {
                Some(Kind::UserToken)
            }
            _ => None,
        }
    }
}

/// A verified token of tokenmint's.
#[derive(Debug, Clone)]
pub struct Presented {
    pub kind: Kind,
    pub claims: Value,
    pub jti: String,
    /// `namespace/name` of the ServiceKey it was issued with.
    pub service_key: String,
    /// The key fingerprint, for the kinds that carry one.
    pub key_fingerprint: Option<String>,
}

impl Presented {
    /// The namespace of its ServiceKey: the tenant the token belongs to.
    pub fn namespace(&self) -> &str {
        self.service_key
            .split_once('/')
            .map_or("", |(namespace, _)| namespace)
    }

    /// The ServiceKey entry this token is honoured with: the ServiceKey it names, still with
    /// the key it was minted from (for the kinds that carry the key's fingerprint).
    pub fn bound_entry(&self, index: &KeyIndex) -> Option<Arc<KeyEntry>> {
        match &self.key_fingerprint {
            Some(fingerprint) => index.bound(&Binding {
                service_key: self.service_key.clone(),
                key_fingerprint: fingerprint.clone(),
            }),
            None => index.by_reference(&self.service_key),
        }
    }

    /// Whether it was minted with `entry`'s key (by name, and by key material where known).
    pub fn minted_with(&self, entry: &KeyEntry) -> bool {
        self.service_key == entry.reference()
            && self
                .key_fingerprint
                .as_deref()
                .is_none_or(|f| f == entry.fingerprint)
    }

    /// The `sub` introspection reports: the principal id (the user name for a user-token).
    pub fn subject(&self) -> Option<String> {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        match self.kind {
            Kind::Access | Kind::Datasource => text(self.claims.pointer("/identity/id")?),
            Kind::Guest | Kind::Session => text(self.claims.get("sub")?),
            Kind::UserToken => text(self.claims.get("user")?),
        }
    }
}

/// Why a presented token is refused. The message is safe to return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(#[from] VerifyError),
    #[error("the token was not minted by tokenmint")]
    Unknown,
    #[error("the token has been revoked")]
    Revoked,
}

/// How strictly expiry is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// With the usual clock-skew leeway.
    Leeway,
    /// Expired the moment `exp` passes (a session refresh).
    Strict,
}

/// Verifies `token` (signature, issuer, expiry), recognises its kind and refuses a revoked one.
pub fn verify(
    token: &str,
    keyring: &Keyring,
    issuer: &str,
    denylist: &Denylist,
    expiry: Expiry,
) -> Result<Presented, Refusal> {
    let expect = Expect {
        issuer,
        // Guest tokens may never expire; every other kind is checked for `exp` below.
        require_exp: false,
    };
    let claims: Value = match expiry {
        Expiry::Leeway => keyring.verify(token, expect)?,
        Expiry::Strict => keyring.verify_unexpired(token, expect)?,
    };
    let kind = Kind::of(&claims).ok_or(Refusal::Unknown)?;
    if kind != Kind::Guest && claims.get("exp").is_none() {
        return Err(VerifyError::MissingClaim("exp".into()).into());
    }
    let text = |key: &str| claims.get(key).and_then(Value::as_str).map(str::to_owned);
    let (Some(jti), Some(service_key)) = (text("jti"), text("service_key")) else {
        // Minted before tokens were bound, or not ours: not honoured.
        return Err(Refusal::Unknown);
    };
    let key_fingerprint = text("key_fingerprint");
    if kind.is_bound() && key_fingerprint.is_none() {
        return Err(Refusal::Unknown);
    }
    if denylist.is_revoked(&jti) {
        return Err(Refusal::Revoked);
    }
    Ok(Presented {
        kind,
        claims,
        jti,
        service_key,
        key_fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_are_told_apart_by_layout() {
        let cases = [
            (
                json!({"type": "access", "identity": {"id": 1}}),
                Some(Kind::Access),
            ),
            (
                json!({"type": "access", "identity": {"id": 1, "source_role": {}}}),
                Some(Kind::Datasource),
            ),
            (json!({"type": "guest"}), Some(Kind::Guest)),
            (json!({"type": "session"}), Some(Kind::Session)),
            (json!({"user": "u", "database": "d"}), Some(Kind::UserToken)),
            (json!({"type": "access"}), None),
            (json!({"type": "other"}), None),
            (json!({}), None),
        ];
        for (claims, kind) in cases {
            assert_eq!(Kind::of(&claims), kind, "{claims}");
        }
    }
}

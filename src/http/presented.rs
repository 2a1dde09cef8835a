//! Tokens presented back to tokenmint (a user access token for a data source token, a session
//! token to refresh, a user-token to describe, any token to introspect or revoke): verified
//! with the keyring, recognised by kind, checked against the revocation denylist, and resolved
//! to the ServiceKey they are bound to. A token carries exactly the authority of that key, as
//! it is now: a deleted (or deleted and re-created) ServiceKey or a replaced key voids it.

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
    /// The ServiceKey it was issued with: `namespace/name`, uid and key fingerprint.
    pub binding: Binding,
}

impl Presented {
    /// The namespace of its ServiceKey: the tenant the token belongs to.
    pub fn namespace(&self) -> &str {
        self.binding
            .service_key
            .split_once('/')
            .map_or("", |(namespace, _)| namespace)
    }

    /// `namespace/name` of its ServiceKey.
    pub fn service_key(&self) -> &str {
        &self.binding.service_key
    }

    /// The ServiceKey entry this token is honoured with: the ServiceKey it names, still the
    /// same object with the key it was minted from.
    pub fn bound_entry(&self, index: &KeyIndex) -> Option<Arc<KeyEntry>> {
        index.bound(&self.binding)
    }

    /// Whether it was minted with `entry`'s key (the same ServiceKey object, the same key).
    pub fn minted_with(&self, entry: &KeyEntry) -> bool {
        entry.binds(&self.binding)
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
    let (Some(jti), Some(service_key), Some(service_key_uid), Some(key_fingerprint)) = (
        text("jti"),
        text("service_key"),
        text("service_key_uid"),
        text("key_fingerprint"),
    ) else {
        // Minted before every token was bound to its ServiceKey's uid and key, or not ours:
        // not honoured.
        return Err(Refusal::Unknown);
    };
    // A session without its family (`sid`) could not be revoked with it.
    if kind == Kind::Session && text("sid").is_none() {
        return Err(Refusal::Unknown);
    }
    let presented = Presented {
        kind,
        jti,
        binding: Binding {
            service_key,
            service_key_uid,
            key_fingerprint,
        },
        claims,
    };
    if denylist.denies(&presented.claims).is_some() {
        return Err(Refusal::Revoked);
    }
    Ok(presented)
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

//! Revocation: what every route that accepts a token refuses, on every replica.
//!
//! Three kinds of record, none per ServiceKey change (a replaced key or a re-created
//! ServiceKey voids its tokens through their binding, see [`crate::token::claims::Binding`]):
//! - a token, by `jti`, until it would have expired;
//! - a session family, by `sid`: revoking a session token revokes the sessions refreshed from
//!   it and their refreshes (RFC 7009 §2.1), until the last of them could have expired;
//! - a marker per ServiceKey: its never-expiring guest tokens issued at or before that second
//!   are revoked. Such tokens would otherwise pin an entry for ever; revoking one revokes every
//!   never-expiring guest token of the same ServiceKey issued up to the same second, and
//!   whoever holds one (the operator's Secrets, the agent's files) mints it again.
//!
//! Who asks matters ([`Origin`]): a caller (`POST /oauth/revoke`) is held to a quota of live
//! entries per ServiceKey (`--max-revocations-per-service-key`, 429 past it) and to this
//! replica's capacity (`--max-revocations`, 503 past it), so that no tenant can exhaust the
//! list for the others; the system (a deleted resource, a withdrawn permission, the
//! `tokenmint.dev/revoke` annotation) is never refused for room, and no replica ever drops an
//! entry it learns from storage — on a watch event, a relist or at start alike.
//!
//! Storage ([`store`]): in a cluster, ConfigMaps in the release namespace, bucketed by expiry
//! day (up to [`store::BUCKET_ENTRIES`] entries each, one data key per entry, added with a
//! merge patch so several writers never conflict) and deleted whole by the leader once their
//! day has passed; markers in a few sharded ConfigMaps. Every replica follows them with one
//! watch into its [`Denylist`]. With `--manifests`, one file of the state directory
//! ([`DenylistFile`]).

mod denylist;
mod entries;
mod persisted;
pub mod store;
mod sweep;

pub use denylist::{Denied, Denylist, Snapshot};
pub use entries::{Slot, id_bits};
pub use persisted::DenylistFile;
pub use store::{ROLE_REVOCATION, follow, load, selector};
pub use sweep::sweep;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Slack on expiry before an entry is dropped (the verifiers' clock-skew leeway and then some).
pub const EXPIRY_SLACK_SECS: i64 = crate::keyring::LEEWAY_SECS as i64 + 30;

/// How often entries that deny nothing any more are dropped (and the leader deletes expired
/// buckets).
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Who asks for a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `POST /oauth/revoke`: held to its ServiceKey's quota and the replica's capacity.
    Caller,
    /// tokenmint itself (deletion, withdrawn permission, the revoke annotation): never refused
    /// for room.
    System,
}

/// What a revocation denies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One token until it expires (Unix seconds).
    Token { jti: String, expires_at: i64 },
    /// Every session of the family `sid` until `until`.
    Family { sid: String, until: i64 },
    /// Every never-expiring guest token of the ServiceKey issued at or before `issued_at`.
    NeverExpiring { issued_at: i64 },
}

impl Target {
    /// The entry it makes, if any (a marker is none).
    pub fn slot(&self) -> Option<Slot> {
        match self {
            Target::Token { jti, .. } => Some(Slot::Token(id_bits(jti))),
            Target::Family { sid, .. } => Some(Slot::Family(id_bits(sid))),
            Target::NeverExpiring { .. } => None,
        }
    }

    /// The second that bounds it: the token's expiry, the family's end, the marker.
    pub fn at(&self) -> i64 {
        match self {
            Target::Token { expires_at, .. } => *expires_at,
            Target::Family { until, .. } => *until,
            Target::NeverExpiring { issued_at } => *issued_at,
        }
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub target: Target,
    /// The uid of the ServiceKey the revoked token is bound to.
    pub service_key_uid: String,
    pub origin: Origin,
    /// Who revoked it and why, for the log (audit); not stored.
    pub reason: String,
}

impl Revocation {
    /// The revocation of a token of ours, from its claims (verified, or our own): a session
    /// revokes its family until the last member issued so far could expire — `session_ttl`
    /// after now when the ServiceKey's session lifetime is known, and never before this
    /// token's own lifetime after now; a guest token without `exp` raises its ServiceKey's
    /// marker; any other token is revoked until its `exp`. `None` for a token not bound to a
    /// ServiceKey (nothing honours it anyway).
    pub fn of_claims(
        claims: &Value,
        origin: Origin,
        reason: String,
        session_ttl: Option<Duration>,
        now: i64,
    ) -> Option<Self> {
        let text = |claim: &str| claims.get(claim).and_then(Value::as_str);
        let int = |claim: &str| claims.get(claim).and_then(Value::as_i64);
        let service_key_uid = text("service_key_uid")?.to_owned();
        let (iat, exp) = (int("iat")?, int("exp"));
        let target = match (text("sid"), exp) {
            (Some(sid), Some(exp)) => {
                let lifetime = (exp - iat).max(0);
                let ttl = session_ttl.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(0));
                Target::Family {
                    sid: sid.to_owned(),
                    until: now.saturating_add(lifetime.max(ttl)),
                }
            }
            (_, None) => Target::NeverExpiring { issued_at: iat },
            (None, Some(exp)) => Target::Token {
                jti: text("jti")?.to_owned(),
                expires_at: exp,
            },
        };
        Some(Revocation {
            target,
            service_key_uid,
            origin,
            reason,
        })
    }

    /// The system's revocation of a token it holds: `jti`, its times as far as known, whether
    /// it is a session (whose family it starts: `sid` = `jti`), and its ServiceKey's uid. A
    /// never-expiring token whose issue time is unknown raises the marker to `now`.
    pub fn of_held(
        (jti, issued_at, expires_at): (&str, Option<i64>, Option<i64>),
        session: bool,
        service_key_uid: String,
        reason: String,
        now: i64,
    ) -> Self {
        let target = match (session, expires_at) {
            (true, exp) => Target::Family {
                sid: jti.to_owned(),
                until: match (issued_at, exp) {
                    (Some(iat), Some(exp)) => now.saturating_add((exp - iat).max(0)),
                    (_, exp) => exp.unwrap_or(now).max(now),
                },
            },
            (false, Some(exp)) => Target::Token {
                jti: jti.to_owned(),
                expires_at: exp,
            },
            (false, None) => Target::NeverExpiring {
                issued_at: issued_at.unwrap_or(now),
            },
        };
        Revocation {
            target,
            service_key_uid,
            origin: Origin::System,
            reason,
        }
    }

    /// Whether there is nothing left to deny at `now` (the token expired).
    pub fn is_moot(&self, now: i64) -> bool {
        self.target.slot().is_some() && self.target.at() + EXPIRY_SLACK_SECS < now
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("cannot record the revocation: {0}")]
    Kube(#[from] kube::Error),
    #[error(
        "this ServiceKey has {quota} live revocations, its quota (--max-revocations-per-service-key); retry once one has expired, in {retry_after} s"
    )]
    Quota { quota: usize, retry_after: u64 },
    #[error(
        "the revocation denylist of this replica is full ({capacity} entries, --max-revocations); retry later"
    )]
    Full { capacity: usize },
    #[error("cannot record the revocation in {}: {source}", path.display())]
    Persist {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Where revocations are recorded. (A handful exist per process: their size does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Default)]
pub enum Revoker {
    /// Revocations are dropped (tests of paths that do not exercise them).
    #[default]
    Disabled,
    /// In memory only (tests).
    Memory(Arc<Denylist>),
    /// In memory and in a file that outlives the process (`serve --manifests`).
    File {
        denylist: Arc<Denylist>,
        file: Arc<DenylistFile>,
    },
    /// ConfigMaps in the release namespace; `denylist` (the replica's own, following them)
    /// holds the quotas and learns at once, before its watch brings the change back.
    Kube {
        api: Api<ConfigMap>,
        denylist: Arc<Denylist>,
    },
}

impl Revoker {
    pub fn disabled() -> Self {
        Revoker::Disabled
    }

    /// The denylist this revoker records into, if any.
    pub fn denylist(&self) -> Option<&Arc<Denylist>> {
        match self {
            Revoker::Disabled => None,
            Revoker::Memory(denylist)
            | Revoker::File { denylist, .. }
            | Revoker::Kube { denylist, .. } => Some(denylist),
        }
    }

    /// Records `revocation`. Idempotent: revoking a revoked token succeeds. A caller's is
    /// refused past its quota or the capacity; the system's only fail when storage does.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), RevocationError> {
        let now = jiff::Timestamp::now().as_second();
        let Some(denylist) = self.denylist() else {
            return Ok(());
        };
        if revocation.is_moot(now) || !denylist.admit(revocation, now)? {
            return Ok(());
        }
        match self {
            Revoker::Disabled => return Ok(()),
            Revoker::Memory(denylist) => denylist.record(revocation),
            Revoker::File { denylist, file } => {
                denylist.record(revocation);
                file.save(denylist).await?;
            }
            Revoker::Kube { api, denylist } => store::record(api, denylist, revocation).await?,
        }
        tracing::info!(
            target = ?revocation.target,
            service_key_uid = %revocation.service_key_uid,
            origin = ?revocation.origin,
            reason = %revocation.reason,
            "revoked"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revocations_follow_the_kind_of_token() {
        let now = 10_000;
        let of = |claims: Value| {
            Revocation::of_claims(
                &claims,
                Origin::Caller,
                "t".into(),
                Some(Duration::from_secs(7_200)),
                now,
            )
            .map(|r| r.target)
        };
        assert_eq!(
            of(json!({"jti": "j", "iat": 1, "exp": 20_000, "service_key_uid": "u"})),
            Some(Target::Token {
                jti: "j".into(),
                expires_at: 20_000
            })
        );
        // A session: its family, until the longest a member could still live.
        assert_eq!(
            of(
                json!({"jti": "j", "sid": "s", "iat": 9_000, "exp": 12_600, "service_key_uid": "u"})
            ),
            Some(Target::Family {
                sid: "s".into(),
                until: now + 7_200
            })
        );
        assert_eq!(
            of(json!({"jti": "j", "sid": "s", "iat": 0, "exp": 86_400, "service_key_uid": "u"})),
            Some(Target::Family {
                sid: "s".into(),
                until: now + 86_400
            })
        );
        // A guest token that never expires: the marker, at its iat.
        assert_eq!(
            of(json!({"jti": "j", "iat": 9_999, "service_key_uid": "u"})),
            Some(Target::NeverExpiring { issued_at: 9_999 })
        );
        // Unbound: nothing to revoke.
        assert_eq!(of(json!({"jti": "j", "iat": 1, "exp": 2})), None);
    }
}

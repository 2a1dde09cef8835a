//! Keep or re-mint: the decision every token store makes, the operator's Secrets and the
//! cluster-less agent's files alike.
//!
//! A token in place is kept only when all of this holds; anything else re-mints:
//! - the record beside it (Secret annotations, or the agent's metadata file) names the same
//!   inputs ([`Record::spec_hash`]) and the same token ([`Record::token_id`], `expires-at`);
//! - the token verifies with the keyring (signature, issuer, expiry) and its claims equal those
//!   a fresh mint would carry, times and jti aside, with the same lifetime — so a hand-edited or
//!   swapped token is replaced ([`inspect`]);
//! - its `kid` is the active key;
//! - it is not due: now < renew time ([`Schedule`], from the token's own iat/exp).

use super::renew::Schedule;
use crate::keyring::{Expect, Keyring, VerifyError};
use jiff::Timestamp;
use serde_json::Value;
use std::time::Duration;

/// What is known of a token whose text was verified: enough to decide later, without the text,
/// as long as the store says it has not changed since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub jti: String,
    pub kid: String,
    pub issued_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// What the store records beside the token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    pub spec_hash: Option<&'a str>,
    pub token_id: Option<&'a str>,
    /// The `expires-at` value (RFC 3339, seconds), absent for a token that never expires.
    pub expires_at: Option<&'a str>,
}

/// How the token of a resource must be renewed.
#[derive(Debug, Clone, Copy)]
pub struct Renewal<'a> {
    pub renew_before: Option<Duration>,
    /// Seed of the renew-time jitter (the resource's uid, or a stable name without one).
    pub jitter_seed: &'a str,
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
    pub fn new(
        jti: String,
        issued_at: Timestamp,
        expires_at: Option<Timestamp>,
        renewal: Renewal,
    ) -> Self {
        let mut schedule = Schedule::new(
            issued_at,
            expires_at,
            renewal.renew_before,
            renewal.jitter_seed,
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
    /// Revocation was requested (`tokenmint.dev/revoke`).
    Revoked,
    /// A fresh token was requested (`tokenmint.dev/renew`); the old one is not revoked.
    Renewed,
    /// The token in place was revoked (a never-expiring guest token, by its ServiceKey's
    /// marker).
    Denylisted,
}

impl MintReason {
    /// A short stable name, for Event actions and log fields.
    pub fn as_str(&self) -> &'static str {
        match self {
            MintReason::Missing => "Missing",
            MintReason::SpecChanged => "SpecChanged",
            MintReason::Due => "Due",
            MintReason::KeyRetired => "KeyRetired",
            MintReason::Expired => "Expired",
            MintReason::Edited(_) => "Edited",
            MintReason::Revoked => "Revoked",
            MintReason::Renewed => "Renewed",
            MintReason::Denylisted => "Denylisted",
        }
    }
}

impl std::fmt::Display for MintReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MintReason::Missing => f.write_str("there was no token"),
            MintReason::SpecChanged => f.write_str("the spec changed"),
            MintReason::Due => f.write_str("the token was due for renewal"),
            MintReason::KeyRetired => f.write_str("its signing key was retired"),
            MintReason::Expired => f.write_str("the token had expired"),
            MintReason::Edited(what) => write!(f, "the stored token was edited ({what})"),
            MintReason::Revoked => f.write_str("its revocation was requested"),
            MintReason::Renewed => f.write_str("a renewal was requested"),
            MintReason::Denylisted => f.write_str(
                "the token was revoked (never-expiring guest tokens of a ServiceKey are revoked up to the second of the one revoked)",
            ),
        }
    }
}

fn edited(what: &str) -> MintReason {
    MintReason::Edited(what.to_owned())
}

/// Splits claims into their time-independent part and (iat, exp, jti). A session's `sid` is
/// its first `jti`: as particular to one token as the `jti`.
fn split_claims(mut claims: Value) -> Option<(Value, i64, Option<i64>, String)> {
    let map = claims.as_object_mut()?;
    let iat = map.remove("iat")?.as_i64()?;
    map.remove("nbf");
    map.remove("sid");
    let jti = map.remove("jti")?.as_str()?.to_owned();
    let exp = match map.remove("exp") {
        Some(v) => Some(v.as_i64()?),
        None => None,
    };
    Some((claims, iat, exp, jti))
}

/// Verifies the token in place and compares its claims with `reference`, a token freshly minted
/// for the same inputs. Verification only: whether it is still current is [`judge`]'s call.
pub fn inspect(
    token: &str,
    ring: &Keyring,
    expect: Expect,
    reference: &str,
) -> Result<Held, MintReason> {
    let claims: Value = match ring.verify(token, expect) {
        Ok(claims) => claims,
        Err(VerifyError::Expired) => return Err(MintReason::Expired),
        // A token signed by a key the keyring no longer has.
        Err(VerifyError::UnknownKey) => return Err(MintReason::KeyRetired),
        Err(e) => return Err(edited(&e.to_string())),
    };
    let kid = jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.kid)
        .ok_or_else(|| edited("no kid"))?;
    let (Some((have, iat, exp, jti)), Some((want, want_iat, want_exp, _))) = (
        split_claims(claims),
        super::claims::unverified(reference).and_then(split_claims),
    ) else {
        return Err(edited("claims"));
    };
    if have != want || exp.map(|e| e - iat) != want_exp.map(|e| e - want_iat) {
        return Err(MintReason::SpecChanged);
    }
    Ok(Held {
        jti,
        kid,
        issued_at: ts(iat),
        expires_at: exp.map(ts),
    })
}

/// Decides whether the verified token `held`, stored with `record`, can stay for a resource
/// whose inputs hash to `spec_hash`.
pub fn judge(
    held: &Held,
    record: Record,
    spec_hash: &str,
    ring: &Keyring,
    renewal: Renewal,
    now: Timestamp,
) -> Result<TokenInfo, MintReason> {
    if record.spec_hash != Some(spec_hash) {
        return Err(MintReason::SpecChanged);
    }
    if record.token_id != Some(held.jti.as_str())
        || record.expires_at != held.expires_at.map(rfc3339).as_deref()
    {
        return Err(edited("token id or expires-at"));
    }
    if !ring.is_active(&held.kid) {
        return Err(MintReason::KeyRetired);
    }
    if held.expires_at.is_some_and(|exp| exp <= now) {
        return Err(MintReason::Expired);
    }
    let info = TokenInfo::new(held.jti.clone(), held.issued_at, held.expires_at, renewal);
    if info.schedule.is_due(now) {
        return Err(MintReason::Due);
    }
    Ok(info)
}

/// RFC 3339 UTC with seconds precision, e.g. `2026-11-22T12:00:00Z`.
pub fn rfc3339(t: Timestamp) -> String {
    floor_second(t).to_string()
}

fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Unix seconds to a timestamp, saturating at jiff's range.
pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap_or(if secs < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Algorithm;
    use serde_json::json;

    const ISSUER: &str = "tm";

    fn expect() -> Expect<'static> {
        Expect {
            issuer: ISSUER,
            require_exp: true,
        }
    }

    fn token(ring: &Keyring, now: Timestamp, lifetime: i64, ds: &str) -> String {
        let iat = now.as_second();
        ring.sign(
            &json!({"iat": iat, "nbf": iat, "jti": uuid::Uuid::new_v4().to_string(),
            "exp": iat + lifetime, "ds": ds, "iss": ISSUER}),
        )
        .unwrap()
    }

    fn renewal() -> Renewal<'static> {
        Renewal {
            renew_before: Some(Duration::from_secs(600)),
            jitter_seed: "uid",
        }
    }

    #[test]
    fn a_matching_token_is_kept_until_due() {
        let now = Timestamp::now();
        let ring = Keyring::generate(Algorithm::HS256, now).unwrap();
        let held_token = token(&ring, now, 3_600, "a");
        let held = inspect(&held_token, &ring, expect(), &token(&ring, now, 3_600, "a")).unwrap();
        let expires = rfc3339(held.expires_at.unwrap());
        let record = Record {
            spec_hash: Some("h"),
            token_id: Some(&held.jti),
            expires_at: Some(&expires),
        };
        let info = judge(&held, record, "h", &ring, renewal(), now).unwrap();
        let renew_at = info.schedule.renew_at.unwrap();
        assert!(renew_at <= held.expires_at.unwrap() - jiff::SignedDuration::from_secs(600));
        assert_eq!(
            judge(&held, record, "h", &ring, renewal(), renew_at),
            Err(MintReason::Due)
        );
        assert_eq!(
            judge(&held, record, "other", &ring, renewal(), now),
            Err(MintReason::SpecChanged)
        );
        let wrong_id = Record {
            token_id: Some("x"),
            ..record
        };
        assert!(matches!(
            judge(&held, wrong_id, "h", &ring, renewal(), now),
            Err(MintReason::Edited(_))
        ));
    }

    #[test]
    fn swapped_expired_and_retired_tokens_are_replaced() {
        let now = Timestamp::now();
        let mut ring = Keyring::generate(Algorithm::HS256, now).unwrap();
        let reference = token(&ring, now, 3_600, "a");
        // Another resource's token: claims differ.
        assert_eq!(
            inspect(&token(&ring, now, 3_600, "b"), &ring, expect(), &reference),
            Err(MintReason::SpecChanged)
        );
        // Same claims, other lifetime.
        assert_eq!(
            inspect(&token(&ring, now, 60, "a"), &ring, expect(), &reference),
            Err(MintReason::SpecChanged)
        );
        let old = now - jiff::SignedDuration::from_hours(3);
        assert_eq!(
            inspect(&token(&ring, old, 3_600, "a"), &ring, expect(), &reference),
            Err(MintReason::Expired)
        );
        assert!(matches!(
            inspect("not.a.token", &ring, expect(), &reference),
            Err(MintReason::Edited(_))
        ));
        let held = inspect(&token(&ring, now, 3_600, "a"), &ring, expect(), &reference).unwrap();
        ring.rotate(Algorithm::HS256, now).unwrap();
        let expires = rfc3339(held.expires_at.unwrap());
        let record = Record {
            spec_hash: Some("h"),
            token_id: Some(&held.jti),
            expires_at: Some(&expires),
        };
        assert_eq!(
            judge(&held, record, "h", &ring, renewal(), now),
            Err(MintReason::KeyRetired)
        );
    }
}

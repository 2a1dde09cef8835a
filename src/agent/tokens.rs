//! Keeping one token in its tree: the operator's keep-or-re-mint decision over files, the
//! write, and what a failure means (a retry, a metric, a readiness problem).

use super::files::{self, Found, Meta};
use super::plan::Claim;
use super::trees::TreeName;
use super::{Agent, EXPIRES_AT, Pass, TOKEN, note, when};
use crate::desired::{Desired, Failure};
use crate::http::metrics::FileError;
use crate::keyring::{Expect, Keyring};
use crate::revocation::Revocation;
use crate::token::assess::{self, Held, MintReason, Record, Renewal, TokenInfo, rfc3339};
use crate::token::mint::Minter;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::io;

/// The metric reason of a failed file operation.
pub fn classify(error: &io::Error) -> FileError {
    match error.kind() {
        io::ErrorKind::ReadOnlyFilesystem => FileError::read_only,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => FileError::no_space,
        io::ErrorKind::PermissionDenied => FileError::permission,
        // A directory in the way appeared between the check and the write.
        io::ErrorKind::AlreadyExists => FileError::conflict,
        _ => FileError::other,
    }
}

impl Agent {
    /// Keeps the token of one claim in its tree, `found` being what is there now.
    pub(super) async fn keep_token(
        &self,
        claim: &Claim<'_>,
        tree: &TreeName,
        found: io::Result<Found>,
        desired: Result<Desired<'_>, Failure>,
        pass: &mut Pass,
    ) {
        let owner = &claim.owner;
        let dir = self.trees.path(tree);
        let found = match found {
            Ok(Found::Foreign(why)) => {
                // Taken over since the plan was made, or still held by a departed owner.
                let failure = Failure::secret_conflict(&claim.secret, claim.kind);
                failure!(self, pass, owner, owner = %owner, reason = failure.reason.as_str(), message = %failure.message, detail = %why, "no token");
                pass.error(owner, FileError::conflict);
                return;
            }
            Ok(found) => found,
            Err(e) => {
                failure!(self, pass, owner, owner = %owner, dir = %dir.display(), error = %e, "cannot read token files; retrying");
                pass.error(owner, classify(&e));
                return;
            }
        };
        let desired = match desired {
            Ok(desired) => desired,
            Err(failure) => {
                failure!(self, pass, owner, owner = %owner, reason = failure.reason.as_str(), message = %failure.message, "no token");
                if let Found::Ours(current) = &found {
                    if failure.reason.withdraws_permission() {
                        let reason = format!("{owner}: permission withdrawn");
                        if let Some(revocation) = self.revocation_of(current, reason) {
                            self.revoke(owner, &revocation).await;
                        }
                    }
                    if let Err(e) = self.trees.remove(tree) {
                        tracing::error!(dir = %dir.display(), error = %e, "cannot remove token files");
                    }
                }
                pass.failed.push(owner.clone());
                return;
            }
        };
        let now = self.clock.now();
        let renewal = Renewal {
            renew_before: desired.renew_before,
            jitter_seed: &claim.seed,
        };
        let minter = Minter {
            keyring: &self.keyring,
            issuer: &self.issuer,
        };
        let candidate = match desired.mint(&minter, now) {
            Ok(candidate) => candidate,
            Err(e) => {
                failure!(self, pass, owner, owner = %owner, error = %e, "cannot mint");
                pass.failed.push(owner.clone());
                return;
            }
        };
        let verdict = match &found {
            Found::Ours(current) => judge(
                current,
                &desired,
                &self.keyring,
                &self.issuer,
                &candidate.token,
                renewal,
                now,
            ),
            _ => Err(MintReason::Missing),
        };
        let reason = match verdict {
            Ok(info) => {
                pass.kept += 1;
                note(&mut pass.next_renewal, info.schedule.renew_at);
                note(&mut pass.earliest_expiry, info.expires_at);
                return;
            }
            Err(reason) => reason,
        };
        let mut content =
            BTreeMap::from([(TOKEN.to_owned(), candidate.token.clone().into_bytes())]);
        if let Some(exp) = candidate.expires_at {
            content.insert(EXPIRES_AT.to_owned(), rfc3339(exp).into_bytes());
        }
        let meta = Meta {
            owner: owner.clone(),
            spec_hash: Some(desired.spec_hash.clone()),
            token_id: Some(candidate.jti.clone()),
            kid: Some(candidate.kid.clone()),
        };
        if let Err(e) = self.trees.write(tree, &content, &meta) {
            failure!(self, pass, owner, owner = %owner, dir = %dir.display(), error = %e, "cannot write token files; retrying");
            pass.error(owner, classify(&e));
            // The consumer holds no token, or one past its renew time: not ready.
            if matches!(
                reason,
                MintReason::Missing | MintReason::Due | MintReason::Expired
            ) {
                pass.overdue
                    .push(format!("{owner} (writes failing, retried)"));
            }
            return;
        }
        let info = TokenInfo::new(
            candidate.jti.clone(),
            candidate.issued_at,
            candidate.expires_at,
            renewal,
        );
        tracing::info!(
            kind = claim.kind,
            object = %owner,
            file = %dir.join(TOKEN).display(),
            expires = %when(info.expires_at),
            renew_at = %when(info.schedule.renew_at),
            token_id = %info.jti,
            reason = reason.as_str(),
            "{}",
            if matches!(found, Found::Ours(_)) { "rotated token" } else { "minted token" }
        );
        note(&mut pass.next_renewal, info.schedule.renew_at);
        note(&mut pass.earliest_expiry, info.expires_at);
        pass.minted.push(owner.clone());
    }

    async fn revoke(&self, owner: &str, revocation: &Revocation) {
        if let Err(e) = self.revoker.revoke(revocation).await {
            tracing::error!(owner = %owner, error = %e, "cannot revoke");
        }
    }
}

/// The operator's decision, over files: the record beside the token, then the token itself.
fn judge(
    current: &files::Current,
    desired: &Desired,
    ring: &Keyring,
    issuer: &str,
    reference: &str,
    renewal: Renewal,
    now: Timestamp,
) -> Result<TokenInfo, MintReason> {
    let token = current
        .files
        .get(TOKEN)
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or_else(|| MintReason::Edited("no token".into()))?;
    let expect = Expect {
        issuer,
        require_exp: desired.require_exp,
    };
    let held: Held = assess::inspect(token, ring, expect, reference)?;
    let expires_at = current
        .files
        .get(EXPIRES_AT)
        .and_then(|b| std::str::from_utf8(b).ok());
    let record = Record {
        spec_hash: current.meta.spec_hash.as_deref(),
        token_id: current.meta.token_id.as_deref(),
        expires_at,
    };
    assess::judge(&held, record, &desired.spec_hash, ring, renewal, now)
}

//! What is in place and what to do about it: the token Secret as the cache, the record of our
//! own writes or a read shows it, judged against the desired token ([`crate::token::assess`]).

use super::TokenTarget;
use crate::keyring::Expect;
use crate::labels::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, ROLE_LABEL};
use crate::reconcile::owned_secret::{
    EXPIRES_AT_KEY, RENEW_HANDLED_ANNOTATION, REVOKE_HANDLED_ANNOTATION, SPEC_HASH_ANNOTATION,
    TOKEN_ID_ANNOTATION, TOKEN_KEY, TOKEN_SECRET_TYPE, annotation, cached_version, data_str,
    fetch_secret,
};
use crate::reconcile::restart::{self, RESTARTED_FOR_ANNOTATION};
use crate::reconcile::verified::{Content, TokenRecord};
use crate::reconcile::{Context, Error, is_controlled_by, rfc3339};
use crate::token::assess::{self, Held, MintReason, Record, TokenInfo};
use crate::token::mint::{MintError, Minted, Minter};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
/// The state of the token Secret before a decision.
pub(super) enum InPlace {
    /// Not in the cache and not known: absent, or someone else's (unlabelled) Secret.
    Unknown,
    /// Read from the API server just now.
    Fetched(Box<Secret>),
    /// Known from our own write or an earlier verification, at this resourceVersion.
    Known(Box<TokenRecord>, String),
}

/// A decision about the token in place.
pub(super) enum Verdict {
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

/// Mints the desired token with the current keyring. A never-expiring guest token is issued
/// after its ServiceKey's marker, so that it is not born revoked.
pub(super) fn mint(ctx: &Context, target: &TokenTarget, now: Timestamp) -> Result<Minted, Error> {
    let now = match ctx.revoker.denylist() {
        Some(denylist) if target.desired.never_expires() => {
            denylist.issue_time(target.desired.service_key_uid(), now)
        }
        _ => now,
    };
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

/// A token that would stay, unless it is a never-expiring guest token its ServiceKey's marker
/// has revoked (`POST /oauth/revoke` of it or of a sibling issued in the same second).
fn unrevoked(
    ctx: &Context,
    target: &TokenTarget,
    held: &Held,
    judged: Result<TokenInfo, MintReason>,
) -> Result<TokenInfo, MintReason> {
    let revoked = held.expires_at.is_none()
        && target.desired.never_expires()
        && ctx.revoker.denylist().is_some_and(|denylist| {
            denylist.never_expiring_revoked(
                target.desired.service_key_uid(),
                held.issued_at.as_second(),
            )
        });
    judged.and_then(|info| {
        if revoked {
            Err(MintReason::Denylisted)
        } else {
            Ok(info)
        }
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
                target.restarts.tracked && restart::pending(restarted_for, &info.jti);
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
pub(super) fn judge_known(
    ctx: &Context,
    target: &TokenTarget,
    record: TokenRecord,
    version: String,
    now: Timestamp,
) -> Verdict {
    if let Some(reason) = target.requested(
        record.revoke_handled.as_deref(),
        record.renew_handled.as_deref(),
    ) {
        return Verdict::Mint {
            reason,
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
    let judged = unrevoked(ctx, target, &record.held, judged);
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
pub(super) fn judge_fetched(
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
    let renew_handled = annotation(meta, RENEW_HANDLED_ANNOTATION);
    if let Some(reason) = target.requested(revoke_handled, renew_handled) {
        return mint_over(reason, Some(held), Some(candidate));
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
    let judged = unrevoked(ctx, target, &held, judged);
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
                renew_handled: renew_handled.map(str::to_owned),
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
pub(super) async fn in_place(ctx: &Context, target: &TokenTarget<'_>) -> Result<InPlace, Error> {
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

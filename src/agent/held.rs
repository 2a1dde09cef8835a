//! Held objects. An object without an admitted version whose manifest is refused — or that a
//! file or document which cannot be read may declare — keeps its files exactly as they are:
//! not rotated, not retired, not revoked, as the API server keeps serving the stored object.
//! So do the tokens that cannot be minted because their ServiceKey, or its key Secret, is held.
//! Once its renew time has passed, `/readyz` names such an object: nobody renews its token.
//!
//! A held ServiceKey's generated key stays on disk but does not authenticate: the authority a
//! key carries is its ServiceKey's spec, and the only one known is refused.

use super::files::{Current, Found};
use super::plan::{self, Claim, Role};
use super::trees::TreeName;
use super::{Agent, Pass, TOKEN, note};
use crate::crd::service_key::ServiceKeySpec;
use crate::key_store::KeyIndex;
use crate::manifests::{Held, Manifests};
use crate::token::assess::ts;
use crate::token::renew::Schedule;
use jiff::Timestamp;
use kube::ResourceExt;
use std::collections::HashMap;

impl Agent {
    /// Whether `tree`, which no admitted object claims, is kept for a held object.
    pub(super) fn holds_unclaimed(
        &self,
        tree: &TreeName,
        manifests: &Manifests,
        pass: &mut Pass,
    ) -> bool {
        let Ok(Found::Ours(current)) = self.trees.read(tree) else {
            return false;
        };
        let Some(why) = plan::held(manifests, &current.meta.owner) else {
            return false;
        };
        self.hold(tree, &current, why, pass);
        true
    }

    /// Leaves the files of `current` as they are, and says so: once per object in the log,
    /// to `/readyz` when its token is past its renew time.
    pub(super) fn hold(&self, tree: &TreeName, current: &Current, why: Held, pass: &mut Pass) {
        let owner = &current.meta.owner;
        pass.held.push(owner.clone());
        let now = self.clock.now();
        let dir = self.trees.path(tree);
        let schedule = schedule(current, owner);
        let expires_at = schedule.and_then(|s| s.expires_at);
        note(&mut pass.earliest_expiry, expires_at);
        match schedule.and_then(|s| s.renew_at) {
            Some(renew_at) if renew_at <= now => {
                failure!(self, pass, owner, owner = %owner, dir = %dir.display(), renew_at = %super::when(Some(renew_at)), expires = %super::when(expires_at), reason = %why, "held token past its renew time: not renewed until its object is admitted");
                let brief = match why {
                    Held::Refused { .. } => "its manifest is refused",
                    Held::Unread(_) => "a manifest cannot be read",
                };
                pass.overdue.push(format!("{owner} (held: {brief})"));
            }
            // Wake up then, so that `/readyz` tells in time.
            renew_at => {
                note(&mut pass.next_renewal, renew_at);
                failure!(warn: self, pass, owner, owner = %owner, dir = %dir.display(), reason = %why, "held: its files stay as they are (not rotated, not removed, not revoked)");
            }
        }
    }
}

/// Why the token of `claim` can be neither minted nor retired: the ServiceKey it is minted
/// from is held, or (a session token) that ServiceKey's key Secret is.
pub(super) fn key_held<'m>(
    claim: &Claim<'_>,
    manifests: &'m Manifests,
    specs: &HashMap<(&str, &str), &ServiceKeySpec>,
    index: &KeyIndex,
) -> Option<Held<'m>> {
    let (namespace, key) = match claim.role {
        Role::Grant(grant) => (grant.namespace(), &grant.spec.service_key_ref.name),
        Role::Guest(request) => (request.namespace(), &request.spec.service_key_ref.name),
        Role::Session(key) => {
            let namespace = key.namespace().unwrap_or_default();
            let reference = format!("{namespace}/{}", key.name_any());
            return match index.by_reference(&reference) {
                Some(_) => None,
                None => manifests.held("Secret", &namespace, &key.key_secret_name()),
            };
        }
        Role::Key(_) => return None,
    };
    let namespace = namespace.unwrap_or_default();
    match specs.get(&(namespace.as_str(), key.as_str())) {
        Some(_) => None,
        None => manifests.held("ServiceKey", &namespace, key),
    }
}

/// The renewal schedule of a held token, from its own `iat` and `exp`. Its `renewBefore` is
/// in a manifest that is refused (or unread): the default, a third of the lifetime, stands in.
fn schedule(current: &Current, owner: &str) -> Option<Schedule> {
    let token = std::str::from_utf8(current.files.get(TOKEN)?).ok()?;
    let claims = crate::token::claims::unverified(token)?;
    let issued_at = ts(claims.get("iat")?.as_i64()?);
    let expires_at: Option<Timestamp> = claims.get("exp").and_then(|e| e.as_i64()).map(ts);
    Some(Schedule::new(
        issued_at,
        expires_at,
        None,
        &plan::seed(owner),
    ))
}

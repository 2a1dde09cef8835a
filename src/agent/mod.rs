//! The main job without a cluster: `serve --manifests DIR` keeps the token of every
//! DatasourceGrant and GuestTokenRequest in DIR (and each ServiceKey's session token) in files
//! under `--tokens-dir OUT`, laid out as a pod sees the token Secret mounted as a volume
//! (`OUT/<namespace>/<secretName>/token` and `expires-at`, see [`files`]), and rotated by the
//! operator's rules: [`crate::desired`] says what each token must be and
//! [`crate::token::assess`] whether the one in place can stay.
//!
//! The cluster's promises hold without it: paths come from admitted names only and stay under
//! OUT ([`trees`]); one tree per Secret name, a second claimant being a `SecretConflict`
//! ([`plan`]); private state (the keyring, unless the manifests hold one, and the revocation
//! denylist) lives in `--state-dir`, outside OUT, never where consumers mount ([`state`]). A
//! ServiceKey without a key Secret in DIR gets a key generated once
//! (`OUT/<namespace>/<secretName>/key` and `username`), which the REST routes accept.
//!
//! An object that leaves DIR (deleted or renamed, while running or while stopped) has its token
//! revoked and its files removed, as the operator does on deletion; an object whose manifest is
//! refused, with no admitted version to keep, is held instead: its files stay as they are
//! ([`held`]). Edits in DIR take effect within [`SETTLE`] through a file watch; failed writes
//! are retried with backoff ([`run`]).

/// Logs a failure of an object at error the first time, at debug while it repeats pass after
/// pass at the same place (retries every few seconds would flood the log): `agent`, `pass`,
/// the owner, then the fields and message of the event. `failure!(warn: ...)` logs at warn.
macro_rules! failure {
    (warn: $agent:expr, $pass:expr, $owner:expr, $($event:tt)+) => {
        failure!(@tracing::Level::WARN, $agent, $pass, $owner, $($event)+)
    };
    (@$level:expr, $agent:expr, $pass:expr, $owner:expr, $($event:tt)+) => {{
        let key = ($owner.to_string(), line!());
        if $agent.reported.contains(&key) {
            tracing::debug!($($event)+);
        } else {
            tracing::event!($level, $($event)+);
        }
        $pass.reported.push(key);
    }};
    ($agent:expr, $pass:expr, $owner:expr, $($event:tt)+) => {
        failure!(@tracing::Level::ERROR, $agent, $pass, $owner, $($event)+)
    };
}

pub mod dir_watch;
pub mod files;
mod held;
mod keys;
mod plan;
mod run;
pub mod state;
mod tokens;
pub mod trees;

pub use keys::keyring;
pub use run::{publish, report, run};

use crate::clock::Clock;
use crate::crd::service_key::ServiceKeySpec;
use crate::desired::{self, Desired, Failure, Reason};
use crate::http::metrics::FileError;
use crate::key_store::KeyIndex;
use crate::keyring::Keyring;
use crate::manifests::Manifests;
use crate::revocation::{Revocation, Revoker};
use crate::token::assess::rfc3339;
use files::{Current, Found};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use plan::{Claim, Role};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use trees::{TreeName, Trees};

/// How long after a change in DIR the manifests are re-read (edits come in bursts).
pub const SETTLE: Duration = Duration::from_millis(300);
const TOKEN: &str = "token";
const EXPIRES_AT: &str = "expires-at";
const KEY: &str = "key";
const USERNAME: &str = "username";

/// Where the agent keeps what it writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub manifests: PathBuf,
    pub tokens: PathBuf,
    pub state: PathBuf,
}

/// What one pass over the manifests did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub minted: Vec<String>,
    pub kept: usize,
    /// Every object left without its token or key by this pass.
    pub failed: Vec<String>,
    /// Failed file operations and conflicts, by object.
    pub errors: Vec<(String, FileError)>,
    /// What `tokenmint_token_file_errors_total` counts of them: every failed operation, and
    /// each conflict once, when it appears.
    pub counted: Vec<FileError>,
    /// Objects whose token file is past its renew time (or missing) because it could not be
    /// written, or because the object is held: `/readyz` names them.
    pub overdue: Vec<String>,
    /// Objects whose files stay as they are because they are held ([`held`]).
    pub held: Vec<String>,
    /// The earliest renew time among the tokens kept.
    pub next_renewal: Option<Timestamp>,
    /// The earliest expiry among the tokens kept.
    pub earliest_expiry: Option<Timestamp>,
    /// The failures logged, by object and place (see `failure!`).
    reported: Vec<(String, u32)>,
}

impl Pass {
    /// The kind of each object a token was minted for (`minted` holds `Kind namespace/name`).
    pub fn minted_kinds(&self) -> impl Iterator<Item = &str> {
        self.minted
            .iter()
            .map(|owner| owner.split(' ').next().unwrap_or_default())
    }

    /// Whether a file operation failed that a retry may fix (a conflict waits for a change).
    pub fn needs_retry(&self) -> bool {
        self.errors.iter().any(|(_, e)| *e != FileError::conflict)
    }

    fn error(&mut self, owner: &str, error: FileError) {
        self.errors.push((owner.to_owned(), error));
        if !self.failed.iter().any(|f| f == owner) {
            self.failed.push(owner.to_owned());
        }
    }
}

/// Keeps the token files of the objects in the manifests.
pub struct Agent {
    pub paths: Paths,
    pub issuer: String,
    pub keyring: Arc<Keyring>,
    pub clock: Clock,
    pub revoker: Revoker,
    trees: Trees,
    /// Every tree of ours on disk as far as known, so a deleted object's goes: at start what a
    /// scan finds (objects removed while stopped), then what each pass kept.
    managed: BTreeSet<TreeName>,
    /// The failures the last pass logged and the conflicts it found: repeated, they are
    /// logged at debug and not counted again.
    reported: HashSet<(String, u32)>,
    conflicts: HashSet<String>,
}

impl Agent {
    pub fn new(
        paths: Paths,
        issuer: String,
        keyring: Arc<Keyring>,
        clock: Clock,
        revoker: Revoker,
    ) -> Self {
        let trees = Trees::new(paths.tokens.clone());
        let managed = trees.scan();
        Agent {
            paths,
            issuer,
            keyring,
            clock,
            revoker,
            trees,
            managed,
            reported: HashSet::new(),
            conflicts: HashSet::new(),
        }
    }

    /// One pass: decides who keeps which tree, retires the trees of objects that are gone
    /// (revoking their tokens), keeps keys, then every token. Returns the key index the REST
    /// routes authenticate against, and what the pass did.
    pub async fn pass(&mut self, manifests: &Manifests) -> (KeyIndex, Pass) {
        let mut pass = Pass::default();
        let mut plan = plan::plan(manifests, &self.trees);
        let owners: HashSet<String> = plan
            .won
            .iter()
            .map(|(c, ..)| c.owner.clone())
            .chain(plan.refused.iter().map(|r| r.claim.owner.clone()))
            .collect();
        for refused in &plan.refused {
            let owner = &refused.claim.owner;
            let what = match refused.claim.role {
                Role::Key(_) => "no key",
                _ => "no token",
            };
            failure!(self, pass, owner, owner = %owner, reason = refused.failure.reason.as_str(), message = %refused.failure.message, detail = %refused.detail, "{what}");
            // Counted, not retried: a change in DIR or on disk resolves it (see `run`). A name
            // that cannot be a Secret's is a spec problem, not a file error.
            if refused.failure.reason == Reason::SecretConflict {
                pass.errors.push((owner.clone(), FileError::conflict));
            }
            pass.failed.push(owner.clone());
        }
        let won: BTreeSet<TreeName> = plan.won.iter().map(|(_, t, _)| t.clone()).collect();
        let mut kept = won.clone();
        for tree in self.managed.difference(&won) {
            if self.holds_unclaimed(tree, manifests, &mut pass)
                || !self.retire(tree, &owners, &mut pass).await
            {
                kept.insert(tree.clone());
            }
        }
        // A tree taken over from an object that is gone (or moved): its token goes first.
        for (claim, tree, found) in &mut plan.won {
            if let Ok(Found::Ours(current)) = found
                && current.meta.owner != claim.owner
            {
                let holder = current.meta.owner.clone();
                *found = if self.retire(tree, &owners, &mut pass).await {
                    Ok(Found::Nothing)
                } else {
                    // Retried: the token of the one before must be revoked first.
                    Err(std::io::Error::other(format!(
                        "the files of {holder} are still in place"
                    )))
                };
            }
        }
        self.managed = kept;

        let (keys, tokens): (Vec<_>, Vec<_>) = plan
            .won
            .into_iter()
            .partition(|(c, ..)| matches!(c.role, Role::Key(_)));
        let generated = self.generated_keys(keys, manifests, &mut pass);
        let secrets: Vec<&Secret> = manifests.secrets.iter().chain(&generated).collect();
        let index = KeyIndex::build(&manifests.service_keys, secrets);
        // One lookup table, not a scan of every ServiceKey per grant.
        let specs: HashMap<(&str, &str), &ServiceKeySpec> = manifests
            .service_keys
            .iter()
            .filter_map(|k| {
                let namespace = k.metadata.namespace.as_deref()?;
                Some(((namespace, k.metadata.name.as_deref()?), &k.spec))
            })
            .collect();
        for (claim, tree, found) in tokens {
            if let Ok(Found::Ours(current)) = &found
                && let Some(why) = held::key_held(&claim, manifests, &specs, &index)
            {
                self.hold(&tree, current, why, &mut pass);
                continue;
            }
            match self.desired(&claim, &specs, &index) {
                Some(desired) => {
                    self.keep_token(&claim, &tree, found, desired, &mut pass)
                        .await
                }
                // A session token whose key is gone: bound to nothing, it goes.
                None => {
                    if matches!(found, Ok(Found::Ours(_))) {
                        self.retire(&tree, &owners, &mut pass).await;
                    }
                }
            }
        }
        self.settle(&mut pass);
        (index, pass)
    }

    /// What of `pass`'s failures is new: counted (every failed operation, a conflict when it
    /// appears), and remembered for the next pass.
    fn settle(&mut self, pass: &mut Pass) {
        pass.counted = pass
            .errors
            .iter()
            .filter(|(owner, e)| *e != FileError::conflict || !self.conflicts.contains(owner))
            .map(|(_, e)| *e)
            .collect();
        self.conflicts = pass
            .errors
            .iter()
            .filter(|(_, e)| *e == FileError::conflict)
            .map(|(owner, _)| owner.clone())
            .collect();
        self.reported = pass.reported.drain(..).collect();
    }

    /// What the token of `claim` must be; `None` for a session token without a usable key
    /// (nothing to bind it to).
    fn desired<'m>(
        &self,
        claim: &Claim<'m>,
        specs: &HashMap<(&str, &str), &'m ServiceKeySpec>,
        index: &KeyIndex,
    ) -> Option<Result<Desired<'m>, Failure>> {
        let issuer = &self.issuer;
        let key_of = |namespace: &str, name: &str| specs.get(&(namespace, name)).copied();
        Some(match claim.role {
            Role::Grant(grant) => {
                let namespace = grant.namespace().unwrap_or_default();
                let key = key_of(&namespace, &grant.spec.service_key_ref.name);
                desired::datasource_grant(&namespace, &grant.spec, key, issuer)
            }
            Role::Guest(request) => {
                let namespace = request.namespace().unwrap_or_default();
                let key = key_of(&namespace, &request.spec.service_key_ref.name);
                desired::guest_token(&namespace, &request.spec, key, issuer)
            }
            Role::Session(key) => {
                let namespace = key.namespace().unwrap_or_default();
                let name = key.name_any();
                let session = key.spec.session_token.as_ref()?;
                let entry = index.by_reference(&format!("{namespace}/{name}"))?;
                desired::session_token(
                    &namespace,
                    &name,
                    &key.spec,
                    session,
                    &entry.fingerprint,
                    issuer,
                )
            }
            Role::Key(_) => return None,
        })
    }

    /// Removes a tree tokenmint no longer keeps, revoking the token it holds first, as the
    /// operator does when a resource is deleted. Returns whether the tree is gone (false: it
    /// stays, and the next pass tries again).
    async fn retire(&self, tree: &TreeName, owners: &HashSet<String>, pass: &mut Pass) -> bool {
        let path = self.trees.path(tree);
        let current = match self.trees.read(tree) {
            Ok(Found::Ours(current)) => current,
            Ok(Found::Nothing | Found::Foreign(_)) => return true,
            Err(e) => {
                let owner = format!("Secret {tree}");
                failure!(self, pass, owner, dir = %path.display(), error = %e, "cannot read token files");
                pass.error(&owner, tokens::classify(&e));
                return false;
            }
        };
        let owner = &current.meta.owner;
        let reason = if owners.contains(owner) {
            format!(
                "{owner} no longer keeps its token in Secret {}",
                tree.secret()
            )
        } else {
            format!("{owner} was deleted")
        };
        if let Some(revocation) = self.revocation_of(&current, reason)
            && let Err(e) = self.revoker.revoke(&revocation).await
        {
            failure!(self, pass, owner, owner = %owner, token_id = %revocation.jti, error = %e, "cannot revoke the token of a deleted object; its files stay until it is");
            pass.error(owner, FileError::other);
            return false;
        }
        match self.trees.remove(tree) {
            Ok(removed) => {
                if removed {
                    tracing::info!(owner = %owner, dir = %path.display(), "removed the token files of a deleted object");
                }
                true
            }
            Err(e) => {
                failure!(self, pass, owner, dir = %path.display(), error = %e, "cannot remove token files");
                pass.error(owner, tokens::classify(&e));
                false
            }
        }
    }

    /// The revocation of the token a tree holds (none for a generated key): its id, expiry and
    /// signing key, so that the entry can be dropped once the token could no longer verify.
    fn revocation_of(&self, current: &Current, reason: String) -> Option<Revocation> {
        let jti = current.meta.token_id.clone()?;
        let text = |name: &str| {
            current
                .files
                .get(name)
                .and_then(|b| std::str::from_utf8(b).ok())
        };
        let kid = current.meta.kid.clone().or_else(|| {
            jsonwebtoken::decode_header(text(TOKEN)?)
                .ok()
                .and_then(|h| h.kid)
        });
        Some(Revocation {
            jti,
            expires_at: text(EXPIRES_AT).and_then(|t| t.parse().ok()),
            kid,
            reason,
        })
    }
}

fn note(earliest: &mut Option<Timestamp>, at: Option<Timestamp>) {
    if let Some(at) = at {
        *earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
}

/// `RFC 3339` or `never`, for logs.
fn when(at: Option<Timestamp>) -> String {
    at.map_or_else(|| "never".to_owned(), rfc3339)
}

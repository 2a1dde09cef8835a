//! The main job without a cluster: `serve --manifests DIR` keeps the token of every
//! DatasourceGrant and GuestTokenRequest in DIR (and each ServiceKey's session token) in files
//! under `--tokens-dir OUT`, laid out as a pod sees the token Secret mounted as a volume
//! (`OUT/<namespace>/<secretName>/token` and `expires-at`, see [`files`]), and rotated by the
//! operator's rules: [`crate::desired`] says what each token must be and
//! [`crate::token::assess`] whether the one in place can stay.
//!
//! State that survives restarts lives in `--state-dir` (default `OUT/.tokenmint`): the keyring,
//! unless the manifests hold one, so tokens from before a restart still verify. A ServiceKey
//! without a key Secret in DIR gets a key generated once (`OUT/<namespace>/<secretName>/key` and
//! `username`, the key Secret's keys), never rewritten, which the REST routes accept.
//!
//! Edits in DIR take effect within [`SETTLE`] through a file watch; a file that fails to parse
//! keeps its last good objects, and the error names the file, the document and the problem.

pub mod dir_watch;
pub mod files;
mod keys;

pub use keys::keyring;

use crate::clock::Clock;
use crate::crd::ServiceKey;
use crate::crd::service_key::ServiceKeySpec;
use crate::desired::{self, Desired, Failure};
use crate::key_store::{KeyIndex, SharedKeyStore};
use crate::keyring::{Expect, Keyring};
use crate::manifests::{LiveManifests, Manifests};
use crate::revocation::{Revocation, Revoker};
use crate::token::assess::{self, Held, MintReason, Record, Renewal, TokenInfo, rfc3339};
use crate::token::mint::Minter;
use files::{Found, Meta};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long after a change in DIR the manifests are re-read (edits come in bursts).
pub const SETTLE: Duration = Duration::from_millis(300);
/// Longest sleep between two looks at the tokens (a safety net: renewals are scheduled).
const IDLE: Duration = Duration::from_secs(300);
const TOKEN: &str = "token";
const EXPIRES_AT: &str = "expires-at";
const KEY: &str = "key";
const USERNAME: &str = "username";
const KEYRING_FILE: &str = "keyring.json";

/// Where the agent keeps what it writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub manifests: PathBuf,
    pub tokens: PathBuf,
    pub state: PathBuf,
}

/// A token the agent keeps in files.
struct Target<'a> {
    /// `Kind namespace/name`, for logs and the record in the files.
    owner: String,
    kind: &'static str,
    /// The directory of its files.
    dir: PathBuf,
    /// Seed of the renew-time jitter: stable for the resource (no uid without a cluster).
    seed: String,
    desired: Result<Desired<'a>, Failure>,
}

/// What one pass over the manifests did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub minted: Vec<String>,
    pub kept: usize,
    pub failed: Vec<String>,
    /// The earliest renew time among the tokens kept.
    pub next_renewal: Option<Timestamp>,
    /// The earliest expiry among the tokens kept.
    pub earliest_expiry: Option<Timestamp>,
    /// Every tree the pass keeps (tokens and generated keys).
    kept_dirs: BTreeSet<PathBuf>,
}

impl Pass {
    /// The kind of each object a token was minted for (`minted` holds `Kind namespace/name`).
    pub fn minted_kinds(&self) -> impl Iterator<Item = &str> {
        self.minted
            .iter()
            .map(|owner| owner.split(' ').next().unwrap_or_default())
    }
}

/// Keeps the token files of the objects in the manifests.
pub struct Agent {
    pub paths: Paths,
    pub issuer: String,
    pub keyring: Arc<Keyring>,
    pub clock: Clock,
    pub revoker: Revoker,
    /// Every token directory the last pass kept, so a deleted object's goes.
    managed: BTreeSet<PathBuf>,
}

impl Agent {
    pub fn new(
        paths: Paths,
        issuer: String,
        keyring: Arc<Keyring>,
        clock: Clock,
        revoker: Revoker,
    ) -> Self {
        // Trees left from a previous run: removed by the first pass if no longer asked for.
        let managed = scan(&paths.tokens);
        Agent {
            paths,
            issuer,
            keyring,
            clock,
            revoker,
            managed,
        }
    }

    fn dir(&self, namespace: &str, secret: &str) -> PathBuf {
        self.paths.tokens.join(namespace).join(secret)
    }

    /// The token of the `kind` object `namespace/name`, kept in the directory of `secret`.
    fn target<'a>(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        secret: &str,
        desired: Result<Desired<'a>, Failure>,
    ) -> Target<'a> {
        Target {
            owner: format!("{kind} {namespace}/{name}"),
            kind,
            dir: self.dir(namespace, secret),
            seed: format!("{kind}/{namespace}/{name}"),
            desired,
        }
    }

    /// The tokens the manifests ask for.
    fn targets<'a>(
        &self,
        manifests: &'a Manifests,
        fingerprints: &BTreeMap<String, String>,
    ) -> Vec<Target<'a>> {
        // One lookup table, not a scan of every ServiceKey per grant.
        let keys: HashMap<(&str, &str), &ServiceKeySpec> = manifests
            .service_keys
            .iter()
            .filter_map(|k| {
                let namespace = k.metadata.namespace.as_deref()?;
                Some(((namespace, k.metadata.name.as_deref()?), &k.spec))
            })
            .collect();
        let key_of = |namespace: &str, name: &str| keys.get(&(namespace, name)).copied();
        let mut targets = Vec::new();
        for grant in &manifests.datasource_grants {
            let namespace = grant.metadata.namespace.as_deref().unwrap_or_default();
            targets.push(self.target(
                "DatasourceGrant",
                namespace,
                &grant.name_any(),
                &grant.token_secret_name(),
                desired::datasource_grant(
                    namespace,
                    &grant.spec,
                    key_of(namespace, &grant.spec.service_key_ref.name),
                    &self.issuer,
                ),
            ));
        }
        for request in &manifests.guest_token_requests {
            let namespace = request.metadata.namespace.as_deref().unwrap_or_default();
            targets.push(self.target(
                "GuestTokenRequest",
                namespace,
                &request.name_any(),
                &request.token_secret_name(),
                desired::guest_token(
                    namespace,
                    &request.spec,
                    key_of(namespace, &request.spec.service_key_ref.name),
                    &self.issuer,
                ),
            ));
        }
        for key in &manifests.service_keys {
            let (Some(session), Some(namespace)) =
                (&key.spec.session_token, key.metadata.namespace.as_deref())
            else {
                continue;
            };
            let name = key.name_any();
            let reference = format!("{namespace}/{name}");
            // Without a usable key there is nothing to bind the session to.
            let Some(fingerprint) = fingerprints.get(&reference) else {
                continue;
            };
            targets.push(Target {
                owner: format!("ServiceKey {reference} session"),
                kind: "ServiceKey",
                dir: self.dir(namespace, &session.secret_name),
                seed: format!("ServiceKey/{reference}/session"),
                desired: desired::session_token(
                    namespace,
                    &name,
                    &key.spec,
                    session,
                    fingerprint,
                    &self.issuer,
                ),
            });
        }
        targets
    }

    /// One pass: keys, then every token; removes the files of objects that are gone. Returns
    /// the key index the REST routes authenticate against, and what the pass did.
    pub async fn pass(&mut self, manifests: &Manifests) -> (KeyIndex, Pass) {
        let mut pass = Pass::default();
        let generated = self.generated_keys(manifests, &mut pass);
        let secrets: Vec<Secret> = manifests.secrets.iter().cloned().chain(generated).collect();
        let index = KeyIndex::build(&manifests.service_keys, &secrets);
        let fingerprints: BTreeMap<String, String> = manifests
            .service_keys
            .iter()
            .filter_map(|k: &ServiceKey| {
                let reference = format!("{}/{}", k.namespace()?, k.name_any());
                let entry = index.by_reference(&reference)?;
                Some((reference, entry.fingerprint.clone()))
            })
            .collect();
        for target in self.targets(manifests, &fingerprints) {
            pass.kept_dirs.insert(target.dir.clone());
            self.keep(&target, &mut pass).await;
        }
        // The trees of objects no longer in the manifests go (a deleted ServiceKey's key too: a
        // ServiceKey of that name created again gets a new key, as in a cluster).
        let kept_dirs = pass.kept_dirs.clone();
        for dir in std::mem::take(&mut self.managed) {
            if !kept_dirs.contains(&dir) {
                match files::remove(&dir) {
                    Ok(true) => {
                        tracing::info!(dir = %dir.display(), "removed the token files of a deleted object");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "cannot remove token files")
                    }
                }
            }
        }
        self.managed = kept_dirs;
        (index, pass)
    }

    /// Keeps the token of one target in its files.
    async fn keep(&self, target: &Target<'_>, pass: &mut Pass) {
        let found = match files::read(&target.dir) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(owner = %target.owner, dir = %target.dir.display(), error = %e, "cannot read token files");
                pass.failed.push(target.owner.clone());
                return;
            }
        };
        if matches!(found, Found::Foreign) {
            tracing::error!(owner = %target.owner, dir = %target.dir.display(), "a file tree not written by tokenmint is in the way; it is never overwritten");
            pass.failed.push(target.owner.clone());
            return;
        }
        let desired = match &target.desired {
            Ok(desired) => desired,
            Err(failure) => {
                tracing::error!(owner = %target.owner, reason = failure.reason.as_str(), message = %failure.message, "no token");
                if let Found::Ours(current) = &found
                    && failure.reason.withdraws_permission()
                {
                    self.revoke(target, current).await;
                }
                if let Err(e) = files::remove(&target.dir) {
                    tracing::error!(dir = %target.dir.display(), error = %e, "cannot remove token files");
                }
                pass.failed.push(target.owner.clone());
                return;
            }
        };
        let now = self.clock.now();
        let renewal = Renewal {
            renew_before: desired.renew_before,
            jitter_seed: &target.seed,
        };
        let minter = Minter {
            keyring: &self.keyring,
            issuer: &self.issuer,
        };
        let candidate = match desired.mint(&minter, now) {
            Ok(candidate) => candidate,
            Err(e) => {
                tracing::error!(owner = %target.owner, error = %e, "cannot mint");
                pass.failed.push(target.owner.clone());
                return;
            }
        };
        let verdict = match &found {
            Found::Ours(current) => judge(
                current,
                desired,
                &self.keyring,
                &self.issuer,
                &candidate.token,
                renewal,
                now,
            ),
            _ => Err(MintReason::Missing),
        };
        match verdict {
            Ok(info) => {
                pass.kept += 1;
                note(&mut pass.next_renewal, info.schedule.renew_at);
                note(&mut pass.earliest_expiry, info.expires_at);
            }
            Err(reason) => {
                let mut content =
                    BTreeMap::from([(TOKEN.to_owned(), candidate.token.clone().into_bytes())]);
                if let Some(exp) = candidate.expires_at {
                    content.insert(EXPIRES_AT.to_owned(), rfc3339(exp).into_bytes());
                }
                let meta = Meta {
                    owner: target.owner.clone(),
                    spec_hash: Some(desired.spec_hash.clone()),
                    token_id: Some(candidate.jti.clone()),
                };
                if let Err(e) = files::write(&target.dir, &content, &meta) {
                    tracing::error!(owner = %target.owner, dir = %target.dir.display(), error = %e, "cannot write token files");
                    pass.failed.push(target.owner.clone());
                    return;
                }
                let info = TokenInfo::new(
                    candidate.jti.clone(),
                    candidate.issued_at,
                    candidate.expires_at,
                    renewal,
                );
                tracing::info!(
                    kind = target.kind,
                    object = %target.owner,
                    file = %target.dir.join(TOKEN).display(),
                    expires = %info.expires_at.map_or_else(|| "never".to_owned(), rfc3339),
                    renew_at = %info.schedule.renew_at.map_or_else(|| "never".to_owned(), rfc3339),
                    token_id = %info.jti,
                    reason = reason.as_str(),
                    "{}",
                    if matches!(found, Found::Ours(_)) { "rotated token" } else { "minted token" }
                );
                note(&mut pass.next_renewal, info.schedule.renew_at);
                note(&mut pass.earliest_expiry, info.expires_at);
                pass.minted.push(target.owner.clone());
            }
        }
    }

    async fn revoke(&self, target: &Target<'_>, current: &files::Current) {
        let Some(jti) = &current.meta.token_id else {
            return;
        };
        let expires_at = current
            .files
            .get(EXPIRES_AT)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| t.parse().ok());
        let revocation = Revocation {
            jti: jti.clone(),
            expires_at,
            kid: None,
            reason: format!("{}: permission withdrawn", target.owner),
        };
        if let Err(e) = self.revoker.revoke(&revocation).await {
            tracing::error!(owner = %target.owner, error = %e, "cannot revoke");
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

/// The trees tokenmint wrote under `tokens` (`<namespace>/<secretName>`).
fn scan(tokens: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let Ok(namespaces) = std::fs::read_dir(tokens) else {
        return found;
    };
    for namespace in namespaces.flatten() {
        // The state directory (and anything hidden) is not a namespace.
        if namespace.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(trees) = std::fs::read_dir(namespace.path()) else {
            continue;
        };
        for tree in trees.flatten() {
            if matches!(files::read(&tree.path()), Ok(Found::Ours(_))) {
                found.insert(tree.path());
            }
        }
    }
    found
}

fn note(earliest: &mut Option<Timestamp>, at: Option<Timestamp>) {
    if let Some(at) = at {
        *earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
}

/// Runs the agent until `stop`: a pass on every change in the manifests directory and at every
/// renew time (the first at `next`). `store` gets each pass's key index.
pub async fn run(
    mut agent: Agent,
    mut live: LiveManifests,
    store: Arc<SharedKeyStore>,
    metrics: Arc<crate::http::metrics::Metrics>,
    mut next: Option<Timestamp>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (_watcher, mut changed) = match dir_watch::watch(&agent.paths.manifests) {
        Ok((watcher, changed)) => (Some(watcher), changed),
        Err(e) => {
            tracing::error!(dir = %agent.paths.manifests.display(), error = %e, "cannot watch the manifests directory; edits need a restart");
            (None, dir_watch::signalled_once())
        }
    };
    loop {
        let wait = next
            // A renew time already past is due now (an absolute value would wait as long).
            .map(|at| {
                at.duration_since(agent.clock.now())
                    .max(jiff::SignedDuration::ZERO)
                    .unsigned_abs()
            })
            .unwrap_or(IDLE)
            .clamp(Duration::from_secs(1), IDLE);
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            Some(()) = changed.recv() => {
                // Let a burst of edits settle.
                tokio::time::sleep(SETTLE).await;
                while changed.try_recv().is_ok() {}
                match live.reload(&agent.paths.manifests) {
                    Ok(errors) => {
                        for e in errors {
                            tracing::error!(error = %e, "manifest refused");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the manifests directory; keeping the last good state");
                        continue;
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let manifests = live.merged();
        let (index, pass) = agent.pass(&manifests).await;
        store.set_keys(index);
        metrics.token_files(pass.minted_kinds(), pass.earliest_expiry);
        next = pass.next_renewal;
    }
}

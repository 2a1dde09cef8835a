//! Which tree each object of the manifests keeps, and who gets a tree that several objects
//! name — the one Secret per name of a cluster. A Secret declared in the manifests holds its
//! name; otherwise the object whose files are already there keeps them (as an existing Secret
//! keeps its owner), else the first in manifest order. Every other claimant is a
//! `SecretConflict`, as the operator reports an existing Secret it does not own; so is a
//! claimant whose tree is taken by something tokenmint did not write, or kept for a held object
//! (see [`held`]).

use super::files::Found;
use super::trees::{TreeName, Trees};
use crate::crd::{DatasourceGrant, GuestTokenRequest, ServiceKey};
use crate::desired::{Failure, Reason};
use crate::manifests::{Held, Manifests, Source};
use kube::ResourceExt;
use std::collections::BTreeMap;

/// What a tree is for.
#[derive(Debug, Clone, Copy)]
pub enum Role<'a> {
    /// The generated key of a ServiceKey without a key Secret in the manifests.
    Key(&'a ServiceKey),
    /// A ServiceKey's session token.
    Session(&'a ServiceKey),
    Grant(&'a DatasourceGrant),
    Guest(&'a GuestTokenRequest),
}

/// One object's claim on a tree.
#[derive(Debug)]
pub struct Claim<'a> {
    /// `Kind namespace/name` (plus ` session` for a session token): recorded in the tree.
    pub owner: String,
    pub kind: &'static str,
    pub secret: String,
    pub tree: Result<TreeName, String>,
    /// Seed of the renew-time jitter: stable for the resource (no uid without a cluster).
    pub seed: String,
    pub role: Role<'a>,
    /// Manifest order: where the object is declared, then key before session.
    order: (bool, Option<Source>, u8),
}

/// A claim that gets no tree, and why.
#[derive(Debug)]
pub struct Refused<'a> {
    pub claim: Claim<'a>,
    pub failure: Failure,
    /// What holds the tree (or what is wrong with its name), for the log.
    pub detail: String,
}

/// The outcome: each tree to its claimant, with what is on disk there now.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    pub won: Vec<(Claim<'a>, TreeName, std::io::Result<Found>)>,
    pub refused: Vec<Refused<'a>>,
}

impl<'a> Claim<'a> {
    fn new(
        manifests: &Manifests,
        kind: &'static str,
        meta: &kube::core::ObjectMeta,
        secret: String,
        role: Role<'a>,
        session: bool,
    ) -> Self {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let source = manifests.source(kind, &namespace, &name).cloned();
        let owner = format!(
            "{kind} {namespace}/{name}{}",
            if session { " session" } else { "" }
        );
        Claim {
            seed: seed(&owner),
            owner,
            kind,
            tree: TreeName::new(&namespace, &secret),
            secret,
            role,
            order: (source.is_none(), source, u8::from(session)),
        }
    }
}

/// The renew-time jitter seed of the files of `owner`: `Kind/namespace/name[/session]`.
pub fn seed(owner: &str) -> String {
    owner.replace(' ', "/")
}

/// Why the files recorded as `owner`'s must stay as they are although no admitted object
/// claims them: the object is held ([`Held`]). `None`: it is admitted, or gone.
pub fn held<'m>(manifests: &'m Manifests, owner: &str) -> Option<Held<'m>> {
    let (kind, object) = owner.split_once(' ')?;
    let object = object.strip_suffix(" session").unwrap_or(object);
    let (namespace, name) = object.split_once('/')?;
    manifests.held(kind, namespace, name)
}

/// Every claim of the manifests, in manifest order.
fn claims(manifests: &Manifests) -> Vec<Claim<'_>> {
    let mut claims = Vec::new();
    for key in &manifests.service_keys {
        let namespace = key.namespace().unwrap_or_default();
        let secret = key.key_secret_name();
        if !manifests.declares_secret(&namespace, &secret) {
            claims.push(Claim::new(
                manifests,
                "ServiceKey",
                &key.metadata,
                secret,
                Role::Key(key),
                false,
            ));
        }
        if let Some(session) = &key.spec.session_token {
            claims.push(Claim::new(
                manifests,
                "ServiceKey",
                &key.metadata,
                session.secret_name.clone(),
                Role::Session(key),
                true,
            ));
        }
    }
    let tokens = (manifests.datasource_grants.iter())
        .map(|g| {
            (
                "DatasourceGrant",
                &g.metadata,
                g.token_secret_name(),
                Role::Grant(g),
            )
        })
        .chain(manifests.guest_token_requests.iter().map(|r| {
            let secret = r.token_secret_name();
            ("GuestTokenRequest", &r.metadata, secret, Role::Guest(r))
        }));
    for (kind, meta, secret, role) in tokens {
        claims.push(Claim::new(manifests, kind, meta, secret, role, false));
    }
    claims.sort_by(|a, b| a.order.cmp(&b.order));
    claims
}

/// Decides every tree of `manifests`, reading each tree once.
pub fn plan<'a>(manifests: &'a Manifests, trees: &Trees) -> Plan<'a> {
    let mut plan = Plan::default();
    let mut by_tree: BTreeMap<TreeName, Vec<Claim<'a>>> = BTreeMap::new();
    for claim in claims(manifests) {
        match claim.tree.clone() {
            Ok(tree) => by_tree.entry(tree).or_default().push(claim),
            Err(problem) => {
                let failure = Failure::new(
                    Reason::InvalidSpec,
                    format!("cannot keep a token in Secret {}: {problem}", claim.secret),
                );
                plan.refused.push(Refused {
                    claim,
                    failure,
                    detail: problem,
                });
            }
        }
    }
    for (tree, claimants) in by_tree {
        let found = trees.read(&tree);
        let held_by = match &found {
            _ if manifests.declares_secret(tree.namespace(), tree.secret()) => {
                Some(format!("the manifests declare a Secret {tree}"))
            }
            Ok(Found::Foreign(why)) => Some(why.clone()),
            // Its object is held: the API server would still hold the Secret's owner.
            Ok(Found::Ours(current))
                if !claimants.iter().any(|c| c.owner == current.meta.owner) =>
            {
                let holder = &current.meta.owner;
                held(manifests, holder).map(|why| format!("its files are kept for {holder}: {why}"))
            }
            _ => None,
        };
        let winner = match (&held_by, &found) {
            (Some(_), _) => None,
            (None, Ok(Found::Ours(current))) => claimants
                .iter()
                .position(|c| c.owner == current.meta.owner)
                .or(Some(0)),
            (None, _) => Some(0),
        };
        let winner_owner = winner.map(|i| claimants[i].owner.clone());
        let mut found = Some(found);
        for (i, claim) in claimants.into_iter().enumerate() {
            if Some(i) == winner
                && let Some(found) = found.take()
            {
                plan.won.push((claim, tree.clone(), found));
                continue;
            }
            let detail = held_by.clone().unwrap_or_else(|| {
                format!(
                    "its files are kept for {}",
                    winner_owner.as_deref().unwrap_or("another object")
                )
            });
            let failure = Failure::secret_conflict(&claim.secret, claim.kind);
            plan.refused.push(Refused {
                claim,
                failure,
                detail,
            });
        }
    }
    plan.won.sort_by(|a, b| a.0.order.cmp(&b.0.order));
    plan
}

//! The Kubernetes API rights each command of `kubectl tokenmint` uses, declared beside the
//! command ([`status::RIGHTS`] and its siblings), and the SelfSubjectAccessReviews with which
//! `check` asks whether the caller has them. A test holds each table to the requests its
//! command makes; the README lists them.

use super::check::{Line, Verdict, line};
use super::output;
use super::plugin::Session;
use super::{check, inspect, renew, revoke, status};
use futures::future::join_all;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;

/// Where a right applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// The namespace of the objects (`-n`; every namespace with `-A`).
    Namespace,
    /// The operator's namespace (`--operator-namespace`).
    OperatorNamespace,
    /// The keyring Secret, by name, in the operator's namespace.
    Keyring,
    /// The leader Lease, by name, in the operator's namespace.
    Lease,
    Cluster,
}

/// A Kubernetes API right a command uses, as RBAC names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Right {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub place: Place,
    /// `None`: the command needs it. `Some(what)`: without it the command does without `what`.
    pub optional: Option<&'static str>,
}

impl Right {
    pub const fn required(
        group: &'static str,
        resource: &'static str,
        verb: &'static str,
        place: Place,
    ) -> Right {
        Right {
            group,
            resource,
            verb,
            place,
            optional: None,
        }
    }

    /// A right on one of tokenmint's own kinds (`tokenmint.dev`) in the objects' namespace.
    pub const fn ours(resource: &'static str, verb: &'static str) -> Right {
        Right::required(crate::crd::GROUP, resource, verb, Place::Namespace)
    }

    pub const fn optional(self, without: &'static str) -> Right {
        Right {
            optional: Some(without),
            ..self
        }
    }

    /// `patch datasourcegrants.tokenmint.dev`.
    pub fn describe(&self) -> String {
        match self.group {
            "" => format!("{} {}", self.verb, self.resource),
            group => format!("{} {}.{group}", self.verb, self.resource),
        }
    }
}

/// Every command and the rights it uses: what `check` asks about, and what the README lists.
pub const COMMANDS: [(&str, &[Right]); 5] = [
    ("status", status::RIGHTS),
    ("inspect", inspect::RIGHTS),
    ("renew", renew::RIGHTS),
    ("revoke", revoke::RIGHTS),
    ("check", check::RIGHTS),
];

/// A right as a SelfSubjectAccessReview asks it.
fn attributes(session: &Session, right: &Right) -> ResourceAttributes {
    let op = &session.operator;
    let (namespace, name) = match right.place {
        Place::Namespace => (session.scope().map(str::to_owned), None),
        Place::OperatorNamespace => (Some(op.namespace.clone()), None),
        Place::Keyring => (Some(op.namespace.clone()), Some(op.keyring_secret.clone())),
        Place::Lease => (Some(op.namespace.clone()), Some(op.lease_name.clone())),
        Place::Cluster => (None, None),
    };
    let (resource, subresource) = match right.resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (right.resource, None),
    };
    ResourceAttributes {
        group: Some(right.group.to_owned()),
        resource: Some(resource.to_owned()),
        subresource,
        verb: Some(right.verb.to_owned()),
        namespace,
        name,
        ..ResourceAttributes::default()
    }
}

async fn allowed(session: &Session, attributes: ResourceAttributes) -> Result<bool, String> {
    let api: Api<SelfSubjectAccessReview> = Api::all(session.client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attributes),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    api.create(&PostParams::default(), &review)
        .await
        .map(|r| r.status.is_some_and(|s| s.allowed))
        .map_err(|e| output::describe(&e))
}

/// One line per command: whether the caller has the rights it needs, and what it does without
/// the optional ones it lacks.
pub async fn review(session: &Session) -> Vec<Line> {
    let mut unique: BTreeMap<String, ResourceAttributes> = BTreeMap::new();
    for (_, rights) in COMMANDS {
        for right in rights {
            let attrs = attributes(session, right);
            unique.insert(format!("{attrs:?}"), attrs);
        }
    }
    let answers: BTreeMap<String, Result<bool, String>> = join_all(
        unique
            .into_iter()
            .map(|(key, attrs)| async move { (key, allowed(session, attrs).await) }),
    )
    .await
    .into_iter()
    .collect();
    let scope = match session.scope() {
        Some(ns) => format!("namespace {ns}"),
        None => "all namespaces".into(),
    };
    COMMANDS
        .iter()
        .map(|(command, rights)| {
            let subject = format!("rights for {command}");
            let mut denied = Vec::new();
            let mut without = Vec::new();
            for right in *rights {
                match &answers[&format!("{:?}", attributes(session, right))] {
                    Ok(true) => {}
                    Ok(false) => match right.optional {
                        None => denied.push(right.describe()),
                        Some(what) => without.push(format!("{what} ({} denied)", right.describe())),
                    },
                    Err(why) => {
                        return line(
                            Verdict::Unchecked,
                            subject,
                            format!("cannot ask the API server: {why}"),
                        );
                    }
                }
            }
            let without = if without.is_empty() {
                String::new()
            } else {
                format!("; without {}", without.join(", "))
            };
            if denied.is_empty() {
                line(
                    Verdict::Pass,
                    subject,
                    format!("allowed in {scope}{without}"),
                )
            } else {
                line(
                    Verdict::Fail,
                    subject,
                    format!("denied in {scope}: {}{without}", denied.join(", ")),
                )
            }
        })
        .collect()
}

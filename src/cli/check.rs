//! `kubectl tokenmint check`: a preflight of a cluster, one ✔/✘ line per fact: the API server
//! answers, it serves tokenmint's CRDs and they are this version's, the operator's Lease is
//! held and renewed, the keyring exists, and the caller may run each command (asked with
//! SelfSubjectAccessReviews, so nothing is tried for real). `!` marks what the caller may not
//! read: shown, not failed. Exit code 1 on any ✘.

use super::output::{self, CliError, Exit, FAIL, PASS, UNCHECKED};
use super::plugin::Session;
use super::rights::{self, Place, Right};
use crate::crd;
use jiff::SignedDuration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {}

/// What `check` itself reads.
pub const RIGHTS: &[Right] = &[
    Right::required(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "create",
        Place::Cluster,
    ),
    Right::required(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "get",
        Place::Cluster,
    )
    .optional("the comparison of the CRDs with this version's"),
    Right::required("coordination.k8s.io", "leases", "get", Place::Lease)
        .optional("the operator Lease check"),
    Right::required("", "secrets", "get", Place::Keyring).optional("the keyring check"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Could not be checked (no right to read it): not a failure.
    Unchecked,
}

#[derive(Debug, Serialize)]
pub struct Line {
    pub verdict: Verdict,
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub fine: bool,
    pub checks: Vec<Line>,
}

pub(super) fn line(
    verdict: Verdict,
    subject: impl Into<String>,
    detail: impl Into<String>,
) -> Line {
    Line {
        verdict,
        subject: subject.into(),
        detail: detail.into(),
    }
}

pub async fn run(_: CheckArgs, session: &Session, out: &mut dyn Write) -> Result<Exit, CliError> {
    let report = check(session).await;
    match session.format {
        Some(format) => out.write_all(output::structured(&report, format)?.as_bytes())?,
        None => out.write_all(render(&report).as_bytes())?,
    }
    Ok(Exit::from_fine(report.fine))
}

pub async fn check(session: &Session) -> CheckReport {
    let mut checks = Vec::new();
    match session.client.apiserver_version().await {
        Ok(v) => checks.push(line(
            Verdict::Pass,
            "API server",
            format!("reachable, Kubernetes {}", v.git_version),
        )),
        Err(e) => {
            checks.push(line(
                Verdict::Fail,
                "API server",
                format!("not reachable: {}", output::describe(&e)),
            ));
            return CheckReport {
                fine: false,
                checks,
            };
        }
    }
    checks.push(served(session).await);
    checks.extend(crds(session).await);
    checks.push(lease(session).await);
    checks.push(keyring(session).await);
    checks.extend(rights::review(session).await);
    CheckReport {
        fine: checks.iter().all(|c| c.verdict != Verdict::Fail),
        checks,
    }
}

pub fn render(report: &CheckReport) -> String {
    report
        .checks
        .iter()
        .map(|c| {
            let mark = match c.verdict {
                Verdict::Pass => PASS,
                Verdict::Fail => FAIL,
                Verdict::Unchecked => UNCHECKED,
            };
            format!("{mark} {}: {}\n", c.subject, c.detail)
        })
        .collect()
}

/// Discovery (open to every authenticated user): the API serves the three kinds.
async fn served(session: &Session) -> Line {
    let group_version = format!("{}/{}", crd::GROUP, crd::VERSION);
    let subject = format!("API group {group_version}");
    let wanted: Vec<String> = crd::all()
        .iter()
        .map(|c| c.spec.names.plural.clone())
        .collect();
    let install = "install the CRDs of the release you run: kubectl apply -f crds/";
    match session
        .client
        .list_api_group_resources(&group_version)
        .await
    {
        Ok(list) => {
            let missing: Vec<&String> = wanted
                .iter()
                .filter(|w| !list.resources.iter().any(|r| &r.name == *w))
                .collect();
            if missing.is_empty() {
                line(
                    Verdict::Pass,
                    subject,
                    format!("served: {}", wanted.join(", ")),
                )
            } else {
                let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                line(
                    Verdict::Fail,
                    subject,
                    format!("does not serve {}: {install}", missing.join(", ")),
                )
            }
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            line(Verdict::Fail, subject, format!("not served: {install}"))
        }
        Err(e) => line(
            Verdict::Fail,
            subject,
            format!("discovery failed: {}", output::describe(&e)),
        ),
    }
}

/// Each CRD as installed against this version's: established, served and stored in
/// `v1alpha1`, with the same schema (an older CRD would prune fields a newer operator writes).
async fn crds(session: &Session) -> Vec<Line> {
    let api: Api<CustomResourceDefinition> = Api::all(session.client.clone());
    let version = env!("CARGO_PKG_VERSION");
    let mut lines = Vec::new();
    for ours in crd::all() {
        let name = ours.metadata.name.clone().unwrap_or_default();
        let subject = format!("CRD {name}");
        let installed = match api.get_opt(&name).await {
            Ok(Some(installed)) => installed,
            Ok(None) => {
                lines.push(line(
                    Verdict::Fail,
                    subject,
                    "not installed: kubectl apply -f crds/",
                ));
                continue;
            }
            Err(kube::Error::Api(s)) if s.is_forbidden() => {
                lines.push(line(
                    Verdict::Unchecked,
                    "CRDs",
                    format!(
                        "not compared with tokenmint {version}'s: no right to get customresourcedefinitions ({} {})",
                        s.code, s.reason
                    ),
                ));
                return lines;
            }
            Err(e) => {
                lines.push(line(Verdict::Fail, subject, output::describe(&e)));
                continue;
            }
        };
        lines.push(match compare_crd(&ours, &installed) {
            Ok(()) => line(
                Verdict::Pass,
                subject,
                format!(
                    "established, {} served and stored, the schema of tokenmint {version}",
                    crd::VERSION
                ),
            ),
            Err(why) => line(Verdict::Fail, subject, why),
        });
    }
    lines
}

fn compare_crd(
    ours: &CustomResourceDefinition,
    installed: &CustomResourceDefinition,
) -> Result<(), String> {
    let established = installed
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Established");
    if established.is_none_or(|c| c.status != "True") {
        return Err(
            "not established yet (the API server has not accepted it; kubectl describe crd)".into(),
        );
    }
    let find = |crd: &CustomResourceDefinition| {
        crd.spec
            .versions
            .iter()
            .find(|v| v.name == crd::VERSION)
            .cloned()
    };
    let Some(theirs) = find(installed) else {
        return Err(format!(
            "has no version {}: kubectl apply -f crds/",
            crd::VERSION
        ));
    };
    if !theirs.served || !theirs.storage {
        return Err(format!("{} is not served and stored", crd::VERSION));
    }
    let schema = |v: Option<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceValidation>| {
        serde_json::to_value(v.and_then(|v| v.open_api_v3_schema)).unwrap_or_default()
    };
    let mine = schema(find(ours).and_then(|v| v.schema));
    let differences = differences(&mine, &schema(theirs.schema), "");
    if differences.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = differences.iter().take(3).map(String::as_str).collect();
    Err(format!(
        "its schema differs from tokenmint {}'s (at {}{}): apply the CRDs of the release you run (kubectl apply -f crds/)",
        env!("CARGO_PKG_VERSION"),
        shown.join(", "),
        if differences.len() > 3 { ", ..." } else { "" }
    ))
}

/// The JSON paths at which `a` and `b` differ.
fn differences(a: &Value, b: &Value, path: &str) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let at = format!("{path}.{k}");
                    match (x.get(k), y.get(k)) {
                        (Some(a), Some(b)) => differences(a, b, &at),
                        _ => vec![at],
                    }
                })
                .collect()
        }
        (a, b) if a == b => Vec::new(),
        _ => vec![if path.is_empty() {
            ".".into()
        } else {
            path.to_owned()
        }],
    }
}

async fn lease(session: &Session) -> Line {
    let op = &session.operator;
    let subject = format!("operator Lease {}/{}", op.namespace, op.lease_name);
    let api: Api<Lease> = Api::namespaced(session.client.clone(), &op.namespace);
    let lease = match api.get_opt(&op.lease_name).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            return line(
                Verdict::Fail,
                subject,
                format!(
                    "not found: the operator has never run in namespace {} (or pass --operator-namespace)",
                    op.namespace
                ),
            );
        }
        Err(kube::Error::Api(s)) if s.is_forbidden() => {
            return line(
                Verdict::Unchecked,
                subject,
                format!("not readable ({} {})", s.code, s.reason),
            );
        }
        Err(e) => return line(Verdict::Fail, subject, output::describe(&e)),
    };
    let spec = lease.spec.unwrap_or_default();
    let pods = format!("kubectl get pods -n {}", op.namespace);
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return line(
            Verdict::Fail,
            subject,
            format!("released: no operator replica leads ({pods})"),
        );
    };
    let Some(renewed) = spec.renew_time.map(|t| t.0) else {
        return line(
            Verdict::Fail,
            subject,
            format!("held by {holder} but never renewed"),
        );
    };
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
    let ago = output::relative(session.now, renewed);
    if session.now.duration_since(renewed) > duration {
        line(
            Verdict::Fail,
            subject,
            format!(
                "held by {holder} but last renewed {ago}, longer ago than its {}s duration: the operator is stuck or gone ({pods})",
                duration.as_secs()
            ),
        )
    } else {
        line(
            Verdict::Pass,
            subject,
            format!("held by {holder}, renewed {ago}"),
        )
    }
}

/// The keyring Secret's metadata only: whether it is there, never its keys.
async fn keyring(session: &Session) -> Line {
    let op = &session.operator;
    let subject = format!("keyring Secret {}/{}", op.namespace, op.keyring_secret);
    let api: Api<Secret> = Api::namespaced(session.client.clone(), &op.namespace);
    match api.get_metadata_opt(&op.keyring_secret).await {
        Ok(Some(_)) => line(Verdict::Pass, subject, "present"),
        Ok(None) => line(
            Verdict::Fail,
            subject,
            "not found: the operator creates it on its first start; until then no token can be signed",
        ),
        Err(kube::Error::Api(s)) if s.is_forbidden() => line(
            Verdict::Unchecked,
            subject,
            format!("not readable ({} {})", s.code, s.reason),
        ),
        Err(e) => line(Verdict::Fail, subject, output::describe(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_their_paths() {
        let a = json!({"properties": {"spec": {"type": "object"}, "status": {"x": 1}}});
        let b =
            json!({"properties": {"spec": {"type": "string"}, "extra": true, "status": {"x": 1}}});
        assert_eq!(
            differences(&a, &b, ""),
            [".properties.extra", ".properties.spec.type"]
        );
        assert!(differences(&a, &a, "").is_empty());
    }

    #[test]
    fn our_own_crds_compare_equal_once_established() {
        for ours in crd::all() {
            let mut installed = ours.clone();
            assert!(
                compare_crd(&ours, &installed)
                    .unwrap_err()
                    .contains("not established")
            );
            installed.status = serde_json::from_value(json!({"conditions": [
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}))
            .unwrap();
            assert_eq!(compare_crd(&ours, &installed), Ok(()));
            installed.spec.versions[0]
                .schema
                .as_mut()
                .unwrap()
                .open_api_v3_schema
                .as_mut()
                .unwrap()
                .description = Some("older".into());
            let why = compare_crd(&ours, &installed).unwrap_err();
            assert!(
                why.contains("schema differs") && why.contains(".description"),
                "{why}"
            );
        }
    }
}

//! `check`: a healthy installation, and each thing it catches: no CRDs or CRDs of another
//! version, a Lease not renewed, no keyring, missing rights, what the caller may not read, an
//! API server that does not answer.

use crate::support::fake_api::TEAM;
use crate::world::{OPERATOR_NS, World, now, shows};
use serde_json::{Value, json};
use tokenmint::cli::output::Exit;

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[tokio::test]
async fn a_healthy_installation_passes_every_check() {
    let w = World::installed(now());
    let ran = w.kubectl(&["check", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    let crd = |plural: &str| {
        format!(
            "✔ CRD {plural}.tokenmint.dev: established, v1alpha1 served and stored, the schema of tokenmint {VERSION}\n"
        )
    };
    assert_eq!(
        ran.out,
        [
            "✔ API server: reachable, Kubernetes v1.33.0\n".to_owned(),
            "✔ API group tokenmint.dev/v1alpha1: served: datasourcegrants, guesttokenrequests, servicekeys\n".into(),
            crd("datasourcegrants"),
            crd("guesttokenrequests"),
            crd("servicekeys"),
            "✔ operator Lease tokenmint-system/tokenmint-leader: held by tokenmint-6d4f9c7b8-xk2lp-1a2b3c4d, renewed 2s ago\n".into(),
            "✔ keyring Secret tokenmint-system/tokenmint-keyring: present\n".into(),
            "✔ rights for status: allowed in namespace team-a\n".into(),
            "✔ rights for inspect: allowed in namespace team-a\n".into(),
            "✔ rights for renew: allowed in namespace team-a\n".into(),
            "✔ rights for revoke: allowed in namespace team-a\n".into(),
            "✔ rights for check: allowed in namespace team-a\n".into(),
        ]
        .concat()
    );
    // The keyring is looked at as metadata only: check never reads keys.
    let keyring_reads: Vec<_> = w
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.name.as_deref() == Some("tokenmint-keyring") && c.verb == "get")
        .collect();
    assert_eq!(keyring_reads.len(), 1);
    assert!(keyring_reads[0].accept.contains("as=PartialObjectMetadata"));

    let ran = w.kubectl(&["check", "-n", TEAM, "-o", "json"]).await;
    let report: Value = serde_json::from_str(&ran.out).unwrap();
    assert_eq!(report["fine"], true);
    assert_eq!(
        report["checks"][0],
        json!({"verdict": "pass", "subject": "API server", "detail": "reachable, Kubernetes v1.33.0"})
    );
}

#[tokio::test]
async fn no_crds_a_stale_lease_and_no_keyring_fail() {
    let w = World::empty(now());
    w.put_lease(300);
    let ran = w.kubectl(&["check", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine);
    shows(
        &ran,
        &[
            "✘ API group tokenmint.dev/v1alpha1: not served: install the CRDs of the release you run: kubectl apply -f crds/\n",
            "✘ CRD datasourcegrants.tokenmint.dev: not installed: kubectl apply -f crds/\n",
            "✘ operator Lease tokenmint-system/tokenmint-leader: held by tokenmint-6d4f9c7b8-xk2lp-1a2b3c4d but last renewed 5m ago, longer ago than its 15s duration: the operator is stuck or gone (kubectl get pods -n tokenmint-system)\n",
            "✘ keyring Secret tokenmint-system/tokenmint-keyring: not found: the operator creates it on its first start; until then no token can be signed\n",
        ],
    );
    w.fake.delete(
        "coordination.k8s.io",
        "leases",
        OPERATOR_NS,
        "tokenmint-leader",
    );
    let ran = w.kubectl(&["check", "-n", TEAM]).await;
    assert!(ran.out.contains(
        "✘ operator Lease tokenmint-system/tokenmint-leader: not found: the operator has never run in namespace tokenmint-system (or pass --operator-namespace)\n"
    ), "{}", ran.out);
    // A released Lease: no replica leads.
    let w = World::installed(now());
    let mut lease = w
        .fake
        .get(
            "coordination.k8s.io",
            "leases",
            OPERATOR_NS,
            "tokenmint-leader",
        )
        .unwrap();
    lease["spec"]["holderIdentity"] = json!("");
    w.fake.put("coordination.k8s.io", "leases", lease);
    let ran = w.kubectl(&["check", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert!(ran.out.contains("✘ operator Lease tokenmint-system/tokenmint-leader: released: no operator replica leads (kubectl get pods -n tokenmint-system)\n"), "{}", ran.out);
}

#[tokio::test]
async fn crds_of_another_version_fail() {
    let w = World::installed(now());
    let mut crd = w
        .fake
        .get(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "",
            "datasourcegrants.tokenmint.dev",
        )
        .unwrap();
    // An older CRD without a field this version has.
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("rolloutRestart");
    w.fake
        .put("apiextensions.k8s.io", "customresourcedefinitions", crd);
    let ran = w.kubectl(&["check", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert!(ran.out.contains(&format!(
        "✘ CRD datasourcegrants.tokenmint.dev: its schema differs from tokenmint {VERSION}'s (at .properties.spec.properties.rolloutRestart): apply the CRDs of the release you run (kubectl apply -f crds/)\n"
    )), "{}", ran.out);
}

#[tokio::test]
async fn missing_rights_fail_their_command_and_unreadable_facts_do_not_fail() {
    let w = World::installed(now());
    w.fake
        .forbid("tokenmint.dev", "datasourcegrants", "patch", Some(TEAM));
    w.fake.forbid("events.k8s.io", "events", "list", Some(TEAM));
    w.fake.forbid(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "get",
        None,
    );
    let ran = w.kubectl(&["check", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine);
    shows(
        &ran,
        &[
            "! CRDs: not compared with tokenmint ",
            "'s: no right to get customresourcedefinitions (403 Forbidden)\n",
            "✔ rights for status: allowed in namespace team-a; without Events (list events.events.k8s.io denied)\n",
            "✘ rights for renew: denied in namespace team-a: patch datasourcegrants.tokenmint.dev\n",
            "✘ rights for revoke: denied in namespace team-a: patch datasourcegrants.tokenmint.dev\n",
            "✔ rights for check: allowed in namespace team-a; without the comparison of the CRDs with this version's (get customresourcedefinitions.apiextensions.k8s.io denied)\n",
        ],
    );
    // Rights elsewhere are asked for where they apply.
    let w = World::installed(now());
    w.fake.forbid("", "secrets", "get", Some(OPERATOR_NS));
    w.fake
        .forbid("coordination.k8s.io", "leases", "get", Some(OPERATOR_NS));
    let ran = w.kubectl(&["check", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::Fine, "only unreadable facts: {}", ran.out);
    shows(
        &ran,
        &[
            "! operator Lease tokenmint-system/tokenmint-leader: not readable (403 Forbidden)\n",
            "! keyring Secret tokenmint-system/tokenmint-keyring: not readable (403 Forbidden)\n",
            "✔ rights for inspect: allowed in namespace team-a; without the signature check (get secrets denied)\n",
        ],
    );
}

#[tokio::test]
async fn an_api_server_that_does_not_answer_fails_at_once() {
    let w = World::installed(now());
    w.fake.set_down(true);
    let ran = w.kubectl(&["check"]).await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert_eq!(
        ran.out,
        "✘ API server: not reachable: 503 ServiceUnavailable: ServiceUnavailable\n"
    );
}

//! Least-privilege RBAC audit, code side: the real code paths of both containers run against a
//! recording fake Kubernetes API server, which derives from every request what the API
//! server's authorizer would check: (API group, resource[/subresource], verb, namespace, name).
//! The rights used must equal the table `charts/tokenmint/rbac-requirements.txt` exactly: every
//! call is granted (nothing is missing from the chart) and every granted right is used (nothing
//! is granted for nothing). `.ci/check_chart.py` checks the chart's rendered Roles against the
//! same table, so code, table and chart cannot drift apart.
//!
//! Exercised:
//! - operator start-up as `src/operator.rs` runs it: `keyring::load_or_create` (create path, then
//!   a second replica's load of the existing keyring), the keyring watch, leader election with
//!   kube-lease-manager exactly as the operator builds it (shorter durations, so a renewal is
//!   seen within a second), the pending-rotation check with `rotate_if_requested`, then
//!   `reconcile::controllers::run` over all namespaces with the Kubernetes Events recorder: a
//!   ServiceKey with a session token, a DatasourceGrant with `rolloutRestart` whose token is
//!   rotated, a forbidden grant (its token Secret is deleted), a grant whose Secret belongs to
//!   someone else (SecretConflict), a GuestTokenRequest; shutdown releases the Lease;
//!   The controllers watch workloads for the consumers of each token (the default); a
//!   Deployment reads the rotated grant's token from its environment, so `restartConsumers`
//!   restarts it;
//! - the controllers again with `--consumers=false`: no request for any workload kind;
//! - the restart worker (`Restarter::spawn`) restarting a Deployment, a StatefulSet and a
//!   DaemonSet, twice for one of them so the Events recorder patches an event series, and
//!   reporting a CronJob it cannot restart (no request);
//! - the serve container's cluster store (`http::cluster::start`);
//! - both again with `--watch-namespace team-a` (the chart then grants the watched rights by a
//!   Role per namespace): no request may be cluster-wide or leave the watched and release
//!   namespaces.
//!
//! Not exercised: `operator::run`'s own glue (it needs a kubeconfig, a listener and signals),
//! which this test mirrors call for call. Its one extra request, `GET /version` in `connect`, is
//! a non-resource URL every authenticated user may read (system:public-info-viewer), so it
//! needs no rule; nor does serve's `GET /.well-known/openid-configuration` (the service-account
//! issuer, which the default system:service-account-issuer-discovery binding grants every
//! ServiceAccount).
//!
//! Besides the requests themselves, the fake derives the two checks the API server makes on a
//! request's behalf: `create` for a server-side apply that creates an object, and the
//! OwnerReferencesPermissionEnforcement admission plugin's `update` of `<owner>/finalizers` for
//! an ownerReference with blockOwnerDeletion=true.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret};
use kube::api::Api;
use kube::runtime::events::Reporter;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use support::fake_api::{self, Call, Fake, Origin, custom, owner_ref};
use tokenmint::cli::CommonArgs;
use tokenmint::crd::{WorkloadKind, WorkloadRef};
use tokenmint::fence::Fence;
use tokenmint::keyring::Algorithm;
use tokenmint::labels::MANAGED_BY_LABEL;
use tokenmint::operator::lease::{Elector, LeaseTiming};
use tokenmint::reconcile::controllers::{self, Readiness, Shared};
use tokenmint::reconcile::events::{Events, Recorder};
use tokenmint::reconcile::keyring::{self, ROTATE_ANNOTATION};
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::restart::{self, Restarter};
use tokenmint::reconcile::{Clock, SharedKeyring};
use tokenmint::revocation::{Denylist, Revoker};
use tokio::sync::watch;

const TABLE: &str = include_str!("../charts/tokenmint/rbac-requirements.txt");
const RELEASE_NS: &str = "tokenmint-system";
const WATCHED_NS: &str = support::fake_api::TEAM;
const KEYRING: &str = "tokenmint-keyring";
const LEASE: &str = "tokenmint-leader";
const ALGORITHM: Algorithm = Algorithm::HS256;
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The table

/// One row of the table (and the normalised form of an observed right).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Right {
    /// `watched` or `release`.
    scope: String,
    /// `core` for the core group.
    group: String,
    resource: String,
    verb: String,
    /// `-`, `keyring` or `lease`.
    name: String,
    /// `call`, `apply-create` or `admission` (`restart-call` and `consumers-call` rows compare
    /// as `call`).
    how: String,
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.scope, self.group, self.resource, self.verb, self.name, self.how
        )
    }
}

/// The rows of the table, with `restart-call` and `consumers-call` kept as written.
fn table() -> Vec<Right> {
    TABLE
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 6, "table row needs 6 columns: {line:?}");
            assert!(
                ["watched", "release", "cluster"].contains(&cols[0]),
                "scope of {line:?}"
            );
            assert!(
                ["-", "keyring", "lease"].contains(&cols[4]),
                "name of {line:?}"
            );
            assert!(
                [
                    "call",
                    "restart-call",
                    "consumers-call",
                    "apply-create",
                    "admission"
                ]
                .contains(&cols[5]),
                "how of {line:?}"
            );
            Right {
                scope: cols[0].into(),
                group: cols[1].into(),
                resource: cols[2].into(),
                verb: cols[3].into(),
                name: cols[4].into(),
                how: cols[5].into(),
            }
        })
        .collect()
}

/// The table as the observed set should look (the test always exercises restarts and
/// consumers).
fn expected() -> BTreeSet<Right> {
    table()
        .into_iter()
        .map(|mut r| {
            if matches!(r.how.as_str(), "restart-call" | "consumers-call") {
                r.how = "call".into();
            }
            r
        })
        .collect()
}

/// The workload kinds the consumer watch lists and watches.
const WORKLOADS: [(&str, &str); 6] = [
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
];

#[test]
fn table_is_well_formed() {
    let rows = table();
    let unique: BTreeSet<_> = rows.iter().collect();
    assert_eq!(unique.len(), rows.len(), "duplicate rows in the table");
    // resourceNames only where RBAC can use them: never on create (the name is not in the URL).
    for r in &rows {
        if r.name != "-" {
            assert_eq!(r.scope, "release", "{r}");
            assert_ne!(r.verb, "create", "{r}");
        }
    }
    // The optional restart rights are exactly the three workload kinds' patch.
    let restarts: BTreeSet<_> = rows
        .iter()
        .filter(|r| r.how == "restart-call")
        .map(|r| (r.group.as_str(), r.resource.as_str(), r.verb.as_str()))
        .collect();
    assert_eq!(
        restarts,
        BTreeSet::from([
            ("apps", "daemonsets", "patch"),
            ("apps", "deployments", "patch"),
            ("apps", "statefulsets", "patch"),
        ])
    );
    // The optional consumer rights are exactly list and watch of the six workload kinds.
    let consumers: BTreeSet<_> = rows
        .iter()
        .filter(|r| r.how == "consumers-call")
        .map(|r| (r.group.as_str(), r.resource.as_str(), r.verb.as_str()))
        .collect();
    let want: BTreeSet<_> = WORKLOADS
        .iter()
        .flat_map(|(g, r)| [(*g, *r, "list"), (*g, *r, "watch")])
        .collect();
    assert_eq!(consumers, want);
}

/// The operator never sends a request to a `/finalizers` subresource (it sets no finalizers),
/// so no recording can show this right being used by a call. It is required by the API server
/// all the same: with the OwnerReferencesPermissionEnforcement admission plugin enabled, a
/// write that sets an ownerReference with `blockOwnerDeletion: true` is rejected unless the
/// writer may `update` the owner's `finalizers` subresource. tokenmint sets
/// `blockOwnerDeletion: true` on every token and key Secret (`token_secret::Owner::of`), so the
/// table must grant it for all three owner kinds, marked `admission`. The main test checks the
/// other half: the recorded Secret writes do carry `blockOwnerDeletion: true`, for each kind.
#[test]
fn table_grants_finalizers_update_for_block_owner_deletion() {
    let rows = table();
    for kind in ["servicekeys", "datasourcegrants", "guesttokenrequests"] {
        let row = Right {
            scope: "watched".into(),
            group: "tokenmint.dev".into(),
            resource: format!("{kind}/finalizers"),
            verb: "update".into(),
            name: "-".into(),
            how: "admission".into(),
        };
        assert!(rows.contains(&row), "missing: {row}");
    }
    assert!(
        rows.iter()
            .filter(|r| r.how == "admission")
            .all(|r| r.resource.ends_with("/finalizers") && r.verb == "update"),
        "only /finalizers update is an admission-only right"
    );
}

// ---------------------------------------------------------------------------------------------
// The recording fake API server (tests/support/fake_api.rs) and what its calls need

fn right(call: &Call) -> Right {
    let scope = if call.resource == "tokenreviews" {
        // cluster-scoped
        "cluster"
    } else if call.namespace.as_deref() == Some(RELEASE_NS) {
        "release"
    } else {
        // another namespace, or all namespaces (a ClusterRole)
        "watched"
    };
    let name = match (scope, call.name.as_deref()) {
        ("release", Some(KEYRING)) => "keyring".to_owned(),
        ("release", Some(LEASE)) => "lease".to_owned(),
        // Revocation ConfigMaps are addressed by name only to delete them: any name.
        ("release", Some(_)) if call.resource == "configmaps" => "-".to_owned(),
        ("release", Some(other)) => format!("unexpected-name:{other}"),
        _ => "-".to_owned(),
    };
    Right {
        scope: scope.into(),
        group: if call.group.is_empty() {
            "core".into()
        } else {
            call.group.clone()
        },
        resource: call.resource.clone(),
        verb: call.verb.clone(),
        name,
        how: match call.origin {
            Origin::Request => "call",
            Origin::ApplyCreate => "apply-create",
            Origin::Admission => "admission",
        }
        .into(),
    }
}

async fn wait_for(fake: &Fake, what: &str, done: impl Fn() -> bool) {
    fake_api::wait_for(fake, DEADLINE, what, done).await
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn seed(fake: &Fake) {
    let g = "tokenmint.dev";
    fake.put(
        g,
        "servicekeys",
        custom(
            "ServiceKey",
            "analytics",
            json!({"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"},
                   "dataSources": ["Data_3_E"], "workspaces": ["*"],
                   "sessionToken": {"secretName": "analytics-session"}}),
        ),
    );
    // rolloutRestart, with a token Secret of an older spec: re-minted (a rotation), so its
    // consumers are due a restart.
    fake.put(
        g,
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "dashboards",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E",
                   "rolloutRestart": [{"kind": "Deployment", "name": "web"}],
                   "restartConsumers": true}),
        ),
    );
    fake.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/token",
               "metadata": {"name": "dashboards-token", "namespace": WATCHED_NS, "uid": "uid-secret-dashboards",
                            "labels": {MANAGED_BY_LABEL: "tokenmint", "tokenmint.dev/owner-kind": "DatasourceGrant",
                                       "tokenmint.dev/secret-role": "token"},
                            "annotations": {"tokenmint.dev/spec-hash": "stale"},
                            "ownerReferences": owner_ref("DatasourceGrant", "dashboards")},
               "data": {"token": "c3RhbGU="}}),
    );
    // A new grant: its token Secret is created by server-side apply.
    fake.put(
        g,
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "reports",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
        ),
    );
    // Not allowed by the ServiceKey: its existing token Secret must go.
    fake.put(
        g,
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "forbidden",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Other"}),
        ),
    );
    fake.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/token",
               "metadata": {"name": "forbidden-token", "namespace": WATCHED_NS, "uid": "uid-secret-forbidden",
                            "labels": {MANAGED_BY_LABEL: "tokenmint", "tokenmint.dev/owner-kind": "DatasourceGrant",
                                       "tokenmint.dev/secret-role": "token"},
                            "annotations": {"tokenmint.dev/token-id": "5e1c0a4e-7d43-4d0b-8a6e-2f4c1b9d7a01",
                                            "tokenmint.dev/expires-at": "2036-12-31T00:00:00Z",
                                            "tokenmint.dev/issued-at": "2114380800",
                                            "tokenmint.dev/service-key-uid": "uid-analytics"},
                            "ownerReferences": owner_ref("DatasourceGrant", "forbidden")},
               "data": {"token": "eA=="}}),
    );
    // Its Secret name is taken by someone else's Secret (not in the label-selected cache).
    fake.put(
        g,
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "conflicting",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
        ),
    );
    fake.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "conflicting-token", "namespace": WATCHED_NS, "uid": "uid-foreign"},
               "data": {"password": "eA=="}}),
    );
    fake.put(
        g,
        "guesttokenrequests",
        custom(
            "GuestTokenRequest",
            "embed",
            json!({"serviceKeyRef": {"name": "analytics"}, "workspaceName": "ws", "clientId": "portal",
                   "expiryTime": 3_600_000}),
        ),
    );
    for (resource, kind, name) in [
        ("deployments", "Deployment", "web"),
        ("statefulsets", "StatefulSet", "db"),
        ("daemonsets", "DaemonSet", "agent"),
    ] {
        fake.put(
            "apps",
            resource,
            json!({"apiVersion": "apps/v1", "kind": kind,
                   "metadata": {"name": name, "namespace": WATCHED_NS, "uid": format!("uid-{name}")},
                   "spec": {"selector": {}, "template": {}}}),
        );
    }
    // A consumer of the rotated grant's token that cannot see the rotation (restartConsumers).
    fake.put(
        "apps",
        "deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "reports", "namespace": WATCHED_NS, "uid": "uid-reports"},
               "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c",
                   "envFrom": [{"secretRef": {"name": "dashboards-token"}}]}]}}}}),
    );
}

/// Runs the controllers as a term does (the Kubernetes Events recorder, revocations in the
/// release namespace) over `namespaces` (empty: all), watching workloads for consumers or not,
/// until `done`; then stops them.
async fn controllers_until(
    fake: &Fake,
    (keyring, fence): (SharedKeyring, Fence),
    namespaces: &[String],
    consumers: bool,
    (what, done): (&str, impl Fn(&Readiness) -> bool),
) {
    let client = fake.client();
    let (_changed_tx, changed_rx) = watch::channel(0u64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let shared = Shared {
        client: client.clone(),
        keyring,
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        events: recorder(&client),
        metrics: Arc::new(Metrics::default()),
        clock: Clock::system(),
        revoker: Revoker::Kube {
            api: Api::namespaced(client.clone(), RELEASE_NS),
            denylist: Default::default(),
        },
        fence,
        consumers,
        restart_window: Duration::from_millis(200),
        verified: Default::default(),
    };
    let namespaces = namespaces.to_vec();
    let running = tokio::spawn({
        let readiness = readiness.clone();
        async move { controllers::run(shared, &namespaces, stop_rx, readiness).await }
    });
    wait_for(fake, what, || done(&readiness)).await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("controllers did not stop")
        .unwrap();
}

fn recorder(client: &kube::Client) -> Events {
    Events::Kube(Recorder::new(
        client.clone(),
        Reporter {
            controller: "tokenmint".into(),
            instance: Some("tokenmint-0".into()),
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// The audit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_uses_exactly_the_rbac_table() {
    let fake = Fake::default();
    seed(&fake);
    let client = fake.client();
    let metrics = Arc::new(Metrics::default());

    // --- operator start-up, as src/operator.rs runs it ---
    fake.phase("operator: keyring");
    let keyring_api: Api<Secret> = Api::namespaced(client.clone(), RELEASE_NS);
    let now = jiff::Timestamp::now();
    let (ring, _) =
        keyring::load_or_create(&keyring_api, RELEASE_NS, KEYRING, ALGORITHM, now, &metrics)
            .await
            .expect("keyring created");
    assert!(fake.saw("operator: keyring", "create", "secrets", None));
    // A second replica loads the existing keyring.
    keyring::load_or_create(&keyring_api, RELEASE_NS, KEYRING, ALGORITHM, now, &metrics)
        .await
        .expect("keyring loaded");
    // An administrator requests a rotation (kubectl annotate; not the operator's call).
    let mut stored = fake.get("", "secrets", RELEASE_NS, KEYRING).unwrap();
    stored["metadata"]["annotations"] = json!({ROTATE_ANNOTATION: "1"});
    fake.put("", "secrets", stored);

    let shared_ring = Arc::new(RwLock::new(ring));
    let (changed_tx, changed_rx) = watch::channel(0u64);
    // Leader election, as the operator builds it, with a 3s Lease renewed every 200ms instead
    // of 15s/2s so renewals happen within the test.
    let elector = Elector::new(
        Api::namespaced(client.clone(), RELEASE_NS),
        LEASE,
        "tokenmint-0-1234abcd",
        LeaseTiming {
            duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry: Duration::from_millis(200),
        },
    );
    let fence = elector.fence();
    tokio::spawn(keyring::watch(
        keyring_api.clone(),
        KEYRING.into(),
        ALGORITHM,
        shared_ring.clone(),
        changed_tx,
        fence.clone(),
        metrics.clone(),
    ));
    wait_for(&fake, "the keyring watch", || {
        fake.saw("operator: keyring", "watch", "secrets", Some(KEYRING))
    })
    .await;

    fake.phase("operator: leader election");
    let (leading_tx, mut leading) = watch::channel(false);
    let (stop_lease_tx, stop_lease_rx) = watch::channel(false);
    let lease_task = tokio::spawn(elector.run(leading_tx, stop_lease_rx));
    tokio::time::timeout(DEADLINE, leading.wait_for(|leading| *leading))
        .await
        .expect("no leadership")
        .expect("lease task ended");
    // A rotation requested while no replica led is handled now (the keyring watch may race it:
    // the loser gets a conflict, as in the operator).
    let secret = keyring_api.get_opt(KEYRING).await.unwrap().unwrap();
    let _ = keyring::rotate_if_requested(
        &keyring_api,
        &secret,
        ALGORITHM,
        jiff::Timestamp::now(),
        &metrics,
    )
    .await;
    wait_for(&fake, "the keyring rotation", || {
        fake.count("update", "secrets") >= 1
    })
    .await;

    // --- the controllers, all namespaces, with the Kubernetes Events recorder ---
    fake.phase("operator: controllers");
    let (stop_tx, stop_rx) = watch::channel(false);
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let revocations: Api<ConfigMap> = Api::namespaced(client.clone(), RELEASE_NS);
    let shared = Shared {
        client: client.clone(),
        keyring: shared_ring.clone(),
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        events: recorder(&client),
        metrics: metrics.clone(),
        clock: Clock::system(),
        revoker: Revoker::Kube {
            api: revocations.clone(),
            denylist: Default::default(),
        },
        fence: fence.clone(),
        consumers: true,
        restart_window: Duration::from_millis(200),
        verified: Default::default(),
    };
    let running = tokio::spawn({
        let readiness = readiness.clone();
        async move { controllers::run(shared, &[], stop_rx, readiness).await }
    });
    let phase = "operator: controllers";
    wait_for(&fake, "the controllers' writes", || {
        readiness.is_ready()
            && fake.saw(phase, "patch", "servicekeys/status", Some("analytics"))
            && fake.saw(
                phase,
                "patch",
                "datasourcegrants/status",
                Some("dashboards"),
            )
            && fake.saw(phase, "patch", "datasourcegrants/status", Some("forbidden"))
            && fake.saw(
                phase,
                "patch",
                "datasourcegrants/status",
                Some("conflicting"),
            )
            && fake.saw(phase, "patch", "guesttokenrequests/status", Some("embed"))
            && fake.saw(phase, "delete", "secrets", Some("forbidden-token"))
            // Its token is revoked first: a ConfigMap in the release namespace.
            && fake.saw(phase, "create", "configmaps", None)
            && fake.saw(phase, "get", "secrets", Some("conflicting-token"))
            // New Secrets are created (POST: the name is in the body, not the path): the key,
            // the session token, the guest token and the new grant's token.
            && fake
                .calls()
                .iter()
                .filter(|c| {
                    c.phase == phase
                        && c.origin == Origin::Request
                        && c.verb == "create"
                        && c.resource == "secrets"
                })
                .count()
                >= 4
            && fake.saw(phase, "patch", "secrets", Some("dashboards-token"))
            // The consumer of the rotated token, restarted (restartConsumers).
            && fake.saw(phase, "patch", "deployments", Some("reports"))
    })
    .await;
    // The foreign Secret is never written (a create that it refuses is not a write of it).
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| !matches!(c.verb.as_str(), "get" | "create")
                && c.name.as_deref() == Some("conflicting-token")),
        "the conflicting foreign Secret was written"
    );
    // Lease renewals.
    wait_for(&fake, "a Lease renewal", || {
        fake.count("patch", "leases") >= 2
    })
    .await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("controllers did not stop")
        .unwrap();

    // --- the off switch: `--consumers=false` (consumers.enabled=false in the chart, which
    // then grants no right on workloads) lists and watches no workload ---
    let phase = "operator: controllers, consumers off";
    fake.phase(phase);
    let ready = |r: &Readiness| r.is_ready() && fake.saw(phase, "watch", "secrets", None);
    let term = (shared_ring.clone(), fence.clone());
    controllers_until(
        &fake,
        term,
        &[],
        false,
        ("the controllers without consumers", ready),
    )
    .await;
    let workload_calls: Vec<String> = fake
        .calls()
        .iter()
        .filter(|c| c.phase == phase && WORKLOADS.iter().any(|(_, r)| c.resource == *r))
        .map(|c| c.request.clone())
        .collect();
    assert_eq!(workload_calls, Vec::<String>::new(), "--consumers=false");

    // Shutdown: the election task releases the Lease.
    fake.phase("operator: shutdown");
    stop_lease_tx.send(true).unwrap();
    tokio::time::timeout(DEADLINE, lease_task)
        .await
        .expect("the lease task did not end")
        .unwrap();
    assert!(fake.saw("operator: shutdown", "patch", "leases", Some(LEASE)));

    // The leader's sweep of revocations whose tokens can no longer verify.
    fake.phase("operator: revocation sweep");
    // Past the day of the forbidden grant's token expiry (2036-12-31), and its leeway.
    let far_future = jiff::Timestamp::from_second(2_120_000_000).unwrap();
    let swept = tokenmint::revocation::sweep(&revocations, &[], None, far_future, || true)
        .await
        .expect("sweep");
    assert!(
        swept >= 1,
        "the forbidden grant's revocation is swept eventually"
    );

    // --- the restart worker: one workload of each kind, the Deployment twice ---
    fake.phase("operator: restarts");
    let (stop2_tx, stop2_rx) = watch::channel(false);
    let (restarter, worker) = Restarter::spawn(
        client.clone(),
        recorder(&client),
        metrics.clone(),
        Duration::from_millis(50),
        tokenmint::fence::Fence::always(),
        stop2_rx,
    );
    let regarding = ObjectReference {
        api_version: Some("tokenmint.dev/v1alpha1".into()),
        kind: Some("DatasourceGrant".into()),
        namespace: Some(WATCHED_NS.into()),
        name: Some("dashboards".into()),
        uid: Some("uid-dashboards".into()),
        ..ObjectReference::default()
    };
    let request = |token_id: &str, workloads: Vec<WorkloadRef>| restart::Request {
        namespace: WATCHED_NS.into(),
        secret: "dashboards-token".into(),
        token_id: token_id.into(),
        workloads: workloads.into_iter().map(Into::into).collect(),
        regarding: regarding.clone(),
    };
    let workload = |kind, name: &str| WorkloadRef {
        kind,
        name: name.into(),
    };
    restarter.request(request(
        "t1",
        vec![
            workload(WorkloadKind::Deployment, "web"),
            workload(WorkloadKind::StatefulSet, "db"),
            workload(WorkloadKind::DaemonSet, "agent"),
        ],
    ));
    // A CronJob cannot be restarted: reported (an Event), no request.
    restarter.request(restart::Request {
        workloads: vec![tokenmint::consumers::Workload {
            kind: tokenmint::consumers::Kind::CronJob,
            name: "export".into(),
        }],
        ..request("t1", Vec::new())
    });
    let phase = "operator: restarts";
    wait_for(&fake, "the restarts", || {
        fake.saw(phase, "patch", "deployments", Some("web"))
            && fake.saw(phase, "patch", "statefulsets", Some("db"))
            && fake.saw(phase, "patch", "daemonsets", Some("agent"))
            && fake.saw(phase, "patch", "secrets", Some("dashboards-token"))
            && fake.saw(phase, "create", "events", None)
    })
    .await;
    // The same event again: the recorder folds it into a series (a patch).
    restarter.request(request(
        "t2",
        vec![workload(WorkloadKind::Deployment, "web")],
    ));
    wait_for(&fake, "an event series", || {
        fake.saw(phase, "patch", "events", None)
    })
    .await;
    stop2_tx.send(true).unwrap();
    let _ = tokio::time::timeout(DEADLINE, worker).await;

    // --- the serve container's cluster store ---
    fake.phase("serve");
    let args = CommonArgs {
        algorithm: ALGORITHM,
        issuer: "tokenmint".into(),
        namespace: RELEASE_NS.into(),
        watch_namespaces: Vec::new(),
        keyring_secret: KEYRING.into(),
    };
    let denylist = Arc::new(Denylist::default());
    let _store = tokenmint::http::cluster::start(
        client.clone(),
        &args,
        &Default::default(),
        denylist.clone(),
    );
    // POST /oauth/revoke records a revocation as the operator does.
    let revoker = Revoker::Kube {
        api: Api::namespaced(client.clone(), RELEASE_NS),
        denylist: denylist.clone(),
    };
    // Two entries of one day (its bucket created, then patched), and a ServiceKey's marker
    // raised twice (its shard read, created; read, patched with its resourceVersion).
    use tokenmint::revocation::{Revocation, Target};
    let in_an_hour = jiff::Timestamp::now().as_second() + 3_600;
    for target in [
        Target::Token {
            jti: "0b6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11".into(),
            expires_at: in_an_hour,
        },
        Target::Token {
            jti: "1b6f0e3c-5d2a-4d7e-9a51-1f7c6f0e2a11".into(),
            expires_at: in_an_hour,
        },
        Target::NeverExpiring { issued_at: 100 },
        Target::NeverExpiring { issued_at: 200 },
    ] {
        revoker
            .revoke(&Revocation {
                target,
                service_key_uid: "uid-analytics".into(),
                origin: tokenmint::revocation::Origin::Caller,
                reason: "rbac test".into(),
            })
            .await
            .expect("revoked");
    }
    assert!(fake.saw("serve", "patch", "configmaps", None));
    assert!(fake.saw("serve", "get", "configmaps", None));
    // A keyless caller: its ServiceAccount token is checked with TokenReview, once the
    // cluster's issuer is known (the discovery document is a non-resource URL every
    // ServiceAccount may read: Kubernetes' default system:service-account-issuer-discovery
    // binding grants it to the group system:serviceaccounts).
    let projected = fake_api::projected_token("report-api", 600);
    fake.service_account_token(
        &projected,
        "system:serviceaccount:team-a:report-api",
        &["tokenmint"],
    );
    let reviewer = tokenmint::tokenreview::Reviewer::new(
        Api::all(client.clone()),
        vec!["tokenmint".into()],
        tokenmint::tokenreview::Issuers::discover(client.clone()),
    );
    let account = loop {
        match reviewer.review(&projected).await {
            Err(tokenmint::tokenreview::ReviewError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            answer => break answer.expect("reviewed"),
        }
    };
    assert_eq!(account.name, "report-api");
    wait_for(&fake, "serve's watches", || {
        fake.saw("serve", "create", "tokenreviews", None)
            && fake.saw("serve", "watch", "servicekeys", None)
            && fake.saw("serve", "watch", "secrets", Some(KEYRING))
            && fake.saw("serve", "watch", "configmaps", None)
            && fake.saw("serve", "create", "configmaps", None)
            && fake.calls().iter().any(|c| {
                c.phase == "serve"
                    && c.verb == "watch"
                    && c.resource == "secrets"
                    && c.name.is_none()
            })
    })
    .await;

    // --- watchNamespaces set: the chart then grants the watched rights by a Role in each
    // watched namespace, so no request may be cluster-wide or go to another namespace ---
    fake.phase("namespaced: controllers");
    let term = (shared_ring.clone(), tokenmint::fence::Fence::always());
    let ready = ("the namespaced controllers' caches", Readiness::is_ready);
    controllers_until(&fake, term, &[WATCHED_NS.into()], true, ready).await;
    fake.phase("namespaced: serve");
    let args = CommonArgs {
        watch_namespaces: vec![WATCHED_NS.into()],
        ..args
    };
    let _store = tokenmint::http::cluster::start(
        client.clone(),
        &args,
        &Default::default(),
        Arc::new(Denylist::default()),
    );
    wait_for(&fake, "serve's namespaced watches", || {
        let calls = fake.calls();
        let watched = |resource: &str, name: Option<&str>| {
            calls.iter().any(|c| {
                c.phase == "namespaced: serve"
                    && c.verb == "watch"
                    && c.resource == resource
                    && c.name.as_deref() == name
            })
        };
        watched("servicekeys", None)
            && watched("secrets", None)
            && watched("secrets", Some(KEYRING))
    })
    .await;
    let stray: Vec<String> = fake
        .calls()
        .iter()
        .filter(|c| {
            c.phase.starts_with("namespaced:")
                && !matches!(c.namespace.as_deref(), Some(WATCHED_NS | RELEASE_NS))
        })
        .map(|c| format!("[{}] {}", c.phase, c.request))
        .collect();
    assert!(
        stray.is_empty(),
        "with watchNamespaces, requests outside the watched and release namespaces: {stray:#?}"
    );

    // --- blockOwnerDeletion on every owner reference written, for every owner kind ---
    let mut owner_kinds = BTreeSet::new();
    for secret in fake.secret_writes() {
        for owner in secret["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                owner["blockOwnerDeletion"],
                json!(true),
                "owner reference without blockOwnerDeletion=true: {secret}"
            );
            assert_eq!(owner["controller"], json!(true), "{secret}");
            owner_kinds.insert(owner["kind"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(
        owner_kinds,
        BTreeSet::from([
            "DatasourceGrant".to_owned(),
            "GuestTokenRequest".to_owned(),
            "ServiceKey".to_owned(),
        ]),
        "Secret writes with owner references, by owner kind"
    );

    // --- observed == table ---
    let calls = fake.calls();
    // Non-resource URLs need no rule of ours. The only one used is the service-account issuer
    // discovery document (serve, for keyless callers), which Kubernetes' default ClusterRole-
    // Binding system:service-account-issuer-discovery grants to the group
    // system:serviceaccounts, so to every ServiceAccount.
    let non_resource: BTreeSet<&str> = calls
        .iter()
        .filter(|c| c.group == "<non-resource>")
        .map(|c| c.resource.as_str())
        .collect();
    assert_eq!(
        non_resource,
        BTreeSet::from(["/.well-known/openid-configuration"])
    );
    let calls: Vec<Call> = calls
        .into_iter()
        .filter(|c| c.group != "<non-resource>")
        .collect();
    let observed: BTreeSet<Right> = calls.iter().map(right).collect();
    let want = expected();
    let ungranted: Vec<String> = observed
        .difference(&want)
        .map(|r| {
            let examples: Vec<&str> = calls
                .iter()
                .filter(|c| right(c) == *r)
                .map(|c| c.request.as_str())
                .take(3)
                .collect();
            format!("{r}  (e.g. {examples:?})")
        })
        .collect();
    let unused: Vec<String> = want.difference(&observed).map(|r| r.to_string()).collect();
    let mut by_component: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &calls {
        by_component
            .entry(c.phase.clone())
            .or_default()
            .insert(right(c).to_string());
    }
    println!("rights used, by phase: {by_component:#?}");
    assert!(
        ungranted.is_empty() && unused.is_empty(),
        "the code and charts/tokenmint/rbac-requirements.txt disagree\n\
         used but not in the table (missing grant): {ungranted:#?}\n\
         in the table but never used (excess grant): {unused:#?}"
    );
}

//! The consumer-restart worker against a scripted API server: restarts of one workload
//! requested within the coalescing window become one pod-template patch, and the Secrets they
//! served are marked afterwards; a missing or forbidden workload is reported and not retried.

use axum::http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokenmint::crd::{WorkloadKind, WorkloadRef};
use tokenmint::fence::Fence;
use tokenmint::reconcile::events::{Events, Published};
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::restart::{
    self, RESTARTED_AT_ANNOTATION, RESTARTED_FOR_ANNOTATION, Restarter,
};
use tower_test::mock::Handle;

const NS: &str = "team-a";
const WINDOW: Duration = Duration::from_secs(30);

type MockHandle = Handle<Request<Body>, Response<Body>>;

fn start() -> (
    Restarter,
    MockHandle,
    Events,
    tokio::sync::watch::Sender<bool>,
) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let events = Events::memory();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (restarter, _) = Restarter::spawn(
        Client::new(service, "default"),
        events.clone(),
        Arc::new(Metrics::default()),
        WINDOW,
        Fence::always(),
        stop_rx,
    );
    (restarter, handle, events, stop)
}

fn request(secret: &str, token_id: &str, workloads: &[WorkloadRef]) -> restart::Request {
    restart::Request {
        namespace: NS.into(),
        secret: secret.into(),
        token_id: token_id.into(),
        workloads: workloads.iter().map(Into::into).collect(),
        regarding: ObjectReference {
            kind: Some("DatasourceGrant".into()),
            namespace: Some(NS.into()),
            name: Some(secret.trim_end_matches("-token").into()),
            ..ObjectReference::default()
        },
    }
}

fn deployment(name: &str) -> WorkloadRef {
    WorkloadRef {
        kind: WorkloadKind::Deployment,
        name: name.into(),
    }
}

/// The next request: a merge patch by the restart field manager to `path`; answered with
/// `status`. Returns the patch body.
async fn expect_patch(handle: &mut MockHandle, path: &str, status: StatusCode) -> Value {
    let (request, send) = tokio::time::timeout(Duration::from_secs(120), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request; expected PATCH {path}"))
        .expect("client gone");
    assert_eq!(
        (request.method(), request.uri().path()),
        (&Method::PATCH, path)
    );
    assert_eq!(
        request.headers()["content-type"],
        "application/merge-patch+json"
    );
    assert!(
        request
            .uri()
            .query()
            .unwrap_or_default()
            .contains("fieldManager=tokenmint-restart"),
        "{:?}",
        request.uri().query()
    );
    let bytes = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let answer = if status == StatusCode::OK {
        let (kind, api_version) = if path.contains("/deployments/") {
            ("Deployment", "apps/v1")
        } else {
            ("Secret", "v1")
        };
        let name = path.rsplit('/').next().unwrap();
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": NS}})
    } else {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": status.as_u16(), "message": "not found"})
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    body
}

/// With time paused, the runtime jumps over idle waits: no request within a minute of virtual
/// time means none will come.
async fn expect_quiet(handle: &mut MockHandle) {
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await
    {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

/// After a restart that cannot succeed: the Secret `a-token` is marked as served, no request
/// follows for two minutes, and one Warning Event says why. Returns it.
async fn marked_and_reported(handle: &mut MockHandle, events: &Events) -> Published {
    expect_patch(
        handle,
        "/api/v1/namespaces/team-a/secrets/a-token",
        StatusCode::OK,
    )
    .await;
    expect_quiet(handle).await;
    expect_quiet(handle).await;
    let mut warnings: Vec<_> = events
        .published()
        .into_iter()
        .filter(|e| e.warning)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    warnings.remove(0)
}

#[tokio::test(start_paused = true)]
async fn rotations_within_the_window_restart_a_workload_once() {
    let (restarter, mut handle, events, _stop) = start();
    let started = tokio::time::Instant::now();
    // Two grants feeding the same Deployment rotate together; one asks twice (a resync).
    restarter.request(request("a-token", "jti-a", &[deployment("app")]));
    restarter.request(request("b-token", "jti-b", &[deployment("app")]));
    restarter.request(request("a-token", "jti-a", &[deployment("app")]));

    let patch = expect_patch(
        &mut handle,
        "/apis/apps/v1/namespaces/team-a/deployments/app",
        StatusCode::OK,
    )
    .await;
    assert!(
        tokio::time::Instant::now() - started >= WINDOW,
        "fired before the window closed"
    );
    let at = patch["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION]
        .as_str()
        .expect("restartedAt annotation");
    assert!(at.parse::<jiff::Timestamp>().is_ok(), "{at}");

    // Then each Secret is marked with the token its consumers now hold.
    for (secret, id) in [("a-token", "jti-a"), ("b-token", "jti-b")] {
        let mark = expect_patch(
            &mut handle,
            &format!("/api/v1/namespaces/team-a/secrets/{secret}"),
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            mark,
            json!({"metadata": {"annotations": {RESTARTED_FOR_ANNOTATION: id}}})
        );
    }
    expect_quiet(&mut handle).await;
    let published = events.published();
    assert_eq!(published.len(), 2, "one Event per grant: {published:?}");
    assert!(
        published
            .iter()
            .all(|e| e.reason == "RolloutRestarted" && !e.warning)
    );

    // A later rotation is a new restart.
    restarter.request(request("a-token", "jti-a2", &[deployment("app")]));
    expect_patch(
        &mut handle,
        "/apis/apps/v1/namespaces/team-a/deployments/app",
        StatusCode::OK,
    )
    .await;
    let mark = expect_patch(
        &mut handle,
        "/api/v1/namespaces/team-a/secrets/a-token",
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        mark["metadata"]["annotations"][RESTARTED_FOR_ANNOTATION],
        "jti-a2"
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_workload_is_reported_and_not_retried() {
    let (restarter, mut handle, events, _stop) = start();
    let workloads = [
        WorkloadRef {
            kind: WorkloadKind::StatefulSet,
            name: "gone".into(),
        },
        WorkloadRef {
            kind: WorkloadKind::DaemonSet,
            name: "agent".into(),
        },
    ];
    restarter.request(request("a-token", "jti-a", &workloads));
    // Both fire in one batch, in any order.
    let mut paths = Vec::new();
    for _ in 0..2 {
        let (request, send) = handle.next_request().await.expect("client gone");
        let path = request.uri().path().to_owned();
        let missing = path.contains("statefulsets");
        let (status, answer) = if missing {
            (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
            )
        } else {
            (
                200,
                json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": NS}}),
            )
        };
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        paths.push(path);
    }
    paths.sort();
    assert_eq!(
        paths,
        [
            "/apis/apps/v1/namespaces/team-a/daemonsets/agent",
            "/apis/apps/v1/namespaces/team-a/statefulsets/gone"
        ]
    );
    // The Secret is marked once both are done: a missing workload is not retried forever.
    let warning = marked_and_reported(&mut handle, &events).await;
    assert_eq!(warning.reason, "RolloutRestartFailed");
    assert!(warning.note.contains("gone"), "{}", warning.note);
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_restart_is_reported_once_and_not_retried() {
    let (restarter, mut handle, events, _stop) = start();
    restarter.request(request("a-token", "jti-a", &[deployment("app")]));
    let (request, send) = handle.next_request().await.expect("client gone");
    assert_eq!(
        request.uri().path(),
        "/apis/apps/v1/namespaces/team-a/deployments/app"
    );
    let answer = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": "deployments.apps \"app\" is forbidden"});
    send.send_response(
        Response::builder()
            .status(403)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    // Marked as served, then nothing more: it used to retry every minute for ever.
    let warning = marked_and_reported(&mut handle, &events).await;
    assert_eq!(warning.reason, "RolloutRestartForbidden");
    assert!(
        warning.note.contains("rbac.allowWorkloadRestarts") && warning.note.contains("app"),
        "{}",
        warning.note
    );
}

#[test]
fn pending_compares_the_marker_with_the_token_in_place() {
    assert!(restart::pending(None, "jti"));
    assert!(restart::pending(Some("old"), "jti"));
    assert!(!restart::pending(Some("jti"), "jti"));
}

#[tokio::test(start_paused = true)]
async fn a_secret_rotated_twice_in_the_window_is_marked_with_its_newest_token() {
    // Two grants naming one Deployment, three rotations within the window: one restart, and
    // each Secret marked with the token its consumers now run with — marking an older one
    // would ask for a second restart.
    let (restarter, mut handle, _events, _stop) = start();
    restarter.request(request("a-token", "jti-a1", &[deployment("app")]));
    restarter.request(request("b-token", "jti-b1", &[deployment("app")]));
    tokio::time::sleep(Duration::from_secs(8)).await;
    restarter.request(request("a-token", "jti-a2", &[deployment("app")]));
    expect_patch(
        &mut handle,
        "/apis/apps/v1/namespaces/team-a/deployments/app",
        StatusCode::OK,
    )
    .await;
    let mut marks = Vec::new();
    for _ in 0..2 {
        let (request, send) = handle.next_request().await.expect("client gone");
        let path = request.uri().path().to_owned();
        let bytes = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        marks.push((
            path,
            body["metadata"]["annotations"][RESTARTED_FOR_ANNOTATION].clone(),
        ));
        send.send_response(
            Response::builder()
                .body(Body::from(
                    serde_json::to_vec(
                        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
                    )
                    .unwrap(),
                ))
                .unwrap(),
        );
    }
    marks.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        marks,
        [
            (
                "/api/v1/namespaces/team-a/secrets/a-token".to_owned(),
                json!("jti-a2")
            ),
            (
                "/api/v1/namespaces/team-a/secrets/b-token".to_owned(),
                json!("jti-b1")
            ),
        ]
    );
    expect_quiet(&mut handle).await;
}

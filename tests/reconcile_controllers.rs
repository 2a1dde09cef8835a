//! The controller wiring (`reconcile::controllers::run`) against a fake API server built on
//! `tower_test::mock`: lists answer from fixed objects, watches stay open and silent, writes
//! are recorded. Checks that the caches sync (readiness), that a grant listed at start-up gets
//! its token and status, that the Secret watch is label-selected, and that shutdown ends the
//! controllers.

use axum::http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::reconcile::Clock;
use tokenmint::reconcile::controllers::{self, Readiness, Shared};
use tokenmint::reconcile::events::Events;
use tokenmint::reconcile::metrics::Metrics;
use tokio::sync::watch;

#[derive(Default)]
struct Seen {
    /// `METHOD path?query` of every request.
    requests: Vec<String>,
    /// Bodies of the writes, by path.
    writes: Vec<(String, Value)>,
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": "10"}, "items": items})
}

fn respond(body: &Value, status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn controllers_sync_mint_and_shut_down() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let seen = Arc::new(Mutex::new(Seen::default()));

    let key = json!({
        "apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
        "metadata": {"name": "analytics", "namespace": "team-a", "uid": "uid-sk", "resourceVersion": "3", "generation": 1},
        "spec": {"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"}, "dataSources": ["*"]}
    });
    let grant = json!({
        "apiVersion": "tokenmint.dev/v1alpha1", "kind": "DatasourceGrant",
        "metadata": {"name": "dashboards", "namespace": "team-a", "uid": "uid-dsg", "resourceVersion": "4", "generation": 1},
        "spec": {"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}
    });

    // The fake API server.
    let server = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut open_watches = Vec::new();
            let mut rv = 100;
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or_default().to_owned();
                seen.lock()
                    .unwrap()
                    .requests
                    .push(format!("{method} {path}?{query}"));
                if query.contains("watch=true") {
                    open_watches.push(send); // stays open, silent
                    continue;
                }
                let body = request.into_body().collect_bytes().await.unwrap();
                let response = match (method, path.as_str()) {
                    (Method::GET, "/apis/tokenmint.dev/v1alpha1/servicekeys") => {
                        respond(&list("ServiceKey", vec![key.clone()]), StatusCode::OK)
                    }
                    (Method::GET, "/apis/tokenmint.dev/v1alpha1/datasourcegrants") => respond(
                        &list("DatasourceGrant", vec![grant.clone()]),
                        StatusCode::OK,
                    ),
                    (Method::GET, "/apis/tokenmint.dev/v1alpha1/guesttokenrequests") => {
                        respond(&list("GuestTokenRequest", vec![]), StatusCode::OK)
                    }
                    (Method::GET, "/api/v1/secrets") => {
                        respond(&list("Secret", vec![]), StatusCode::OK)
                    }
                    (Method::GET, _) => respond(
                        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                        StatusCode::NOT_FOUND,
                    ),
                    (method @ (Method::POST | Method::PATCH), _) => {
                        let mut value: Value = serde_json::from_slice(&body).unwrap();
                        // A create names its object in the body: record it by object path.
                        let object_path = if method == Method::POST {
                            format!("{path}/{}", value["metadata"]["name"].as_str().unwrap())
                        } else {
                            path.clone()
                        };
                        seen.lock()
                            .unwrap()
                            .writes
                            .push((object_path, value.clone()));
                        rv += 1;
                        if path.ends_with("/status") {
                            let mut object = grant.clone();
                            object["status"] = value["status"].clone();
                            value = object;
                        }
                        value["metadata"]["resourceVersion"] = json!(rv.to_string());
                        respond(&value, StatusCode::OK)
                    }
                    (method, path) => panic!("unexpected {method} {path}"),
                };
                send.send_response(response);
            }
        })
    };

    let (_changed_tx, changed_rx) = watch::channel(0u64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let shared = Shared {
        client,
        keyring: Arc::new(RwLock::new(
            Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap(),
        )),
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        events: Events::memory(),
        metrics: Arc::new(Metrics::default()),
        clock: Clock::system(),
    };
    let running = tokio::spawn({
        let readiness = readiness.clone();
        async move { controllers::run(shared, &[], stop_rx, readiness).await }
    });

    // The grant listed at start-up gets its Secret and its status.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            seen.writes
                .iter()
                .any(|(p, _)| p.ends_with("/datasourcegrants/dashboards/status"))
                && seen
                    .writes
                    .iter()
                    .any(|(p, _)| p.ends_with("/secrets/dashboards-token"))
                && seen
                    .writes
                    .iter()
                    .any(|(p, _)| p.ends_with("/secrets/analytics-service-key"))
        };
        if done && readiness.is_ready() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no token after 10s; requests: {:#?}",
            seen.lock().unwrap().requests
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    {
        let seen = seen.lock().unwrap();
        let (_, secret) = seen
            .writes
            .iter()
            .find(|(p, _)| p.ends_with("/secrets/dashboards-token"))
            .unwrap();
        let secret: Secret = serde_json::from_value(secret.clone()).unwrap();
        assert!(secret.data.unwrap().contains_key("token"));
        // Every Secret watch and list is label-selected: the cache, and `.owns` of each of
        // the three controllers.
        let secret_requests: Vec<_> = seen
            .requests
            .iter()
            .filter(|r| r.contains("/api/v1/secrets?"))
            .collect();
        assert!(secret_requests.len() >= 4, "{secret_requests:#?}");
        for request in secret_requests {
            assert!(
                request.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dtokenmint"),
                "{request}"
            );
        }
    }

    // Shutdown ends the controllers.
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("controllers did not stop")
        .unwrap();
    server.abort();
}

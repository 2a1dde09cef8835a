//! The keyring watch (`reconcile::keyring::watch`) against a fake API server: a rotation
//! requested by annotation is performed by the leader, the written keyring comes back through
//! the watch, is installed, and the controllers are told (reconcile-all trigger).

use axum::http::{Method, Request, Response, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokenmint::fence::Fence;
use tokenmint::keyring::{Algorithm, Keyring, SECRET_KEY};
use tokenmint::reconcile::keyring as keyring_store;
use tokenmint::reconcile::metrics::Metrics;
use tokio::sync::watch;

fn respond(body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn a_requested_rotation_is_performed_installed_and_announced() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    let old_kid = ring.active_kid().to_owned();
    let stored = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/keyring",
        "metadata": {"name": "tokenmint-keyring", "namespace": "tokenmint-system", "resourceVersion": "10",
                     "annotations": {"tokenmint.dev/rotate": "now"}},
        "data": {SECRET_KEY: STANDARD.encode(ring.to_json())}
    });
    let written: Arc<Mutex<Option<Value>>> = Arc::default();

    let server = {
        let written = written.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let query = request.uri().query().unwrap_or_default().to_owned();
                assert!(
                    request.method() == Method::PUT
                        || query.contains("fieldSelector=metadata.name%3Dtokenmint-keyring"),
                    "{query}"
                );
                match *request.method() {
                    Method::GET if query.contains("watch=true") => {
                        let update = written.lock().unwrap().clone();
                        match update {
                            // The first watch delivers our own write back, then ends.
                            Some(update) if open.is_empty() => {
                                let event = json!({"type": "MODIFIED", "object": update});
                                let mut line = serde_json::to_vec(&event).unwrap();
                                line.push(b'\n');
                                send.send_response(Response::new(Body::from(line)));
                                open.push(None);
                            }
                            _ => open.push(Some(send)),
                        }
                    }
                    Method::GET => send.send_response(respond(&json!({
                        "apiVersion": "v1", "kind": "SecretList",
                        "metadata": {"resourceVersion": "10"}, "items": [stored.clone()]
                    }))),
                    Method::PUT => {
                        let bytes = request.into_body().collect_bytes().await.unwrap();
                        let mut body: Value = serde_json::from_slice(&bytes).unwrap();
                        assert_eq!(body["metadata"]["resourceVersion"], "10");
                        body["metadata"]["resourceVersion"] = json!("11");
                        *written.lock().unwrap() = Some(body.clone());
                        send.send_response(respond(&body));
                    }
                    ref m => panic!("unexpected {m}"),
                }
            }
        })
    };

    let shared = Arc::new(RwLock::new(ring));
    let (changed_tx, mut changed_rx) = watch::channel(0u64);
    let api: Api<Secret> = Api::namespaced(client, "tokenmint-system");
    let watcher = tokio::spawn(keyring_store::watch(
        api,
        "tokenmint-keyring".into(),
        Algorithm::ES256,
        shared.clone(),
        changed_tx,
        Fence::always(),
        Arc::new(Metrics::default()),
    ));

    tokio::time::timeout(Duration::from_secs(10), changed_rx.changed())
        .await
        .expect("the keyring change was not announced")
        .unwrap();
    let ring = shared.read().unwrap();
    assert_ne!(ring.active_kid(), old_kid);
    assert_eq!(ring.active_algorithm(), Algorithm::ES256);
    assert!(ring.kids().any(|k| k == old_kid), "retired key kept");
    let written = written.lock().unwrap().clone().unwrap();
    assert_eq!(
        written["metadata"]["annotations"]["tokenmint.dev/rotated"],
        "now"
    );
    assert_eq!(*changed_rx.borrow(), 1);
    watcher.abort();
    server.abort();
}

#[tokio::test]
async fn a_deleted_keyring_is_restored_from_memory_by_the_leader() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    let serialized = ring.to_json();
    let stored = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "tokenmint.dev/keyring",
        "metadata": {"name": "tokenmint-keyring", "namespace": "tokenmint-system", "resourceVersion": "10"},
        "data": {SECRET_KEY: STANDARD.encode(&serialized)}
    });
    let (created_tx, mut created_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let server = tokio::spawn(async move {
        let mut open = Vec::new();
        let mut deleted = false;
        while let Some((request, send)) = handle.next_request().await {
            let query = request.uri().query().unwrap_or_default().to_owned();
            match *request.method() {
                // The first watch reports the deletion, later ones stay silent.
                Method::GET if query.contains("watch=true") && !deleted => {
                    deleted = true;
                    let event = json!({"type": "DELETED", "object": stored.clone()});
                    let mut line = serde_json::to_vec(&event).unwrap();
                    line.push(b'\n');
                    send.send_response(Response::new(Body::from(line)));
                }
                Method::GET if query.contains("watch=true") => open.push(send),
                Method::GET => send.send_response(respond(&json!({
                    "apiVersion": "v1", "kind": "SecretList",
                    "metadata": {"resourceVersion": "10"}, "items": [stored.clone()]
                }))),
                Method::POST => {
                    assert_eq!(
                        request.uri().path(),
                        "/api/v1/namespaces/tokenmint-system/secrets"
                    );
                    let bytes = request.into_body().collect_bytes().await.unwrap();
                    let body: Value = serde_json::from_slice(&bytes).unwrap();
                    send.send_response(respond(&body));
                    created_tx.send(body).unwrap();
                }
                ref m => panic!("unexpected {m}"),
            }
        }
    });
    let shared = Arc::new(RwLock::new(ring));
    let (changed_tx, _changed_rx) = watch::channel(0u64);
    let watcher = tokio::spawn(keyring_store::watch(
        Api::namespaced(client, "tokenmint-system"),
        "tokenmint-keyring".into(),
        Algorithm::HS256,
        shared,
        changed_tx,
        Fence::always(),
        Arc::new(Metrics::default()),
    ));
    let created = tokio::time::timeout(Duration::from_secs(10), created_rx.recv())
        .await
        .expect("the deleted keyring was not restored")
        .unwrap();
    assert_eq!(created["metadata"]["name"], "tokenmint-keyring");
    let restored = STANDARD
        .decode(created["data"][SECRET_KEY].as_str().unwrap())
        .unwrap();
    // The same keys, not a new keyring.
    assert_eq!(restored, serialized);
    watcher.abort();
    server.abort();
}

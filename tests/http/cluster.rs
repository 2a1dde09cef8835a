//! The cluster key store against a fake API server: the watch caches feed the index, the
//! keyring Secret is followed, and the only API calls are list/watch of the documented
//! resources (the serve container's RBAC).

use super::common::*;
use axum::body::Body;
use axum::http::{Request, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokenmint::http::keys::{KeyStore, NotReady};
use tokenmint::keyring::{Algorithm, Keyring};
use tokio::sync::broadcast;

/// The Secret watch's label selector, URL-encoded: key Secrets only
/// (`app.kubernetes.io/managed-by=tokenmint,tokenmint.dev/secret-role=service-key`), so token
/// rotations neither reach the cache nor rebuild the index.
const KEY_SECRET_SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dtokenmint%2Ctokenmint.dev%2Fsecret-role%3Dservice-key";

/// The collections the fake serves, by what a request's path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Collection {
    ServiceKeys,
    ManagedSecrets,
    Keyring,
}

#[derive(Clone)]
struct FakeApi {
    lists: Arc<Mutex<Vec<(Collection, Value)>>>,
    events: broadcast::Sender<(Collection, Value)>,
    /// `METHOD path?query` of every request.
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn new() -> Self {
        FakeApi {
            lists: Arc::default(),
            events: broadcast::channel(64).0,
            seen: Arc::default(),
        }
    }

    fn classify(path: &str, query: &str) -> Option<Collection> {
        if path.ends_with("/servicekeys") {
            Some(Collection::ServiceKeys)
        } else if path == "/api/v1/namespaces/tokenmint-system/secrets"
            && query.contains("fieldSelector=metadata.name%3Dtokenmint-keyring")
        {
            Some(Collection::Keyring)
        } else if path.ends_with("/secrets") && query.contains(KEY_SECRET_SELECTOR) {
            Some(Collection::ManagedSecrets)
        } else {
            None
        }
    }

    fn handle(&self, request: Request<kube::client::Body>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        self.seen
            .lock()
            .unwrap()
            .push(format!("{} {path}?{query}", request.method()));
        let Some(collection) = Self::classify(&path, &query) else {
            return Response::builder()
                .status(404)
                .body(Body::from("{}"))
                .unwrap();
        };
        if query.contains("watch=true") {
            let rx = self.events.subscribe();
            let stream = futures::stream::unfold(rx, move |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok((c, event)) if c == collection => {
                            let mut line = serde_json::to_vec(&event).unwrap();
                            line.push(b'\n');
                            return Some((Ok::<_, std::io::Error>(line), rx));
                        }
                        Ok(_) => continue,
                        Err(_) => return None,
                    }
                }
            });
            return Response::new(Body::from_stream(stream));
        }
        let items: Vec<Value> = self
            .lists
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| *c == collection)
            .map(|(_, v)| v.clone())
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items});
        Response::new(Body::from(list.to_string()))
    }

    fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request| {
            let fake = fake.clone();
            async move { Ok::<_, std::convert::Infallible>(fake.handle(request)) }
        });
        kube::Client::new(service, "default")
    }

    fn event(&self, collection: Collection, kind: &str, object: Value) {
        // Retried until a watch is subscribed: the watch starts after the initial list.
        let _ = self
            .events
            .send((collection, json!({"type": kind, "object": object})));
    }
}

fn service_key(name: &str, id: &str) -> Value {
    json!({
        "apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
        "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "2", "uid": format!("uid-{name}")},
        "spec": {"principal": {"id": id, "email": "jcw@example.com", "name": "jcw"}, "dataSources": ["*"], "workspaces": ["*"]}
    })
}

fn key_secret(name: &str, key: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-service-key"), "namespace": "team-a", "resourceVersion": "2",
                     "labels": {"app.kubernetes.io/managed-by": "tokenmint", "tokenmint.dev/secret-role": "service-key"},
                     "ownerReferences": [{"apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
                                          "name": name, "uid": format!("uid-{name}"), "controller": true}]},
        "data": {"key": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)}
    })
}

fn keyring_secret(ring: &Keyring) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tokenmint-keyring", "namespace": "tokenmint-system", "resourceVersion": "3"},
        "data": {"keyring.json": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ring.to_json())}
    })
}

/// Polls `check` for up to 10 s, sending `nudge` meanwhile (a watch may not be open yet).
async fn eventually(what: &str, mut nudge: impl FnMut(), check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        nudge();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

fn common_args() -> tokenmint::cli::CommonArgs {
    use clap::Parser;
    let cli = tokenmint::cli::Cli::try_parse_from([
        "tokenmint",
        "serve",
        "--namespace",
        "tokenmint-system",
    ])
    .unwrap();
    match cli.command {
        tokenmint::cli::Command::Serve(args) => args.common,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_caches_feed_the_key_store() {
    let fake = FakeApi::new();
    fake.lists.lock().unwrap().extend([
        (Collection::ServiceKeys, service_key("one", "1")),
        (Collection::ManagedSecrets, key_secret("one", "key-one")),
        // A labelled Secret the ServiceKey does not own (SecretConflict): never used.
        (Collection::ServiceKeys, service_key("three", "3")),
        (Collection::ManagedSecrets, {
            let mut s = key_secret("three", "key-three");
            s["metadata"]["ownerReferences"][0]["uid"] = json!("someone-else");
            s
        }),
    ]);
    let store = tokenmint::http::cluster::start(fake.client(), &common_args());

    // Synced, but no keyring yet: not ready, token routes answer 503.
    eventually("the caches sync", || {}, || store.synced()).await;
    assert_eq!(store.readiness(), Err(NotReady::NoKeyring));
    assert_eq!(
        store.keys().by_key(b"key-one").unwrap().reference(),
        "team-a/one"
    );
    let app = tokenmint::http::router(tokenmint::http::AppState::new(store.clone(), "tokenmint"));
    let r = call(
        &app,
        "POST",
        "/api/admin/v1/api_token/get_access_token",
        Some(&bearer("key-one")),
        "",
    )
    .await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");

    // The operator creates the keyring Secret.
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    let secret = keyring_secret(&ring);
    eventually(
        "the keyring loads",
        || fake.event(Collection::Keyring, "ADDED", secret.clone()),
        || store.keyring().is_some(),
    )
    .await;
    assert_eq!(store.keyring().unwrap().active_kid(), ring.active_kid());
    assert!(store.readiness().is_ok());
    let r = call(
        &app,
        "POST",
        "/api/admin/v1/api_token/get_access_token",
        Some(&bearer("key-one")),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Signed with the cluster's keyring: verifies alike for the operator.
    ring.verify::<Value>(
        r.json["access_token"].as_str().unwrap(),
        tokenmint::keyring::Expect {
            issuer: "tokenmint",
            require_exp: true,
        },
    )
    .unwrap();

    // A new ServiceKey and its Secret appear; then the first ServiceKey is deleted.
    eventually(
        "a new key is indexed",
        || {
            fake.event(Collection::ServiceKeys, "ADDED", service_key("two", "2"));
            fake.event(
                Collection::ManagedSecrets,
                "ADDED",
                key_secret("two", "key-two"),
            );
        },
        || store.keys().by_key(b"key-two").is_some(),
    )
    .await;
    eventually(
        "a deleted key stops authenticating",
        || fake.event(Collection::ServiceKeys, "DELETED", service_key("one", "1")),
        || store.keys().by_key(b"key-one").is_none(),
    )
    .await;
    let r = call(
        &app,
        "POST",
        "/api/admin/v1/api_token/get_access_token",
        Some(&bearer("key-one")),
        "",
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");

    // Only list and watch of the three documented collections (the RBAC of the container).
    let seen = fake.seen.lock().unwrap().clone();
    for request in &seen {
        let (method, rest) = request.split_once(' ').unwrap();
        assert_eq!(method, "GET", "{request}");
        let (path, query) = rest.split_once('?').unwrap();
        assert!(
            FakeApi::classify(path, query).is_some(),
            "unexpected API call {request}"
        );
    }
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /apis/tokenmint.dev/v1alpha1/servicekeys?"))
    );
    assert!(
        seen.iter()
            .any(|r| r.starts_with("GET /api/v1/secrets?") && r.contains("watch=true"))
    );
    // Every Secret list and watch but the keyring's is narrowed to key Secrets.
    for request in seen.iter().filter(|r| r.contains("/secrets?")) {
        assert!(
            request.contains(KEY_SECRET_SELECTOR)
                || request.contains("fieldSelector=metadata.name%3Dtokenmint-keyring"),
            "{request}"
        );
    }
}

#[test]
fn the_secret_selector_names_the_operators_key_secret_labels() {
    use tokenmint::reconcile::token_secret::ROLE_KEY;
    use tokenmint::reconcile::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, ROLE_LABEL};
    assert_eq!(
        tokenmint::http::cluster::key_secret_selector(),
        format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{ROLE_LABEL}={ROLE_KEY}")
    );
    assert_eq!(
        tokenmint::http::cluster::key_secret_selector(),
        "app.kubernetes.io/managed-by=tokenmint,tokenmint.dev/secret-role=service-key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_namespaces_are_watched_one_by_one() {
    use clap::Parser;
    let fake = FakeApi::new();
    let cli = tokenmint::cli::Cli::try_parse_from([
        "tokenmint",
        "serve",
        "--namespace",
        "tokenmint-system",
        "--watch-namespace",
        "team-a",
        "--watch-namespace",
        "team-b",
    ])
    .unwrap();
    let tokenmint::cli::Command::Serve(args) = cli.command else {
        unreachable!()
    };
    let store = tokenmint::http::cluster::start(fake.client(), &args.common);
    eventually("the caches sync", || {}, || store.synced()).await;
    let seen = fake.seen.lock().unwrap().clone();
    for ns in ["team-a", "team-b"] {
        assert!(
            seen.iter().any(|r| r.starts_with(&format!(
                "GET /apis/tokenmint.dev/v1alpha1/namespaces/{ns}/servicekeys?"
            ))),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .any(|r| r.starts_with(&format!("GET /api/v1/namespaces/{ns}/secrets?"))),
            "{seen:?}"
        );
    }
    assert!(
        !seen
            .iter()
            .any(|r| r.starts_with("GET /apis/tokenmint.dev/v1alpha1/servicekeys?")),
        "{seen:?}"
    );
}

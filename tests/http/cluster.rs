//! The cluster key store against the fake API server: the watch caches feed the index, the
//! keyring Secret and the revocation ConfigMaps are followed, every watch recovers by itself
//! from a 410 or an API-server restart, and the only API calls are list/watch of the documented
//! resources (the serve container's RBAC).

use super::common::*;
use crate::support::fake_api::{Fake, wait_for};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokenmint::key_store::{KeyStore, NotReady};
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::revocation::{Denylist, Revocation};

const PATIENCE: Duration = Duration::from_secs(10);

fn service_key(fake: &Fake, name: &str, id: &str) {
    fake.put(
        "tokenmint.dev",
        "servicekeys",
        json!({
            "apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
            "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}")},
            "spec": {"principal": {"id": id, "email": "jcw@example.com", "name": "jcw"}, "dataSources": ["*"], "workspaces": ["*"]}
        }),
    );
}

fn key_secret(fake: &Fake, name: &str, key: &str, owner_uid: &str) {
    fake.put(
        "",
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-service-key"), "namespace": "team-a",
                         "labels": {"app.kubernetes.io/managed-by": "tokenmint", "tokenmint.dev/secret-role": "service-key"},
                         "ownerReferences": [{"apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
                                              "name": name, "uid": owner_uid, "controller": true}]},
            "data": {"key": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)}
        }),
    );
}

fn keyring_secret(fake: &Fake, ring: &Keyring) {
    fake.put(
        "",
        "secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tokenmint-keyring", "namespace": "tokenmint-system"},
            "data": {"keyring.json": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ring.to_json())}
        }),
    );
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

fn start(
    fake: &Fake,
    args: &tokenmint::cli::CommonArgs,
) -> (Arc<tokenmint::key_store::SharedKeyStore>, Arc<Denylist>) {
    let denylist = Arc::new(Denylist::default());
    let store =
        tokenmint::http::cluster::start(fake.client(), args, &Default::default(), denylist.clone());
    (store, denylist)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_caches_feed_the_key_store() {
    let fake = Fake::default();
    service_key(&fake, "one", "1");
    key_secret(&fake, "one", "key-one", "uid-one");
    // A labelled Secret the ServiceKey does not own (SecretConflict): never used.
    service_key(&fake, "three", "3");
    key_secret(&fake, "three", "key-three", "someone-else");
    let (store, _) = start(&fake, &common_args());

    // Synced, but no keyring yet: not ready, token routes answer 503.
    wait_for(&fake, PATIENCE, "the caches sync", || store.synced()).await;
    assert_eq!(store.readiness(), Err(NotReady::NoKeyring));
    assert_eq!(
        store.keys().by_key(b"key-one").unwrap().reference(),
        "team-a/one"
    );
    assert!(store.keys().by_key(b"key-three").is_none());
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
    keyring_secret(&fake, &ring);
    wait_for(&fake, PATIENCE, "the keyring loads", || {
        store.keyring().is_some()
    })
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
    service_key(&fake, "two", "2");
    key_secret(&fake, "two", "key-two", "uid-two");
    wait_for(&fake, PATIENCE, "a new key is indexed", || {
        store.keys().by_key(b"key-two").is_some()
    })
    .await;
    fake.delete("tokenmint.dev", "servicekeys", "team-a", "one");
    wait_for(
        &fake,
        PATIENCE,
        "a deleted key stops authenticating",
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

    // Only list and watch of the documented collections (the RBAC of the container).
    let calls = fake.calls();
    for call in &calls {
        assert!(
            matches!(call.verb.as_str(), "list" | "watch"),
            "unexpected API call {}",
            call.request
        );
        match call.resource.as_str() {
            "servicekeys" => {}
            "configmaps" => {
                assert_eq!(call.namespace.as_deref(), Some("tokenmint-system"));
                assert!(
                    call.request
                        .contains("tokenmint.dev%2Fsecret-role%3Drevocation"),
                    "{}",
                    call.request
                );
            }
            // Every Secret list and watch but the keyring's is narrowed to key Secrets.
            "secrets" => assert!(
                call.request.contains(
                    "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dtokenmint%2Ctokenmint.dev%2Fsecret-role%3Dservice-key"
                ) || call.name.as_deref() == Some("tokenmint-keyring"),
                "{}",
                call.request
            ),
            other => panic!("unexpected resource {other}: {}", call.request),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caches_recover_from_a_restart_of_the_api_server() {
    let fake = Fake::default();
    service_key(&fake, "one", "1");
    key_secret(&fake, "one", "key-one", "uid-one");
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    keyring_secret(&fake, &ring);
    let (store, denylist) = start(&fake, &common_args());
    wait_for(&fake, PATIENCE, "ready", || store.readiness().is_ok()).await;

    // Restarted with its data: every watch ends; resuming them is answered with 410 Gone.
    fake.restart();
    service_key(&fake, "two", "2");
    key_secret(&fake, "two", "key-two", "uid-two");
    let revocation = tokenmint::revocation::config_map(
        "tokenmint-system",
        &Revocation {
            jti: "revoked-after-the-restart".into(),
            expires_at: None,
            kid: None,
            reason: "test".into(),
        },
    );
    fake.put("", "configmaps", serde_json::to_value(revocation).unwrap());
    wait_for(&fake, PATIENCE, "the caches serve again", || {
        store.keys().by_key(b"key-two").is_some()
            && denylist.is_revoked("revoked-after-the-restart")
    })
    .await;
    assert!(store.readiness().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_replica_through_its_watch() {
    let fake = Fake::default();
    service_key(&fake, "one", "1");
    key_secret(&fake, "one", "key-one", "uid-one");
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    keyring_secret(&fake, &ring);
    let replica = |fake: &Fake| {
        let (store, denylist) = start(fake, &common_args());
        let revoker = tokenmint::revocation::Revoker::Kube {
            api: kube::Api::namespaced(fake.client(), "tokenmint-system"),
            local: Some(denylist.clone()),
        };
        let state = tokenmint::http::AppState::from_config(tokenmint::http::Config {
            store: store.clone(),
            issuer: "tokenmint".into(),
            denylist,
            revoker,
            watch_restarts: Default::default(),
            reviewer: None,
        });
        (store, tokenmint::http::router(state))
    };
    let (store_a, a) = replica(&fake);
    let (store_b, b) = replica(&fake);
    wait_for(&fake, PATIENCE, "both ready", || {
        store_a.readiness().is_ok() && store_b.readiness().is_ok()
    })
    .await;
    let r = call(&a, "POST", "/token", Some("Basic key-one"), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let session = r.json["access_token"].as_str().unwrap().to_owned();
    // Revoked through replica A...
    let r = call_form(
        &a,
        "/oauth/revoke",
        Some(&bearer("key-one")),
        &format!("token={session}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // ...refused by B once its watch has the ConfigMap (within a second here).
    let revoked_at = tokio::time::Instant::now();
    loop {
        let r = call(&b, "POST", "/token/refresh", Some(&bearer(&session)), "").await;
        if r.status == 401 {
            assert!(r.text.contains("revoked"), "{}", r.text);
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "replica B still honours the revoked token"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn the_secret_selector_names_the_operators_key_secret_labels() {
    use tokenmint::labels::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, ROLE_KEY, ROLE_LABEL};
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
    let fake = Fake::default();
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
    let (store, _) = start(&fake, &args.common);
    wait_for(&fake, PATIENCE, "the caches sync", || store.synced()).await;
    let calls = fake.calls();
    for ns in ["team-a", "team-b"] {
        for resource in ["servicekeys", "secrets"] {
            assert!(
                calls
                    .iter()
                    .any(|c| c.resource == resource && c.namespace.as_deref() == Some(ns)),
                "{resource} in {ns}"
            );
        }
    }
    assert!(
        !calls.iter().any(|c| c.namespace.is_none()),
        "no cluster-wide request"
    );
}

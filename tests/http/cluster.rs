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
use tokenmint::revocation::{Denylist, Origin, Revocation, Target};

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
    let revocation = tokenmint::revocation::store::config_map_of(
        "tokenmint-system",
        &Revocation {
            target: Target::Token {
                jti: "revoked-after-the-restart".into(),
                expires_at: jiff::Timestamp::now().as_second() + 3_600,
            },
            service_key_uid: "uid-one".into(),
            origin: Origin::System,
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
    let [(_, a, _), (_, b, _)] = ready_replicas(&fake, Denylist::default).await;
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

/// A `serve` replica: its store, router and denylist.
type Replica = (
    Arc<tokenmint::key_store::SharedKeyStore>,
    axum::Router,
    Arc<Denylist>,
);

/// `N` `serve` replicas over `fake`, each holding its revocations in a `denylist()`, once all
/// are ready.
async fn ready_replicas<const N: usize>(
    fake: &Fake,
    denylist: impl Fn() -> Denylist,
) -> [Replica; N] {
    let replicas: [Replica; N] = std::array::from_fn(|_| replica_with(fake, denylist()));
    wait_for(fake, PATIENCE, "the replicas ready", || {
        replicas.iter().all(|(store, ..)| store.readiness().is_ok())
    })
    .await;
    replicas
}

/// A `serve` replica over `fake` holding its revocations in `denylist`.
fn replica_with(fake: &Fake, denylist: Denylist) -> Replica {
    let denylist = Arc::new(denylist);
    let store = tokenmint::http::cluster::start(
        fake.client(),
        &common_args(),
        &Default::default(),
        denylist.clone(),
    );
    let revoker = tokenmint::revocation::Revoker::Kube {
        api: kube::Api::namespaced(fake.client(), "tokenmint-system"),
        denylist: denylist.clone(),
    };
    let state = tokenmint::http::AppState::from_config(tokenmint::http::Config {
        store: store.clone(),
        issuer: "tokenmint".into(),
        denylist: denylist.clone(),
        revoker,
        watch_restarts: Default::default(),
        reviewer: None,
    });
    (store, tokenmint::http::router(state), denylist)
}

/// One token of every kind minted with `key` (data source, guest — expiring and not —,
/// access, session, user-token).
async fn tokens_of(app: &axum::Router, key: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for (route, body, field) in [
        (
            "/api/admin/v1/api_token/get_access_token",
            json!({}),
            "access_token",
        ),
        (
            "/api/admin/v1/get_datasource_token",
            json!({"data_source": "Data_3_E"}),
            "access_token",
        ),
        (
            "/api/v1/guest-token/create",
            json!({"workspaceName": "w1", "clientId": "c", "expiryTime": 60_000}),
            "token",
        ),
        (
            "/api/v1/guest-token/create",
            json!({"workspaceName": "w1", "clientId": "c"}),
            "token",
        ),
    ] {
        let r = call(app, "POST", route, Some(&bearer(key)), body.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        tokens.push(r.json[field].as_str().unwrap().to_owned());
    }
    let r = call(app, "POST", "/token", Some(&format!("Basic {key}")), "").await;
    tokens.push(r.json["access_token"].as_str().unwrap().to_owned());
    let r = call(
        app,
        "POST",
        "/ds-api/user-token",
        Some(&basic("jcw", key)),
        "",
    )
    .await;
    tokens.push(r.json["user-token"].as_str().unwrap().to_owned());
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_key_and_a_re_created_service_key_void_earlier_tokens_on_their_watch_event() {
    let fake = Fake::default();
    service_key(&fake, "one", "1");
    key_secret(&fake, "one", "key-one", "uid-one");
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    keyring_secret(&fake, &ring);
    let [(store_a, a, _), (store_b, b, _)] = ready_replicas(&fake, Denylist::default).await;
    let tokens = tokens_of(&a, "key-one").await;
    for token in &tokens {
        assert!(is_active(&b, "key-one", token).await);
    }
    let lists = fake.count("list", "secrets");

    // The key is replaced in its Secret: one watch event, and every replica refuses every
    // earlier token.
    key_secret(&fake, "one", "key-one-replaced", "uid-one");
    wait_for(&fake, PATIENCE, "the new key indexed", || {
        store_a.keys().by_key(b"key-one-replaced").is_some()
            && store_b.keys().by_key(b"key-one-replaced").is_some()
    })
    .await;
    for app in [&a, &b] {
        for token in &tokens {
            assert!(!is_active(app, "key-one-replaced", token).await);
        }
        let refused = call(app, "POST", "/token/refresh", Some(&bearer(&tokens[4])), "").await;
        refused.assert_error(401, "UNAUTHORIZED");
    }
    assert_eq!(
        fake.count("list", "secrets"),
        lists,
        "no relist: the watch event did it"
    );

    // Deleted and created again under its name with the same key: a new uid.
    let fresh = tokens_of(&a, "key-one-replaced").await;
    fake.delete("tokenmint.dev", "servicekeys", "team-a", "one");
    fake.put(
        "tokenmint.dev",
        "servicekeys",
        json!({
            "apiVersion": "tokenmint.dev/v1alpha1", "kind": "ServiceKey",
            "metadata": {"name": "one", "namespace": "team-a", "uid": "uid-one-again"},
            "spec": {"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"}, "dataSources": ["*"], "workspaces": ["*"]}
        }),
    );
    key_secret(&fake, "one", "key-one-replaced", "uid-one-again");
    wait_for(&fake, PATIENCE, "the new ServiceKey indexed", || {
        [&store_a, &store_b].iter().all(|s| {
            s.keys()
                .by_key(b"key-one-replaced")
                .is_some_and(|e| e.uid == "uid-one-again")
        })
    })
    .await;
    for app in [&a, &b] {
        for token in &fresh {
            assert!(!is_active(app, "key-one-replaced", token).await);
        }
        let access = &fresh[0];
        call(
            app,
            "POST",
            "/api/admin/v1/get_datasource_token",
            Some(&bearer(access)),
            r#"{"data_source": "Data_3_E"}"#,
        )
        .await
        .assert_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_are_bucketed_and_every_replica_holds_all_of_them_on_every_path() {
    let fake = Fake::default();
    for name in ["one", "two"] {
        service_key(&fake, name, "1");
        key_secret(&fake, name, &format!("key-{name}"), &format!("uid-{name}"));
    }
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    keyring_secret(&fake, &ring);
    // Replicas whose capacity is 4, and a ServiceKey quota of 3.
    let small = || Denylist::new(4, 3);
    let [(_, a, list_a), (_, b, list_b)] = ready_replicas(&fake, small).await;
    // Tenant "one" floods replica A: its quota, then 429.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let token = tokens_of(&a, "key-one").await.remove(0);
        statuses.push(revoke(&a, "key-one", &token).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    // Tenant "two" revokes through replica B: works, and A refuses the token too.
    let two = tokens_of(&b, "key-two").await.remove(0);
    let r = revoke(&b, "key-two", &two).await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for(&fake, PATIENCE, "A sees B's revocation", || {
        list_a.len() == 4
    })
    .await;
    assert!(!is_active(&a, "key-two", &two).await);

    // The system (the operator) revokes past the replicas' capacity: every replica holds it.
    let operator = tokenmint::revocation::Revoker::Kube {
        api: kube::Api::namespaced(fake.client(), "tokenmint-system"),
        denylist: Arc::new(Denylist::new(1, 1)),
    };
    let mut system = Vec::new();
    for _ in 0..4 {
        let token = tokens_of(&a, "key-two").await.remove(0);
        let claims = tokenmint::token::claims::unverified(&token).unwrap();
        operator
            .revoke(&by_the_system(&claims))
            .await
            .expect("never refused");
        system.push(token);
    }
    let all = 8;
    wait_for(&fake, PATIENCE, "the watch brings them all", || {
        list_a.len() == all && list_b.len() == all
    })
    .await;
    // A caller of a full replica is refused, 503.
    let token = tokens_of(&b, "key-two").await.remove(0);
    revoke(&b, "key-two", &token)
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");
    // Far fewer objects than revocations: one bucket (their day), no per-token ConfigMap.
    let buckets: Vec<String> = fake
        .all("", "configmaps")
        .iter()
        .map(|cm| cm["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    assert!(
        buckets[0].starts_with("tokenmint-revocations-"),
        "{buckets:?}"
    );

    // A relist (API-server restart: every watch resumes with 410 and lists again) keeps all
    // of them, whatever the capacity.
    let lists = fake.count("list", "configmaps");
    fake.restart();
    wait_for(&fake, PATIENCE, "both relisted", || {
        fake.count("list", "configmaps") >= lists + 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((list_a.len(), list_b.len()), (all, all));
    // A replica started now holds all of them at once.
    let [(_, c, list_c)] = ready_replicas(&fake, small).await;
    wait_for(&fake, PATIENCE, "C holds all", || list_c.len() == all).await;
    for token in &system {
        assert!(!is_active(&c, "key-two", token).await);
    }
}

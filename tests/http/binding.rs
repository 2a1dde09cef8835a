//! Every token dies with its key: every kind of token (user access, data source, guest — also
//! one that never expires —, session, user-token) is honoured only while the ServiceKey that
//! issued it exists as the same object (uid) with the same key. Replacing the key, or deleting
//! the ServiceKey and creating it again under its name (even with the same key), makes all of
//! them inactive on every route that accepts a token, introspection included — with no
//! revocation entry.

use super::common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use tokenmint::key_store::{KeyIndex, SharedKeyStore, Source};
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::manifests::Manifests;
use tokenmint::revocation::{Denylist, Revoker};

const ACCESS: &str = "/api/admin/v1/api_token/get_access_token";
const DATASOURCE: &str = "/api/admin/v1/get_datasource_token";
const GUEST: &str = "/api/v1/guest-token/create";
const ANALYTICS_UID: &str = "6f1c0b52-1d2e-4a8b-9c3d-000000000a01";

/// The fixtures' index with `edits` applied to their text.
fn index_with(edits: &[(&str, &str)]) -> KeyIndex {
    let mut text = FIXTURES.to_owned();
    for (from, to) in edits {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let m = Manifests::from_yaml(std::path::Path::new("fixtures.yaml"), &text).unwrap();
    KeyIndex::build(&m.service_keys, &m.secrets, Source::Manifests)
}

/// One token of every kind, minted with `key` (team-a/analytics).
async fn every_kind(router: &axum::Router, key: &str) -> Vec<(&'static str, String)> {
    let post = |uri: &'static str, auth: String, body: Value| {
        let router = router.clone();
        async move { call(&router, "POST", uri, Some(&auth), body.to_string()).await }
    };
    let token = |r: Reply, field: &str| {
        assert!(r.status.is_success(), "{}", r.text);
        r.json[field].as_str().unwrap().to_owned()
    };
    let access = token(post(ACCESS, bearer(key), json!({})).await, "access_token");
    let datasource = token(
        post(DATASOURCE, bearer(key), json!({"data_source": "Data_3_E"})).await,
        "access_token",
    );
    let guest = token(
        post(
            GUEST,
            bearer(key),
            json!({"workspaceName": "w1", "clientId": "c", "expiryTime": 600_000}),
        )
        .await,
        "token",
    );
    let forever = token(
        post(
            GUEST,
            bearer(key),
            json!({"workspaceName": "w1", "clientId": "c"}),
        )
        .await,
        "token",
    );
    let session = token(
        call(router, "POST", "/token", Some(&format!("Basic {key}")), "").await,
        "access_token",
    );
    let user = token(
        call(
            router,
            "POST",
            "/ds-api/user-token",
            Some(&basic("jcw", key)),
            "",
        )
        .await,
        "user-token",
    );
    vec![
        ("access", access),
        ("datasource", datasource),
        ("guest", guest),
        ("guest (never expires)", forever),
        ("session", session),
        ("user-token", user),
    ]
}

/// Whether each token is honoured: introspection (with `key`, of the same namespace) and the
/// route that accepts its kind.
async fn honoured(router: &axum::Router, key: &str, tokens: &[(&str, String)]) -> Vec<bool> {
    let mut answers = Vec::new();
    for (kind, token) in tokens {
        let active = is_active(router, key, token).await;
        let route = match *kind {
            "access" => Some(
                call(
                    router,
                    "POST",
                    DATASOURCE,
                    Some(&bearer(token)),
                    json!({"data_source": "Data_3_E"}).to_string(),
                )
                .await,
            ),
            "session" => {
                Some(call(router, "POST", "/token/refresh", Some(&bearer(token)), "").await)
            }
            "user-token" => Some(
                call(
                    router,
                    "GET",
                    &format!("/ds-api/user-token?token={token}"),
                    Some(&basic("jcw", key)),
                    "",
                )
                .await,
            ),
            _ => None,
        };
        if let Some(r) = &route {
            assert!(
                r.status.is_success() == active,
                "{kind}: introspection says {active}, its route {} {}",
                r.status,
                r.text
            );
            if !active {
                r.assert_error(401, "UNAUTHORIZED");
            }
        }
        answers.push(active);
    }
    answers
}

#[tokio::test]
async fn a_replaced_key_or_a_re_created_service_key_voids_every_kind_of_earlier_token() {
    const NEW_KEY: &str = "tmk_test_analytics_REPLACED_0123456789";
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    let store = Arc::new(SharedKeyStore::fixed(index(), ring));
    let denylist = Arc::new(Denylist::default());
    let router = tokenmint::http::router(tokenmint::http::AppState::from_config(
        tokenmint::http::Config {
            store: store.clone(),
            issuer: ISSUER.into(),
            revoker: Revoker::Memory(denylist.clone()),
            denylist: denylist.clone(),
            watch_restarts: Default::default(),
            reviewer: None,
        },
    ));
    let tokens = every_kind(&router, KEY_A).await;
    assert_eq!(honoured(&router, KEY_A, &tokens).await, vec![true; 6]);

    // The key is replaced in its Secret: every earlier token, of every kind, is void.
    store.set_keys(index_with(&[(KEY_A, NEW_KEY)]));
    assert_eq!(honoured(&router, NEW_KEY, &tokens).await, vec![false; 6]);
    // Tokens of the new key are honoured.
    let fresh = every_kind(&router, NEW_KEY).await;
    assert_eq!(honoured(&router, NEW_KEY, &fresh).await, vec![true; 6]);

    // Deleted and created again under its name, with the very same key (a new uid): the
    // tokens of the one before are void.
    store.set_keys(index_with(&[
        (KEY_A, NEW_KEY),
        (ANALYTICS_UID, "6f1c0b52-1d2e-4a8b-9c3d-00000000a0a0"),
    ]));
    assert_eq!(honoured(&router, NEW_KEY, &fresh).await, vec![false; 6]);
    // And it took no revocation entry, nor marker.
    assert!(denylist.is_empty() && !denylist.has_markers());
}

#[tokio::test]
async fn a_token_without_the_uid_of_its_service_key_is_not_honoured() {
    // As minted before tokens carried the uid: the same claims but `service_key_uid`.
    let t = app();
    for (kind, token) in every_kind(&t.router, KEY_A).await {
        let mut claims = verify(&t.keyring, &token, kind != "guest (never expires)");
        claims.as_object_mut().unwrap().remove("service_key_uid");
        let unbound = t.keyring.sign(&claims).unwrap();
        let answer = introspect(&t.router, KEY_A, &unbound).await;
        assert_eq!(answer, json!({"active": false}), "{kind}");
    }
}

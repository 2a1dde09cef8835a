//! Tenancy, revocation and introspection. Two tenants whose ServiceKeys share `principal.id`
//! ("1") and `principal.name` ("jcw"): team-a/analytics (KEY_A: Data_3_E, workspace w1, org 1)
//! and team-b/sales (KEY_B: Sales, every workspace, org 2). Over every route and both kinds of
//! credential (the key, a token derived from it), nothing of one tenant is reachable with the
//! other's credentials; and a token is honoured only with the key it was minted with.

use super::common::*;
use serde_json::{Value, json};

const ACCESS: &str = "/api/admin/v1/api_token/get_access_token";
const DATASOURCE: &str = "/api/admin/v1/get_datasource_token";
const GUEST: &str = "/api/v1/guest-token/create";

struct Tenant {
    key: &'static str,
    reference: &'static str,
    data_source: &'static str,
    org: &'static str,
}

const A: Tenant = Tenant {
    key: KEY_A,
    reference: "team-a/analytics",
    data_source: "Data_3_E",
    org: "Main Org.",
};
const B: Tenant = Tenant {
    key: KEY_B,
    reference: "team-b/sales",
    data_source: "Sales",
    org: "Sales Org",
};

async fn access_token(t: &TestApp, tenant: &Tenant) -> String {
    let r = call(&t.router, "POST", ACCESS, Some(&bearer(tenant.key)), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["access_token"].as_str().unwrap().to_owned()
}

async fn session(t: &TestApp, tenant: &Tenant) -> String {
    let r = call(
        &t.router,
        "POST",
        "/token",
        Some(&format!("Basic {}", tenant.key)),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["access_token"].as_str().unwrap().to_owned()
}

async fn user_token(t: &TestApp, tenant: &Tenant) -> String {
    let r = call(
        &t.router,
        "POST",
        "/ds-api/user-token",
        Some(&basic("jcw", tenant.key)),
        "",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["user-token"].as_str().unwrap().to_owned()
}

async fn datasource(t: &TestApp, credential: &str, data_source: &str) -> Reply {
    call(
        &t.router,
        "POST",
        DATASOURCE,
        Some(&bearer(credential)),
        json!({"data_source": data_source}).to_string(),
    )
    .await
}

#[tokio::test]
async fn nothing_of_one_tenant_is_reachable_with_the_others_credentials() {
    let t = app();
    for (mine, theirs) in [(&A, &B), (&B, &A)] {
        let access = access_token(&t, mine).await;
        // Data source tokens: with the key and with the access token, only mine.
        for credential in [mine.key.to_owned(), access.clone()] {
            let r = datasource(&t, &credential, mine.data_source).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let c = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
            assert_eq!(c["service_key"], mine.reference);
            datasource(&t, &credential, theirs.data_source)
                .await
                .assert_error(403, "FORBIDDEN");
        }
        // Sessions refresh as mine, with my org.
        let refreshed = call(
            &t.router,
            "POST",
            "/token/refresh",
            Some(&bearer(&session(&t, mine).await)),
            "",
        )
        .await;
        assert_eq!(refreshed.status, 200, "{}", refreshed.text);
        assert_eq!(refreshed.json["user"]["api_key"], mine.reference);
        assert_eq!(refreshed.json["org"]["name"], mine.org);
        // A user-token is described to its own tenant only; the other tenant learns nothing
        // (same user name, same email).
        let token = user_token(&t, mine).await;
        let info = |key: &'static str| {
            let router = t.router.clone();
            let token = token.clone();
            async move {
                call(
                    &router,
                    "GET",
                    &format!("/ds-api/user-token?token={token}"),
                    Some(&basic("jcw", key)),
                    "",
                )
                .await
            }
        };
        let own = info(mine.key).await;
        assert_eq!(own.status, 200, "{}", own.text);
        assert_eq!(own.json["organization_name"], mine.org);
        let foreign = info(theirs.key).await;
        foreign.assert_error(401, "UNAUTHORIZED");
        assert!(!foreign.text.contains(mine.org), "{}", foreign.text);
        // Introspection: active for my tenant, `{"active": false}` and nothing else for theirs.
        for token in [access.clone(), token.clone()] {
            assert_eq!(
                introspect(&t.router, mine.key, &token).await["active"],
                true
            );
            assert_eq!(
                introspect(&t.router, theirs.key, &token).await,
                json!({"active": false})
            );
        }
        // Revocation by the other tenant is answered 200 but does nothing.
        assert_eq!(revoke(&t.router, theirs.key, &access).await.status, 200);
        assert_eq!(datasource(&t, &access, mine.data_source).await.status, 200);
    }
    // Guest tokens: workspaces and data sources of the key used, only.
    let guest = |key: &'static str, body: Value| {
        let router = t.router.clone();
        async move { call(&router, "POST", GUEST, Some(&bearer(key)), body.to_string()).await }
    };
    guest(KEY_A, json!({"workspaceName": "w2", "clientId": "c"}))
        .await
        .assert_error(403, "WORKSPACE_ID_ERROR");
    guest(
        KEY_A,
        json!({"workspaceName": "w1", "clientId": "c", "datasourceName": "Sales"}),
    )
    .await
    .assert_error(403, "DATASOURCE_ERROR");
    let r = guest(
        KEY_B,
        json!({"workspaceName": "w2", "clientId": "c", "datasourceName": "Sales"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn a_revoked_token_is_refused_everywhere_and_introspects_inactive() {
    let t = app();
    let access = access_token(&t, &A).await;
    let session_token = session(&t, &A).await;
    let user = user_token(&t, &A).await;
    for token in [&access, &session_token, &user] {
        assert_eq!(revoke(&t.router, KEY_A, token).await.json, json!({}));
        assert_eq!(
            introspect(&t.router, KEY_A, token).await,
            json!({"active": false})
        );
    }
    let r = datasource(&t, &access, "Data_3_E").await;
    r.assert_error(401, "UNAUTHORIZED");
    assert!(r.text.contains("revoked"), "{}", r.text);
    call(
        &t.router,
        "POST",
        "/token/refresh",
        Some(&bearer(&session_token)),
        "",
    )
    .await
    .assert_error(401, "UNAUTHORIZED");
    call(
        &t.router,
        "GET",
        &format!("/ds-api/user-token?token={user}"),
        Some(&basic("jcw", KEY_A)),
        "",
    )
    .await
    .assert_error(401, "UNAUTHORIZED");
    // Other tokens of the same key keep working; revoking again is fine.
    let fresh = access_token(&t, &A).await;
    assert_eq!(datasource(&t, &fresh, "Data_3_E").await.status, 200);
    assert_eq!(revoke(&t.router, KEY_A, &access).await.status, 200);
}

#[tokio::test]
async fn introspection_describes_every_kind_of_token_of_the_tenant() {
    let t = app();
    let access = access_token(&t, &A).await;
    let ds = datasource(&t, KEY_A, "Data_3_E").await.json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let guest = call(
        &t.router,
        "POST",
        GUEST,
        Some(&bearer(KEY_A)),
        json!({"workspaceName": "w1", "clientId": "c"}).to_string(),
    )
    .await
    .json["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let session_token = session(&t, &A).await;
    let user = user_token(&t, &A).await;
    for (token, kind, sub) in [
        (&access, "access", "1"),
        (&ds, "datasource", "1"),
        (&guest, "guest", "1"),
        (&session_token, "session", "1"),
        (&user, "user-token", "jcw"),
    ] {
        let answer = introspect(&t.router, KEY_A, token).await;
        let claims = verify(&t.keyring, token, kind != "guest");
        assert_eq!(answer["active"], true, "{kind}");
        assert_eq!(answer["token_type"], kind);
        assert_eq!(answer["client_id"], "team-a/analytics");
        assert_eq!(answer["sub"], sub, "{kind}: sub is a string");
        assert_eq!(answer["jti"], claims["jti"]);
        assert_eq!(answer["iss"], ISSUER);
        assert!(answer["iat"].is_i64());
        // A guest token without expiryTime never expires: no `exp`.
        assert_eq!(answer.get("exp").is_some(), kind != "guest", "{kind}");
    }
    // Garbage, forged and unknown: inactive, nothing else.
    let mut forged = access.clone();
    forged.pop();
    for token in ["garbage", forged.as_str(), "a.b.c"] {
        assert_eq!(
            introspect(&t.router, KEY_A, token).await,
            json!({"active": false})
        );
    }
    // A bad key is 401; a missing token 400; a non-form body 415.
    call_form(
        &t.router,
        "/oauth/introspect",
        Some(&bearer("nope")),
        "token=x",
    )
    .await
    .assert_error(401, "UNAUTHORIZED");
    call_form(&t.router, "/oauth/introspect", Some(&bearer(KEY_A)), "")
        .await
        .assert_error(400, "BAD_REQUEST");
    call_form(&t.router, "/oauth/revoke", Some(&bearer("nope")), "token=x")
        .await
        .assert_error(401, "UNAUTHORIZED");
    call(
        &t.router,
        "POST",
        "/oauth/revoke",
        Some(&bearer(KEY_A)),
        r#"{"token":"x"}"#,
    )
    .await
    .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
}

#[tokio::test]
async fn every_token_kind_has_registered_claims_of_their_rfc_types() {
    let t = app();
    let tokens = [
        access_token(&t, &A).await,
        datasource(&t, KEY_A, "Data_3_E").await.json["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        call(
            &t.router,
            "POST",
            GUEST,
            Some(&bearer(KEY_A)),
            json!({"workspaceName": "w1", "clientId": "c", "expiryTime": 60000}).to_string(),
        )
        .await
        .json["token"]
            .as_str()
            .unwrap()
            .to_owned(),
        session(&t, &A).await,
        user_token(&t, &A).await,
    ];
    let mut jtis = std::collections::BTreeSet::new();
    for token in &tokens {
        let c = verify(&t.keyring, token, true);
        for (claim, value) in c.as_object().unwrap() {
            match claim.as_str() {
                "sub" | "iss" | "jti" => assert!(value.is_string(), "{claim} in {c}"),
                "iat" | "nbf" | "exp" => assert!(value.is_i64(), "{claim} in {c}"),
                "aud" => panic!("no audience is set: {c}"),
                _ => {}
            }
        }
        assert!(
            jtis.insert(c["jti"].as_str().unwrap().to_owned()),
            "jti unique"
        );
    }
    // PyJWT-strict: `sub` present must be a string (the session and guest tokens have one).
    assert_eq!(verify(&t.keyring, &tokens[2], true)["sub"], "1");
    assert_eq!(verify(&t.keyring, &tokens[3], true)["sub"], "1");
}

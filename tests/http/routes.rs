//! Every route over the in-process router: the seed's answer shapes, decoded claims, and every
//! documented error.

use super::common::*;
use serde_json::{Value, json};
use tokenmint::keyring::Algorithm;
use tokenmint::token::claims::{
    ACCESS_TYPE, AccessClaims, AccessIdentity, Binding, Id, Registered, SESSION_TYPE,
    SessionClaims, UserTokenClaims, key_fingerprint,
};
use tokenmint::token::mint::{Issuing, Minter};

const ACCESS: &str = "/api/admin/v1/api_token/get_access_token";
const USER_ALIAS: &str = "/api/admin/v1/api_token/get_user_token";
const DATASOURCE: &str = "/api/admin/v1/get_datasource_token";
const GUEST: &str = "/api/v1/guest-token/create";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The binding of a token minted with `key` of the ServiceKey `service_key`.
fn binding(service_key: &str, key: &str) -> Binding {
    Binding {
        service_key: service_key.into(),
        service_key_uid: uid_of(service_key).into(),
        key_fingerprint: key_fingerprint(key.as_bytes()),
    }
}

/// An access token for principal `id` bound to `service_key` with `key`, signed by `ring`,
/// issued `age` seconds ago, living `ttl`.
fn access_token_for(
    ring: &tokenmint::keyring::Keyring,
    (service_key, key): (&str, &str),
    id: &str,
    age: i64,
    ttl: i64,
) -> String {
    let claims = AccessClaims {
        registered: Registered::new(now() - age, Some(ttl)),
        identity: AccessIdentity { id: Id::from(id) },
        fresh: false,
        token_type: ACCESS_TYPE.into(),
        binding: binding(service_key, key),
        iss: ISSUER.into(),
    };
    ring.sign(&claims).unwrap()
}

const A: (&str, &str) = ("team-a/analytics", KEY_A);
const C: (&str, &str) = ("team-c/noorg", KEY_C);

// ---------------------------------------------------------------- Nibi: access token

#[tokio::test]
async fn access_token_answers_the_seed_shape() {
    let t = app();
    for route in [ACCESS, USER_ALIAS] {
        // The PHP client posts `0` as form fields.
        let r = call(&t.router, "POST", route, Some(&bearer(KEY_A)), "0").await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.keys(), ["access_token", "expiration"]);
        assert!(r.text.contains("\"expiration\":86400.0"), "{}", r.text);
        let c = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "iat",
                "nbf",
                "jti",
                "exp",
                "identity",
                "fresh",
                "type",
                "service_key",
                "service_key_uid",
                "key_fingerprint",
                "iss"
            ]
        );
        assert_eq!(c["identity"], json!({"id": 1}));
        assert_eq!(c["service_key"], "team-a/analytics");
        assert_eq!(c["key_fingerprint"], key_fingerprint(KEY_A.as_bytes()));
        assert_eq!((&c["fresh"], &c["type"]), (&json!(false), &json!("access")));
        assert_eq!(lifetime(&c), 86_400);
    }
    // The ServiceKey's accessTokenTTL (90m).
    let r = call(&t.router, "POST", ACCESS, Some(&bearer(KEY_B)), "").await;
    assert_eq!(r.json["expiration"], json!(5400.0));
    let c = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
    assert_eq!(lifetime(&c), 5_400);
}

#[tokio::test]
async fn access_token_refuses_bad_credentials() {
    let t = app();
    for auth in [
        None,
        Some("".to_owned()),
        Some("Bearer".to_owned()),
        Some("Bearer    ".to_owned()),
        Some(format!("Basic {KEY_A}")),
        Some(KEY_A.to_owned()),
        Some(bearer("tmk_unknown")),
        Some(bearer(&KEY_A[..KEY_A.len() - 1])),
        Some(bearer(&format!("{KEY_A}x"))),
    ] {
        let r = call(&t.router, "POST", ACCESS, auth.as_deref(), "").await;
        r.assert_error(401, "UNAUTHORIZED");
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert!(!r.text.contains(KEY_A));
    }
}

// ---------------------------------------------------------------- Nibi: data source token

#[tokio::test]
async fn datasource_token_with_the_service_key() {
    let t = app();
    let body = json!({"data_source": "Data_3_E", "expiration": 600, "app_uuid": "123", "filter": "USER_id = 123"});
    let r = call(
        &t.router,
        "POST",
        DATASOURCE,
        Some(&bearer(KEY_A)),
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.keys(), ["access_token", "expiration"]);
    assert!(r.text.contains("\"expiration\":600.0"), "{}", r.text);
    let c = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
    assert_eq!(
        c["identity"],
        json!({"id": 1, "orgs": [1], "source_role": {"ds": "Data_3_E", "role": "dataSourceViewer"},
               "app_uuid": "123", "filter": "USER_id = 123"})
    );
    assert_eq!((&c["fresh"], &c["type"]), (&json!(false), &json!("access")));
    assert_eq!(lifetime(&c), 600);

    // Defaults: one hour; a numeric app_uuid is its text; no Content-Type needed.
    let r = call(
        &t.router,
        "POST",
        DATASOURCE,
        Some(&bearer(KEY_A)),
        r#"{"data_source":"Data_3_E","app_uuid":123,"filter":null}"#,
    )
    .await;
    assert_eq!(r.json["expiration"], json!(3600.0));
    let c = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
    assert_eq!(lifetime(&c), 3_600);
    assert_eq!(c["identity"]["app_uuid"], "123");
    assert!(c["identity"].get("filter").is_none());
}

#[tokio::test]
async fn datasource_token_with_a_user_access_token_has_exactly_its_keys_authority() {
    let t = app();
    let r = call(&t.router, "POST", ACCESS, Some(&bearer(KEY_A)), "").await;
    let access = r.json["access_token"].as_str().unwrap().to_owned();
    let post = |credential: String, body: &'static str| {
        let router = t.router.clone();
        async move {
            call(
                &router,
                "POST",
                DATASOURCE,
                Some(&bearer(&credential)),
                body,
            )
            .await
        }
    };
    // Data_3_E via team-a/analytics, the key it was minted with (org 1).
    let r = post(
        access.clone(),
        r#"{"data_source": "Data_3_E", "expiration": 60}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
    assert_eq!(c["identity"]["source_role"]["ds"], "Data_3_E");
    assert_eq!(c["identity"]["orgs"], json!([1]));
    assert_eq!(c["service_key"], "team-a/analytics");
    // Sales is allowed only to team-b's key, whose principal has the same id: not reachable
    // with team-a's access token (the cross-tenant escalation of the review).
    let r = post(access.clone(), r#"{"data_source":"Sales"}"#).await;
    r.assert_error(403, "FORBIDDEN");
    let r = post(access, r#"{"data_source":"Secret_DB"}"#).await;
    r.assert_error(403, "FORBIDDEN");
    // A text principal id works the same way.
    let access = access_token_for(&t.keyring, C, "u-7", 0, 600);
    let r = post(access, r#"{"data_source":"x"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn datasource_token_errors() {
    let t = app();
    let key = bearer(KEY_A);
    let post = |body: &'static str| call(&t.router, "POST", DATASOURCE, Some(&key), body);

    post(r#"{"data_source":"Sales"}"#)
        .await
        .assert_error(403, "FORBIDDEN");
    for expiration in ["43201", "0", "0.0", "-5", "1e12"] {
        let body = format!(r#"{{"data_source":"Data_3_E","expiration":{expiration}}}"#);
        let r = call(&t.router, "POST", DATASOURCE, Some(&key), body).await;
        r.assert_error(400, "BAD_REQUEST");
        assert!(
            r.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expiration"),
            "{}",
            r.text
        );
    }
    // The edges are fine, and so is the seed's own example (`"expiration": 20.0`), below the
    // DatasourceGrant CRD's floor of 60.
    for (expiration, seconds) in [
        (json!(1), 1),
        (json!(20.0), 20),
        (json!(20), 20),
        (json!(59), 59),
        (json!(60), 60),
        (json!(43_200), 43_200),
    ] {
        let body = json!({"data_source": "Data_3_E", "expiration": expiration});
        let r = call(&t.router, "POST", DATASOURCE, Some(&key), body.to_string()).await;
        assert_eq!(r.status, 200, "{expiration}: {}", r.text);
        assert_eq!(r.json["expiration"], json!(seconds as f64), "{}", r.text);
        let c = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
        assert_eq!(lifetime(&c), seconds, "{expiration}");
    }
    // The filter validator's own message.
    let r = post(r#"{"data_source":"Data_3_E","filter":"1=1; DROP TABLE users"}"#).await;
    r.assert_error(400, "BAD_REQUEST");
    assert!(r.text.contains("';' is not allowed"), "{}", r.text);
    let r = post(r#"{"data_source":"Data_3_E","filter":"id IN (SELECT id FROM t)"}"#).await;
    r.assert_error(400, "BAD_REQUEST");
    assert!(r.text.contains("sub-quer"), "{}", r.text);

    for (body, needle) in [
        ("{", "malformed JSON"),
        ("not json", "malformed JSON"),
        ("[]", "JSON object"),
        ("", "data_source is required"),
        ("{}", "data_source is required"),
        (r#"{"data_source":""}"#, "data_source is required"),
        (r#"{"data_source":5}"#, "data_source must be a string"),
        (
            r#"{"data_source":"Data_3_E","expiration":"soon"}"#,
            "expiration must be a whole number",
        ),
        (
            r#"{"data_source":"Data_3_E","expiration":true}"#,
            "expiration must be a whole number",
        ),
        (
            r#"{"data_source":"Data_3_E","expiration":"3600"}"#,
            "expiration must be a whole number, got a string",
        ),
        (
            r#"{"data_source":"Data_3_E","filter":[1]}"#,
            "filter must be a string",
        ),
        (
            r#"{"data_source":"Data_3_E","app_uuid":{}}"#,
            "app_uuid must be a string",
        ),
    ] {
        let r = post(body).await;
        r.assert_error(400, "BAD_REQUEST");
        assert!(r.text.contains(needle), "{body}: {}", r.text);
    }
}

#[tokio::test]
async fn datasource_token_refuses_bad_tokens() {
    let t = app();
    let other =
        tokenmint::keyring::Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    let minter = Minter {
        keyring: &t.keyring,
        issuer: ISSUER,
    };
    let principal: tokenmint::crd::Principal =
        serde_json::from_value(json!({"id": "1", "email": "jcw@example.com", "name": "jcw"}))
            .unwrap();
    let fingerprint = key_fingerprint(KEY_A.as_bytes());
    let issuing = Issuing {
        service_key: "team-a/analytics",
        service_key_uid: uid_of("team-a/analytics"),
        key_fingerprint: &fingerprint,
    };
    let (session, _) = minter
        .session_token(
            principal.subject(),
            issuing,
            std::time::Duration::from_secs(600),
            jiff::Timestamp::now(),
        )
        .unwrap();
    let ds_request = tokenmint::token::mint::DatasourceRequest {
        data_source: "Data_3_E",
        expiration: 600,
        ..Default::default()
    };
    let datasource = minter
        .datasource_token(
            principal.subject(),
            issuing,
            &ds_request,
            jiff::Timestamp::now(),
        )
        .unwrap();
    let wrong_issuer = Minter {
        keyring: &t.keyring,
        issuer: "someone-else",
    }
    .access_token(
        principal.subject(),
        issuing,
        std::time::Duration::from_secs(600),
        jiff::Timestamp::now(),
    )
    .unwrap();
    let mut tampered = access_token_for(&t.keyring, A, "1", 0, 600);
    tampered.pop();
    // Minted before tokens were bound: only `identity.id`, no ServiceKey named.
    let unbound = t
        .keyring
        .sign(
            &json!({"iat": now(), "nbf": now(), "jti": "j", "exp": now() + 600,
            "identity": {"id": 1}, "fresh": false, "type": "access", "iss": ISSUER}),
        )
        .unwrap();
    for token in [
        access_token_for(&t.keyring, A, "1", 7_200, 3_600), // expired
        access_token_for(&other, A, "1", 0, 600),           // another keyring
        access_token_for(&t.keyring, ("team-x/gone", KEY_A), "1", 0, 600), // no such ServiceKey
        access_token_for(&t.keyring, ("team-a/keyless", "k"), "9", 0, 600), // no key Secret
        access_token_for(
            &t.keyring,
            ("team-a/analytics", "tmk_replaced"),
            "1",
            0,
            600,
        ), // old key
        access_token_for(&t.keyring, ("team-b/analytics", KEY_A), "1", 0, 600), // namesake
        unbound,
        session.token,
        datasource.token, // a read token cannot mint more tokens
        wrong_issuer.token,
        tampered,
        "a.b.c".to_owned(),
    ] {
        let r = call(
            &t.router,
            "POST",
            DATASOURCE,
            Some(&bearer(&token)),
            r#"{"data_source":"Data_3_E"}"#,
        )
        .await;
        r.assert_error(401, "UNAUTHORIZED");
    }
    let r = call(
        &t.router,
        "POST",
        DATASOURCE,
        None,
        r#"{"data_source":"Data_3_E"}"#,
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");
    // Credentials are checked before the body.
    let r = call(&t.router, "POST", DATASOURCE, Some(&bearer("nope")), "{").await;
    r.assert_error(401, "UNAUTHORIZED");
}

// ---------------------------------------------------------------- DataBrain

#[tokio::test]
async fn guest_token_answers_the_seed_shape() {
    let t = app();
    let body = json!({
        "workspaceName": "w1",
        "clientId": "acme",
        "datasourceName": "Data_3_E",
        "expiryTime": 1500,
        "params": {
            "dashboardAppFilters": [{"dashboardId": "d1", "values": {"region": "EU"}, "isShowOnUrl": false}],
            "appFilters": [{"metricId": "m1", "values": {"plan": "pro"}}],
            "custom": 1
        }
    });
    let r = call(
        &t.router,
        "POST",
        GUEST,
        Some(&bearer(KEY_A)),
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.keys(), ["token"]);
    let c = verify(&t.keyring, r.json["token"].as_str().unwrap(), true);
    assert_eq!(c["workspaceName"], "w1");
    assert_eq!(c["clientId"], "acme");
    assert_eq!(c["datasourceName"], "Data_3_E");
    assert_eq!(c["params"], body["params"]);
    assert_eq!(c["sub"], "1", "sub is a string (RFC 7519)");
    assert_eq!(c["type"], "guest");
    assert_eq!(c["service_key"], "team-a/analytics");

    // A data source the key does not allow: 403 in DataBrain's shape (the seed has no code for
    // data-source scope: DATASOURCE_ERROR, named like its codes).
    let payroll = json!({"workspaceName": "w1", "clientId": "acme", "datasourceName": "PayrollDB"});
    let r = call(
        &t.router,
        "POST",
        GUEST,
        Some(&bearer(KEY_A)),
        payroll.to_string(),
    )
    .await;
    r.assert_error(403, "DATASOURCE_ERROR");
    assert!(r.text.contains("PayrollDB"), "{}", r.text);
    assert_eq!(lifetime(&c), 2, "1500 ms rounds up to 2 s");

    // Without expiryTime the token never expires.
    let r = call(
        &t.router,
        "POST",
        GUEST,
        Some(&bearer(KEY_A)),
        r#"{"workspaceName":"w1","clientId":"None"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = verify(&t.keyring, r.json["token"].as_str().unwrap(), false);
    assert!(c.get("exp").is_none());
    // "*" allows any workspace.
    let r = call(
        &t.router,
        "POST",
        GUEST,
        Some(&bearer(KEY_B)),
        r#"{"workspaceName":"any","clientId":"c"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn guest_token_errors_use_databrain_codes() {
    let t = app();
    let key = bearer(KEY_A);
    for auth in [None, Some("Basic x".to_owned()), Some(bearer("unknown"))] {
        let r = call(
            &t.router,
            "POST",
            GUEST,
            auth.as_deref(),
            r#"{"workspaceName":"w1","clientId":"a"}"#,
        )
        .await;
        r.assert_error(401, "AUTHENTICATION_ERROR");
    }
    for (body, status, code) in [
        ("{", 400, "INVALID_REQUEST_BODY"),
        ("[1,2]", 400, "INVALID_REQUEST_BODY"),
        (
            r#"{"workspaceName":1,"clientId":"a"}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            r#"{"workspaceName":"w1","clientId":5}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","expiryTime":"x"}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        // Digits in a string are no number: the route takes what its schema says.
        (
            r#"{"workspaceName":"w1","clientId":"a","expiryTime":"3600000"}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","expiryTime":0}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","expiryTime":-1}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","expiryTime":2592000001}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","expiryTime":1.5}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","params":[]}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","datasourceName":{}}"#,
            400,
            "INVALID_REQUEST_BODY",
        ),
        (r#"{"workspaceName":"w1"}"#, 400, "CLIENT_ID_ERROR"),
        (
            r#"{"workspaceName":"w1","clientId":""}"#,
            400,
            "CLIENT_ID_ERROR",
        ),
        (
            r#"{"workspaceName":"w1","clientId":null}"#,
            400,
            "CLIENT_ID_ERROR",
        ),
        (r#"{"clientId":"a"}"#, 400, "WORKSPACE_ID_ERROR"),
        (
            r#"{"workspaceName":"","clientId":"a"}"#,
            400,
            "WORKSPACE_ID_ERROR",
        ),
        ("", 400, "WORKSPACE_ID_ERROR"),
        (
            r#"{"workspaceName":"w2","clientId":"a"}"#,
            403,
            "WORKSPACE_ID_ERROR",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","params":{"dashboardAppFilters":{}}}"#,
            400,
            "DASHBOARD_PARAM_ERROR",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","params":{"appFilters":[1]}}"#,
            400,
            "APP_FILTER_PARAM_ERROR",
        ),
        (
            r#"{"workspaceName":"w1","clientId":"a","params":{"rlsSettings":"x"}}"#,
            400,
            "RLS_SETTINGS_PARAM_ERROR",
        ),
    ] {
        let r = call(&t.router, "POST", GUEST, Some(&key), body).await;
        r.assert_error(status, code);
    }
    // Layer-made errors on this route speak DataBrain too.
    let big = format!(
        r#"{{"workspaceName":"w1","clientId":"{}"}}"#,
        "a".repeat(70 * 1024)
    );
    call(&t.router, "POST", GUEST, Some(&key), big)
        .await
        .assert_error(413, "INVALID_REQUEST_BODY");
    let r = call(&t.router, "GET", GUEST, Some(&key), "").await;
    r.assert_error(405, "INVALID_REQUEST_BODY");
}

// ---------------------------------------------------------------- Nexla

fn assert_session_shape(r: &Reply) {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.keys(),
        ["access_token", "token_type", "expires_in", "user", "org"]
    );
    let user: Vec<&str> = r.json["user"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        user,
        [
            "id",
            "email",
            "full_name",
            "api_key",
            "super_user",
            "impersonated",
            "email_verified_at",
            "updated_at",
            "created_at"
        ]
    );
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["user"]["super_user"], false);
    assert_eq!(r.json["user"]["impersonated"], false);
}

#[tokio::test]
async fn session_token_with_every_basic_form() {
    use base64::Engine;
    let t = app();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for auth in [
        format!("Basic {KEY_A}"),
        format!("Basic {}", b64(KEY_A)),
        basic("jcw", KEY_A),
        basic("", KEY_A),
    ] {
        let r = call(&t.router, "POST", "/token", Some(&auth), "").await;
        assert_session_shape(&r);
        assert_eq!(r.json["expires_in"], 3600);
        assert_eq!(
            r.json["user"],
            json!({"id": 1, "email": "jcw@example.com", "full_name": "Jeff Williams",
                   "api_key": "team-a/analytics", "super_user": false, "impersonated": false,
                   "email_verified_at": "2016-02-07T11:40", "updated_at": "2016-02-07T11:40",
                   "created_at": "2016-02-07T11:40"})
        );
        assert_eq!(r.json["org"], json!({"id": 1, "name": "Main Org."}));
        assert!(!r.text.contains(KEY_A), "the key is never echoed");
        let c = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
        assert_eq!(c["type"], "session");
        assert_eq!(c["service_key"], "team-a/analytics");
        assert_eq!(lifetime(&c), 3_600);
    }
    // The ServiceKey's sessionToken.ttl; a principal without org.
    let r = call(
        &t.router,
        "POST",
        "/token",
        Some(&format!("Basic {KEY_B}")),
        "",
    )
    .await;
    assert_session_shape(&r);
    assert_eq!(r.json["expires_in"], 7200);
    assert_eq!(r.json["user"]["full_name"], Value::Null);
    assert_eq!(r.json["user"]["created_at"], Value::Null);
    let r = call(
        &t.router,
        "POST",
        "/token",
        Some(&format!("Basic {KEY_C}")),
        "",
    )
    .await;
    assert_session_shape(&r);
    assert_eq!(r.json["org"], Value::Null);
    assert_eq!(r.json["user"]["id"], "u-7");
}

#[tokio::test]
async fn session_token_refuses_bad_credentials() {
    let t = app();
    for auth in [
        None,
        Some(bearer(KEY_A)),
        Some("Basic nope".to_owned()),
        Some(basic("jcw", "nope")),
        // A valid key under another principal's name.
        Some(basic("mallory", KEY_A)),
        Some("Basic".to_owned()),
    ] {
        let r = call(&t.router, "POST", "/token", auth.as_deref(), "").await;
        r.assert_error(401, "UNAUTHORIZED");
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Basic")
        );
    }
}

/// A session token for `sub`, bound to `service_key` with `key`.
fn session_for(
    t: &TestApp,
    (service_key, key): (&str, &str),
    sub: &str,
    age: i64,
    ttl: i64,
) -> String {
    let registered = Registered::new(now() - age, Some(ttl));
    let claims = SessionClaims {
        sid: registered.jti.clone(),
        registered,
        sub: sub.into(),
        email: "jcw@example.com".into(),
        full_name: Some("Jeff Williams".into()),
        org: None,
        binding: binding(service_key, key),
        token_type: SESSION_TYPE.into(),
        iss: ISSUER.into(),
    };
    t.keyring.sign(&claims).unwrap()
}

#[tokio::test]
async fn refresh_restarts_the_expiry() {
    let t = app();
    let old = session_for(&t, A, "1", 600, 3_600);
    let old_claims = verify(&t.keyring, &old, true);
    let r = call(&t.router, "POST", "/token/refresh", Some(&bearer(&old)), "").await;
    assert_session_shape(&r);
    assert_eq!(r.json["expires_in"], 3600);
    assert_eq!(r.json["user"]["api_key"], "team-a/analytics");
    let new = verify(&t.keyring, r.json["access_token"].as_str().unwrap(), true);
    assert_ne!(new["jti"], old_claims["jti"]);
    assert!(new["exp"].as_i64().unwrap() >= old_claims["exp"].as_i64().unwrap() + 600);
    assert_eq!(lifetime(&new), 3_600);
    assert_eq!(
        (&new["sub"], &new["service_key"]),
        (&json!("1"), &json!("team-a/analytics"))
    );

    // A session from /token refreshes, and the refreshed one refreshes again.
    let first = call(
        &t.router,
        "POST",
        "/token",
        Some(&format!("Basic {KEY_B}")),
        "",
    )
    .await;
    let second = call(
        &t.router,
        "POST",
        "/token/refresh",
        Some(&bearer(first.json["access_token"].as_str().unwrap())),
        "",
    )
    .await;
    assert_session_shape(&second);
    assert_eq!(second.json["expires_in"], 7200);
    let third = call(
        &t.router,
        "POST",
        "/token/refresh",
        Some(&bearer(second.json["access_token"].as_str().unwrap())),
        "",
    )
    .await;
    assert_session_shape(&third);
}

#[tokio::test]
async fn refresh_refuses_expired_foreign_and_orphaned_sessions() {
    let t = app();
    let access = access_token_for(&t.keyring, A, "1", 0, 600);
    for token in [
        session_for(&t, A, "1", 7_200, 3_600), // expired
        // Expired 5 s ago: within the 30 s clock-skew leeway of other routes, but "401 once
        // expired" holds here without it.
        session_for(&t, A, "1", 3_605, 3_600),
        session_for(&t, ("team-a/gone", KEY_A), "1", 0, 3_600), // ServiceKey deleted
        session_for(&t, ("team-a/keyless", "k"), "9", 0, 3_600), // ServiceKey without key
        // The key was replaced since: a stolen session does not survive the rotation.
        session_for(&t, ("team-a/analytics", "tmk_the_old_key"), "1", 0, 3_600),
        access, // not a session
        KEY_A.to_owned(),
    ] {
        let r = call(
            &t.router,
            "POST",
            "/token/refresh",
            Some(&bearer(&token)),
            "",
        )
        .await;
        r.assert_error(401, "UNAUTHORIZED");
    }
    call(&t.router, "POST", "/token/refresh", None, "")
        .await
        .assert_error(401, "UNAUTHORIZED");
}

// ---------------------------------------------------------------- Datasentinel

#[tokio::test]
async fn user_token_is_created_with_201() {
    let t = app();
    let r = call(
        &t.router,
        "POST",
        "/ds-api/user-token",
        Some(&basic("jcw", KEY_A)),
        "",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.keys(), ["user-token"]);
    let c = verify(&t.keyring, r.json["user-token"].as_str().unwrap(), true);
    let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "exp",
            "iat",
            "database",
            "email",
            "user",
            "jti",
            "service_key",
            "service_key_uid",
            "key_fingerprint",
            "iss"
        ]
    );
    assert_eq!(
        (&c["database"], &c["email"], &c["user"]),
        (
            &json!("Main Org."),
            &json!("jcw@example.com"),
            &json!("jcw")
        )
    );
    assert_eq!(lifetime(&c), 86_400);
}

#[tokio::test]
async fn user_token_refuses_bad_credentials() {
    let t = app();
    for auth in [
        None,
        Some(basic("jcw", "wrong")),
        Some(basic("someone", KEY_A)),
        Some(basic("seven", KEY_A)), // another principal's name
        Some(format!("Basic {KEY_A}")),
        Some("Basic !!!".to_owned()),
        Some(bearer(KEY_A)),
    ] {
        let r = call(&t.router, "POST", "/ds-api/user-token", auth.as_deref(), "").await;
        r.assert_error(401, "UNAUTHORIZED");
        let r = call(
            &t.router,
            "GET",
            "/ds-api/user-token?token=x",
            auth.as_deref(),
            "",
        )
        .await;
        r.assert_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn user_token_info() {
    let t = app();
    let auth = basic("jcw", KEY_A);
    let r = call(&t.router, "POST", "/ds-api/user-token", Some(&auth), "").await;
    let token = r.json["user-token"].as_str().unwrap().to_owned();
    let exp = verify(&t.keyring, &token, true)["exp"].as_i64().unwrap();
    let expected_time = jiff::Timestamp::from_second(exp)
        .unwrap()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    for param in ["token", "user-token"] {
        let r = call(
            &t.router,
            "GET",
            &format!("/ds-api/user-token?{param}={token}"),
            Some(&auth),
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json,
            json!({"email": "jcw@example.com", "expire_time": expected_time, "organization_name": "Main Org.", "user": "jcw"})
        );
        assert_eq!(
            r.keys(),
            ["email", "expire_time", "organization_name", "user"]
        );
    }
    // The first of the two is used; a second one is no reason to refuse...
    let r = call(
        &t.router,
        "GET",
        &format!("/ds-api/user-token?token={token}&user-token=other"),
        Some(&auth),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // ...unless it is empty: every one given must be a token.
    let empty_second = format!("/ds-api/user-token?token={token}&user-token=");
    for (uri, needle) in [
        ("/ds-api/user-token", "is required"),
        ("/ds-api/user-token?other=1", "is required"),
        ("/ds-api/user-token?token=", "must not be empty"),
        (
            "/ds-api/user-token?user-token=&token=x",
            "must not be empty",
        ),
        (empty_second.as_str(), "must not be empty"),
    ] {
        let r = call(&t.router, "GET", uri, Some(&auth), "").await;
        r.assert_error(400, "BAD_REQUEST");
        assert!(r.text.contains(needle), "{uri}: {}", r.text);
    }
    let expired = t
        .keyring
        .sign(&UserTokenClaims {
            exp: now() - 3_600,
            iat: now() - 90_000,
            database: "Main Org.".into(),
            email: "jcw@example.com".into(),
            user: "jcw".into(),
            jti: "j".into(),
            binding: binding("team-a/analytics", KEY_A),
            iss: ISSUER.into(),
        })
        .unwrap();
    let access = access_token_for(&t.keyring, A, "1", 0, 600);
    for bad in [
        expired.as_str(),
        access.as_str(),
        "garbage",
        &token[..token.len() - 2],
    ] {
        let r = call(
            &t.router,
            "GET",
            &format!("/ds-api/user-token?token={bad}"),
            Some(&auth),
            "",
        )
        .await;
        r.assert_error(401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn user_token_info_reports_only_the_callers_own_tokens() {
    let t = app();
    let seven = basic("seven", KEY_C);
    let r = call(&t.router, "POST", "/ds-api/user-token", Some(&seven), "").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sevens = r.json["user-token"].as_str().unwrap().to_owned();
    let info = |auth: String, token: String| {
        let router = t.router.clone();
        async move {
            call(
                &router,
                "GET",
                &format!("/ds-api/user-token?token={token}"),
                Some(&auth),
                "",
            )
            .await
        }
    };
    // Its owner may read it.
    let r = info(seven.clone(), sevens.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"], "seven");

    // Another principal may not, and learns nothing: the answer to someone else's valid token
    // is the answer to garbage.
    let jcw = basic("jcw", KEY_A);
    let foreign = info(jcw.clone(), sevens.clone()).await;
    foreign.assert_error(401, "UNAUTHORIZED");
    assert!(!foreign.text.contains("seven"), "{}", foreign.text);
    let garbage = info(jcw.clone(), "garbage".into()).await;
    garbage.assert_error(401, "UNAUTHORIZED");
    assert_eq!(foreign.json, garbage.json);
    assert_eq!(
        foreign.headers.get("www-authenticate"),
        garbage.headers.get("www-authenticate")
    );

    // The same user name and email minted with another tenant's key (team-b's principal is a
    // namesake of team-a's) is not the caller's: it would reveal team-b's organisation.
    let forged = |(service_key, key): (&str, &str)| {
        t.keyring
            .sign(&UserTokenClaims {
                exp: now() + 3_600,
                iat: now(),
                database: "Sales Org".into(),
                email: "jcw@example.com".into(),
                user: "jcw".into(),
                jti: uuid_like(),
                binding: binding(service_key, key),
                iss: ISSUER.into(),
            })
            .unwrap()
    };
    for token in [
        forged(("team-b/sales", KEY_B)),
        forged(("team-a/analytics", "tmk_the_old_key")),
    ] {
        let r = info(jcw.clone(), token).await;
        r.assert_error(401, "UNAUTHORIZED");
        assert_eq!(r.json, garbage.json);
    }
    let r = info(jcw.clone(), forged(A)).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

fn uuid_like() -> String {
    format!("{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

// ---------------------------------------------------------------- System routes

#[tokio::test]
async fn jwks_probes_and_openapi() {
    let t = app();
    let r = call(&t.router, "GET", "/.well-known/jwks.json", None, "").await;
    assert_eq!(
        (r.status.as_u16(), r.json.clone()),
        (200, json!({"keys": []}))
    );
    let t2 = app_with(Algorithm::EdDSA);
    let r = call(&t2.router, "GET", "/.well-known/jwks.json", None, "").await;
    assert_eq!(r.json["keys"][0]["kid"], t2.keyring.active_kid());
    assert!(r.json["keys"][0].get("d").is_none());
    // A token from the EdDSA app verifies with the published key alone.
    let token = call(&t2.router, "POST", ACCESS, Some(&bearer(KEY_A)), "").await;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(r.json["keys"][0].clone()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Value>(
        token.json["access_token"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &v,
    )
    .unwrap();

    assert_eq!(
        call(&t.router, "GET", "/healthz", None, "").await.status,
        200
    );
    assert_eq!(
        call(&t.router, "GET", "/readyz", None, "").await.status,
        200
    );
    let r = call(&t.router, "GET", "/openapi.json", None, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["openapi"], "3.0.3");
}

#[tokio::test]
async fn not_ready_without_keyring_or_sync() {
    use std::sync::Arc;
    use tokenmint::key_store::SharedKeyStore;
    let store = Arc::new(SharedKeyStore::default());
    let router = tokenmint::http::router(tokenmint::http::AppState::new(store.clone(), ISSUER));
    let r = call(&router, "GET", "/readyz", None, "").await;
    assert_eq!(r.status, 503);
    assert!(r.json["reason"].as_str().unwrap().contains("not synced"));
    store.set_keys(index());
    store.mark_synced();
    let r = call(&router, "GET", "/readyz", None, "").await;
    assert_eq!(r.status, 503);
    assert!(r.json["reason"].as_str().unwrap().contains("keyring"));
    call(&router, "POST", ACCESS, Some(&bearer(KEY_A)), "")
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");
    call(&router, "POST", GUEST, Some(&bearer(KEY_A)), "{}")
        .await
        .assert_error(503, "INTERNAL_SERVER_ERROR");
    call(&router, "GET", "/.well-known/jwks.json", None, "")
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");
    assert_eq!(call(&router, "GET", "/healthz", None, "").await.status, 200);
    store.set_keyring(Some(
        tokenmint::keyring::Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap(),
    ));
    assert_eq!(call(&router, "GET", "/readyz", None, "").await.status, 200);
    assert_eq!(
        call(&router, "POST", ACCESS, Some(&bearer(KEY_A)), "")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn metrics_count_requests_and_tokens() {
    let t = app();
    call(&t.router, "POST", ACCESS, Some(&bearer(KEY_A)), "").await;
    call(&t.router, "POST", ACCESS, Some(&bearer(KEY_A)), "").await;
    call(&t.router, "POST", ACCESS, None, "").await;
    call(
        &t.router,
        "POST",
        GUEST,
        Some(&bearer(KEY_A)),
        r#"{"workspaceName":"w1","clientId":"a"}"#,
    )
    .await;
    call(&t.router, "GET", "/no/such/thing", None, "").await;
    let r = call(&t.router, "GET", "/metrics", None, "").await;
    assert_eq!(r.status, 200);
    let text = &r.text;
    for line in [
        r#"tokenmint_http_requests_total{method="POST",route="/api/admin/v1/api_token/get_access_token",status="200"} 2"#,
        r#"tokenmint_http_requests_total{method="POST",route="/api/admin/v1/api_token/get_access_token",status="401"} 1"#,
        r#"tokenmint_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"tokenmint_tokens_issued_total{kind="access"} 2"#,
        r#"tokenmint_tokens_issued_total{kind="guest"} 1"#,
        r#"tokenmint_http_request_duration_seconds_count{method="POST",route="/api/v1/guest-token/create",status="200"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // The raw path of an unknown route never becomes a label.
    assert!(!text.contains("/no/such/thing"));
}

// ---------------------------------------------------------------- Robustness

#[tokio::test]
async fn unknown_routes_methods_and_oversized_bodies_are_json_errors() {
    let t = app();
    call(&t.router, "GET", "/nope", None, "")
        .await
        .assert_error(404, "NOT_FOUND");
    call(
        &t.router,
        "POST",
        "/api/admin/v1/get_access_token",
        None,
        "",
    )
    .await
    .assert_error(404, "NOT_FOUND");
    let r = call(&t.router, "GET", ACCESS, Some(&bearer(KEY_A)), "").await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.headers["allow"], "POST");
    let r = call(&t.router, "DELETE", "/ds-api/user-token", None, "").await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    call(&t.router, "POST", "/healthz", None, "")
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");

    let big = vec![b'x'; 64 * 1024 + 1];
    for route in [
        ACCESS,
        DATASOURCE,
        "/token",
        "/token/refresh",
        "/ds-api/user-token",
    ] {
        let r = call(&t.router, "POST", route, Some(&bearer(KEY_A)), big.clone()).await;
        r.assert_error(413, "PAYLOAD_TOO_LARGE");
    }
    // Exactly at the limit is read (and then judged on its content).
    let mut at_limit = br#"{"data_source":"Data_3_E","app_uuid":""#.to_vec();
    at_limit.resize(64 * 1024 - 2, b'a');
    at_limit.extend_from_slice(b"\"}");
    let r = call(
        &t.router,
        "POST",
        DATASOURCE,
        Some(&bearer(KEY_A)),
        at_limit,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_times_out_with_408() {
    let t = app();
    let stalled = axum::body::Body::from_stream(futures::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >());
    let r = call(&t.router, "POST", DATASOURCE, Some(&bearer(KEY_A)), stalled).await;
    r.assert_error(408, "REQUEST_TIMEOUT");
    let stalled = axum::body::Body::from_stream(futures::stream::pending::<
        Result<Vec<u8>, std::io::Error>,
    >());
    let r = call(&t.router, "POST", GUEST, Some(&bearer(KEY_A)), stalled).await;
    r.assert_error(408, "INVALID_REQUEST_BODY");
}

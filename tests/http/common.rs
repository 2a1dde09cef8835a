//! Fixtures: an in-memory key store built from YAML (the same path as `--manifests`), and a
//! request helper over the in-process router.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use tokenmint::http::{AppState, Config, router};
use tokenmint::key_store::{KeyIndex, SharedKeyStore, Source};
use tokenmint::keyring::{Algorithm, Expect, Keyring};
use tokenmint::manifests::Manifests;
use tokenmint::revocation::{Denylist, Revoker};
use tower::ServiceExt;

pub const ISSUER: &str = "tokenmint-test";
/// team-a/analytics: principal 1 (jcw), Data_3_E, workspace w1, default TTLs.
pub const KEY_A: &str = "tmk_test_analytics_0123456789abcdef";
/// team-b/sales: also principal 1, data source Sales, every workspace, 90m/2h TTLs.
pub const KEY_B: &str = "tmk_test_sales_0123456789abcdef";
/// team-c/noorg: principal u-7 without org, every data source.
pub const KEY_C: &str = "tmk_test_noorg_0123456789abcdef";

pub const FIXTURES: &str = r#"
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: analytics, namespace: team-a, uid: 6f1c0b52-1d2e-4a8b-9c3d-000000000a01, creationTimestamp: "2016-02-07T11:40:00Z"}
spec:
  principal: {id: "1", email: jcw@example.com, name: jcw, fullName: Jeff Williams, orgId: "1", orgName: Main Org.}
  dataSources: [Data_3_E]
  workspaces: [w1]
---
apiVersion: v1
kind: Secret
metadata: {name: analytics-service-key, namespace: team-a}
stringData: {key: tmk_test_analytics_0123456789abcdef, username: jcw}
---
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: sales, namespace: team-b, uid: 6f1c0b52-1d2e-4a8b-9c3d-000000000b01}
spec:
  principal: {id: "1", email: jcw@example.com, name: jcw, orgId: "2", orgName: Sales Org}
  dataSources: [Sales]
  workspaces: ["*"]
  secretName: sales-key
  accessTokenTTL: 90m
  sessionToken: {secretName: sales-session, ttl: 2h}
---
apiVersion: v1
kind: Secret
metadata: {name: sales-key, namespace: team-b}
data: {key: dG1rX3Rlc3Rfc2FsZXNfMDEyMzQ1Njc4OWFiY2RlZg==}
---
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: noorg, namespace: team-c, uid: 6f1c0b52-1d2e-4a8b-9c3d-000000000c01}
spec:
  principal: {id: u-7, email: seven@example.com, name: seven}
  dataSources: ["*"]
---
apiVersion: v1
kind: Secret
metadata: {name: noorg-service-key, namespace: team-c}
stringData: {key: tmk_test_noorg_0123456789abcdef}
---
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: keyless, namespace: team-a, uid: 6f1c0b52-1d2e-4a8b-9c3d-000000000a02}
spec:
  principal: {id: "9", email: nine@example.com, name: nine}
  dataSources: ["*"]
"#;

/// The uid a fixture ServiceKey `namespace/name` has (any other reference: one of no
/// ServiceKey).
pub fn uid_of(reference: &str) -> &'static str {
    match reference {
        "team-a/analytics" => "6f1c0b52-1d2e-4a8b-9c3d-000000000a01",
        "team-a/keyless" => "6f1c0b52-1d2e-4a8b-9c3d-000000000a02",
        "team-b/sales" => "6f1c0b52-1d2e-4a8b-9c3d-000000000b01",
        "team-c/noorg" => "6f1c0b52-1d2e-4a8b-9c3d-000000000c01",
        _ => "00000000-0000-4000-8000-000000000000",
    }
}

pub struct TestApp {
    pub router: Router,
    pub keyring: Arc<Keyring>,
    /// Where the app's revocations are held (in memory).
    pub denylist: Arc<Denylist>,
}

pub fn index() -> KeyIndex {
    let m = Manifests::from_yaml(Path::new("fixtures.yaml"), FIXTURES).unwrap();
    KeyIndex::build(&m.service_keys, &m.secrets, Source::Manifests)
}

pub fn app_with(alg: Algorithm) -> TestApp {
    app_revoking_into(alg, Arc::new(Denylist::default()))
}

/// The app with its revocations held in `denylist` (its capacity and quota).
pub fn app_revoking_into(alg: Algorithm, denylist: Arc<Denylist>) -> TestApp {
    let ring = Keyring::generate(alg, jiff::Timestamp::now()).unwrap();
    let store = Arc::new(SharedKeyStore::fixed(index(), ring));
    let keyring = tokenmint::key_store::KeyStore::keyring(store.as_ref()).unwrap();
    let state = AppState::from_config(Config {
        store,
        issuer: ISSUER.into(),
        revoker: Revoker::Memory(denylist.clone()),
        denylist: denylist.clone(),
        watch_restarts: Default::default(),
        reviewer: None,
    });
    TestApp {
        router: router(state),
        keyring,
        denylist,
    }
}

pub fn app() -> TestApp {
    app_with(Algorithm::HS256)
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Asserts the error envelope, status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.json["error"]["code"], code, "{}", self.text);
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
        assert_eq!(
            self.json.as_object().unwrap().len(),
            1,
            "only `error`: {}",
            self.text
        );
        assert_eq!(
            self.headers["content-type"], "application/json",
            "{}",
            self.text
        );
    }

    /// The keys of the JSON object answered, in order.
    pub fn keys(&self) -> Vec<&str> {
        self.json
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

pub async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    send(router, request.body(body.into()).unwrap()).await
}

/// A form-encoded POST (the OAuth routes).
pub async fn call_form(router: &Router, uri: &str, auth: Option<&str>, body: &str) -> Reply {
    let mut request = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    send(router, request.body(Body::from(body.to_owned())).unwrap()).await
}

/// `POST /oauth/introspect` of `token` with `key`: the answer (asserted 200).
pub async fn introspect(router: &Router, key: &str, token: &str) -> Value {
    let r = call_form(
        router,
        "/oauth/introspect",
        Some(&bearer(key)),
        &format!("token={token}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// Whether `token` introspects active for `key`.
pub async fn is_active(router: &Router, key: &str, token: &str) -> bool {
    introspect(router, key, token).await["active"] == true
}

/// `POST /oauth/revoke` of `token` with `key`.
pub async fn revoke(router: &Router, key: &str, token: &str) -> Reply {
    call_form(
        router,
        "/oauth/revoke",
        Some(&bearer(key)),
        &format!("token={token}&token_type_hint=access_token"),
    )
    .await
}

/// The system's revocation (the operator's: a deleted resource, a withdrawn permission) of a
/// token with these claims.
pub fn by_the_system(claims: &Value) -> tokenmint::revocation::Revocation {
    tokenmint::revocation::Revocation::of_claims(
        claims,
        tokenmint::revocation::Origin::System,
        "test: deleted".into(),
        None,
        jiff::Timestamp::now().as_second(),
    )
    .unwrap()
}

pub fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub fn verify(keyring: &Keyring, token: &str, require_exp: bool) -> Value {
    keyring
        .verify(
            token,
            Expect {
                issuer: ISSUER,
                require_exp,
            },
        )
        .unwrap()
}

pub fn lifetime(claims: &Value) -> i64 {
    claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
}

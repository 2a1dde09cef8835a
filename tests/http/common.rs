//! Fixtures: an in-memory key store built from YAML (the same path as `--manifests`), and a
//! request helper over the in-process router.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use tokenmint::http::{AppState, router};
use tokenmint::key_store::{KeyIndex, SharedKeyStore};
use tokenmint::keyring::{Algorithm, Expect, Keyring};
use tokenmint::manifests::Manifests;
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
metadata: {name: analytics, namespace: team-a, creationTimestamp: "2016-02-07T11:40:00Z"}
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
metadata: {name: sales, namespace: team-b}
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
metadata: {name: noorg, namespace: team-c}
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
metadata: {name: keyless, namespace: team-a}
spec:
  principal: {id: "9", email: nine@example.com, name: nine}
  dataSources: ["*"]
"#;

pub struct TestApp {
    pub router: Router,
    pub keyring: Arc<Keyring>,
}

pub fn index() -> KeyIndex {
    let m = Manifests::from_yaml(Path::new("fixtures.yaml"), FIXTURES).unwrap();
    KeyIndex::build(&m.service_keys, &m.secrets)
}

pub fn app_with(alg: Algorithm) -> TestApp {
    let ring = Keyring::generate(alg, jiff::Timestamp::now()).unwrap();
    let store = Arc::new(SharedKeyStore::fixed(index(), ring));
    let keyring = tokenmint::key_store::KeyStore::keyring(store.as_ref()).unwrap();
    TestApp {
        router: router(AppState::new(store, ISSUER)),
        keyring,
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

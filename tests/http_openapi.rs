//! `openapi.json` (repo root) must be exactly the document `GET /openapi.json` serves.
//! Regenerate it with `UPDATE_OPENAPI=1 cargo test --test http_openapi`.

use axum::body::Body;
use axum::http::Request;
use std::path::Path;
use std::sync::Arc;
use tokenmint::key_store::{KeyIndex, SharedKeyStore};
use tokenmint::keyring::{Algorithm, Keyring};
use tower::ServiceExt;

fn router() -> axum::Router {
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    let store = Arc::new(SharedKeyStore::fixed(KeyIndex::default(), ring));
    tokenmint::http::router(tokenmint::http::AppState::new(store, "tokenmint"))
}

#[test]
fn committed_openapi_matches_the_served_document() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let expected = tokenmint::http::openapi::json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, expected).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{} drifted from the routes' OpenAPI document; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test --test http_openapi` and commit the result",
        path.display()
    );
}

#[tokio::test]
async fn served_document_is_the_committed_one_and_lists_only_real_routes() {
    let app = router();
    let response = app
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(bytes, tokenmint::http::openapi::json().as_bytes());

    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 14);
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(path.as_str())
                .body(Body::empty())
                .unwrap();
            let status = app.clone().oneshot(request).await.unwrap().status();
            assert!(
                status != 404 && status != 405,
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
}

/// The operations of the document: (method, path, operation object).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    ops
}

/// The schema a `$ref` of the document points to.
fn resolve<'a>(doc: &'a serde_json::Value, value: &'a serde_json::Value) -> &'a serde_json::Value {
    match value.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap(),
        None => value,
    }
}

async fn send(
    app: &axum::Router,
    request: Request<Body>,
) -> (u16, axum::http::HeaderMap, serde_json::Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

/// Checks an error answer against the operation's documented response for its status: the
/// status is listed, and the code is one of those its schema names.
fn assert_documented_error(
    doc: &serde_json::Value,
    label: &str,
    op: &serde_json::Value,
    status: u16,
    body: &serde_json::Value,
) -> serde_json::Value {
    let response = op["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{label} answered {status}, which it does not document"));
    let schema = resolve(doc, &response["content"]["application/json"]["schema"]);
    let codes = &schema["properties"]["error"]["properties"]["code"]["enum"];
    let code = &body["error"]["code"];
    assert!(
        codes.as_array().unwrap().contains(code),
        "{label} answered {status} with code {code}, not in {codes}"
    );
    response.clone()
}

#[tokio::test]
async fn refusals_are_documented_with_their_codes_and_challenges() {
    let app = router();
    let doc: serde_json::Value = serde_json::from_str(tokenmint::http::openapi::json()).unwrap();
    for (method, path, op) in operations(&doc) {
        let label = format!("{method} {path}");
        // Every route refuses a declared body over the limit before its handler runs.
        let request = Request::builder()
            .method(method.as_str())
            .uri(path.as_str())
            .header("content-length", "100000")
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = send(&app, request).await;
        assert_eq!(status, 413, "{label}");
        assert_documented_error(&doc, &label, &op, status, &body);

        // Without credentials, every authenticated route answers 401 with its challenge.
        if op["security"].as_array().is_none_or(|s| s.is_empty()) {
            continue;
        }
        let request = Request::builder()
            .method(method.as_str())
            .uri(path.as_str())
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = send(&app, request).await;
        assert_eq!(status, 401, "{label}");
        let response = assert_documented_error(&doc, &label, &op, status, &body);
        let header = resolve(&doc, &response["headers"]["WWW-Authenticate"]);
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(
            header["schema"]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == challenge),
            "{label}: challenge {challenge:?} is not documented"
        );
        let scheme = op["security"][0]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap();
        let expected = match doc["components"]["securitySchemes"][scheme]["scheme"].as_str() {
            Some("bearer") => tokenmint::http::openapi::BEARER_CHALLENGE,
            _ => tokenmint::http::openapi::BASIC_CHALLENGE,
        };
        assert_eq!(challenge, expected, "{label}");
    }
}

#[test]
fn published_keys_have_the_documented_shape() {
    let doc: serde_json::Value = serde_json::from_str(tokenmint::http::openapi::json()).unwrap();
    let jwk = &doc["components"]["schemas"]["Jwk"];
    let properties = jwk["properties"].as_object().unwrap();
    for alg in Algorithm::ALL {
        let ring = Keyring::generate(alg, jiff::Timestamp::now()).unwrap();
        let set = serde_json::to_value(ring.jwks()).unwrap();
        let keys = set["keys"].as_array().unwrap();
        assert_eq!(keys.len(), usize::from(alg != Algorithm::HS256), "{alg:?}");
        for key in keys {
            for required in jwk["required"].as_array().unwrap() {
                assert!(key.get(required.as_str().unwrap()).is_some(), "{key}");
            }
            for (name, value) in key.as_object().unwrap() {
                let schema = properties
                    .get(name)
                    .unwrap_or_else(|| panic!("{alg:?}: {name} is not documented"));
                assert!(value.is_string(), "{alg:?}: {name}");
                if let Some(allowed) = schema["enum"].as_array() {
                    assert!(allowed.contains(value), "{alg:?}: {name}={value}");
                }
            }
        }
    }
}

//! `openapi.json` (repo root) must be exactly the document `GET /openapi.json` serves.
//! Regenerate it with `UPDATE_OPENAPI=1 cargo test --test http_openapi`.

use axum::body::Body;
use axum::http::Request;
use std::path::Path;
use std::sync::Arc;
use tokenmint::http::keys::{KeyIndex, SharedKeyStore};
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
    assert_eq!(paths.len(), 12);
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

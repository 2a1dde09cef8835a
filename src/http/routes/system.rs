//! Probes, metrics, the JWKS and the OpenAPI document.

use crate::http::AppState;
use crate::http::error::{ApiError, Flavor, HandlerError};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Liveness: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the caches are synced and a keyring is loaded, so token routes can answer.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.readiness() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not ready", "reason": why.to_string()})),
            )
                .into_response();
            response.extensions_mut().insert(HandlerError);
            response
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .encode()
        .map_err(|e| ApiError::internal(Flavor::Generic, e))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The public signing keys; empty for HS256, whose key is secret.
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keyring = state.store.keyring().ok_or_else(|| {
        ApiError::not_ready(Flavor::Generic, crate::key_store::NotReady::NoKeyring)
    })?;
    Ok(Json(keyring.jwks()).into_response())
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::http::openapi::json(),
    )
        .into_response()
}

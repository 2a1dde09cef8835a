//! Datasentinel: `POST /ds-api/user-token` (201, a 24 h user-token) and
//! `GET /ds-api/user-token?token=T` (what the token says), both with HTTP Basic `name:key`.

use super::{minter, signing_failed};
use crate::http::AppState;
use crate::http::auth;
use crate::http::body;
use crate::http::error::{ApiError, Challenge, Flavor};
use crate::http::metrics::TokenKind;
use crate::http::presented::{self, Expiry, Kind};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

const FLAVOR: Flavor = Flavor::Generic;

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body::bytes(body, FLAVOR)?;
    let (index, keyring) = state.ready(FLAVOR)?;
    let entry = caller(&state, &index, &keyring, &headers).await?;
    let minted = minter(&keyring, &state.issuer)
        .user_token(
            entry.principal().subject(),
            entry.issuing(),
            jiff::Timestamp::now(),
        )
        .map_err(|e| signing_failed(FLAVOR, e))?;
    state.metrics.token_issued(TokenKind::user);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user-token": minted.token })),
    )
        .into_response())
}

/// HTTP Basic `name:key` (the vendor's), or keyless: `Bearer <ServiceAccount token>`.
async fn caller(
    state: &AppState,
    index: &crate::key_store::KeyIndex,
    keyring: &crate::keyring::Keyring,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<crate::key_store::KeyEntry>, ApiError> {
    match auth::keyless_on_basic_route(state, index, keyring, headers).await {
        Some(keyless) => keyless,
        None => auth::name_and_key(index, headers),
    }
}

/// The token is read from `token` (the seed's example) or `user-token` (the seed's table), the
/// first of them in the query string; none of them may be empty (the OpenAPI document can then
/// say exactly what is accepted). Only a user-token minted with the caller's own key (the same
/// ServiceKey, the same key material) is reported; any other token, valid or not, is 401.
pub async fn info(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (index, keyring) = state.ready(FLAVOR)?;
    let entry = caller(&state, &index, &keyring, &headers).await?;
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(FLAVOR, format!("malformed query string: {}", e.body_text()))
    })?;
    let mut given = query
        .iter()
        .filter(|(k, _)| k == "token" || k == "user-token")
        .map(|(_, v)| v.as_str());
    let token = given.next().ok_or_else(|| {
        ApiError::bad_request(
            FLAVOR,
            "the query parameter token (or user-token) is required",
        )
    })?;
    if token.is_empty() || given.any(str::is_empty) {
        return Err(ApiError::bad_request(
            FLAVOR,
            "the query parameters token and user-token must not be empty",
        ));
    }
    // One answer for every refusal: a caller learns nothing about a token that is not theirs,
    // not even whether it is valid.
    let refused = || ApiError::unauthorized(FLAVOR, Challenge::Basic, "invalid user-token");
    let presented = presented::verify(
        token,
        &keyring,
        &state.issuer,
        &state.denylist,
        Expiry::Leeway,
    )
    .map_err(|_| refused())?;
    if presented.kind != Kind::UserToken || !presented.minted_with(&entry) {
        return Err(refused());
    }
    let claims: crate::token::claims::UserTokenClaims =
        serde_json::from_value(presented.claims).map_err(|_| refused())?;
    let expire_time = jiff::Timestamp::from_second(claims.exp)
        .map_err(|_| refused())?
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    Ok(Json(json!({
        "email": claims.email,
        "expire_time": expire_time,
        "organization_name": claims.database,
        "user": claims.user,
    }))
    .into_response())
}

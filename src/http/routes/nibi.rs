//! Nibi: `POST /api/admin/v1/api_token/get_access_token` (alias `get_user_token`) and
//! `POST /api/admin/v1/get_datasource_token`.
//!
//! A data source token may be requested with the service key itself or with a user access
//! token minted by the first route. The access token is bound to the ServiceKey it was minted
//! with (`service_key`, `service_key_uid` and `key_fingerprint` claims, beside the vendor's
//! `identity`), and is honoured with exactly that key's permissions as they are now: another
//! tenant's key with the same principal id grants nothing, and a deleted (or re-created)
//! ServiceKey or a replaced key voids it.

use super::{minter, signing_failed};
use crate::crd::datasource_grant::DEFAULT_EXPIRATION;
use crate::http::AppState;
use crate::http::auth;
use crate::http::body::{self, Fields};
use crate::http::error::{ApiError, Challenge, Flavor};
use crate::http::metrics::TokenKind;
use crate::http::presented::{self, Expiry, Kind};
use crate::key_store::KeyEntry;
use crate::token::mint::{DatasourceRequest, MintError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

const FLAVOR: Flavor = Flavor::Generic;

/// `get_access_token`: a user access token for the key's principal. The body is ignored (the
/// vendor's PHP client posts `0`), but still bounded by the body limit.
pub async fn access_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body::bytes(body, FLAVOR)?;
    let (index, keyring) = state.ready(FLAVOR)?;
    let entry = auth::bearer_key(&state, &index, &keyring, &headers, FLAVOR).await?;
    let ttl = entry.access_ttl();
    let minted = minter(&keyring, &state.issuer)
        .access_token(
            entry.principal().subject(),
            entry.issuing(),
            ttl,
            jiff::Timestamp::now(),
        )
        .map_err(|e| signing_failed(FLAVOR, e))?;
    state.metrics.token_issued(TokenKind::access);
    Ok(Json(TokenAnswer {
        access_token: &minted.token,
        expiration: ttl.as_secs_f64(),
    })
    .into_response())
}

/// `get_datasource_token`: a read token for one data source.
pub async fn datasource_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body::bytes(body, FLAVOR)?;
    let (index, keyring) = state.ready(FLAVOR)?;
    let credential = auth::bearer(&headers, FLAVOR)?;
    let entry = caller(&state, &index, &keyring, credential).await?;

    let map = body::object(&body, FLAVOR)?;
    let fields = Fields(&map);
    let bad = |m: String| ApiError::bad_request(FLAVOR, m);
    let data_source = fields
        .string("data_source")
        .map_err(bad)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("data_source is required".into()))?;
    let expiration = fields
        .integer("expiration")
        .map_err(bad)?
        .unwrap_or(DEFAULT_EXPIRATION);
    let app_uuid = fields.string_or_number("app_uuid").map_err(bad)?;
    let filter = fields.string("filter").map_err(bad)?;

    if !entry.spec.allows_data_source(data_source) {
        return Err(ApiError::forbidden(
            FLAVOR,
            format!("this key may not grant access to the data source {data_source:?}"),
        ));
    }
    let request = DatasourceRequest {
        data_source,
        expiration,
        app_uuid: app_uuid.as_deref(),
        filter,
    };
    let minted = minter(&keyring, &state.issuer)
        .datasource_token(
            entry.principal().subject(),
            entry.issuing(),
            &request,
            jiff::Timestamp::now(),
        )
        .map_err(|e| match e {
            MintError::Request(e) => bad(e.to_string()),
            MintError::Keyring(e) => signing_failed(FLAVOR, e),
        })?;
    state.metrics.token_issued(TokenKind::datasource);
    Ok(Json(TokenAnswer {
        access_token: &minted.token,
        expiration: expiration as f64,
    })
    .into_response())
}

/// The answer of both routes, `{"access_token", "expiration"}` with the expiration a float
/// (`86400.0`), as the seed shows. Serialised straight from the struct, without a JSON tree.
#[derive(serde::Serialize)]
struct TokenAnswer<'a> {
    access_token: &'a str,
    expiration: f64,
}

/// The ServiceKey a data source token is requested with: the key itself, the key a user access
/// token is bound to, or the key listing the caller's ServiceAccount.
async fn caller(
    state: &AppState,
    index: &crate::key_store::KeyIndex,
    keyring: &crate::keyring::Keyring,
    credential: &str,
) -> Result<Arc<KeyEntry>, ApiError> {
    if let Some(entry) = index.by_key(credential.as_bytes()) {
        return Ok(entry);
    }
    let unauthorized = |m: String| ApiError::unauthorized(FLAVOR, Challenge::Bearer, m);
    // Not a key; only a JWT (three dot-separated parts) can be an access token.
    if !auth::is_jwt(credential) {
        return Err(unauthorized("unknown service key".into()));
    }
    // Not one of ours: a ServiceAccount token, perhaps.
    if !auth::minted_here(keyring, credential) {
        return auth::calling_key(state, index, keyring, credential, FLAVOR, Challenge::Bearer)
            .await;
    }
    let token = presented::verify(
        credential,
        keyring,
        &state.issuer,
        &state.denylist,
        Expiry::Leeway,
    )
    .map_err(|e| unauthorized(format!("invalid access token: {e}")))?;
    if token.kind != Kind::Access {
        return Err(unauthorized("the token is not a user access token".into()));
    }
    token.bound_entry(index).ok_or_else(|| {
        unauthorized(
            "the access token's ServiceKey no longer exists or its key was replaced".into(),
        )
    })
}

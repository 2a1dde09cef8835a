//! Nibi: `POST /api/admin/v1/api_token/get_access_token` (alias `get_user_token`) and
//! `POST /api/admin/v1/get_datasource_token`.
//!
//! A data source token may be requested with the service key itself or with a user access
//! token minted by the first route. The access token carries only `identity.id` (the vendor's
//! layout), so its permissions are resolved from the ServiceKeys of that principal id among
//! the watched ones: the data source is granted when any of them allows it, and the token is
//! registered against the first such ServiceKey (by `namespace/name`), whose principal gives
//! the org. Principal ids are thus global across the watched namespaces, and deleting every
//! ServiceKey of a principal revokes its access tokens for this route.

use super::{minter, signing_failed};
use crate::crd::datasource_grant::DEFAULT_EXPIRATION;
use crate::http::AppState;
use crate::http::auth;
use crate::http::body::{self, Fields};
use crate::http::error::{ApiError, Challenge, Flavor};
use crate::http::keys::{KeyEntry, KeyIndex};
use crate::http::metrics::TokenKind;
use crate::keyring::{Expect, Keyring};
use crate::token::claims::{ACCESS_TYPE, Id};
use crate::token::mint::{DatasourceRequest, MintError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
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
    let key = auth::bearer(&headers, FLAVOR)?;
    let entry = auth::service_key(&index, key.as_bytes(), FLAVOR, Challenge::Bearer)?;
    let ttl = entry.access_ttl();
    let minted = minter(&keyring, &state.issuer)
        .access_token(entry.principal(), ttl, jiff::Timestamp::now())
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
    let caller = Caller::authenticate(&index, &keyring, &state.issuer, credential)?;

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

    let entry = caller.granting(data_source).ok_or_else(|| {
        ApiError::forbidden(
            FLAVOR,
            format!("this key may not grant access to the data source {data_source:?}"),
        )
    })?;
    let request = DatasourceRequest {
        data_source,
        expiration,
        app_uuid: app_uuid.as_deref(),
        filter,
    };
    let minted = minter(&keyring, &state.issuer)
        .datasource_token(entry.principal(), &request, jiff::Timestamp::now())
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

/// Who asks for a data source token, and with which ServiceKeys' permissions.
enum Caller {
    ServiceKey(Arc<KeyEntry>),
    /// The ServiceKeys of an access token's principal, ordered by `namespace/name`.
    AccessToken(Vec<Arc<KeyEntry>>),
}

impl Caller {
    fn authenticate(
        index: &KeyIndex,
        keyring: &Keyring,
        issuer: &str,
        credential: &str,
    ) -> Result<Self, ApiError> {
        if let Some(entry) = index.by_key(credential.as_bytes()) {
            return Ok(Caller::ServiceKey(entry));
        }
        let unauthorized = |m: &str| ApiError::unauthorized(FLAVOR, Challenge::Bearer, m);
        // Not a key; only a JWT (three dot-separated parts) can be an access token.
        if credential.split('.').count() != 3 {
            return Err(unauthorized("unknown service key"));
        }
        let claims: Value = keyring
            .verify(
                credential,
                Expect {
                    issuer,
                    require_exp: true,
                },
            )
            .map_err(|e| unauthorized(&format!("invalid access token: {e}")))?;
        let id = user_access_principal(&claims)
            .ok_or_else(|| unauthorized("the token is not a user access token"))?;
        let entries = index.by_principal(&id);
        if entries.is_empty() {
            return Err(unauthorized(
                "the access token's principal has no ServiceKey any more",
            ));
        }
        Ok(Caller::AccessToken(entries.to_vec()))
    }

    /// The ServiceKey that may grant `data_source`, if any.
    fn granting(&self, data_source: &str) -> Option<&Arc<KeyEntry>> {
        match self {
            Caller::ServiceKey(e) => Some(e).filter(|e| e.spec.allows_data_source(data_source)),
            Caller::AccessToken(entries) => entries
                .iter()
                .find(|e| e.spec.allows_data_source(data_source)),
        }
    }
}

/// The principal id of a user access token. Data source tokens share `type: access` but carry
/// `identity.source_role`; they are read tokens and must not mint further tokens.
fn user_access_principal(claims: &Value) -> Option<String> {
    if claims.get("type").and_then(Value::as_str) != Some(ACCESS_TYPE) {
        return None;
    }
    let identity = claims.get("identity")?.as_object()?;
    if identity.contains_key("source_role") {
        return None;
    }
    let id: Id = serde_json::from_value(identity.get("id")?.clone()).ok()?;
    Some(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_user_access_tokens_name_a_principal() {
        let access = json!({"type": "access", "identity": {"id": 1}});
        assert_eq!(user_access_principal(&access).as_deref(), Some("1"));
        let text = json!({"type": "access", "identity": {"id": "u-1"}});
        assert_eq!(user_access_principal(&text).as_deref(), Some("u-1"));
        let datasource = json!({"type": "access", "identity": {"id": 1, "source_role": {}}});
        assert_eq!(user_access_principal(&datasource), None);
        let session = json!({"type": "session", "sub": 1});
        assert_eq!(user_access_principal(&session), None);
        let odd = json!({"type": "access", "identity": {"id": [1]}});
        assert_eq!(user_access_principal(&odd), None);
    }
}

//! Nexla: `POST /token` (a session token for `Basic <service key>`) and `POST /token/refresh`
//! (the same session with its expiry restarted).

use super::{minter, signing_failed};
use crate::http::AppState;
use crate::http::auth;
use crate::http::body;
use crate::http::error::{ApiError, Challenge, Flavor};
use crate::http::metrics::TokenKind;
use crate::http::presented::{self, Expiry, Kind};
use crate::key_store::KeyEntry;
use crate::token::claims::{Id, SessionClaims};
use crate::token::mint::Minted;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::{Value, json};

const FLAVOR: Flavor = Flavor::Generic;

/// `POST /token`. The body is ignored (the vendor sends none) but bounded.
pub async fn session_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body::bytes(body, FLAVOR)?;
    let (index, keyring) = state.ready(FLAVOR)?;
    // `Basic <service key>` (the vendor's), or keyless: `Bearer <ServiceAccount token>`.
    let entry = match auth::keyless_on_basic_route(&state, &index, &keyring, &headers).await {
        Some(keyless) => keyless?,
        None => auth::nexla_basic(&index, &headers)?,
    };
    let (minted, claims) = minter(&keyring, &state.issuer)
        .session_token(
            entry.principal().subject(),
            entry.issuing(),
            entry.session_ttl(),
            Timestamp::now(),
        )
        .map_err(|e| signing_failed(FLAVOR, e))?;
    state.metrics.token_issued(TokenKind::session);
    Ok(Json(session_response(&minted, &claims, &entry)).into_response())
}

/// `POST /token/refresh` with `Bearer <session token>`: refused once the token has expired,
/// was revoked, or its ServiceKey is gone or has another key (a session survives no key change).
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body::bytes(body, FLAVOR)?;
    let (index, keyring) = state.ready(FLAVOR)?;
    let token = auth::bearer(&headers, FLAVOR)?;
    let unauthorized = |m: String| ApiError::unauthorized(FLAVOR, Challenge::Bearer, m);
    // "401 once expired": no clock-skew leeway on `exp` here.
    let presented = presented::verify(
        token,
        &keyring,
        &state.issuer,
        &state.denylist,
        Expiry::Strict,
    )
    .map_err(|e| unauthorized(format!("invalid session token: {e}")))?;
    if presented.kind != Kind::Session {
        return Err(unauthorized("the token is not a session token".into()));
    }
    let entry = presented.bound_entry(&index).ok_or_else(|| {
        unauthorized("the session's ServiceKey no longer exists or its key was replaced".into())
    })?;
    let previous: SessionClaims = serde_json::from_value(presented.claims)
        .map_err(|_| unauthorized("invalid session token: unexpected claims".into()))?;
    let (minted, claims) = minter(&keyring, &state.issuer)
        .refresh_session(&previous, entry.session_ttl(), Timestamp::now())
        .map_err(|e| signing_failed(FLAVOR, e))?;
    state.metrics.token_issued(TokenKind::session);
    Ok(Json(session_response(&minted, &claims, &entry)).into_response())
}

/// The seed's answer. `api_key` names the ServiceKey (`namespace/name`): the key itself is
/// never echoed.
fn session_response(minted: &Minted, claims: &SessionClaims, entry: &KeyEntry) -> Value {
    let expires_in = minted
        .expires_at
        .map_or(0, |exp| exp.as_second() - minted.issued_at.as_second());
    let created = entry.created.map(seed_time);
    json!({
        "access_token": minted.token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "user": {
            // The seed's answer has a numeric id (the JWT's `sub` is its string form).
            "id": Id::from(claims.sub.as_str()),
            "email": claims.email,
            "full_name": claims.full_name,
            "api_key": claims.binding.service_key,
            "super_user": false,
            "impersonated": false,
            "email_verified_at": created,
            "updated_at": created,
            "created_at": created,
        },
        "org": claims.org.as_ref().map(|org| json!({"id": org.id, "name": org.name})),
    })
}

/// The seed's timestamp format, `2016-02-07T11:40` (UTC).
fn seed_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn seed_time_format() {
        let t: jiff::Timestamp = "2016-02-07T11:40:59Z".parse().unwrap();
        assert_eq!(super::seed_time(t), "2016-02-07T11:40");
    }
}

//! `POST /oauth/revoke` (RFC 7009) and `POST /oauth/introspect` (RFC 7662), both authenticated
//! with `Bearer <service key>` and both confined to the caller's tenant: a key revokes only
//! tokens minted with it, and introspection reports only tokens of ServiceKeys in the caller's
//! namespace. Everything else is answered as if the token were unknown — no oracle.

use crate::http::AppState;
use crate::http::auth;
use crate::http::error::{ApiError, Flavor};
use crate::http::presented::{self, Expiry, Presented};
use crate::key_store::{KeyEntry, KeyIndex};
use crate::keyring::Keyring;
use crate::revocation::{Origin, Revocation, RevocationError};
use axum::Json;
use axum::extract::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

const FLAVOR: Flavor = Flavor::Generic;

/// The `token` parameter of a form body (`token_type_hint` and others are accepted and ignored:
/// the kind is read from the token itself).
fn token_parameter(
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<String, ApiError> {
    let Form(fields) = form.map_err(|e| {
        ApiError::status(
            FLAVOR,
            e.status(),
            format!(
                "the body must be application/x-www-form-urlencoded with a token parameter: {}",
                e.body_text()
            ),
        )
    })?;
    fields
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(FLAVOR, "the form parameter token is required"))
}

/// An OAuth call: who calls, about which token, with what the server knows.
struct Call {
    caller: Arc<KeyEntry>,
    token: String,
    index: Arc<KeyIndex>,
    keyring: Arc<Keyring>,
}

/// The calling ServiceKey (401 unless a key or keyless caller) and the form's `token`.
async fn call(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Call, ApiError> {
    let (index, keyring) = state.ready(FLAVOR)?;
    let caller = auth::bearer_key(state, &index, &keyring, headers, FLAVOR).await?;
    let token = token_parameter(form)?;
    Ok(Call {
        caller,
        token,
        index,
        keyring,
    })
}

/// `POST /oauth/revoke`: revokes a token minted with the caller's key. 200 whatever the token
/// was (unknown, foreign, expired, already revoked); 401 for a bad key.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, ApiError> {
    let Call {
        caller,
        token,
        keyring,
        ..
    } = call(&state, &headers, form).await?;
    let verified = presented::verify(
        &token,
        &keyring,
        &state.issuer,
        &state.denylist,
        Expiry::Leeway,
    );
    if let Ok(presented) = verified
        && presented.minted_with(&caller)
    {
        let reason = format!("POST /oauth/revoke with ServiceKey {}", caller.reference());
        let now = jiff::Timestamp::now().as_second();
        let revocation = Revocation::of_claims(
            &presented.claims,
            Origin::Caller,
            reason,
            Some(caller.session_ttl()),
            now,
        );
        if let Some(revocation) = revocation {
            state
                .revoker
                .revoke(&revocation)
                .await
                .map_err(|e| refused(&caller, e))?;
        }
    }
    Ok((StatusCode::OK, Json(json!({}))).into_response())
}

/// Why a revocation was not recorded, as an answer: the ServiceKey's quota (429) and this
/// replica's capacity (503) ask the caller to come back later; a storage failure is ours.
fn refused(caller: &KeyEntry, e: RevocationError) -> ApiError {
    match e {
        RevocationError::Quota { retry_after, .. } => {
            tracing::info!(service_key = %caller.reference(), error = %e, "revocation refused");
            ApiError::status(FLAVOR, StatusCode::TOO_MANY_REQUESTS, e.to_string())
                .with_retry_after(retry_after)
        }
        RevocationError::Full { .. } => {
            tracing::warn!(service_key = %caller.reference(), error = %e, "revocation refused");
            ApiError::not_ready(FLAVOR, e).with_retry_after(FULL_RETRY_AFTER)
        }
        RevocationError::Kube(_) | RevocationError::Persist { .. } => ApiError::internal(FLAVOR, e),
    }
}

/// `Retry-After` of a revocation refused because this replica's denylist is full: entries
/// leave as their tokens expire, checked this often.
const FULL_RETRY_AFTER: u64 = 60;

/// `POST /oauth/introspect`: whether a token is active, with its claims, for a token of a
/// ServiceKey in the caller's namespace; `{"active": false}` and nothing else otherwise.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, ApiError> {
    let Call {
        caller,
        token,
        index,
        keyring,
    } = call(&state, &headers, form).await?;
    let active = presented::verify(
        &token,
        &keyring,
        &state.issuer,
        &state.denylist,
        Expiry::Strict,
    )
    .ok()
    .filter(|p| p.namespace() == caller.namespace)
    // Its ServiceKey still exists, with the same key where the token is bound to one.
    .filter(|p| p.bound_entry(&index).is_some());
    Ok(Json(match active {
        Some(presented) => active_answer(&presented),
        None => json!({"active": false}),
    })
    .into_response())
}

/// RFC 7662's answer for an active token.
fn active_answer(token: &Presented) -> Value {
    let mut answer = Map::new();
    answer.insert("active".into(), Value::Bool(true));
    if let Some(sub) = token.subject() {
        answer.insert("sub".into(), Value::String(sub));
    }
    for claim in ["iss", "jti", "iat", "exp"] {
        if let Some(v) = token.claims.get(claim) {
            answer.insert(claim.into(), v.clone());
        }
    }
    answer.insert("token_type".into(), token.kind.as_str().into());
    answer.insert("client_id".into(), token.service_key().into());
    Value::Object(answer)
}

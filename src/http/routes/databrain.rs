//! DataBrain: `POST /api/v1/guest-token/create`. Every error answer carries one of the
//! vendor's documented codes.

use super::{minter, signing_failed};
use crate::http::AppState;
use crate::http::auth;
use crate::http::body::{self, Fields};
use crate::http::error::{ApiError, Flavor, databrain};
use crate::http::metrics::TokenKind;
use crate::token::mint::{GuestRequest, MintError, RequestError, validate_guest};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

const FLAVOR: Flavor = Flavor::DataBrain;

pub async fn guest_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body::bytes(body, FLAVOR)?;
    let (index, keyring) = state.ready(FLAVOR)?;
    let entry = auth::bearer_key(&state, &index, &keyring, &headers, FLAVOR).await?;

    let map = body::object(&body, FLAVOR)?;
    let fields = Fields(&map);
    let invalid =
        |m: String| ApiError::bad_request(FLAVOR, m).with_code(databrain::INVALID_REQUEST_BODY);
    let workspace_name = fields
        .string("workspaceName")
        .map_err(invalid)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(FLAVOR, "workspaceName is required")
                .with_code(databrain::WORKSPACE_ID_ERROR)
        })?;
    let client_id = fields
        .string("clientId")
        .map_err(invalid)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                FLAVOR,
                "clientId is required (\"None\" when the data source has no tenancy)",
            )
            .with_code(databrain::CLIENT_ID_ERROR)
        })?;
    let params = fields.object("params").map_err(invalid)?;
    let expiry_time_ms = fields.integer("expiryTime").map_err(invalid)?;
    let datasource_name = fields.string("datasourceName").map_err(invalid)?;
    let request = GuestRequest {
        workspace_name,
        client_id,
        datasource_name,
        params,
        expiry_time_ms,
    };
    validate_guest(&request).map_err(request_error)?;
    if !entry.spec.allows_workspace(workspace_name) {
        return Err(ApiError::forbidden(
            FLAVOR,
            format!("this key may not create guest tokens for the workspace {workspace_name:?}"),
        )
        .with_code(databrain::WORKSPACE_ID_ERROR));
    }
    if let Some(datasource) = datasource_name
        && !entry.spec.allows_data_source(datasource)
    {
        return Err(ApiError::forbidden(
            FLAVOR,
            format!("this key may not create guest tokens for the data source {datasource:?}"),
        )
        .with_code(databrain::DATASOURCE_ERROR));
    }
    let mut now = jiff::Timestamp::now();
    if request.expiry_time_ms.is_none() {
        // Never expiring: issued after its ServiceKey's marker, so not born revoked.
        now = state.denylist.issue_time(&entry.uid, now);
    }
    let minted = minter(&keyring, &state.issuer)
        .guest_token(entry.principal().subject(), entry.issuing(), &request, now)
        .map_err(|e| match e {
            MintError::Request(e) => request_error(e),
            MintError::Keyring(e) => signing_failed(FLAVOR, e),
        })?;
    state.metrics.token_issued(TokenKind::guest);
    Ok(Json(GuestAnswer {
        token: &minted.token,
    })
    .into_response())
}

/// `{"token"}`, serialised straight from the struct.
#[derive(serde::Serialize)]
struct GuestAnswer<'a> {
    token: &'a str,
}

fn request_error(e: RequestError) -> ApiError {
    let code = match &e {
        RequestError::Params { field } => field.error_code(),
        _ => databrain::INVALID_REQUEST_BODY,
    };
    ApiError::bad_request(FLAVOR, e.to_string()).with_code(code)
}

//! JSON errors. Every error answer of every route has one envelope,
//! `{"error": {"code": "...", "message": "..."}}` — DataBrain's documented shape, used
//! everywhere so clients parse one format. Only the codes differ: the DataBrain route answers
//! with the vendor's codes (AUTHENTICATION_ERROR, WORKSPACE_ID_ERROR, ...), the others with
//! generic ones named after the HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which vocabulary of error codes a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Generic,
    /// `POST /api/v1/guest-token/create`.
    DataBrain,
}

/// The guest-token route's path: its errors use DataBrain's codes.
pub const DATABRAIN_ROUTE: &str = "/api/v1/guest-token/create";

impl Flavor {
    pub fn of_route(route: &str) -> Self {
        if route == DATABRAIN_ROUTE {
            Flavor::DataBrain
        } else {
            Flavor::Generic
        }
    }
}

/// DataBrain's documented error codes.
pub mod databrain {
    pub const AUTHENTICATION_ERROR: &str = "AUTHENTICATION_ERROR";
    pub const INVALID_REQUEST_BODY: &str = "INVALID_REQUEST_BODY";
    pub const CLIENT_ID_ERROR: &str = "CLIENT_ID_ERROR";
    pub const WORKSPACE_ID_ERROR: &str = "WORKSPACE_ID_ERROR";
    /// Not in the seed's list (it has no data-source scope): a `datasourceName` the key may
    /// not use, named like the seed's codes.
    pub const DATASOURCE_ERROR: &str = "DATASOURCE_ERROR";
    pub const INTERNAL_SERVER_ERROR: &str = "INTERNAL_SERVER_ERROR";
}

/// Which challenge a 401 carries, so that clients (curl, browsers) know the scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Bearer,
    Basic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub challenge: Option<Challenge>,
    /// Seconds for the `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: None,
            retry_after: None,
        }
    }

    /// Asks the client to wait `seconds` before trying again.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The error for `status` in `flavor`'s vocabulary.
    pub fn status(flavor: Flavor, status: StatusCode, message: impl Into<String>) -> Self {
        ApiError::new(status, code_for(flavor, status), message)
    }

    pub fn unauthorized(flavor: Flavor, challenge: Challenge, message: impl Into<String>) -> Self {
        ApiError {
            challenge: Some(challenge),
            ..ApiError::status(flavor, StatusCode::UNAUTHORIZED, message)
        }
    }

    pub fn bad_request(flavor: Flavor, message: impl Into<String>) -> Self {
        ApiError::status(flavor, StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(flavor: Flavor, message: impl Into<String>) -> Self {
        ApiError::status(flavor, StatusCode::FORBIDDEN, message)
    }

    pub fn not_ready(flavor: Flavor, why: impl std::fmt::Display) -> Self {
        ApiError::status(flavor, StatusCode::SERVICE_UNAVAILABLE, why.to_string())
    }

    /// A failure on our side. The cause goes to the log, not to the client.
    pub fn internal(flavor: Flavor, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        ApiError::status(
            flavor,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

/// The code of an error of `status` when the handler did not pick a more specific one.
pub fn code_for(flavor: Flavor, status: StatusCode) -> &'static str {
    match flavor {
        Flavor::DataBrain => match status {
            StatusCode::UNAUTHORIZED => databrain::AUTHENTICATION_ERROR,
            StatusCode::FORBIDDEN => databrain::WORKSPACE_ID_ERROR,
            s if s.is_server_error() => databrain::INTERNAL_SERVER_ERROR,
            _ => databrain::INVALID_REQUEST_BODY,
        },
        Flavor::Generic => match status {
            StatusCode::BAD_REQUEST => "BAD_REQUEST",
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "FORBIDDEN",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
            StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT",
            StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            StatusCode::URI_TOO_LONG => "URI_TOO_LONG",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "REQUEST_HEADER_FIELDS_TOO_LARGE",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
            StatusCode::UNPROCESSABLE_ENTITY => "UNPROCESSABLE_ENTITY",
            StatusCode::TOO_MANY_REQUESTS => "TOO_MANY_REQUESTS",
            StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
            s if s.is_server_error() => "INTERNAL_SERVER_ERROR",
            _ => "BAD_REQUEST",
        },
    }
}

/// The message of an error answer that a layer (not a handler) produced.
pub fn default_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "no such route",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route; see the Allow header",
        StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than the 64 KiB limit",
        StatusCode::REQUEST_TIMEOUT => "request timed out",
        StatusCode::INTERNAL_SERVER_ERROR => "internal error; see the server log",
        _ => "request failed",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        let challenge = match self.challenge {
            Some(Challenge::Bearer) => Some("Bearer realm=\"tokenmint\""),
            Some(Challenge::Basic) => Some("Basic realm=\"tokenmint\", charset=\"UTF-8\""),
            None => None,
        };
        if let Some(c) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(HandlerError);
        response
    }
}

/// Marks a response whose JSON error a handler wrote, so the error-rewriting middleware leaves
/// it alone.
#[derive(Debug, Clone, Copy)]
pub struct HandlerError;

/// Why a JSON body was refused, as a message naming the problem.
pub fn json_body_message(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("malformed JSON body: {e}"),
        Category::Data => format!("invalid request body: {e}"),
    }
}

//! The OpenAPI 3 document of the routes, written as data (a few routes with vendor-specific
//! shapes gain nothing from a derive framework). Served at `/openapi.json` and committed as
//! `openapi.json`; `tests/http_openapi.rs` fails when the two drift
//! (`UPDATE_OPENAPI=1 cargo test --test http_openapi` rewrites the file).
//!
//! The document is a contract that tools check (`.ci/schemathesis` fuzzes the server against
//! it): every request schema accepts exactly what the handlers accept, and every operation lists
//! every status it can answer with, each error with the codes it can carry. Limits and codes
//! are taken from the constants the handlers use, so that they cannot drift apart.

use super::error::{self, Flavor, databrain};
use super::{BODY_LIMIT, REQUEST_TIMEOUT, paths};
use crate::crd::datasource_grant::DEFAULT_EXPIRATION;
use crate::token::filter::MAX_FILTER_LEN;
use crate::token::mint::{GuestParam, MAX_EXPIRATION, MAX_EXPIRY_TIME_MS, MIN_REQUEST_EXPIRATION};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// The document as pretty-printed JSON with a trailing newline: the content of `openapi.json`.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut s = serde_json::to_string_pretty(&document()).unwrap_or_default();
        s.push('\n');
        s
    })
}

/// The `WWW-Authenticate` challenge of a 401 on a route authenticated with `Bearer`.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"tokenmint\"";
/// The `WWW-Authenticate` challenge of a 401 on a route authenticated with `Basic`.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"tokenmint\", charset=\"UTF-8\"";

/// Every status an error answer of a route in `flavor`'s vocabulary can have; each gets a
/// component schema listing its codes.
fn error_statuses(flavor: Flavor) -> &'static [StatusCode] {
    match flavor {
        Flavor::Generic => &[
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ],
        Flavor::DataBrain => &[
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ],
    }
}

/// The codes an error of `status` carries on a route of `flavor`: the default code of the
/// status, except where the guest-token handler picks DataBrain's more specific ones.
fn error_codes(flavor: Flavor, status: StatusCode) -> Vec<&'static str> {
    match (flavor, status) {
        (Flavor::DataBrain, StatusCode::BAD_REQUEST) => {
            let mut codes = vec![
                databrain::INVALID_REQUEST_BODY,
                databrain::CLIENT_ID_ERROR,
                databrain::WORKSPACE_ID_ERROR,
            ];
            codes.extend(GuestParam::ALL.map(GuestParam::error_code));
            codes
        }
        (Flavor::DataBrain, StatusCode::FORBIDDEN) => {
            vec![databrain::WORKSPACE_ID_ERROR, databrain::DATASOURCE_ERROR]
        }
        _ => vec![error::code_for(flavor, status)],
    }
}

fn error_schema_name(flavor: Flavor, status: StatusCode) -> String {
    let prefix = match flavor {
        Flavor::Generic => "",
        Flavor::DataBrain => "DataBrain",
    };
    format!("{prefix}Error{}", status.as_u16())
}

/// The error envelope with the codes of one status.
fn error_schema(flavor: Flavor, status: StatusCode) -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "additionalProperties": false,
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": false,
            "properties": {
                "code": {"type": "string", "enum": error_codes(flavor, status)},
                "message": {"type": "string", "description": "What went wrong, for a person; never echoes a credential."},
            },
        }},
    })
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// How a route authenticates, which decides its 401 challenge.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    Bearer,
    Basic,
}

/// The error answers of one operation.
struct Errors {
    flavor: Flavor,
    responses: Map<String, Value>,
}

impl Errors {
    fn new(flavor: Flavor) -> Self {
        Errors {
            flavor,
            responses: Map::new(),
        }
    }

    fn add(mut self, status: StatusCode, description: impl Into<String>) -> Self {
        let response = json_response(
            &description.into(),
            schema_ref(&error_schema_name(self.flavor, status)),
        );
        self.responses.insert(status.as_u16().to_string(), response);
        self
    }

    /// The 401, with the challenge of the route's scheme: every 401 comes from
    /// `ApiError::unauthorized`, which always sets one.
    fn unauthorized(mut self, auth: Auth, description: &str) -> Self {
        let (scheme, header) = match auth {
            Auth::Bearer => ("Bearer", "BearerChallenge"),
            Auth::Basic => ("Basic", "BasicChallenge"),
        };
        self = self.add(
            StatusCode::UNAUTHORIZED,
            format!("{description} Carries a {scheme} challenge in WWW-Authenticate."),
        );
        self.responses["401"]["headers"] =
            json!({"WWW-Authenticate": {"$ref": format!("#/components/headers/{header}")}});
        self
    }

    /// The answers every token route shares: credentials (401, and 400 for two Authorization
    /// headers), the body limit and the timeout, and readiness.
    fn token_route(self, auth: Auth, unauthorized: &str, bad_request: &str) -> Self {
        let common = "more than one Authorization header, or a request body that cannot be read";
        let bad_request = if bad_request.is_empty() {
            format!("Bad request: {common}.")
        } else {
            format!("{bad_request} Also: {common}.")
        };
        self.add(StatusCode::BAD_REQUEST, bad_request)
            .unauthorized(auth, unauthorized)
            .add(StatusCode::REQUEST_TIMEOUT, timeout_description())
            .add(StatusCode::PAYLOAD_TOO_LARGE, too_large_description())
            .unavailable(NOT_READY)
    }

    /// The 503, which may ask the client to come back later (`Retry-After`).
    fn unavailable(self, description: &str) -> Self {
        self.add(StatusCode::SERVICE_UNAVAILABLE, description)
            .retry_after(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// The `Retry-After` header of the answer of `status`.
    fn retry_after(mut self, status: StatusCode) -> Self {
        self.responses[status.as_str()]["headers"] =
            json!({"Retry-After": {"$ref": "#/components/headers/RetryAfter"}});
        self
    }

    /// A failure of ours, e.g. signing (the cause is in the server log, not the answer).
    fn internal(self) -> Self {
        self.add(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error, e.g. signing failed; the cause is in the server log.",
        )
    }

    /// 413 alone: any route refuses a declared Content-Length over the limit, before routing
    /// the request to its handler.
    fn system_route(self) -> Self {
        self.add(StatusCode::PAYLOAD_TOO_LARGE, too_large_description())
    }

    /// The success answers and the errors, ordered by status.
    fn with(self, mut success: Map<String, Value>) -> Value {
        success.extend(self.responses);
        let mut all: Vec<(String, Value)> = success.into_iter().collect();
        all.sort_by(|(a, _), (b, _)| a.cmp(b));
        Value::Object(all.into_iter().collect())
    }
}

/// Why a token route answers 503.
const NOT_READY: &str = "Not ready: the ServiceKey caches are not synced or there is no signing keyring yet; or (keyless) a ServiceAccount token cannot be checked right now: TokenReview fails, the cluster's service-account issuer is not known yet, or too many reviews are under way (with Retry-After).";

fn timeout_description() -> String {
    format!(
        "The request (its body, mostly) took longer than {} s.",
        REQUEST_TIMEOUT.as_secs()
    )
}

fn too_large_description() -> String {
    format!(
        "The request body is larger than {} KiB (a declared Content-Length is refused before the body is read).",
        BODY_LIMIT / 1024
    )
}

fn ok(status: StatusCode, response: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(status.as_u16().to_string(), response);
    map
}

fn operation(fields: Value, responses: Value) -> Value {
    let mut op = fields;
    op["responses"] = responses;
    op
}

/// A form body (`application/x-www-form-urlencoded`) with the `token` parameter, as RFC 7009
/// and RFC 7662 define it.
fn token_form() -> Value {
    json!({
        "required": true,
        "content": {"application/x-www-form-urlencoded": {"schema": schema_ref("TokenForm")}},
    })
}

pub fn document() -> Value {
    let access_token_op = |operation_id: &str, summary: &str| {
        operation(
            json!({
                "operationId": operation_id,
                "tags": ["Nibi"],
                "summary": summary,
                "description": "A user access token for the principal of the service key, living the ServiceKey's accessTokenTTL (default 24 h), bound to that ServiceKey and its current key. Claims: iat nbf jti exp identity{id} fresh type service_key service_key_uid key_fingerprint iss. Any request body is read (up to the size limit) and ignored; no Content-Type is required.",
                "security": [{"serviceKeyBearer": []}, {"serviceAccountBearer": []}],
            }),
            Errors::new(Flavor::Generic)
                .token_route(
                    Auth::Bearer,
                    "Missing, malformed or unknown service key.",
                    "",
                )
                .internal()
                .with(ok(
                    StatusCode::OK,
                    json_response("The access token.", schema_ref("AccessToken")),
                )),
        )
    };
    let session_ok = || {
        ok(
            StatusCode::OK,
            json_response("A session token.", schema_ref("Session")),
        )
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tokenmint REST routes",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The vendors' documented token routes served by `tokenmint serve`, plus RFC 7009 revocation and RFC 7662 introspection. Every error answer is {\"error\": {\"code\", \"message\"}} with Content-Type application/json; the guest-token route uses DataBrain's codes, the others a code named after the HTTP status. Each operation lists every status it can answer with. Besides those: a path that is not routed answers 404 NOT_FOUND, and a method a path does not serve answers 405 with an Allow header, code METHOD_NOT_ALLOWED (INVALID_REQUEST_BODY on the guest-token path, which speaks DataBrain's codes); a GET route also answers HEAD. A 401 always carries a WWW-Authenticate challenge.",
        },
        "paths": {
            paths::ACCESS_TOKEN: {"post": access_token_op("getAccessToken", "Get a user access token (Nibi)")},
            paths::USER_TOKEN_ALIAS: {"post": access_token_op("getUserToken", "Alias of get_access_token (Nibi)")},
            paths::DATASOURCE_TOKEN: {"post": operation(
                json!({
                    "operationId": "getDatasourceToken",
                    "tags": ["Nibi"],
                    "summary": "Get a read token for one data source (Nibi)",
                    "description": "Authenticated with the service key, or with a user access token from get_access_token, which carries exactly the permissions its ServiceKey has now (a deleted ServiceKey or a replaced key voids it). The body is parsed as JSON whatever its Content-Type (the vendor's PHP client sends JSON as application/x-www-form-urlencoded). Checks, in order: credentials (401), the body's fields (400), the data source (403), then expiration and filter (400).",
                    "security": [{"serviceKeyBearer": []}, {"accessTokenBearer": []}, {"serviceAccountBearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("DatasourceTokenRequest")}}},
                }),
                Errors::new(Flavor::Generic)
                    .token_route(
                        Auth::Bearer,
                        "Missing, malformed or unknown service key, or an invalid, expired or revoked access token, or one whose ServiceKey no longer exists (or was created again) or has another key.",
                        "Malformed JSON, a body that is not an object, a field of the wrong type, a missing or empty data_source, an expiration outside the range or an invalid filter.",
                    )
                    .add(StatusCode::FORBIDDEN, "The key may not grant this data source (its ServiceKey's dataSources).")
                    .internal()
                    .with(ok(StatusCode::OK, json_response("The data source token.", schema_ref("AccessToken")))),
            )},
            paths::GUEST_TOKEN: {"post": operation(
                json!({
                    "operationId": "createGuestToken",
                    "tags": ["DataBrain"],
                    "summary": "Create an embed guest token (DataBrain)",
                    "description": "Errors carry DataBrain's codes: AUTHENTICATION_ERROR (401); INVALID_REQUEST_BODY (400 malformed body, wrong types, expiryTime out of range; also 408 and 413); WORKSPACE_ID_ERROR (400 missing workspaceName, 403 workspace not allowed); CLIENT_ID_ERROR (400 missing clientId); DASHBOARD_PARAM_ERROR, APP_FILTER_PARAM_ERROR, RLS_SETTINGS_PARAM_ERROR (400: params.dashboardAppFilters, params.appFilters, params.rlsSettings not a list of objects); DATASOURCE_ERROR (403, tokenmint's own: datasourceName not allowed by the key's dataSources); INTERNAL_SERVER_ERROR (500, 503). The body is parsed as JSON whatever its Content-Type.",
                    "security": [{"serviceKeyBearer": []}, {"serviceAccountBearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("GuestTokenRequest")}}},
                }),
                Errors::new(Flavor::DataBrain)
                    .token_route(
                        Auth::Bearer,
                        "AUTHENTICATION_ERROR: missing, malformed or unknown service key.",
                        "INVALID_REQUEST_BODY, CLIENT_ID_ERROR, WORKSPACE_ID_ERROR, DASHBOARD_PARAM_ERROR, APP_FILTER_PARAM_ERROR or RLS_SETTINGS_PARAM_ERROR.",
                    )
                    .add(StatusCode::FORBIDDEN, "WORKSPACE_ID_ERROR: the key may not use this workspace; DATASOURCE_ERROR: nor this data source.")
                    .internal()
                    .with(ok(StatusCode::OK, json_response("The guest token.", schema_ref("GuestToken")))),
            )},
            paths::SESSION_TOKEN: {"post": operation(
                json!({
                    "operationId": "createSession",
                    "tags": ["Nexla"],
                    "summary": "Obtain a session token with a service key (Nexla)",
                    "description": "Authorization: Basic <service key> (Nexla's form: the key itself), or Basic with base64 of the key, or of user:key as any HTTP client sends it (a user name, when given, must be the key's principal name). expires_in is the ServiceKey's sessionToken.ttl (default 3600). api_key names the ServiceKey (namespace/name), never the key. Any request body is read (up to the size limit) and ignored.",
                    "security": [{"serviceKeyBasic": []}, {"nameAndKey": []}, {"serviceAccountBearer": []}],
                }),
                Errors::new(Flavor::Generic)
                    .token_route(Auth::Basic, "Missing or malformed credentials, an unknown service key, or a user name that is not the key's principal.", "")
                    .internal()
                    .with(session_ok()),
            )},
            paths::SESSION_REFRESH: {"post": operation(
                json!({
                    "operationId": "refreshSession",
                    "tags": ["Nexla"],
                    "summary": "Refresh a session token, restarting its expiry (Nexla)",
                    "description": "A new session token (new jti) for the same principal, living the ServiceKey's sessionToken.ttl from now. The presented token stays valid until its own expiry. Any request body is read (up to the size limit) and ignored.",
                    "security": [{"sessionBearer": []}],
                }),
                Errors::new(Flavor::Generic)
                    .token_route(
                        Auth::Bearer,
                        "Missing or malformed token; a token that is not a session token, has expired (no leeway) or was revoked (itself, or any session of its family); or its ServiceKey no longer exists (or was created again) or has another key.",
                        "",
                    )
                    .internal()
                    .with(session_ok()),
            )},
            paths::DS_USER_TOKEN: {
                "post": operation(
                    json!({
                        "operationId": "createUserToken",
                        "tags": ["Datasentinel"],
                        "summary": "Create a 24 h user-token (Datasentinel)",
                        "description": "Any request body is read (up to the size limit) and ignored.",
                        "security": [{"nameAndKey": []}, {"serviceAccountBearer": []}],
                    }),
                    Errors::new(Flavor::Generic)
                        .token_route(Auth::Basic, "Missing or malformed credentials, or a wrong user name or key (one answer for both).", "")
                        .internal()
                        .with(ok(StatusCode::CREATED, json_response("The user-token.", schema_ref("UserToken")))),
                ),
                "get": operation(
                    json!({
                        "operationId": "userTokenInfo",
                        "tags": ["Datasentinel"],
                        "summary": "What a user-token says (Datasentinel)",
                        "description": "The user-token goes in the query parameter token (the vendor's example) or user-token (the vendor's table): at least one is required, none may be empty, and the first of them in the query string is used. Only a user-token minted with the caller's own key is described; any other token, valid or not, is answered 401.",
                        "security": [{"nameAndKey": []}, {"serviceAccountBearer": []}],
                        "parameters": [{
                            "name": "user-token",
                            "in": "query",
                            "required": true,
                            "style": "form",
                            "explode": true,
                            "description": "The query parameters token and user-token (an object exploded into one parameter per property). Other parameters are ignored.",
                            "schema": schema_ref("UserTokenQuery"),
                        }],
                    }),
                    Errors::new(Flavor::Generic)
                        .add(StatusCode::BAD_REQUEST, "Neither token nor user-token given, or one of them empty; or more than one Authorization header.")
                        .unauthorized(Auth::Basic, "Missing or malformed credentials, a wrong user name or key, or a user-token that is invalid, expired, revoked or not minted with this key.")
                        .add(StatusCode::PAYLOAD_TOO_LARGE, too_large_description())
                        .unavailable(NOT_READY)
                        .with(ok(StatusCode::OK, json_response("The token's content.", schema_ref("UserTokenInfo")))),
                ),
            },
            paths::REVOKE: {"post": operation(
                json!({
                    "operationId": "revokeToken",
                    "tags": ["OAuth"],
                    "summary": "Revoke a token (RFC 7009)",
                    "description": "Revokes a token minted with the caller's own key (the same ServiceKey and key): every route then refuses it, until it would have expired anyway. A session token revokes its whole family (the sessions refreshed from the same first one, and their refreshes); a guest token without expiry revokes every never-expiring guest token of its ServiceKey issued up to the same second. The answer is 200 {} whatever the token is (unknown, another key's, expired, already revoked), so that it reveals nothing. token_type_hint is accepted and ignored: the kind is read from the token.",
                    "security": [{"serviceKeyBearer": []}, {"serviceAccountBearer": []}],
                    "requestBody": token_form(),
                }),
                Errors::new(Flavor::Generic)
                    .token_route(Auth::Bearer, "Missing, malformed or unknown service key.", "The form has no token parameter, or the first one is empty.")
                    .add(StatusCode::UNSUPPORTED_MEDIA_TYPE, "The Content-Type is not application/x-www-form-urlencoded.")
                    .add(StatusCode::TOO_MANY_REQUESTS, "The caller's ServiceKey already has as many live revocations as its quota (--max-revocations-per-service-key, named in the message); Retry-After says when its earliest one expires. Other ServiceKeys are not affected.")
                    .retry_after(StatusCode::TOO_MANY_REQUESTS)
                    .add(StatusCode::INTERNAL_SERVER_ERROR, "The revocation could not be recorded (the Kubernetes API failed); the cause is in the server log.")
                    .unavailable("Not ready (caches not synced, no keyring yet); or this replica's revocation denylist is full (--max-revocations), with Retry-After; or (keyless) a ServiceAccount token cannot be checked right now, with Retry-After.")
                    .with(ok(StatusCode::OK, json_response("Done, or nothing to do.", schema_ref("Revoked")))),
            )},
            paths::INTROSPECT: {"post": operation(
                json!({
                    "operationId": "introspectToken",
                    "tags": ["OAuth"],
                    "summary": "Whether a token is active, and its claims (RFC 7662)",
                    "description": "Active means: minted by tokenmint with a key of the keyring, unexpired (no leeway), not revoked, of a ServiceKey in the caller's namespace that still exists, as the same object (uid), with the key the token is bound to. Any other token is {\"active\": false} and nothing else. token_type_hint is accepted and ignored.",
                    "security": [{"serviceKeyBearer": []}, {"serviceAccountBearer": []}],
                    "requestBody": token_form(),
                }),
                Errors::new(Flavor::Generic)
                    .token_route(Auth::Bearer, "Missing, malformed or unknown service key.", "The form has no token parameter, or the first one is empty.")
                    .add(StatusCode::UNSUPPORTED_MEDIA_TYPE, "The Content-Type is not application/x-www-form-urlencoded.")
                    .with(ok(StatusCode::OK, json_response("The token's state.", schema_ref("Introspection")))),
            )},
            paths::JWKS: {"get": operation(
                json!({"operationId": "jwks", "tags": ["System"], "summary": "Public signing keys (none for HS256, whose key is secret)", "security": []}),
                Errors::new(Flavor::Generic)
                    .system_route()
                    .add(StatusCode::SERVICE_UNAVAILABLE, "No keyring yet.")
                    .with(ok(StatusCode::OK, json_response("A JWK set.", schema_ref("JwkSet")))),
            )},
            paths::HEALTHZ: {"get": operation(
                json!({"operationId": "healthz", "tags": ["System"], "summary": "Liveness", "security": []}),
                Errors::new(Flavor::Generic)
                    .system_route()
                    .with(ok(StatusCode::OK, json_response("Alive.", json!({"type": "object", "required": ["status"], "additionalProperties": false, "properties": {"status": {"type": "string", "enum": ["ok"]}}})))),
            )},
            paths::READYZ: {"get": operation(
                json!({"operationId": "readyz", "tags": ["System"], "summary": "Readiness: caches synced, keyring loaded, watches healthy", "security": []}),
                {
                    let mut responses = ok(StatusCode::OK, json_response("Ready.", json!({"type": "object", "required": ["status"], "additionalProperties": false, "properties": {"status": {"type": "string", "enum": ["ready"]}}})));
                    responses.insert("503".into(), json_response("Not ready, with the reason.", json!({"type": "object", "required": ["status", "reason"], "additionalProperties": false, "properties": {"status": {"type": "string", "enum": ["not ready"]}, "reason": {"type": "string"}}})));
                    Errors::new(Flavor::Generic).system_route().with(responses)
                },
            )},
            paths::METRICS: {"get": operation(
                json!({"operationId": "metrics", "tags": ["System"], "summary": "Prometheus metrics", "security": []}),
                Errors::new(Flavor::Generic)
                    .system_route()
                    .add(StatusCode::INTERNAL_SERVER_ERROR, "The metrics could not be encoded.")
                    .with(ok(StatusCode::OK, json!({"description": "OpenMetrics text (Content-Type application/openmetrics-text; version=1.0.0; charset=utf-8).", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}))),
            )},
            paths::OPENAPI: {"get": operation(
                json!({"operationId": "openapi", "tags": ["System"], "summary": "This document", "security": []}),
                Errors::new(Flavor::Generic)
                    .system_route()
                    .with(ok(StatusCode::OK, json_response("OpenAPI 3 document.", json!({"type": "object", "required": ["openapi", "info", "paths"]})))),
            )},
        },
        "components": {
            "securitySchemes": {
                "serviceKeyBearer": {"type": "http", "scheme": "bearer", "description": "The service key (Secret key `key` of the ServiceKey's secretName)."},
                "accessTokenBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A user access token from get_access_token."},
                "sessionBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A session token from /token or /token/refresh."},
                "serviceKeyBasic": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "`Basic <service key>` (Nexla's form: the key itself, not base64); `Basic <base64 of the key>` is accepted too."},
                "nameAndKey": {"type": "http", "scheme": "basic", "description": "The principal's name as user, the service key as password."},
                "serviceAccountBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "Keyless: a projected ServiceAccount token (audience: one of serve's --token-audience) of a ServiceAccount listed in a ServiceKey's spec.serviceAccounts; the caller acts as that ServiceKey. Checked with TokenReview, so only when serve runs in a cluster; 503 while TokenReview cannot answer."},
            },
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before trying again (on a 429, and on a 503 that may pass soon).",
                    "schema": {"type": "integer", "minimum": 1},
                },
                "BearerChallenge": {
                    "description": "The challenge of a route authenticated with Bearer.",
                    "required": true,
                    "schema": {"type": "string", "enum": [BEARER_CHALLENGE]},
                },
                "BasicChallenge": {
                    "description": "The challenge of a route authenticated with Basic.",
                    "required": true,
                    "schema": {"type": "string", "enum": [BASIC_CHALLENGE]},
                },
            },
            "schemas": schemas(),
        },
    })
}

/// The component schemas: requests, answers and the error envelopes.
fn schemas() -> Value {
    let id = |description: &str| {
        json!({
            "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
            "description": description,
        })
    };
    let whole_number = |minimum: i64, maximum: i64, description: &str| {
        // `number` with `multipleOf: 1`, not `integer`: a float without fraction (the vendor's
        // own `20.0`) is accepted, and JSON Schema draft 4 does not count it as an integer.
        json!({
            "type": "number",
            "multipleOf": 1,
            "minimum": minimum,
            "maximum": maximum,
            "nullable": true,
            "description": description,
        })
    };
    let list_of_objects = |code: &str| {
        json!({
            "type": "array",
            "items": {"type": "object"},
            "description": format!("A list of objects; anything else is refused with {code}."),
        })
    };
    let params_properties: Map<String, Value> = GuestParam::ALL
        .iter()
        .map(|p| (p.key().to_owned(), list_of_objects(p.error_code())))
        .collect();
    let timestamp = json!({"type": "string", "nullable": true, "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}$", "example": "2016-02-07T11:40", "description": "The ServiceKey's creation time (UTC, to the minute); null when unknown."});
    let mut schemas = json!({
        "DatasourceTokenRequest": {
            "type": "object",
            "required": ["data_source"],
            "description": "Other fields are ignored. null is the same as an absent field. A body nested 128 levels deep or more is refused as malformed (400).",
            "properties": {
                "data_source": {"type": "string", "minLength": 1, "description": "The data source; it must be in the ServiceKey's dataSources (else 403)."},
                "expiration": whole_number(MIN_REQUEST_EXPIRATION, MAX_EXPIRATION, &format!("Lifetime in seconds, a whole number: an integer or a float without fraction (20.0). Strings are refused. Default {DEFAULT_EXPIRATION}.")),
                "app_uuid": {
                    "anyOf": [{"type": "string", "nullable": true}, {"type": "number"}],
                    "description": "The end user's id in your app; a number is accepted and kept as its decimal text.",
                },
                "filter": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_FILTER_LEN,
                    "nullable": true,
                    "description": format!("One SQL boolean expression (comparisons, IN, BETWEEN, LIKE, IS NULL, combined with AND, OR, NOT), ANDed into the vendor's generated queries, e.g. `USER_id = 123`. Refused (400) unless it is exactly one such condition without sub-queries, comments, `;`, or functions other than the allowed scalar ones; at most {MAX_FILTER_LEN} bytes after trimming."),
                },
            },
            "example": {"data_source": "Data_3_E", "expiration": DEFAULT_EXPIRATION, "app_uuid": "123", "filter": "USER_id = 123"},
        },
        "AccessToken": {
            "type": "object",
            "required": ["access_token", "expiration"],
            "additionalProperties": false,
            "properties": {
                "access_token": {"type": "string", "description": "A JWT."},
                "expiration": {"type": "number", "minimum": 0, "description": "Lifetime in seconds, always a float in JSON (86400.0)."},
            },
        },
        "GuestTokenRequest": {
            "type": "object",
            "required": ["workspaceName", "clientId"],
            "description": "Other fields are ignored. null is the same as an absent field. A body nested 128 levels deep or more is refused as malformed (400 INVALID_REQUEST_BODY).",
            "properties": {
                "workspaceName": {"type": "string", "minLength": 1, "description": "Must be in the ServiceKey's workspaces (else 403 WORKSPACE_ID_ERROR)."},
                "clientId": {"type": "string", "minLength": 1, "description": "The tenant; \"None\" when the data source has no tenancy."},
                "params": {
                    "type": "object",
                    "nullable": true,
                    "properties": Value::Object(params_properties),
                    "additionalProperties": true,
                    "description": "dashboardAppFilters, appFilters and rlsSettings (each a list of objects) and any other keys, all kept verbatim in the token.",
                },
                "expiryTime": whole_number(1, MAX_EXPIRY_TIME_MS, "Lifetime in milliseconds (rounded up to whole seconds), a whole number: an integer or a float without fraction. Strings are refused. Absent or null: the token never expires."),
                "datasourceName": {"type": "string", "nullable": true, "description": "Must be in the ServiceKey's dataSources (else 403 DATASOURCE_ERROR)."},
            },
            "example": {"workspaceName": "w1", "clientId": "acme", "expiryTime": 3_600_000},
        },
        "GuestToken": {
            "type": "object",
            "required": ["token"],
            "additionalProperties": false,
            "properties": {"token": {"type": "string", "description": "A JWT."}},
        },
        "Session": {
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "user", "org"],
            "additionalProperties": false,
            "properties": {
                "access_token": {"type": "string", "description": "A JWT."},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer", "minimum": 0, "description": "Seconds."},
                "user": {
                    "type": "object",
                    "required": ["id", "email", "full_name", "api_key", "super_user", "impersonated", "email_verified_at", "updated_at", "created_at"],
                    "additionalProperties": false,
                    "properties": {
                        "id": id("The principal id: a JSON number when it is all digits (without leading zeros), else a string."),
                        "email": {"type": "string"},
                        "full_name": {"type": "string", "nullable": true},
                        "api_key": {"type": "string", "description": "namespace/name of the ServiceKey (never the key)."},
                        "super_user": {"type": "boolean", "description": "Always false."},
                        "impersonated": {"type": "boolean", "description": "Always false."},
                        "email_verified_at": timestamp,
                        "updated_at": timestamp,
                        "created_at": timestamp,
                    },
                },
                "org": {
                    "type": "object",
                    "nullable": true,
                    "required": ["id", "name"],
                    "additionalProperties": false,
                    "description": "null when the principal has no orgId.",
                    "properties": {
                        "id": id("The principal's orgId: a JSON number when it is all digits (without leading zeros), else a string."),
                        "name": {"type": "string", "nullable": true},
                    },
                },
            },
        },
        "UserToken": {
            "type": "object",
            "required": ["user-token"],
            "additionalProperties": false,
            "properties": {"user-token": {"type": "string", "description": "A JWT living 24 h."}},
        },
        "UserTokenQuery": {
            "type": "object",
            "properties": {
                "token": {"type": "string", "minLength": 1, "description": "The user-token (the vendor's example)."},
                "user-token": {"type": "string", "minLength": 1, "description": "The user-token (the vendor's table)."},
            },
            "anyOf": [{"required": ["token"]}, {"required": ["user-token"]}],
        },
        "UserTokenInfo": {
            "type": "object",
            "required": ["email", "expire_time", "organization_name", "user"],
            "additionalProperties": false,
            "properties": {
                "email": {"type": "string"},
                "expire_time": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$", "example": "2020-04-28 13:58:53", "description": "UTC."},
                "organization_name": {"type": "string", "description": "The principal's orgName; empty when it has none."},
                "user": {"type": "string", "description": "The principal's name."},
            },
        },
        "TokenForm": {
            "type": "object",
            "required": ["token"],
            "description": "Other parameters are ignored.",
            "properties": {
                "token": {"type": "string", "minLength": 1, "description": "The token; the first token parameter is used."},
                "token_type_hint": {"type": "string", "description": "Accepted and ignored."},
            },
        },
        "Revoked": {
            "type": "object",
            "additionalProperties": false,
            "maxProperties": 0,
            "description": "Always {}.",
        },
        "Introspection": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["active"],
                    "additionalProperties": false,
                    "properties": {"active": {"type": "boolean", "enum": [false]}},
                },
                {
                    "type": "object",
                    "required": ["active", "sub", "iss", "jti", "iat", "token_type", "client_id"],
                    "additionalProperties": false,
                    "properties": {
                        "active": {"type": "boolean", "enum": [true]},
                        "sub": {"type": "string", "description": "The principal id (the principal's name for a user-token)."},
                        "iss": {"type": "string"},
                        "jti": {"type": "string"},
                        "iat": {"type": "integer"},
                        "exp": {"type": "integer", "description": "Absent when the token never expires (a guest token without expiryTime)."},
                        "token_type": {"type": "string", "enum": ["access", "datasource", "guest", "session", "user-token"]},
                        "client_id": {"type": "string", "description": "namespace/name of the ServiceKey the token was minted with."},
                    },
                },
            ],
        },
        "JwkSet": {
            "type": "object",
            "required": ["keys"],
            "additionalProperties": false,
            "properties": {"keys": {"type": "array", "items": schema_ref("Jwk"), "description": "Empty when every signing key is HS256."}},
        },
        "Jwk": {
            "type": "object",
            "required": ["use", "alg", "kid", "kty"],
            "additionalProperties": false,
            "properties": {
                "use": {"type": "string", "enum": ["sig"]},
                "alg": {"type": "string", "enum": ["EdDSA", "ES256", "RS256"]},
                "kid": {"type": "string"},
                "kty": {"type": "string", "enum": ["OKP", "EC", "RSA"]},
                "crv": {"type": "string", "enum": ["Ed25519", "P-256"]},
                "x": {"type": "string"},
                "y": {"type": "string"},
                "n": {"type": "string"},
                "e": {"type": "string"},
            },
        },
    });
    if let Some(map) = schemas.as_object_mut() {
        for flavor in [Flavor::Generic, Flavor::DataBrain] {
            for &status in error_statuses(flavor) {
                map.insert(
                    error_schema_name(flavor, status),
                    error_schema(flavor, status),
                );
            }
        }
    }
    schemas
}

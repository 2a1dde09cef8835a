//! The OpenAPI 3 document of the routes, written as data (a few routes with vendor-specific
//! shapes gain nothing from a derive framework). Served at `/openapi.json` and committed as
//! `openapi.json`; `tests/http_openapi.rs` fails when the two drift
//! (`UPDATE_OPENAPI=1 cargo test --test http_openapi` rewrites the file).

use super::paths;
use serde_json::{Value, json};
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

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The error answers every token route shares.
fn common_errors(mut responses: Value, auth: &str) -> Value {
    let extra = json!({
        "401": error_response(auth),
        "404": error_response("No such route."),
        "405": error_response("Method not allowed on this route."),
        "408": error_response("The request took longer than 10 s."),
        "413": error_response("Request body larger than 64 KiB."),
        "500": error_response("Internal error."),
        "503": error_response("Not ready: caches not synced or no keyring yet."),
    });
    if let (Some(r), Some(e)) = (responses.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    responses
}

pub fn document() -> Value {
    let access_token_op = |operation_id: &str, summary: &str| {
        json!({
            "operationId": operation_id,
            "tags": ["Nibi"],
            "summary": summary,
            "description": "A user access token for the principal of the service key, living the ServiceKey's accessTokenTTL (default 24 h). Claims: iat nbf jti exp identity{id} fresh type iss. Any request body is ignored.",
            "security": [{"serviceKeyBearer": []}],
            "responses": common_errors(json!({
                "200": json_response("The access token.", schema_ref("AccessToken")),
            }), "Missing, malformed or unknown service key."),
        })
    };
    let session_ok = json_response("A session token.", schema_ref("Session"));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tokenmint REST routes",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The vendors' documented token routes served by `tokenmint serve`. Every error answer is {\"error\": {\"code\", \"message\"}}; the guest-token route uses DataBrain's codes.",
        },
        "paths": {
            paths::ACCESS_TOKEN: {"post": access_token_op("getAccessToken", "Get a user access token (Nibi)")},
            paths::USER_TOKEN_ALIAS: {"post": access_token_op("getUserToken", "Alias of get_access_token (Nibi)")},
            paths::DATASOURCE_TOKEN: {"post": {
                "operationId": "getDatasourceToken",
                "tags": ["Nibi"],
                "summary": "Get a read token for one data source (Nibi)",
                "description": "Authenticated with the service key or with a user access token from get_access_token; an access token has the permissions of the ServiceKeys of its principal id. The body is parsed as JSON whatever its Content-Type.",
                "security": [{"serviceKeyBearer": []}, {"accessTokenBearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("DatasourceTokenRequest")}}},
                "responses": common_errors(json!({
                    "200": json_response("The data source token.", schema_ref("AccessToken")),
                    "400": error_response("Malformed JSON, wrong types, missing data_source, expiration outside 1..43200 or an invalid filter."),
                    "403": error_response("The key may not grant this data source."),
                }), "Missing, malformed, unknown or expired credentials."),
            }},
            paths::GUEST_TOKEN: {"post": {
                "operationId": "createGuestToken",
                "tags": ["DataBrain"],
                "summary": "Create an embed guest token (DataBrain)",
                "description": "Error codes: AUTHENTICATION_ERROR (401), INVALID_REQUEST_BODY (400, 413), CLIENT_ID_ERROR (400), WORKSPACE_ID_ERROR (400 missing, 403 not allowed), DASHBOARD_PARAM_ERROR, APP_FILTER_PARAM_ERROR, RLS_SETTINGS_PARAM_ERROR (400), INTERNAL_SERVER_ERROR (5xx).",
                "security": [{"serviceKeyBearer": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref("GuestTokenRequest")}}},
                "responses": common_errors(json!({
                    "200": json_response("The guest token.", json!({"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}})),
                    "400": error_response("INVALID_REQUEST_BODY, CLIENT_ID_ERROR, WORKSPACE_ID_ERROR, DASHBOARD_PARAM_ERROR, APP_FILTER_PARAM_ERROR or RLS_SETTINGS_PARAM_ERROR."),
                    "403": error_response("WORKSPACE_ID_ERROR: the key may not use this workspace."),
                }), "AUTHENTICATION_ERROR: missing, malformed or unknown service key."),
            }},
            paths::SESSION_TOKEN: {"post": {
                "operationId": "createSession",
                "tags": ["Nexla"],
                "summary": "Obtain a session token with a service key (Nexla)",
                "description": "Authorization: Basic <service key>; base64 of the key, or of user:key, is accepted too. expires_in is the ServiceKey's sessionToken.ttl (default 3600). api_key names the ServiceKey (namespace/name), never the key.",
                "security": [{"serviceKeyBasic": []}],
                "responses": common_errors(json!({"200": session_ok}), "Missing, malformed or unknown service key."),
            }},
            paths::SESSION_REFRESH: {"post": {
                "operationId": "refreshSession",
                "tags": ["Nexla"],
                "summary": "Refresh a session token, restarting its expiry (Nexla)",
                "security": [{"sessionBearer": []}],
                "responses": common_errors(json!({"200": session_ok}), "Missing, malformed or expired session token, or its ServiceKey no longer exists."),
            }},
            paths::DS_USER_TOKEN: {
                "post": {
                    "operationId": "createUserToken",
                    "tags": ["Datasentinel"],
                    "summary": "Create a 24 h user-token (Datasentinel)",
                    "security": [{"nameAndKey": []}],
                    "responses": common_errors(json!({
                        "201": json_response("The user-token.", json!({"type": "object", "required": ["user-token"], "properties": {"user-token": {"type": "string"}}})),
                    }), "Invalid user name or key."),
                },
                "get": {
                    "operationId": "userTokenInfo",
                    "tags": ["Datasentinel"],
                    "summary": "What a user-token says (Datasentinel)",
                    "security": [{"nameAndKey": []}],
                    "parameters": [
                        {"name": "token", "in": "query", "required": false, "schema": {"type": "string"}, "description": "The user-token (the seed's example)."},
                        {"name": "user-token", "in": "query", "required": false, "schema": {"type": "string"}, "description": "The user-token (the seed's table); one of the two is required."},
                    ],
                    "responses": common_errors(json!({
                        "200": json_response("The token's content.", schema_ref("UserTokenInfo")),
                        "400": error_response("Neither token nor user-token given."),
                    }), "Invalid user name or key, or an invalid or expired user-token."),
                },
            },
            paths::JWKS: {"get": {
                "operationId": "jwks",
                "tags": ["System"],
                "summary": "Public signing keys (empty for HS256)",
                "security": [],
                "responses": {
                    "200": json_response("A JWK set.", json!({"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {"type": "object"}}}})),
                    "503": error_response("No keyring yet."),
                },
            }},
            paths::HEALTHZ: {"get": {
                "operationId": "healthz", "tags": ["System"], "summary": "Liveness", "security": [],
                "responses": {"200": json_response("Alive.", json!({"type": "object"}))},
            }},
            paths::READYZ: {"get": {
                "operationId": "readyz", "tags": ["System"], "summary": "Readiness: caches synced and keyring loaded", "security": [],
                "responses": {
                    "200": json_response("Ready.", json!({"type": "object"})),
                    "503": json_response("Not ready, with the reason.", json!({"type": "object"})),
                },
            }},
            paths::METRICS: {"get": {
                "operationId": "metrics", "tags": ["System"], "summary": "Prometheus metrics", "security": [],
                "responses": {"200": {"description": "OpenMetrics text.", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}},
            }},
            paths::OPENAPI: {"get": {
                "operationId": "openapi", "tags": ["System"], "summary": "This document", "security": [],
                "responses": {"200": json_response("OpenAPI 3 document.", json!({"type": "object"}))},
            }},
        },
        "components": {
            "securitySchemes": {
                "serviceKeyBearer": {"type": "http", "scheme": "bearer", "description": "The service key (Secret key `key` of the ServiceKey's secretName)."},
                "accessTokenBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A user access token from get_access_token."},
                "sessionBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "A session token from /token."},
                "serviceKeyBasic": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "`Basic <service key>` (Nexla's form), or standard HTTP Basic with the key as password."},
                "nameAndKey": {"type": "http", "scheme": "basic", "description": "The principal's name as user, the service key as password."},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }},
                },
                "AccessToken": {
                    "type": "object",
                    "required": ["access_token", "expiration"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "expiration": {"type": "number", "format": "double", "description": "Lifetime in seconds, e.g. 86400.0."},
                    },
                },
                "DatasourceTokenRequest": {
                    "type": "object",
                    "required": ["data_source"],
                    "properties": {
                        "data_source": {"type": "string"},
                        "expiration": {"type": "integer", "minimum": 1, "maximum": 43200, "default": 3600, "description": "Seconds."},
                        "app_uuid": {"type": "string", "description": "The end user's id in your app (a number is accepted)."},
                        "filter": {"type": "string", "description": "One SQL boolean expression, ANDed into generated queries."},
                    },
                },
                "GuestTokenRequest": {
                    "type": "object",
                    "required": ["workspaceName", "clientId"],
                    "properties": {
                        "workspaceName": {"type": "string"},
                        "clientId": {"type": "string", "description": "\"None\" when the data source has no tenancy."},
                        "params": {"type": "object", "additionalProperties": true, "description": "dashboardAppFilters, appFilters, rlsSettings (lists of objects) and free-form keys, kept verbatim in the token."},
                        "expiryTime": {"type": "integer", "minimum": 1, "maximum": 2592000000_i64, "description": "Milliseconds; absent: the token never expires."},
                        "datasourceName": {"type": "string"},
                    },
                },
                "Session": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_in", "user", "org"],
                    "properties": {
                        "access_token": {"type": "string"},
                        "token_type": {"type": "string", "enum": ["Bearer"]},
                        "expires_in": {"type": "integer", "description": "Seconds."},
                        "user": {
                            "type": "object",
                            "required": ["id", "email", "full_name", "api_key", "super_user", "impersonated", "email_verified_at", "updated_at", "created_at"],
                            "properties": {
                                "id": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                                "email": {"type": "string"},
                                "full_name": {"type": "string", "nullable": true},
                                "api_key": {"type": "string", "description": "namespace/name of the ServiceKey (never the key)."},
                                "super_user": {"type": "boolean"},
                                "impersonated": {"type": "boolean"},
                                "email_verified_at": {"type": "string", "nullable": true, "example": "2016-02-07T11:40"},
                                "updated_at": {"type": "string", "nullable": true, "example": "2016-02-07T11:40"},
                                "created_at": {"type": "string", "nullable": true, "example": "2016-02-07T11:40"},
                            },
                        },
                        "org": {
                            "type": "object",
                            "nullable": true,
                            "properties": {"id": {"oneOf": [{"type": "integer"}, {"type": "string"}]}, "name": {"type": "string", "nullable": true}},
                        },
                    },
                },
                "UserTokenInfo": {
                    "type": "object",
                    "required": ["email", "expire_time", "organization_name", "user"],
                    "properties": {
                        "email": {"type": "string"},
                        "expire_time": {"type": "string", "example": "2020-04-28 13:58:53", "description": "UTC."},
                        "organization_name": {"type": "string"},
                        "user": {"type": "string"},
                    },
                },
            },
        },
    })
}

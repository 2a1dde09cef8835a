//! REST routes of `tokenmint serve` (CONTRACT §6): the vendors' documented token routes plus
//! probes, metrics, the JWKS and the OpenAPI document.
//!
//! - [`cluster`]: the store fed by kube watch caches.
//! - [`auth`]: credentials from the `Authorization` header.
//! - [`body`]: JSON bodies, field by field.
//! - [`error`]: the one JSON error envelope and its codes.
//! - [`routes`]: one module per vendor.
//! - [`metrics`], [`openapi`].

pub mod auth;
pub mod body;
pub mod cluster;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod presented;
pub mod routes;
pub mod server;

pub use server::{REQUEST_TIMEOUT, ServeOptions, serve, serve_with, shutdown_signal};

use crate::key_store::{KeyIndex, KeyStore, NotReady};
use crate::revocation::{Denylist, Revoker};
use crate::tokenreview::Reviewer;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::{ApiError, Flavor, HandlerError};
use metrics::Metrics;
use std::sync::Arc;
use std::time::Instant;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Route paths, shared by the router and the OpenAPI document.
pub mod paths {
    pub const ACCESS_TOKEN: &str = "/api/admin/v1/api_token/get_access_token";
    pub const USER_TOKEN_ALIAS: &str = "/api/admin/v1/api_token/get_user_token";
    pub const DATASOURCE_TOKEN: &str = "/api/admin/v1/get_datasource_token";
    pub const GUEST_TOKEN: &str = super::error::DATABRAIN_ROUTE;
    pub const SESSION_TOKEN: &str = "/token";
    pub const SESSION_REFRESH: &str = "/token/refresh";
    pub const DS_USER_TOKEN: &str = "/ds-api/user-token";
    pub const REVOKE: &str = "/oauth/revoke";
    pub const INTROSPECT: &str = "/oauth/introspect";
    pub const JWKS: &str = "/.well-known/jwks.json";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
    pub const OPENAPI: &str = "/openapi.json";
}

/// Route label of requests no route matched (metrics and access log).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Everything a handler needs; one reference count to clone (the middleware and every handler
/// take it per request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
pub struct Shared {
    pub store: Arc<dyn KeyStore>,
    pub issuer: Arc<str>,
    pub metrics: Arc<Metrics>,
    /// Revoked token ids, honoured by every route that accepts a token.
    pub denylist: Arc<Denylist>,
    /// Where `POST /oauth/revoke` records revocations.
    pub revoker: Revoker,
    /// Checks ServiceAccount tokens (keyless callers); `None` without a cluster.
    pub reviewer: Option<Arc<Reviewer>>,
}

/// How `serve` is put together: where keys, revocations and ServiceAccount checks come from.
pub struct Config {
    pub store: Arc<dyn KeyStore>,
    pub issuer: String,
    pub denylist: Arc<Denylist>,
    pub revoker: Revoker,
    /// Counts the restarts of the store's watches.
    pub watch_restarts: crate::watch::RestartCounter,
    pub reviewer: Option<Arc<Reviewer>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// A state whose revocations live in memory and with no ServiceAccount checks
    /// (`--manifests`, tests).
    pub fn new(store: Arc<dyn KeyStore>, issuer: &str) -> Self {
        let denylist = Arc::new(Denylist::default());
        AppState::from_config(Config {
            store,
            issuer: issuer.to_owned(),
            revoker: Revoker::Memory(denylist.clone()),
            denylist,
            watch_restarts: Default::default(),
            reviewer: None,
        })
    }

    pub fn from_config(config: Config) -> Self {
        let metrics = Metrics::new(
            &config.denylist,
            config.watch_restarts,
            config.reviewer.as_deref(),
        );
        AppState(Arc::new(Shared {
            store: config.store,
            issuer: config.issuer.into(),
            metrics: Arc::new(metrics),
            denylist: config.denylist,
            revoker: config.revoker,
            reviewer: config.reviewer,
        }))
    }

    /// The key snapshot and keyring, or 503 while either is missing (the checks of
    /// [`KeyStore::readiness`], reading the keyring once).
    pub fn ready(
        &self,
        flavor: Flavor,
    ) -> Result<(Arc<KeyIndex>, Arc<crate::keyring::Keyring>), ApiError> {
        if !self.store.synced() {
            return Err(ApiError::not_ready(flavor, NotReady::Syncing));
        }
        let keyring = self
            .store
            .keyring()
            .ok_or_else(|| ApiError::not_ready(flavor, NotReady::NoKeyring))?;
        Ok((self.store.keys(), keyring))
    }
}

/// The application: every route with its layers.
pub fn router(state: AppState) -> Router {
    use routes::{databrain, datasentinel, nexla, nibi, oauth, system};
    Router::new()
        .route(paths::ACCESS_TOKEN, post(nibi::access_token))
        .route(paths::USER_TOKEN_ALIAS, post(nibi::access_token))
        .route(paths::DATASOURCE_TOKEN, post(nibi::datasource_token))
        .route(paths::GUEST_TOKEN, post(databrain::guest_token))
        .route(paths::SESSION_TOKEN, post(nexla::session_token))
        .route(paths::SESSION_REFRESH, post(nexla::refresh))
        .route(
            paths::DS_USER_TOKEN,
            post(datasentinel::create).get(datasentinel::info),
        )
        .route(paths::REVOKE, post(oauth::revoke))
        .route(paths::INTROSPECT, post(oauth::introspect))
        .route(paths::JWKS, get(system::jwks))
        .route(paths::HEALTHZ, get(system::healthz))
        .route(paths::READYZ, get(system::readyz))
        .route(paths::METRICS, get(system::metrics))
        .route(paths::OPENAPI, get(system::openapi))
        .fallback(|| async { StatusCode::NOT_FOUND })
        // `Router::layer` wraps each route, so the middleware sees the MatchedPath (the route
        // template used for metrics, logs and the error vocabulary).
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal(Flavor::Generic, "a handler panicked").into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Times out the request, turns any non-JSON error answer into the JSON envelope, records
/// metrics and writes the access-log line. The line names the route template, never the path
/// or query (the Datasentinel route carries a token in its query), and no header.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // MatchedPath holds an Arc: cloning it costs no allocation.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched
        .as_ref()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let method = request.method().clone();
    let flavor = Flavor::of_route(route);
    // A declared body over the limit is refused before a byte of it is read: at once, and
    // without the `100 Continue` a client sending `Expect: 100-continue` waits for.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = declared.is_some_and(|n| n > BODY_LIMIT as u64);
    let mut response = if too_large {
        ApiError::status(
            flavor,
            StatusCode::PAYLOAD_TOO_LARGE,
            error::default_message(StatusCode::PAYLOAD_TOO_LARGE),
        )
        .into_response()
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::status(
                flavor,
                StatusCode::REQUEST_TIMEOUT,
                error::default_message(StatusCode::REQUEST_TIMEOUT),
            )
            .into_response(),
        }
    };
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && response.extensions().get::<HandlerError>().is_none()
    {
        response = rewrite_error(response, flavor);
    }
    let latency = started.elapsed();
    state
        .metrics
        .observe(&method, route, status.as_u16(), latency.as_secs_f64());
    // Every request at debug, refusals and failures at info: a line per success would cost a
    // sixth of the server's CPU at full load (the metrics count them), while a refusal is what
    // someone reads the log for.
    macro_rules! access_line {
        ($level:expr) => {
            tracing::event!(
                target: "tokenmint::access",
                $level,
                method = %method,
                route = %route,
                status = status.as_u16(),
                latency_ms = %format_args!("{:.3}", latency.as_secs_f64() * 1000.0),
                "request"
            )
        };
    }
    if status.is_client_error() || status.is_server_error() {
        access_line!(tracing::Level::INFO);
    } else {
        access_line!(tracing::Level::DEBUG);
    }
    response
}

/// The probes alone (`--probe-listen`): `/healthz` and `/readyz` on a listener of their own,
/// so that no traffic on the main port can starve the kubelet.
pub fn probe_router(state: AppState) -> Router {
    use routes::system;
    Router::new()
        .route(paths::HEALTHZ, get(system::healthz))
        .route(paths::READYZ, get(system::readyz))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// An error answer from axum or a layer (404, 405 with its Allow header, 413, ...) in the JSON
/// envelope, keeping its status and other headers.
fn rewrite_error(response: Response, flavor: Flavor) -> Response {
    let (mut parts, _) = response.into_parts();
    let error = ApiError::status(flavor, parts.status, error::default_message(parts.status));
    let (new_parts, body) = error.into_response().into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, Body::new(body))
}

//! The admin port: `/healthz`, `/readyz`, `/metrics`.
//!
//! `/healthz` (the liveness probe) fails only when the process can no longer act: its election
//! loop, which runs whatever the API server does (a round never waits longer than its timeout),
//! has not beaten for [`STALLED_AFTER`] — a wedged runtime, a deadlock. An API server that is
//! away is no reason: the replica rides it out as a follower and leads again when it is back,
//! which a restart would only delay.

use super::lease::Heartbeat;
use crate::reconcile::controllers::Readiness;
use crate::reconcile::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;

/// How long the election loop may be silent before the process counts as wedged: ten times
/// its longest quiet stretch (a round's 4 s timeout and the 2 s between rounds).
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub heartbeat: Heartbeat,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.heartbeat.silent_for() {
        Some(silent) if silent >= STALLED_AFTER => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: the leader election loop has not run for {} s\n",
                silent.as_secs()
            ),
        ),
        _ => (StatusCode::OK, "ok\n".to_owned()),
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let (ready, text) = state.readiness.report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, text)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

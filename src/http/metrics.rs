//! Prometheus metrics of the REST routes.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::borrow::Cow;

/// Labels of a request. Route templates and standard methods are static strings, so recording
/// a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: Cow<'static, str>,
    /// The route template (never the raw path, which would be unbounded).
    pub route: Cow<'static, str>,
    pub status: u16,
}

/// Kinds of token the routes issue.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are Prometheus-style snake case
pub enum TokenKind {
    access,
    datasource,
    guest,
    session,
    user,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub kind: TokenKind,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    tokens: Family<TokenLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~4 s: token minting is sub-millisecond, the timeout is 10 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tokenmint");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            latency.clone(),
        );
        registry.register(
            "tokens_issued",
            "Tokens issued by the REST routes, by kind",
            tokens.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            tokens,
        }
    }
}

impl Metrics {
    /// Records one request. `method` and `route` are borrowed as `'static` when they are one
    /// of the standard methods and the router's route templates (always, in practice).
    pub fn observe(&self, method: &axum::http::Method, route: &str, status: u16, seconds: f64) {
        let labels = RequestLabels {
            method: static_method(method),
            route: static_route(route),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    pub fn token_issued(&self, kind: TokenKind) {
        self.tokens.get_or_create(&TokenLabels { kind }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn static_method(method: &axum::http::Method) -> Cow<'static, str> {
    use axum::http::Method;
    Cow::Borrowed(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Cow::Owned(method.as_str().to_owned()),
    })
}

fn static_route(route: &str) -> Cow<'static, str> {
    use super::paths::*;
    const ROUTES: [&str; 13] = [
        ACCESS_TOKEN,
        USER_TOKEN_ALIAS,
        DATASOURCE_TOKEN,
        GUEST_TOKEN,
        SESSION_TOKEN,
        SESSION_REFRESH,
        DS_USER_TOKEN,
        JWKS,
        HEALTHZ,
        READYZ,
        METRICS,
        OPENAPI,
        super::UNMATCHED_ROUTE,
    ];
    ROUTES.iter().find(|r| **r == route).map_or_else(
        || Cow::Owned(route.to_owned()),
        |r: &&'static str| Cow::Borrowed(*r),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn labels_of_known_routes_and_methods_are_static() {
        assert!(matches!(
            static_method(&Method::POST),
            Cow::Borrowed("POST")
        ));
        assert!(matches!(
            static_route(super::super::paths::GUEST_TOKEN),
            Cow::Borrowed("/api/v1/guest-token/create")
        ));
        let odd = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(static_method(&odd), "PURGE");
        assert!(matches!(static_route("/elsewhere"), Cow::Owned(_)));
    }
}

//! Prometheus metrics of the REST routes.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request, every one from a fixed set (a client picks the method and path, so
/// free text would let it grow the metrics without bound): the standard methods or `other`,
/// the route templates or `unmatched`, and the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
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

/// Why a token file (or generated key) could not be written by `serve --manifests`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are Prometheus-style snake case
pub enum FileError {
    /// The file system is mounted read-only (EROFS).
    read_only,
    /// No space or quota left.
    no_space,
    /// The process may not write there.
    permission,
    /// The Secret name is taken (another object's tree, a declared Secret, something
    /// tokenmint did not write): a SecretConflict, not retried until something changes.
    conflict,
    other,
}

impl FileError {
    pub const ALL: [FileError; 5] = [
        FileError::read_only,
        FileError::no_space,
        FileError::permission,
        FileError::conflict,
        FileError::other,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileErrorLabels {
    pub reason: FileError,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub kind: TokenKind,
}

/// Kinds whose tokens `serve --manifests` writes into files (the `kind` label; anything else is
/// `other`).
const FILE_KINDS: [&str; 3] = ["DatasourceGrant", "GuestTokenRequest", "ServiceKey"];

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    tokens: Family<TokenLabels, Counter>,
    /// `--manifests`: the token files the agent keeps.
    file_tokens_minted: Family<KindLabel, Counter>,
    file_errors: Family<FileErrorLabels, Counter>,
    earliest_expiry: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~4 s: token minting is sub-millisecond, the timeout is 10 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(
            &crate::revocation::Denylist::default(),
            crate::watch::RestartCounter::default(),
            None,
        )
    }
}

impl Metrics {
    /// The metrics of `serve`, including the size of its revocation `denylist` and the restarts
    /// of its watches.
    pub fn new(
        denylist: &crate::revocation::Denylist,
        watch_restarts: crate::watch::RestartCounter,
        reviewer: Option<&crate::tokenreview::Reviewer>,
    ) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokenmint_http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        registry.register(
            "tokenmint_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            latency.clone(),
        );
        registry.register(
            "tokenmint_tokens_issued",
            "Tokens issued by the REST routes, by kind",
            tokens.clone(),
        );
        let file_tokens_minted = Family::<KindLabel, Counter>::default();
        let file_errors = Family::<FileErrorLabels, Counter>::default();
        let earliest_expiry = Gauge::default();
        registry.register(
            "tokenmint_tokens_minted",
            "Tokens (and generated keys) written into files by serve --manifests, by kind",
            file_tokens_minted.clone(),
        );
        registry.register(
            "tokenmint_token_file_errors",
            "Token files and generated keys serve --manifests could not write (or remove), by reason; failed writes are retried with backoff",
            file_errors.clone(),
        );
        registry.register(
            "tokenmint_token_earliest_expiry_timestamp_seconds",
            "Earliest expiry (Unix seconds) among the token files serve --manifests keeps; 0 when none expires",
            earliest_expiry.clone(),
        );
        crate::watch::register_restarts(&mut registry, &watch_restarts);
        denylist.register(&mut registry);
        if let Some(reviewer) = reviewer {
            reviewer.register(&mut registry);
        }
        let metrics = Metrics {
            registry,
            requests,
            latency,
            tokens,
            file_tokens_minted,
            file_errors,
            earliest_expiry,
        };
        metrics.create_series();
        metrics
    }

    /// The series of the token routes' successes and of every token kind, at zero: a panel or
    /// a rate-based alert tells "nothing happened" from "not scraped" from the start.
    fn create_series(&self) {
        use super::paths::*;
        let successes = [
            (ACCESS_TOKEN, 200),
            (USER_TOKEN_ALIAS, 200),
            (DATASOURCE_TOKEN, 200),
            (GUEST_TOKEN, 200),
            (SESSION_TOKEN, 200),
            (SESSION_REFRESH, 200),
            (DS_USER_TOKEN, 201),
            (REVOKE, 200),
            (INTROSPECT, 200),
        ];
        for (route, status) in successes {
            let labels = RequestLabels {
                method: "POST",
                route,
                status,
            };
            let _ = self.requests.get_or_create(&labels);
            let _ = self.latency.get_or_create(&labels);
        }
        use TokenKind::*;
        for kind in [access, datasource, guest, session, user] {
            let _ = self.tokens.get_or_create(&TokenLabels { kind });
        }
        for kind in FILE_KINDS {
            let _ = self.file_tokens_minted.get_or_create(&KindLabel { kind });
        }
    }

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

    /// Records a pass of the token-file agent: the kinds of the objects it minted for, and the
    /// earliest expiry among the tokens it keeps.
    pub fn token_files<'a>(
        &self,
        minted_kinds: impl IntoIterator<Item = &'a str>,
        earliest_expiry: Option<jiff::Timestamp>,
    ) {
        for minted in minted_kinds {
            // A label from a fixed set of words, whatever comes in.
            let kind = FILE_KINDS
                .into_iter()
                .find(|k| *k == minted)
                .unwrap_or("other");
            self.file_tokens_minted
                .get_or_create(&KindLabel { kind })
                .inc();
        }
        self.earliest_expiry
            .set(earliest_expiry.map_or(0, |t| t.as_second()));
    }

    /// Creates every `tokenmint_token_file_errors_total` series at zero (`serve --manifests`
    /// at start), so that a rate over them is defined before the first failure.
    pub fn token_file_errors_init(&self) {
        for reason in FileError::ALL {
            let _ = self.file_errors.get_or_create(&FileErrorLabels { reason });
        }
    }

    /// Counts failed token-file writes and conflicts of a pass.
    pub fn token_file_errors(&self, errors: impl IntoIterator<Item = FileError>) {
        for reason in errors {
            self.file_errors
                .get_or_create(&FileErrorLabels { reason })
                .inc();
        }
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

/// The label of a method: the standard ones by name, anything else `other`.
fn static_method(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The label of a route: a template of the router, else `other` (never the raw path).
fn static_route(route: &str) -> &'static str {
    use super::paths::*;
    const ROUTES: [&str; 15] = [
        ACCESS_TOKEN,
        USER_TOKEN_ALIAS,
        DATASOURCE_TOKEN,
        GUEST_TOKEN,
        SESSION_TOKEN,
        SESSION_REFRESH,
        DS_USER_TOKEN,
        REVOKE,
        INTROSPECT,
        JWKS,
        HEALTHZ,
        READYZ,
        METRICS,
        OPENAPI,
        super::UNMATCHED_ROUTE,
    ];
    ROUTES
        .iter()
        .find(|r| **r == route)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn every_label_a_client_can_choose_comes_from_a_fixed_set() {
        assert_eq!(static_method(&Method::POST), "POST");
        assert_eq!(
            static_route(super::super::paths::GUEST_TOKEN),
            "/api/v1/guest-token/create"
        );
        let odd = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(static_method(&odd), "other");
        assert_eq!(static_route("/elsewhere"), "other");
        // 3,000 made-up methods add one series, not 3,000.
        let metrics = Metrics::default();
        let before = metrics.encode().unwrap().len();
        for i in 0..3_000 {
            let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
            metrics.observe(&method, "unmatched", 405, 0.001);
        }
        let text = metrics.encode().unwrap();
        assert!(!text.contains("M17"), "a made-up method became a label");
        assert!(
            text.len() < before + 4_096,
            "{before} -> {} bytes",
            text.len()
        );
    }

    #[test]
    fn token_file_passes_count_minted_kinds_and_set_the_earliest_expiry() {
        let metrics = Metrics::default();
        let expiry = jiff::Timestamp::from_second(1_900_000_000).unwrap();
        metrics.token_files(
            ["DatasourceGrant", "DatasourceGrant", "ServiceKey", "Bogus"],
            Some(expiry),
        );
        let text = metrics.encode().unwrap();
        for line in [
            "tokenmint_tokens_minted_total{kind=\"DatasourceGrant\"} 2",
            "tokenmint_tokens_minted_total{kind=\"ServiceKey\"} 1",
            "tokenmint_tokens_minted_total{kind=\"other\"} 1",
            "tokenmint_token_earliest_expiry_timestamp_seconds 1900000000",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("Bogus"));
    }

    #[test]
    fn token_file_errors_exist_at_zero_from_the_start_and_count_by_reason() {
        let metrics = Metrics::default();
        assert!(
            !metrics
                .encode()
                .unwrap()
                .contains("token_file_errors_total{")
        );
        metrics.token_file_errors_init();
        metrics.token_file_errors([
            FileError::read_only,
            FileError::read_only,
            FileError::conflict,
        ]);
        let text = metrics.encode().unwrap();
        for line in [
            "tokenmint_token_file_errors_total{reason=\"read_only\"} 2",
            "tokenmint_token_file_errors_total{reason=\"conflict\"} 1",
            "tokenmint_token_file_errors_total{reason=\"no_space\"} 0",
            "tokenmint_token_file_errors_total{reason=\"permission\"} 0",
            "tokenmint_token_file_errors_total{reason=\"other\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}

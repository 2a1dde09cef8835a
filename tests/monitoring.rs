//! The alerting rules (`charts/tokenmint/rules/tokenmint.rules.yaml`) and the Grafana dashboard
//! (`charts/tokenmint/dashboards/tokenmint.json`) only use metrics the code exposes — from the
//! start.
//!
//! Every `tokenmint_*` name in a rule expression or a dashboard target must be a sample of the
//! Prometheus text exposition of a fresh operator (its admin router, before it has done
//! anything) or of a fresh `tokenmint serve` (its router, cluster mode over the fake API
//! server, before any request), both scraped in-process. A rule on a renamed or dropped metric
//! never fires, and a labelled family that has no series until something happens leaves panels
//! at "No data" and a rate-based alert unable to tell "zero" from "not scraped": this test is
//! what notices.
//!
//! Names are matched as Prometheus clients write them: a counter family `foo` has samples
//! `foo_total` (so `foo_total` in a rule matches family `foo` of type counter), and a
//! histogram family `foo` has samples `foo_bucket`, `foo_sum` and `foo_count`. Only samples
//! count: prometheus-client prints no sample of a labelled family until a series is created.

mod support;

use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

const RULES: &str = "charts/tokenmint/rules/tokenmint.rules.yaml";
const DASHBOARD: &str = "charts/tokenmint/dashboards/tokenmint.json";
const PREFIX: &str = "tokenmint_";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Metric names in a PromQL expression: identifiers `tokenmint_[a-z0-9_]+` that are not part of
/// a longer identifier (such as a recording rule `job:tokenmint_x:rate5m`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(found) = expr[from..].find(PREFIX) {
        let start = from + found;
        let mut end = start + PREFIX.len();
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let standalone = (start == 0 || !is_ident(bytes[start - 1]))
            && (end == bytes.len() || !is_ident(bytes[end]));
        if standalone && end > start + PREFIX.len() {
            names.insert(expr[start..end].to_owned());
        }
        from = end;
    }
    names
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    expr: String,
}

/// Expressions of every rule in the rule file.
fn rule_exprs() -> Vec<String> {
    let file: RuleFile = serde_saphyr::from_str(&read(RULES))
        .unwrap_or_else(|e| panic!("{RULES} is not a Prometheus rule file: {e}"));
    file.groups
        .into_iter()
        .flat_map(|g| g.rules)
        .map(|r| r.expr)
        .collect()
}

/// `expr` of every target of every panel of the dashboard, rows' nested panels included.
fn dashboard_exprs() -> Vec<String> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_owned());
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    exprs
}

/// The sample names of a text exposition (what a query finds after a scrape).
#[derive(Default)]
struct Exposition {
    samples: BTreeSet<String>,
}

impl Exposition {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if !line.starts_with('#') && !line.trim().is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                self.samples.insert(name.to_owned());
            }
        }
    }

    /// Whether `name`, as used in PromQL, finds a series: a counter `foo` is scraped as
    /// `foo_total`, a histogram as `foo_bucket`, `foo_sum` and `foo_count`.
    fn exposes(&self, name: &str) -> bool {
        self.samples.contains(name)
    }
}

/// GET `path` of `router`, as a scraper would.
async fn scrape(router: axum::Router, path: &str) -> String {
    let (status, body) = support::inproc::get(&router, path).await;
    assert_eq!(status, 200, "GET {path}");
    body
}

/// The expositions of a fresh operator's admin port and of a fresh REST sidecar, built as
/// `operator::run` and `serve::run` (cluster mode) build them, before anything happened.
async fn exposition() -> Exposition {
    use std::sync::Arc;
    use tokenmint::operator::{admin, lease::Heartbeat};
    let operator = admin::router(admin::AdminState {
        metrics: Arc::new(tokenmint::reconcile::metrics::Metrics::default()),
        readiness: Arc::default(),
        heartbeat: Heartbeat::default(),
    });

    let fake = support::fake_api::Fake::default();
    let client = fake.client();
    let common = tokenmint::cli::CommonArgs {
        algorithm: tokenmint::keyring::Algorithm::HS256,
        issuer: "tokenmint".into(),
        namespace: "tokenmint-system".into(),
        watch_namespaces: Vec::new(),
        keyring_secret: "tokenmint-keyring".into(),
    };
    let denylist = Arc::new(tokenmint::revocation::Denylist::default());
    let restarts = tokenmint::watch::RestartCounter::default();
    let reviewer = tokenmint::tokenreview::Reviewer::new(
        kube::Api::all(client.clone()),
        vec!["tokenmint".into()],
        tokenmint::tokenreview::Issuers::fixed(vec!["https://kubernetes.default.svc".into()]),
    );
    let store =
        tokenmint::http::cluster::start(client.clone(), &common, &restarts, denylist.clone());
    let serve = tokenmint::http::router(tokenmint::http::AppState::from_config(
        tokenmint::http::Config {
            store,
            issuer: common.issuer.clone(),
            revoker: tokenmint::revocation::Revoker::Kube {
                api: kube::Api::namespaced(client, &common.namespace),
                denylist: denylist.clone(),
            },
            denylist,
            watch_restarts: restarts,
            reviewer: Some(Arc::new(reviewer)),
        },
    ));

    let mut exposition = Exposition::default();
    exposition.add(&scrape(operator, "/metrics").await);
    exposition.add(&scrape(serve, "/metrics").await);
    exposition
}

/// Asserts every metric name in `exprs` has a sample in a fresh scrape; `what` (a file) names
/// their source.
async fn assert_exposed(what: &str, exprs: &[String]) {
    assert!(!exprs.is_empty(), "{what}: no expressions found");
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(
        !used.is_empty(),
        "{what}: no tokenmint_* metric names found"
    );
    let exposition = exposition().await;
    let missing: Vec<&String> = used.iter().filter(|n| !exposition.exposes(n)).collect();
    assert!(
        missing.is_empty(),
        "{what} uses metrics that a fresh operator and a fresh `tokenmint serve` do not expose: \
         {missing:?}\nsample names: {:?}\n(a labelled family has no sample until a series is \
         created: create its known label values at zero when its Metrics are built)",
        exposition.samples
    );
}

#[test]
fn tokenizer_finds_metric_names() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(tokenmint_http_request_duration_seconds_bucket{route!~"/healthz"}[5m])))
        / tokenmint_leader and job:tokenmint_x:rate5m or xtokenmint_y or tokenmint_"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from([
            "tokenmint_http_request_duration_seconds_bucket".to_owned(),
            "tokenmint_leader".to_owned(),
        ])
    );
}

#[test]
fn exposition_counts_samples_only() {
    let mut e = Exposition::default();
    e.add(
        "# HELP a_things Things.\n# TYPE a_things counter\na_things_total{kind=\"x\"} 1\n\
         # TYPE a_latency_seconds histogram\na_latency_seconds_bucket{le=\"+Inf\"} 0\n\
         a_latency_seconds_sum 0\na_latency_seconds_count 0\n\
         # TYPE a_empty counter\n# TYPE a_level gauge\na_level 0\n# EOF\n",
    );
    for name in [
        "a_things_total",
        "a_latency_seconds_bucket",
        "a_latency_seconds_sum",
        "a_latency_seconds_count",
        "a_level",
    ] {
        assert!(e.exposes(name), "{name}");
    }
    // A family without a series finds nothing; nor does a counter without its `_total`.
    for name in [
        "a_empty_total",
        "a_empty",
        "a_things",
        "a_latency_seconds",
        "a_other",
    ] {
        assert!(!e.exposes(name), "{name}");
    }
}

#[tokio::test]
async fn a_fresh_operator_and_serve_expose_every_metric_the_alerting_rules_use() {
    assert_exposed(RULES, &rule_exprs()).await;
}

#[tokio::test]
async fn a_fresh_operator_and_serve_expose_every_metric_the_dashboard_uses() {
    assert_exposed(DASHBOARD, &dashboard_exprs()).await;
}

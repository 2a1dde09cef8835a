//! The alerting rules (`charts/tokenmint/rules/tokenmint.rules.yaml`) and the Grafana dashboard
//! (`charts/tokenmint/dashboards/tokenmint.json`) only use metrics the code exposes.
//!
//! Every `tokenmint_*` name in a rule expression or a dashboard target must be a metric family
//! (`# TYPE <name> ...`), or a sample name, of the Prometheus text exposition of the operator
//! (admin port) or of `tokenmint serve` (REST port), both encoded in-process here. A rule on a
//! renamed or dropped metric never fires: this test is what notices.
//!
//! Exposition names are matched as Prometheus clients write them: a counter family `foo` has
//! samples `foo_total` (so `foo_total` in a rule matches family `foo` of type counter), and a
//! histogram family `foo` has samples `foo_bucket`, `foo_sum` and `foo_count`.
//!
//! prometheus-client leaves a labelled family out of the exposition entirely (no `# TYPE` line)
//! until it has a sample, so [`exposition`] first records one sample in every labelled family of
//! both `Metrics` (unlabelled gauges are always there). A new labelled metric needs a sample
//! recorded there too, or this test reports it as not exposed.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
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

/// What a text exposition declares: family name -> type, and every sample name.
#[derive(Default)]
struct Exposition {
    families: BTreeMap<String, String>,
    samples: BTreeSet<String>,
}

impl Exposition {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    self.families.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                self.samples.insert(name.to_owned());
            }
        }
    }

    fn family_of_type(&self, name: &str, kinds: &[&str]) -> bool {
        self.families
            .get(name)
            .is_some_and(|kind| kinds.contains(&kind.as_str()))
    }

    /// Whether `name`, as used in PromQL, is exposed.
    fn exposes(&self, name: &str) -> bool {
        if self.families.contains_key(name) || self.samples.contains(name) {
            return true;
        }
        if let Some(family) = name.strip_suffix("_total")
            && self.family_of_type(family, &["counter"])
        {
            return true;
        }
        if let Some(family) = name.strip_suffix("_bucket")
            && self.family_of_type(family, &["histogram", "gaugehistogram"])
        {
            return true;
        }
        ["_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| self.family_of_type(family, &["histogram", "summary"]))
        })
    }
}

/// The expositions of the operator's admin port and of the REST sidecar, after one sample of
/// every labelled family (empty families are not exposed at all).
fn exposition() -> Exposition {
    let operator = tokenmint::reconcile::metrics::Metrics::default();
    operator.minted("DatasourceGrant", true); // tokens_minted and tokens_rotated
    operator.reconcile_error("DatasourceGrant", "KubeError");
    operator.write("patch", "secrets");
    operator.set_leader(true);
    operator.token_expiry("DatasourceGrant/team-a/dashboards", Some(1_900_000_000));
    operator.reconciled("DatasourceGrant", std::time::Duration::from_millis(3));
    operator
        .watch_restarts()
        .get_or_create(&tokenmint::watch::ResourceLabel {
            resource: "secrets",
        })
        .inc();

    let serve = tokenmint::http::metrics::Metrics::default();
    serve.observe(&axum::http::Method::POST, "/token", 200, 0.001); // requests and latency
    serve.token_issued(tokenmint::http::metrics::TokenKind::access);

    let mut exposition = Exposition::default();
    exposition.add(&operator.encode());
    exposition.add(&serve.encode().expect("encoding the REST metrics"));
    exposition
}

/// Asserts every metric name in `exprs` is exposed; `what` (a file) names their source.
fn assert_exposed(what: &str, exprs: &[String]) {
    assert!(!exprs.is_empty(), "{what}: no expressions found");
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(
        !used.is_empty(),
        "{what}: no tokenmint_* metric names found"
    );
    let exposition = exposition();
    let missing: Vec<&String> = used.iter().filter(|n| !exposition.exposes(n)).collect();
    assert!(
        missing.is_empty(),
        "{what} uses metrics that neither the operator nor `tokenmint serve` exposes: {missing:?}\n\
         exposed families: {:?}\n\
         (a labelled family only shows up once it has a sample: if the metric exists, record one \
         in `exposition()` of tests/monitoring.rs)",
        exposition.families
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
fn exposition_matches_counters_and_histograms_by_family() {
    let mut e = Exposition::default();
    e.add(
        "# HELP a_things Things.\n# TYPE a_things counter\na_things_total{kind=\"x\"} 1\n\
         # TYPE a_latency_seconds histogram\n# TYPE a_level gauge\na_level 0\n# EOF\n",
    );
    for name in [
        "a_things_total",
        "a_things",
        "a_latency_seconds_bucket",
        "a_latency_seconds_sum",
        "a_latency_seconds_count",
        "a_level",
    ] {
        assert!(e.exposes(name), "{name}");
    }
    for name in [
        "a_level_total",
        "a_things_bucket",
        "a_other",
        "a_latency_seconds_total",
    ] {
        assert!(!e.exposes(name), "{name}");
    }
}

#[test]
fn alerting_rules_use_exposed_metrics() {
    assert_exposed(RULES, &rule_exprs());
}

#[test]
fn dashboard_uses_exposed_metrics() {
    assert_exposed(DASHBOARD, &dashboard_exprs());
}

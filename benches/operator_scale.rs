//! The operator at scale, over a fake API server in a separate process (so its memory and CPU
//! are not counted): N pending DatasourceGrants reconciled by the real controllers from a cold
//! start, then a restart of the controllers over them.
//!
//!     cargo bench --bench operator_scale               # N = 10,000 and 100,000
//!     cargo bench --bench operator_scale -- 2000 5000  # other sizes
//!
//! For each N it prints:
//! - the time until every grant is Ready, and that time per grant (flat from 10,000 to 100,000
//!   when no work per object grows with the number of objects);
//! - the operator's CPU time (user + system, of its own process) per grant;
//! - its RSS per managed grant once every grant is Ready and the caches are at rest (RSS after,
//!   minus RSS before the controllers started, divided by N);
//! - the writes per grant (Events, published through the Events API as in a cluster, aside);
//! - a restart of the controllers over the N grants in place: the time until each was
//!   reconciled again, and the writes it made (none is needed);
//! - the floor: the time the same fake server takes to create N Secrets directly, one client
//!   sending one request after the other (as `kubectl apply` does) and 32 at a time, with the
//!   same per-request latency (`LATENCY_MS`, default 1 ms).
//!
//! What the operator holds at rest, by allocation site (heaptrack sees the system allocator
//! only, so build with it):
//!
//!     TOKENMINT_BENCH_SYSTEM_ALLOC=1 cargo bench --bench operator_scale --no-run
//!     TOKENMINT_BENCH_ROLE=operator:10000 TOKENMINT_BENCH_EXIT_AT_REST=1 \
//!         heaptrack target/release/deps/operator_scale-*
//!     heaptrack_print --print-leaks 1 heaptrack.operator_scale-*.zst
//!
//! The fake answers from memory with an artificial latency; a real API server is slower and
//! its ratios differ: say which in any figure quoted.

mod support;

use serde_json::json;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use support::fake_api::{self, Fake};
use support::{EXIT_AT_REST, ROLE, Server, cpu_seconds, latency, metric, rss_kib};

/// The fake API server process: N grants of one ServiceKey.
async fn server(port: u16, grants: usize) {
    let fake = Fake::default();
    fake_api::service_key(&fake);
    for i in 0..grants {
        fake_api::grant(&fake, &format!("grant-{i:05}"));
    }
    eprintln!("fake API server ready with {grants} grants");
    support::serve(fake, port).await
}

/// Time to create `n` Secrets directly, `concurrency` at a time.
async fn direct_creates(n: usize, concurrency: usize) -> Duration {
    use futures::StreamExt;
    let server = Server::spawn("0");
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(server.client(), fake_api::TEAM);
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let api = api.clone();
            async move {
                let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("direct-{i:05}")},
                    "data": {"token": "dG9rZW4="}
                }))
                .unwrap();
                api.create(&Default::default(), &secret).await.unwrap();
            }
        })
        .await;
    let took = started.elapsed();
    drop(server);
    took
}

/// The sum of the operator's writes so far.
fn writes(metrics: &tokenmint::reconcile::metrics::Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("tokenmint_kube_writes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// What one operator run measured.
#[derive(Debug, Default)]
struct Measured {
    ready_s: f64,
    cpu_s: f64,
    rss_per_grant_kb: f64,
    writes_per_grant: f64,
    restart_s: f64,
    restart_writes: u64,
}

impl Measured {
    fn line(&self) -> String {
        format!(
            "result {} {} {} {} {} {}",
            self.ready_s,
            self.cpu_s,
            self.rss_per_grant_kb,
            self.writes_per_grant,
            self.restart_s,
            self.restart_writes
        )
    }

    fn parse(line: &str) -> Self {
        let v: Vec<f64> = line.split(' ').map(|v| v.parse().unwrap()).collect();
        Measured {
            ready_s: v[0],
            cpu_s: v[1],
            rss_per_grant_kb: v[2],
            writes_per_grant: v[3],
            restart_s: v[4],
            restart_writes: v[5] as u64,
        }
    }
}

/// Runs the controllers over `server` until `done` holds of their metrics text.
async fn controllers_until(
    shared: &tokenmint::reconcile::controllers::Shared,
    done: impl Fn(&str) -> bool,
) -> (
    Duration,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    use tokenmint::reconcile::controllers::{self, Readiness};
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn({
        let shared = shared.clone();
        async move { controllers::run(shared, &[], stop_rx, readiness).await }
    });
    while !done(&shared.metrics.encode()) {
        assert!(started.elapsed() < Duration::from_secs(3600), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (started.elapsed(), stop, task)
}

async fn operator(n: usize) -> Measured {
    use tokenmint::keyring::{Algorithm, Keyring};
    use tokenmint::reconcile::controllers::Shared;
    use tokenmint::reconcile::events::{Events, Recorder};
    let server = Server::spawn(&n.to_string());
    let metrics = Arc::new(tokenmint::reconcile::metrics::Metrics::default());
    let (_changed, changed_rx) = tokio::sync::watch::channel(0u64);
    let client = server.client();
    let reporter = kube::runtime::events::Reporter {
        controller: "tokenmint".into(),
        instance: Some("tokenmint-0".into()),
    };
    let shared = Shared {
        client: client.clone(),
        keyring: Arc::new(RwLock::new(
            Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap(),
        )),
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        // Published through the Events API, as in a cluster: their bookkeeping is counted.
        events: Events::Kube(Recorder::new(client, reporter)),
        metrics: metrics.clone(),
        clock: tokenmint::clock::Clock::system(),
        revoker: tokenmint::revocation::Revoker::disabled(),
        fence: tokenmint::fence::Fence::always(),
        consumers: true,
        restart_window: tokenmint::reconcile::restart::COALESCE_WINDOW,
        verified: Default::default(),
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let cpu_before = cpu_seconds();
    let status_line =
        "tokenmint_kube_writes_total{verb=\"apply\",resource=\"datasourcegrants/status\"} ";
    let (took, stop, task) =
        controllers_until(&shared, |text| metric(text, status_line) >= n as u64).await;
    let cpu = cpu_seconds() - cpu_before;
    // At rest: let the watch events of the last writes arrive and the allocator settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib();
    let written = writes(&metrics);
    for line in metrics.encode().lines() {
        if line.starts_with("tokenmint_kube_writes_total{") && !line.ends_with(" 0") {
            eprintln!("{n} grants: {line}");
        }
    }
    let mut measured = Measured {
        ready_s: took.as_secs_f64(),
        cpu_s: cpu,
        rss_per_grant_kb: (after.saturating_sub(before)) as f64 * 1024.0 / n as f64 / 1000.0,
        writes_per_grant: written as f64 / n as f64,
        ..Measured::default()
    };
    if std::env::var_os(EXIT_AT_REST).is_some() {
        // Under heaptrack, everything still allocated now is reported as leaked: what the
        // operator holds at rest, by allocation site.
        drop(server);
        println!("{}", measured.line());
        std::process::exit(0);
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;

    // A restart over the grants in place (fresh caches, as a new term): every grant is
    // reconciled again, and nothing needs writing.
    let reconciled = "tokenmint_reconcile_duration_seconds_count{kind=\"DatasourceGrant\"} ";
    let reconciled_before = metric(&metrics.encode(), reconciled);
    let (took, stop, task) = controllers_until(&shared, |text| {
        metric(text, reconciled) >= reconciled_before + n as u64
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    measured.restart_s = took.as_secs_f64();
    measured.restart_writes = writes(&metrics) - written;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    drop(server);
    measured
}

/// Runs the operator for `n` grants in a fresh process (its RSS and CPU are its own).
fn operator_in_child(n: usize) -> Measured {
    Measured::parse(&support::child(&format!("operator:{n}")).join(" "))
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let runtime = support::runtime();
        let parts: Vec<&str> = role.split(':').collect();
        match parts.as_slice() {
            ["server", port, grants] => {
                runtime.block_on(server(port.parse().unwrap(), grants.parse().unwrap()))
            }
            ["operator", n] => {
                let measured = runtime.block_on(operator(n.parse().unwrap()));
                println!("{}", measured.line());
            }
            _ => panic!("unknown role {role}"),
        }
        return;
    }
    let sizes = support::sizes(&[10_000, 100_000]);
    let runtime = support::runtime();
    println!("latency per request: {:?} (LATENCY_MS)\n", latency());
    println!(
        "| grants | all Ready | per grant | operator CPU per grant | RSS per grant | writes per grant | restart: all reconciled | restart writes | direct creates, 1 at a time | ratio | direct creates, 32 at a time | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let m = operator_in_child(n);
        let serial = runtime.block_on(direct_creates(n, 1)).as_secs_f64();
        let parallel = runtime.block_on(direct_creates(n, 32)).as_secs_f64();
        println!(
            "| {n} | {:.1} s | {:.2} ms | {:.2} ms | {:.2} KB | {:.2} | {:.1} s | {} | {:.1} s | {:.2} | {:.1} s | {:.2} |",
            m.ready_s,
            m.ready_s * 1000.0 / n as f64,
            m.cpu_s * 1000.0 / n as f64,
            m.rss_per_grant_kb,
            m.writes_per_grant,
            m.restart_s,
            m.restart_writes,
            serial,
            m.ready_s / serial,
            parallel,
            m.ready_s / parallel,
        );
    }
}

//! The operator at scale, over a fake API server in a separate process (so its memory is not
//! counted): N pending DatasourceGrants reconciled by the real controllers from a cold start.
//!
//!     cargo bench --bench operator_scale               # N = 1,000 and 10,000
//!     cargo bench --bench operator_scale -- 2000 5000  # other sizes
//!
//! For each N it prints:
//! - the operator's RSS per managed grant once every grant is Ready and the caches are at rest
//!   (RSS after, minus RSS before the controllers started, divided by N);
//! - the time until every grant is Ready, beside the time the same fake server takes to create
//!   N Secrets directly (one client, one request after the other, as `kubectl apply` does; and
//!   32 at a time), with the same per-request latency (`LATENCY_MS`, default 1 ms);
//! - the writes per grant.
//!
//! What the operator holds at rest, by allocation site:
//!
//!     TOKENMINT_BENCH_ROLE=operator:10000 TOKENMINT_BENCH_EXIT_AT_REST=1 \
//!         heaptrack target/release/deps/operator_scale-*
//!     heaptrack_print --print-leaks 1 heaptrack.operator_scale-*.zst
//!
//! The fake answers from memory with an artificial latency; a real API server is slower and
//! its ratios differ: say which in any figure quoted.

#[path = "../tests/support/fake_api.rs"]
#[allow(dead_code)]
mod fake_api;

use fake_api::Fake;
use serde_json::json;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

// The binary's allocator, so that RSS is what a deployment sees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROLE: &str = "TOKENMINT_BENCH_ROLE";
/// Set to end the operator process at rest, without dropping anything (for heaptrack).
const EXIT_AT_REST: &str = "TOKENMINT_BENCH_EXIT_AT_REST";

fn latency() -> Duration {
    Duration::from_millis(
        std::env::var("LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    )
}

/// The fake API server process: N grants of one ServiceKey, served over HTTP on `port`.
async fn server(port: u16, grants: usize) {
    use hyper_util::rt::TokioIo;
    let fake = Fake::default();
    fake_api::service_key(&fake);
    for i in 0..grants {
        fake_api::grant(&fake, &format!("grant-{i:05}"));
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    eprintln!("fake API server ready with {grants} grants");
    let delay = latency();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let fake = fake.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let fake = fake.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let watching = parts.uri.query().is_some_and(|q| q.contains("watch=true"));
                        if !watching {
                            tokio::time::sleep(delay).await;
                        }
                        Ok::<_, std::convert::Infallible>(fake.handle(&parts, &body))
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A value of the operator's metrics text.
fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// The fake API server process; killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(grants: usize) -> Server {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROLE, format!("server:{port}:{grants}"))
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn the fake API server");
    let server = Server { child, port };
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the fake API server did not start");
}

fn client(port: u16) -> kube::Client {
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// Time to create `n` Secrets directly, `concurrency` at a time.
async fn direct_creates(n: usize, concurrency: usize) -> Duration {
    use futures::StreamExt;
    let server = spawn_server(0);
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client(server.port), fake_api::TEAM);
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

async fn operator(n: usize) -> (Duration, f64, f64) {
    use tokenmint::keyring::{Algorithm, Keyring};
    use tokenmint::reconcile::controllers::{self, Readiness, Shared};
    let server = spawn_server(n);
    let metrics = Arc::new(tokenmint::reconcile::metrics::Metrics::default());
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let (_changed, changed_rx) = tokio::sync::watch::channel(0u64);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let shared = Shared {
        client: client(server.port),
        keyring: Arc::new(RwLock::new(
            Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap(),
        )),
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        events: tokenmint::reconcile::events::Events::memory(),
        metrics: metrics.clone(),
        clock: tokenmint::clock::Clock::system(),
        revoker: tokenmint::revocation::Revoker::disabled(),
        fence: tokenmint::fence::Fence::always(),
    };
    // Events kept in memory would grow with N: publish none for the measurement.
    let shared = Shared {
        events: tokenmint::reconcile::events::Events::Discard,
        ..shared
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let started = Instant::now();
    let task = tokio::spawn({
        let readiness = readiness.clone();
        async move { controllers::run(shared, &[], stop_rx, readiness).await }
    });
    let status_line =
        "tokenmint_kube_writes_total{verb=\"apply\",resource=\"datasourcegrants/status\"} ";
    loop {
        let text = metrics.encode();
        if metric(&text, status_line) >= n as u64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    // At rest: let the watch events of the last writes arrive and the allocator settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib();
    let text = metrics.encode();
    let writes: u64 = text
        .lines()
        .filter(|l| l.starts_with("tokenmint_kube_writes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let per_grant_kb = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64 / 1000.0;
    if std::env::var_os(EXIT_AT_REST).is_some() {
        // Under heaptrack, everything still allocated now is reported as leaked: what the
        // operator holds at rest, by allocation site.
        drop(server);
        println!(
            "result {} {per_grant_kb} {}",
            took.as_secs_f64(),
            writes as f64 / n as f64
        );
        std::process::exit(0);
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    drop(server);
    (took, per_grant_kb, writes as f64 / n as f64)
}

/// Runs the operator for `n` grants in a fresh process (its RSS is its own); returns its line.
fn operator_in_child(n: usize) -> (f64, f64, f64) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROLE, format!("operator:{n}"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("spawn the operator run");
    let text = String::from_utf8_lossy(&output.stdout);
    let values: Vec<f64> = text
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .expect("a result line")
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    (values[0], values[1], values[2])
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let parts: Vec<&str> = role.split(':').collect();
        match parts.as_slice() {
            ["server", port, grants] => {
                runtime.block_on(server(port.parse().unwrap(), grants.parse().unwrap()))
            }
            ["operator", n] => {
                let (took, per_grant, writes) = runtime.block_on(operator(n.parse().unwrap()));
                println!("result {} {per_grant} {writes}", took.as_secs_f64());
            }
            _ => panic!("unknown role {role}"),
        }
        return;
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("latency per request: {:?} (LATENCY_MS)\n", latency());
    println!(
        "| grants | RSS per grant | writes per grant | all Ready | direct creates, 1 at a time | ratio | direct creates, 32 at a time | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let (took, per_grant, writes) = operator_in_child(n);
        let took = Duration::from_secs_f64(took);
        let serial = runtime.block_on(direct_creates(n, 1));
        let parallel = runtime.block_on(direct_creates(n, 32));
        println!(
            "| {n} | {per_grant:.2} KB | {writes:.2} | {:.2} s | {:.2} s | {:.2} | {:.2} s | {:.2} |",
            took.as_secs_f64(),
            serial.as_secs_f64(),
            took.as_secs_f64() / serial.as_secs_f64(),
            parallel.as_secs_f64(),
            took.as_secs_f64() / parallel.as_secs_f64(),
        );
    }
}

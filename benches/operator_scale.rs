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

#[path = "../tests/support/fake_api.rs"]
#[allow(dead_code)]
mod fake_api;

use fake_api::Fake;
use serde_json::json;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

// The binary's allocator, so that RSS is what a deployment sees; the system allocator when
// built with TOKENMINT_BENCH_SYSTEM_ALLOC set (for heaptrack, which sees malloc only).
#[global_allocator]
static ALLOCATOR: BenchAllocator = BenchAllocator;
const SYSTEM_ALLOCATOR: bool = option_env!("TOKENMINT_BENCH_SYSTEM_ALLOC").is_some();

struct BenchAllocator;

// SAFETY: every call is forwarded to one allocator, the same for the whole run.
unsafe impl std::alloc::GlobalAlloc for BenchAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            if SYSTEM_ALLOCATOR {
                std::alloc::System.alloc(layout)
            } else {
                mimalloc::MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            if SYSTEM_ALLOCATOR {
                std::alloc::System.dealloc(ptr, layout)
            } else {
                mimalloc::MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            if SYSTEM_ALLOCATOR {
                std::alloc::System.realloc(ptr, layout, size)
            } else {
                mimalloc::MiMalloc.realloc(ptr, layout, size)
            }
        }
    }
}

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

/// CPU time (user + system) of this process so far, from /proc (clock ticks of 1/100 s, the
/// Linux default).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // After the command name in parentheses: state is field 3; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
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
    let server = spawn_server(n);
    let metrics = Arc::new(tokenmint::reconcile::metrics::Metrics::default());
    let (_changed, changed_rx) = tokio::sync::watch::channel(0u64);
    let client = client(server.port);
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
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROLE, format!("operator:{n}"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("spawn the operator run");
    let text = String::from_utf8_lossy(&output.stdout);
    Measured::parse(
        text.lines()
            .find_map(|l| l.strip_prefix("result "))
            .expect("a result line"),
    )
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
                let measured = runtime.block_on(operator(n.parse().unwrap()));
                println!("{}", measured.line());
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
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
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

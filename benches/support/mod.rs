//! What the scale benchmarks share: the binary's allocator (with a count of live heap bytes),
//! the process's RSS and CPU time, and the fake API server in a process of its own (so that
//! its memory and CPU are not counted), served over HTTP with a per-request latency. Each
//! benchmark uses part of it.
#![allow(dead_code)]

#[path = "../../tests/support/fake_api.rs"]
#[allow(dead_code)]
pub mod fake_api;

use fake_api::Fake;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

// The binary's allocator, so that RSS is what a deployment sees; the system allocator when
// built with TOKENMINT_BENCH_SYSTEM_ALLOC set (for heaptrack, which sees malloc only).
#[global_allocator]
static ALLOCATOR: BenchAllocator = BenchAllocator;
const SYSTEM_ALLOCATOR: bool = option_env!("TOKENMINT_BENCH_SYSTEM_ALLOC").is_some();
/// Bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);

struct BenchAllocator;

// SAFETY: every call is forwarded to one allocator, the same for the whole run.
unsafe impl std::alloc::GlobalAlloc for BenchAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
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
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
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
        LIVE.fetch_add(size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
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

/// Heap bytes allocated and not freed, as the program asked for them (no allocator overhead).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The environment variable that gives a child process its role.
pub const ROLE: &str = "TOKENMINT_BENCH_ROLE";
/// Set to end the operator process at rest, without dropping anything (for heaptrack).
pub const EXIT_AT_REST: &str = "TOKENMINT_BENCH_EXIT_AT_REST";

/// A multi-threaded runtime, as the binary runs.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The sizes given on the command line (`cargo bench --bench NAME -- 2000 5000`), else
/// `default`.
pub fn sizes(default: &[usize]) -> Vec<usize> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        default.to_vec()
    } else {
        sizes
    }
}

pub fn latency() -> Duration {
    Duration::from_millis(
        std::env::var("LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    )
}

/// CPU time (user + system) of this process so far, from /proc (clock ticks of 1/100 s, the
/// Linux default).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // After the command name in parentheses: state is field 3; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A value of the operator's metrics text.
pub fn metric(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Serves `fake` over HTTP on `port`, answering each request (but watches) after [`latency`].
pub async fn serve(fake: Fake, port: u16) {
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
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

/// The fake API server process; killed when dropped.
pub struct Server {
    child: std::process::Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// This executable as the fake API server, with the role `server:<port>:<what>`.
    pub fn spawn(what: &str) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(ROLE, format!("server:{port}:{what}"))
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn the fake API server");
        let server = Server { child, port };
        for _ in 0..1200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the fake API server did not start");
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://127.0.0.1:{}", self.port).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }
}

/// Runs this executable with `role` and returns the words of its `result` line.
pub fn child(role: &str) -> Vec<String> {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("spawn a child run");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("result "))
        .expect("a result line")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

//! The revocation storage at scale, over the fake API server (in process, through the kube
//! client as a replica reaches the real one):
//!
//!     cargo bench --bench revocations            # 10,000 revocations
//!     cargo bench --bench revocations -- 50000   # another count
//!
//! Writes N revocations as `POST /oauth/revoke` and the operator do (tokens expiring over the
//! next 24 hours, the default access-token lifetime; 100 ServiceKeys; half callers', half the
//! system's), then prints:
//! - the API objects they take, and their bytes per entry as stored (JSON);
//! - the memory a replica holds for them: live heap of its denylist after a list, divided by N
//!   (a counting allocator around the binary's mimalloc);
//! - the time a new replica takes from the start of its watch to honouring all of them (its
//!   first list, parsed into the denylist).
//!
//! The fake answers from memory: a real API server adds its own serving time to the last figure
//! (a list of these objects is a few MB), so quote it as measured here.

#[path = "../tests/support/fake_api.rs"]
#[allow(dead_code)]
mod fake_api;

use fake_api::Fake;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};
use tokenmint::revocation::{Denylist, Origin, Revocation, Revoker, Target};

/// The binary's allocator, counting the bytes it has handed out and not got back.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NAMESPACE: &str = "tokenmint-system";
const SERVICE_KEYS: usize = 100;

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(n));
}

async fn run(n: usize) {
    let fake = Fake::default();
    let api: Api<ConfigMap> = Api::namespaced(fake.client(), NAMESPACE);
    let writer = Revoker::Kube {
        api: api.clone(),
        denylist: Arc::new(Denylist::new(usize::MAX, usize::MAX)),
    };
    let now = jiff::Timestamp::now().as_second();
    let started = Instant::now();
    for i in 0..n {
        let revocation = Revocation {
            target: Target::Token {
                jti: uuid::Uuid::new_v4().to_string(),
                expires_at: now + 60 + (i as i64 * 86_400) / n as i64,
            },
            service_key_uid: uuid::Uuid::from_u128(i as u128 % SERVICE_KEYS as u128).to_string(),
            origin: if i % 2 == 0 {
                Origin::Caller
            } else {
                Origin::System
            },
            reason: "bench".into(),
        };
        writer.revoke(&revocation).await.unwrap();
        if i % 1_000 == 999 {
            // The fake keeps every change for watches to replay (a whole bucket each): none
            // watches yet, so drop them (an API-server restart does) to bound its memory.
            fake.restart();
        }
    }
    let written = started.elapsed();
    let objects = fake.all("", "configmaps");
    let bytes: usize = objects
        .iter()
        .map(|o| serde_json::to_vec(o).unwrap().len())
        .sum();
    let largest = objects
        .iter()
        .map(|o| serde_json::to_vec(o).unwrap().len())
        .max()
        .unwrap_or(0);
    println!("revocations: {n}");
    println!(
        "written in {:.2} s ({:.0} µs each, one merge patch each)",
        written.as_secs_f64(),
        written.as_micros() as f64 / n as f64
    );
    println!(
        "API objects: {} ConfigMaps (one per {:.0} revocations); {:.1} bytes per entry as stored, the largest object {:.0} KiB",
        objects.len(),
        n as f64 / objects.len() as f64,
        bytes as f64 / n as f64,
        largest as f64 / 1024.0
    );

    // A replica's memory for them: its denylist after a list, the list itself dropped.
    let before = LIVE.load(Ordering::Relaxed);
    let held = tokenmint::revocation::load(&api, jiff::Timestamp::now())
        .await
        .unwrap();
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(held.len(), n);
    println!(
        "memory per replica: {:.1} bytes per entry ({:.2} MiB for {n})",
        (after - before) as f64 / n as f64,
        (after - before) as f64 / (1024.0 * 1024.0)
    );
    drop(held);

    // A new replica: from the start of its watch until it honours every revocation.
    let denylist = Arc::new(Denylist::default());
    let health = tokenmint::watch::Health::default();
    let probe = health.probe("revocations", &Default::default());
    let started = Instant::now();
    let follow = tokio::spawn(tokenmint::revocation::follow(
        api.clone(),
        denylist.clone(),
        probe,
    ));
    while denylist.len() < n {
        assert!(started.elapsed() < Duration::from_secs(60), "not all held");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let honoured = started.elapsed();
    println!(
        "a new replica honours all {n} after {:.3} s (its first list and watch)",
        honoured.as_secs_f64()
    );
    follow.abort();
}

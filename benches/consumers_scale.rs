//! The memory of the consumer watch: the operator's controllers over a fake API server (in a
//! process of its own) holding N workloads, until every watch has listed and the caches are at
//! rest.
//!
//!     cargo bench --bench consumers_scale                   # N = 10,000 and 20,000
//!     cargo bench --bench consumers_scale -- 10000 100000   # other sizes
//!
//! What the operator holds at rest, by allocation site (as for `operator_scale`):
//!
//!     TOKENMINT_BENCH_SYSTEM_ALLOC=1 cargo bench --bench consumers_scale --no-run
//!     TOKENMINT_BENCH_ROLE=operator:10000:true TOKENMINT_BENCH_EXIT_AT_REST=1 \
//!         heaptrack target/release/deps/consumers_scale-*
//!
//! The workloads look like a real namespace's: Deployments (40%), the ReplicaSets they control
//! (30%, not consumers of their own), StatefulSets (10%), DaemonSets (5%), CronJobs (10%) and
//! bare Jobs (5%), in 100 namespaces, each object about 6 KB of JSON as the API server sends it
//! (labels, annotations with kubectl's last-applied copy, managedFields, two containers and an
//! init container with images, probes, resources, env, mounts, and status). Each pod template
//! reads four Secrets: its token as a volume, an API token from `env`, the namespace's database
//! credentials from `env` (init container) and a TLS Secret through a `subPath` mount.
//!
//! For each N it runs the controllers twice in fresh processes, with the workload watch
//! (`--consumers`, the default) and without, and prints per watched workload:
//! - the RSS growth from before the controllers started to rest (after minus before, over N);
//! - the live heap growth (bytes allocated and not freed, as counted by the allocator wrapper:
//!   what the caches and the index hold, without the allocator's own overhead);
//! - the same with the watch minus without it: the cost of the watch alone;
//! - the time until every watch had listed (the controllers start then).
//!
//! Then, between consecutive sizes, what the watch alone grew by per added workload: the cost
//! of one more workload, without what does not grow with N (the HTTP connections' read
//! buffers, the pages the allocator keeps after the lists).

mod support;

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fake_api::Fake;
use support::{ROLE, Server, live_bytes, rss_kib};

const NAMESPACES: usize = 100;

/// A pod template reading four Secrets (two of its own, two shared in its namespace).
fn pod_template(name: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": name, "tier": "backend", "version": "v1.24.3"},
                     "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}},
        "spec": {
            "serviceAccountName": name,
            "volumes": [
                {"name": "token", "secret": {"secretName": format!("{name}-token")}},
                {"name": "config", "configMap": {"name": format!("{name}-config")}},
                {"name": "tls", "secret": {"secretName": "tls-cert", "defaultMode": 420}}
            ],
            "initContainers": [{
                "name": "migrate", "image": "registry.example.com/platform/migrate:1.24.3",
                "args": ["--database=$(DB_HOST)", "--timeout=120s"],
                "env": [
                    {"name": "DB_HOST", "value": "postgres.databases.svc.cluster.local"},
                    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}}}
                ]
            }],
            "containers": [
                {
                    "name": "app", "image": "registry.example.com/platform/server:1.24.3",
                    "args": ["--port=8080", "--log-level=info", "--config=/etc/app/config.yaml"],
                    "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"},
                              {"containerPort": 9090, "name": "metrics", "protocol": "TCP"}],
                    "env": [
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": format!("{name}-api-token"), "key": "token"}}}
                    ],
                    "envFrom": [{"configMapRef": {"name": "common-settings"}}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                  "limits": {"cpu": "1", "memory": "512Mi"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 5},
                    "securityContext": {"runAsNonRoot": true, "readOnlyRootFilesystem": true,
                                        "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [
                        {"name": "token", "mountPath": "/var/run/tokenmint", "readOnly": true},
                        {"name": "config", "mountPath": "/etc/app"},
                        {"name": "tls", "mountPath": "/etc/tls/tls.crt", "subPath": "tls.crt"}
                    ]
                },
                {
                    "name": "proxy", "image": "registry.example.com/platform/proxy:2.8.1",
                    "args": ["--upstream=http://127.0.0.1:8080", "--listen=:8443"],
                    "ports": [{"containerPort": 8443, "name": "https", "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}}
                }
            ]
        }
    })
}

/// Workload `i` of N, as the API server sends it: `(group, resource, object)`.
fn workload(i: usize) -> (&'static str, &'static str, Value) {
    let namespace = format!("team-{:03}", i % NAMESPACES);
    let name = format!("app-{i:06}");
    let template = pod_template(&name);
    let (group, resource, kind, spec, owner) = match i % 20 {
        0..8 => (
            "apps",
            "deployments",
            "Deployment",
            json!({"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": template}),
            None,
        ),
        8..14 => (
            "apps",
            "replicasets",
            "ReplicaSet",
            json!({"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": template}),
            Some(
                json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                               "uid": format!("uid-d-{i}"), "controller": true, "blockOwnerDeletion": true}]),
            ),
        ),
        14..16 => (
            "apps",
            "statefulsets",
            "StatefulSet",
            json!({"replicas": 3, "serviceName": name, "selector": {"matchLabels": {"app": name}}, "template": template}),
            None,
        ),
        16 => (
            "apps",
            "daemonsets",
            "DaemonSet",
            json!({"selector": {"matchLabels": {"app": name}}, "template": template}),
            None,
        ),
        17..19 => (
            "batch",
            "cronjobs",
            "CronJob",
            json!({"schedule": "*/15 * * * *", "jobTemplate": {"spec": {"template": template}}}),
            None,
        ),
        _ => (
            "batch",
            "jobs",
            "Job",
            json!({"backoffLimit": 3, "template": template}),
            None,
        ),
    };
    let last_applied = json!({"apiVersion": format!("{group}/v1"), "kind": kind,
        "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    .to_string();
    let mut object = json!({
        "apiVersion": format!("{group}/v1"), "kind": kind,
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("uid-{i}"), "generation": 3,
            "creationTimestamp": "2026-11-01T09:00:00Z",
            "labels": {"app": name, "team": namespace, "app.kubernetes.io/part-of": "platform"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied,
                            "deployment.kubernetes.io/revision": "3"},
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": format!("{group}/v1"),
                 "time": "2026-11-01T09:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                              "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": format!("{group}/v1"),
                 "time": "2026-11-01T09:01:00Z", "fieldsType": "FieldsV1", "subresource": "status",
                 "fieldsV1": {"f:status": {"f:replicas": {}, "f:readyReplicas": {}, "f:observedGeneration": {}}}}
            ]
        },
        "spec": spec,
        "status": {"replicas": 2, "readyReplicas": 2, "observedGeneration": 3,
                   "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                                   "lastTransitionTime": "2026-11-01T09:01:00Z"}]}
    });
    if let Some(owner) = owner {
        object["metadata"]["ownerReferences"] = owner;
    }
    (group, resource, object)
}

/// The fake API server process: N workloads.
async fn server(port: u16, n: usize) {
    let fake = Fake::default();
    let mut bytes = 0;
    for i in 0..n {
        let (group, resource, object) = workload(i);
        bytes += object.to_string().len();
        fake.put(group, resource, object);
    }
    eprintln!(
        "fake API server ready with {n} workloads, {} bytes of JSON each on average",
        bytes / n.max(1)
    );
    support::serve(fake, port).await
}

/// What one run measured, per watched workload.
struct Measured {
    listed_s: f64,
    rss_bytes: f64,
    heap_bytes: f64,
}

/// The controllers over N workloads, with the workload watch or without.
async fn operator(n: usize, consumers: bool) -> Measured {
    use tokenmint::keyring::{Algorithm, Keyring};
    use tokenmint::reconcile::controllers::{self, Readiness, Shared};
    use tokenmint::reconcile::events::Events;
    let server = Server::spawn(&n.to_string());
    let (_changed, changed_rx) = tokio::sync::watch::channel(0u64);
    let shared = Shared {
        client: server.client(),
        keyring: Arc::new(std::sync::RwLock::new(
            Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap(),
        )),
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        events: Events::Discard,
        metrics: Arc::new(tokenmint::reconcile::metrics::Metrics::default()),
        clock: tokenmint::clock::Clock::system(),
        revoker: tokenmint::revocation::Revoker::disabled(),
        fence: tokenmint::fence::Fence::always(),
        consumers,
        restart_window: tokenmint::reconcile::restart::COALESCE_WINDOW,
        verified: Default::default(),
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss_before, heap_before) = (rss_kib(), live_bytes());
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let metrics = shared.metrics.clone();
    let task = tokio::spawn({
        let readiness = readiness.clone();
        async move { controllers::run(shared, &[], stop_rx, readiness).await }
    });
    // Readiness counts the watches registered so far: wait for the last one (the CronJobs'
    // when workloads are watched) before asking whether all of them have listed.
    let last = if consumers { "cronjobs" } else { "secrets" };
    let registered = || {
        metrics.encode().contains(&format!(
            "tokenmint_watch_restarts_total{{resource=\"{last}\"}}"
        ))
    };
    while !(registered() && readiness.is_ready()) {
        assert!(started.elapsed() < Duration::from_secs(600), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = started.elapsed();
    // At rest: the lists' pages freed, the allocator settled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_after, heap_after) = (rss_kib(), live_bytes());
    if std::env::var_os(support::EXIT_AT_REST).is_some() {
        std::process::exit(0);
    }
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    drop(server);
    Measured {
        listed_s: listed.as_secs_f64(),
        rss_bytes: rss_after.saturating_sub(rss_before) as f64 * 1024.0 / n as f64,
        heap_bytes: heap_after.saturating_sub(heap_before) as f64 / n as f64,
    }
}

fn in_child(n: usize, consumers: bool) -> Measured {
    let v: Vec<f64> = support::child(&format!("operator:{n}:{consumers}"))
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    Measured {
        listed_s: v[0],
        rss_bytes: v[1],
        heap_bytes: v[2],
    }
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let runtime = support::runtime();
        match role.split(':').collect::<Vec<_>>().as_slice() {
            ["server", port, n] => {
                runtime.block_on(server(port.parse().unwrap(), n.parse().unwrap()))
            }
            ["operator", n, consumers] => {
                let m = runtime.block_on(operator(n.parse().unwrap(), consumers.parse().unwrap()));
                println!("result {} {} {}", m.listed_s, m.rss_bytes, m.heap_bytes);
            }
            _ => panic!("unknown role {role}"),
        }
        return;
    }
    let sizes = support::sizes(&[10_000, 20_000]);
    let mut watch_alone = Vec::new();
    println!(
        "| workloads | listed in | RSS per workload | live heap per workload | without the watch: RSS, heap | the watch alone: RSS, heap |"
    );
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        let with = in_child(n, true);
        let without = in_child(n, false);
        println!(
            "| {n} | {:.1} s | {:.0} B | {:.0} B | {:.0} B, {:.0} B | {:.0} B, {:.0} B |",
            with.listed_s,
            with.rss_bytes,
            with.heap_bytes,
            without.rss_bytes,
            without.heap_bytes,
            with.rss_bytes - without.rss_bytes,
            with.heap_bytes - without.heap_bytes,
        );
        watch_alone.push((
            n as f64,
            (with.rss_bytes - without.rss_bytes) * n as f64,
            (with.heap_bytes - without.heap_bytes) * n as f64,
        ));
    }
    for pair in watch_alone.windows(2) {
        let [(n1, rss1, heap1), (n2, rss2, heap2)] = pair else {
            continue;
        };
        if n2 <= n1 {
            continue;
        }
        println!(
            "the watch alone, from {n1} to {n2} workloads: {:.0} B of RSS and {:.0} B of heap per added workload",
            (rss2 - rss1) / (n2 - n1),
            (heap2 - heap1) / (n2 - n1),
        );
    }
}

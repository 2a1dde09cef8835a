//! `tokenmint serve --manifests` as a process, from outside: a write that fails (a read-only
//! tokens directory) is counted, shown by `/readyz` naming the object while its token file is
//! past its renew time, and retried until the directory is writable again — within 5 s.
//!
//! File permissions bind only an unprivileged user: run as root, the server runs as
//! uid/gid 65534 (nobody), its directories given to that user.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MANIFESTS: &str = r#"
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: analytics, namespace: default}
spec:
  principal: {id: "1", email: a@example.com, name: a}
  dataSources: ["*"]
---
apiVersion: v1
kind: Secret
metadata: {name: analytics-service-key, namespace: default}
stringData: {key: tmk_process_test_key_0123456789abcdef}
---
apiVersion: tokenmint.dev/v1alpha1
kind: DatasourceGrant
metadata: {name: dashboards, namespace: default}
spec:
  serviceKeyRef: {name: analytics}
  dataSource: Data_3_E
  expiration: 3600
  renewBefore: 20m
"#;

/// The user the server runs as: nobody when the tests run as root (root ignores modes).
fn user() -> Option<u32> {
    (tokenmint::agent::trees::euid() == 0).then_some(65534)
}

struct Setup {
    root: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!(
            "tokenmint-process-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.join("manifests/all.yaml"), MANIFESTS).unwrap();
        for dir in ["out", "state"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        Setup { root }
    }

    /// The binary, where the server's user can reach it: a checkout under a private directory
    /// (`mktemp -d` makes it 0700) is closed to nobody, so it gets a link (else a copy) in the
    /// test's own directory.
    fn binary(&self) -> PathBuf {
        let built = PathBuf::from(env!("CARGO_BIN_EXE_tokenmint"));
        if user().is_none() {
            return built;
        }
        let reachable = self.root.join("tokenmint");
        if !reachable.exists() {
            std::fs::hard_link(&built, &reachable)
                .or_else(|_| std::fs::copy(&built, &reachable).map(drop))
                .unwrap();
        }
        reachable
    }

    fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    fn token_dir(&self) -> PathBuf {
        self.out().join("default/dashboards-token")
    }

    fn chmod(&self, path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Gives OUT and the state directory (and all under them) to the server's user.
    fn hand_over(&self) {
        let Some(uid) = user() else { return };
        for dir in ["out", "state"] {
            let status = Command::new("chown")
                .args(["-R", &format!("{uid}:{uid}")])
                .arg(self.root.join(dir))
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    fn spawn(&self) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(self.root.join("server.log")).unwrap();
        let mut command = Command::new(self.binary());
        command
            .current_dir(&self.root)
            .args(["serve", "--manifests"])
            .arg(self.root.join("manifests"))
            .arg("--tokens-dir")
            .arg(self.out())
            .arg("--state-dir")
            .arg(self.root.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(uid) = user() {
            command.uid(uid).gid(uid);
        }
        let server = Server {
            child: command.spawn().unwrap(),
            port,
            log: self.root.join("server.log"),
        };
        server.wait_for(Duration::from_secs(20), "/healthz", |status, _| {
            status == 200
        });
        server
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// `GET path`: status and body.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).ok()?;
        let status = raw.split(' ').nth(1)?.parse().ok()?;
        let body = raw.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// Polls `path` until `ok` holds; fails with the server's log after `limit`.
    fn wait_for(&self, limit: Duration, path: &str, ok: impl Fn(u16, &str) -> bool) -> String {
        let started = Instant::now();
        loop {
            if let Some((status, body)) = self.get(path)
                && ok(status, &body)
            {
                return body;
            }
            assert!(
                started.elapsed() < limit,
                "{path} not as expected within {limit:?}; last answer {:?}; log:\n{}",
                self.get(path),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(server: &Server, series: &str) -> u64 {
    let (_, text) = server.get("/metrics").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

#[test]
fn writes_to_a_read_only_tokens_directory_are_counted_shown_and_retried_until_it_is_writable() {
    let s = Setup::new("read-only");
    s.hand_over();
    s.chmod(&s.out(), 0o500);
    let server = s.spawn();
    // The grant's token could not be written: not ready, naming it; counted.
    let body = server.wait_for(Duration::from_secs(5), "/readyz", |status, _| status == 503);
    assert!(
        body.contains("DatasourceGrant default/dashboards"),
        "{body}"
    );
    for reason in ["read_only", "no_space", "conflict", "other"] {
        let series = format!("tokenmint_token_file_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&server, &series), 0, "{series}");
    }
    let permission = "tokenmint_token_file_errors_total{reason=\"permission\"}";
    assert!(metric(&server, permission) >= 1);
    // Retried with backoff, not only at the next pass: more failures pile up meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    assert!(metric(&server, permission) >= 2, "not retried");
    // Writable again: the token is there within 5 s, and the server ready.
    s.chmod(&s.out(), 0o700);
    let freed = Instant::now();
    while !s.token_dir().join("token").exists() {
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "not written within 5 s of the directory turning writable"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.wait_for(Duration::from_secs(5), "/readyz", |status, _| status == 200);
    // Retries stop once writes succeed.
    let settled = metric(&server, permission);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(metric(&server, permission), settled);
}

#[test]
fn a_token_file_past_its_renew_time_makes_the_server_unready_until_it_is_rotated() {
    use jiff::{SignedDuration, Timestamp};
    let s = Setup::new("overdue");
    // A token minted 45 minutes ago (1 h lifetime, renewed 20 min before expiry): past its
    // renew time now, still valid.
    let paths = tokenmint::agent::state::prepare(
        &s.root.join("manifests"),
        &s.out(),
        &s.root.join("state"),
    )
    .unwrap();
    let manifests = tokenmint::manifests::Manifests::load_dir(&paths.manifests).unwrap();
    let (ring, _) = tokenmint::agent::keyring(
        &manifests,
        &paths,
        "tokenmint-system",
        "tokenmint-keyring",
        tokenmint::keyring::Algorithm::HS256,
    )
    .unwrap();
    let past = Timestamp::now() - SignedDuration::from_mins(45);
    let mut agent = tokenmint::agent::Agent::new(
        paths,
        "tokenmint".into(),
        std::sync::Arc::new(ring),
        tokenmint::clock::Clock::fixed(past),
        tokenmint::revocation::Revoker::disabled(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (_, pass) = runtime.block_on(agent.pass(&manifests));
    assert_eq!(pass.minted, ["DatasourceGrant default/dashboards"]);
    let old = std::fs::read_to_string(s.token_dir().join("token")).unwrap();
    s.hand_over();
    // Its directory read-only: the rotation cannot be written.
    s.chmod(&s.token_dir(), 0o500);
    let server = s.spawn();
    let body = server.wait_for(Duration::from_secs(5), "/readyz", |status, _| status == 503);
    assert!(
        body.contains("past their renew time")
            && body.contains("DatasourceGrant default/dashboards"),
        "{body}"
    );
    // The consumer still holds the old, valid token meanwhile.
    assert_eq!(
        std::fs::read_to_string(s.token_dir().join("token")).unwrap(),
        old
    );
    s.chmod(&s.token_dir(), 0o700);
    server.wait_for(Duration::from_secs(5), "/readyz", |status, _| status == 200);
    assert_ne!(
        std::fs::read_to_string(s.token_dir().join("token")).unwrap(),
        old
    );
}

#[test]
fn a_refused_document_at_start_is_logged_and_skipped_and_the_server_starts() {
    let s = Setup::new("refused-at-start");
    std::fs::write(
        s.root.join("manifests/reports.yaml"),
        MANIFESTS
            .split("---")
            .last()
            .unwrap()
            .replace("dashboards", "reports")
            .replace("expiration: 3600", "expiration: soon"),
    )
    .unwrap();
    s.hand_over();
    let server = s.spawn();
    server.wait_for(Duration::from_secs(5), "/readyz", |status, _| status == 200);
    assert!(s.token_dir().join("token").exists(), "the good grant");
    // Log lines reach stderr in batches (every 50 ms).
    let started = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&server.log).unwrap();
        if log.contains("held") || started.elapsed() > Duration::from_secs(5) {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let refused = log
        .lines()
        .find(|l| l.contains("manifest refused"))
        .unwrap_or_else(|| panic!("not logged:\n{log}"));
    assert!(
        refused.contains(
            "reports.yaml, document 1 (DatasourceGrant default/reports): spec.expiration"
        ),
        "{refused}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("held") && l.contains("DatasourceGrant default/reports")),
        "{log}"
    );
}

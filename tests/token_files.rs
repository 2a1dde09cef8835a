//! `serve --manifests` keeps the cluster's promises over real files: names never become paths
//! outside OUT, one tree per Secret name, no write through a link, private state out of the
//! consumers' reach and in directories no one else may write, revocations that last across
//! restarts and follow deletions.

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use tokenmint::key_store::KeyStore;
use tokenmint::keyring::Expect;
use tokenmint::serve::{FromManifests, from_manifests};

const KEY: &str = "tmk_test_key_for_token_files_0123456789";

fn key(namespace: &str, name: &str, session: Option<&str>) -> String {
    let session = session
        .map(|s| format!("  sessionToken: {{secretName: {s}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: tokenmint.dev/v1alpha1\nkind: ServiceKey\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  principal: {{id: \"1\", email: a@example.com, name: a}}\n  dataSources: [\"*\"]\n{session}"
    )
}

fn key_secret(namespace: &str, name: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-service-key, namespace: {namespace}}}\nstringData: {{key: {key}}}\n"
    )
}

fn grant(namespace: &str, name: &str, data_source: &str, secret: Option<&str>) -> String {
    let secret = secret
        .map(|s| format!("  secretName: {s:?}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: tokenmint.dev/v1alpha1\nkind: DatasourceGrant\nmetadata: {{name: {name:?}, namespace: {namespace:?}}}\nspec:\n  serviceKeyRef: {{name: analytics}}\n  dataSource: {data_source}\n{secret}"
    )
}

/// A working directory: manifests, OUT and the state directory side by side.
struct Setup {
    root: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!(
            "tokenmint-files-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        Setup { root }
    }

    fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    fn out(&self) -> PathBuf {
        self.root.join("out")
    }

    fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    fn manifest(&self, file: &str, text: &str) {
        std::fs::write(self.manifests().join(file), text).unwrap();
    }

    fn args(&self, out: &Path, state: &Path) -> tokenmint::cli::ServeArgs {
        use clap::Parser;
        let cli = tokenmint::cli::Cli::try_parse_from([
            "tokenmint",
            "serve",
            "--manifests",
            self.manifests().to_str().unwrap(),
            "--tokens-dir",
            out.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .unwrap();
        match cli.command {
            tokenmint::cli::Command::Serve(args) => args,
            _ => unreachable!(),
        }
    }

    async fn start(&self) -> Result<FromManifests, String> {
        from_manifests(&self.manifests(), &self.args(&self.out(), &self.state()))
            .await
            .map_err(|e| e.to_string())
    }

    fn token(&self, namespace: &str, secret: &str) -> Option<String> {
        std::fs::read_to_string(self.out().join(namespace).join(secret).join("token")).ok()
    }

    /// Every file and link under the root, relative to it.
    fn everything(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                out.push(path.strip_prefix(root).unwrap().display().to_string());
                if entry.file_type().unwrap().is_dir() {
                    walk(&path, root, out);
                }
            }
        }
        let mut all = Vec::new();
        walk(&self.root, &self.root, &mut all);
        all
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn claims(started: &FromManifests, token: &str) -> Value {
    started
        .store
        .keyring()
        .unwrap()
        .verify(
            token,
            Expect {
                issuer: "tokenmint",
                require_exp: true,
            },
        )
        .unwrap()
}

/// One REST call; returns the status and the JSON body.
async fn call(started: &FromManifests, path: &str, auth: &str, form: &str) -> (u16, Value) {
    let app = tokenmint::http::router(started.state.clone());
    let request = Request::post(path)
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap();
    let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A token from the REST routes, with the ServiceKey's key: they answer.
async fn access_token(started: &FromManifests) -> String {
    let path = "/api/admin/v1/api_token/get_access_token";
    let (status, body) = call(started, path, KEY, "").await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// Whether introspection says `token` is active.
async fn active(started: &FromManifests, token: &str) -> bool {
    let (_, answer) = call(started, "/oauth/introspect", KEY, &format!("token={token}")).await;
    answer["active"] == true
}

#[tokio::test]
async fn names_never_become_paths_outside_the_tokens_directory() {
    let s = Setup::new("traversal");
    let absolute = s.root.join("absolute-target");
    let base = format!(
        "{}---\n{}---\n{}---\n{}",
        key("team-a", "analytics", None),
        key_secret("team-a", "analytics", KEY),
        key("team-b", "gen", None),
        grant("team-a", "dashboards", "d", None)
    );
    s.manifest("a.yaml", &base);
    let attacks = [
        (
            grant("team-a", "up", "d", Some("../../escaped")),
            "spec.secretName",
        ),
        (
            grant("team-a", "abs", "d", Some(absolute.to_str().unwrap())),
            "spec.secretName",
        ),
        (
            grant("team-a", "encoded", "d", Some("..%2F..%2Fescaped")),
            "spec.secretName",
        ),
        (
            grant("team-a", "cross", "d", Some("../team-b/gen-service-key")),
            "spec.secretName",
        ),
        (grant("../x", "ns", "d", None), "metadata.namespace"),
        (grant("team-a", "../../named", "d", None), "metadata.name"),
    ];
    let attack_yaml: Vec<&str> = attacks.iter().map(|(y, _)| y.as_str()).collect();
    s.manifest("b.yaml", &attack_yaml.join("---\n"));
    // Refused, each document named with its field (as `serve` logs them, at start and while
    // running) and skipped: everything else starts.
    let mut live = tokenmint::manifests::LiveManifests::new().unwrap();
    let refused: Vec<String> = (live.reload(&s.manifests()).unwrap().iter())
        .map(ToString::to_string)
        .collect();
    assert_eq!(refused.len(), attacks.len(), "{refused:?}");
    for (i, (_, field)) in attacks.iter().enumerate() {
        let document = format!("b.yaml, document {} (", i + 1);
        let line = refused
            .iter()
            .find(|l| l.contains(&document))
            .unwrap_or_else(|| panic!("document {} not refused: {refused:?}", i + 1));
        assert!(line.contains(&format!("{field}: Invalid value")), "{line}");
    }
    let started = s.start().await.unwrap();
    assert!(s.token("team-a", "dashboards-token").is_some());
    let team_b_key = std::fs::read(s.out().join("team-b/gen-service-key/key")).unwrap();
    // Running, the same documents are refused while the others keep working.
    let mut agent_paths = started.paths.clone();
    agent_paths.manifests = s.manifests();
    let ring = started.store.keyring().unwrap();
    let mut agent = tokenmint::agent::Agent::new(
        agent_paths,
        "tokenmint".into(),
        ring,
        tokenmint::clock::Clock::system(),
        tokenmint::revocation::Revoker::disabled(),
    );
    let (_, pass) = agent.pass(&live.merged()).await;
    assert!(pass.failed.is_empty(), "{pass:?}");
    assert!(s.token("team-a", "dashboards-token").is_some());
    assert_eq!(
        std::fs::read(s.out().join("team-b/gen-service-key/key")).unwrap(),
        team_b_key,
        "team-b's key was replaced"
    );
    // Nothing anywhere but the manifests, OUT and the state directory.
    for path in s.everything() {
        assert!(
            ["manifests", "out", "state"]
                .iter()
                .any(|top| path == *top || path.starts_with(&format!("{top}/"))),
            "written outside OUT: {path}"
        );
    }
    assert!(!absolute.exists());
}

#[tokio::test]
async fn two_objects_naming_one_secret_the_first_keeps_it_the_other_is_a_conflict() {
    let s = Setup::new("duplicate");
    let first = grant("default", "first", "alpha", Some("shared-token"));
    let second = grant("default", "second", "beta", Some("shared-token"));
    let base = format!(
        "{}---\n{}",
        key("default", "analytics", Some("analytics-session")),
        key_secret("default", "analytics", KEY)
    );
    s.manifest("a.yaml", &format!("{base}---\n{first}---\n{second}"));
    let started = s.start().await.unwrap();
    let token = s.token("default", "shared-token").unwrap();
    assert_eq!(
        claims(&started, &token)["identity"]["source_role"]["ds"],
        "alpha"
    );
    drop(started);
    // Reordered: the grant whose files are there keeps them (as an existing Secret keeps its
    // owner); the other is still the conflict.
    s.manifest("a.yaml", &format!("{base}---\n{second}---\n{first}"));
    let started = s.start().await.unwrap();
    assert_eq!(s.token("default", "shared-token").unwrap(), token);
    assert_eq!(
        started
            .state
            .metrics
            .encode()
            .unwrap()
            .lines()
            .find(|l| l.starts_with("tokenmint_token_file_errors_total{reason=\"conflict\"}")),
        Some("tokenmint_token_file_errors_total{reason=\"conflict\"} 1")
    );
    drop(started);
    // A grant naming the Secret of a ServiceKey's declared key, or of its session token.
    let taken = [
        grant("default", "keyname", "alpha", Some("analytics-service-key")),
        grant("default", "session", "alpha", Some("analytics-session")),
    ];
    s.manifest(
        "a.yaml",
        &format!("{base}---\n{}---\n{}", taken[0], taken[1]),
    );
    let started = s.start().await.unwrap();
    let errors = started.state.metrics.encode().unwrap();
    assert!(
        errors.contains("tokenmint_token_file_errors_total{reason=\"conflict\"} 2"),
        "{errors}"
    );
    assert!(s.token("default", "analytics-service-key").is_none());
    let session = s.token("default", "analytics-session").unwrap();
    assert_eq!(
        claims(&started, &session)["service_key"],
        "default/analytics"
    );
}

#[tokio::test]
async fn a_symlink_where_tokenmint_keeps_its_trees_is_a_conflict_never_followed() {
    let s = Setup::new("symlink");
    s.manifest(
        "a.yaml",
        &format!(
            "{}---\n{}",
            key("default", "analytics", None),
            grant("default", "dashboards", "d", None)
        ),
    );
    let elsewhere = s.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(s.out()).unwrap();
    std::fs::set_permissions(s.out(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // OUT/default is a link to a directory elsewhere.
    symlink(&elsewhere, s.out().join("default")).unwrap();
    let started = s.start().await.unwrap();
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through the link"
    );
    let metrics = started.state.metrics.encode().unwrap();
    assert!(
        metrics.contains("tokenmint_token_file_errors_total{reason=\"conflict\"} 2"),
        "the key and the grant: {metrics}"
    );
    drop(started);
    // OUT/default/dashboards-token a link to a directory elsewhere: the same.
    std::fs::remove_file(s.out().join("default")).unwrap();
    std::fs::create_dir(s.out().join("default")).unwrap();
    std::fs::set_permissions(
        s.out().join("default"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    symlink(&elsewhere, s.out().join("default/dashboards-token")).unwrap();
    let started = s.start().await.unwrap();
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through the link"
    );
    assert!(s.out().join("default/analytics-service-key/key").exists());
    let metrics = started.state.metrics.encode().unwrap();
    assert!(
        metrics.contains("tokenmint_token_file_errors_total{reason=\"conflict\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_temporary_file_link_planted_in_the_state_directory_is_never_written_through() {
    let s = Setup::new("planted");
    s.manifest("a.yaml", &key("default", "analytics", None));
    let victim = s.root.join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::create_dir_all(s.state()).unwrap();
    std::fs::set_permissions(s.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // The temporary names a predictable writer would use.
    for name in ["keyring.tmp", "keyring.json.tmp", ".keyring.json.tmp"] {
        symlink(&victim, s.state().join(name)).unwrap();
    }
    s.start().await.unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let keyring = s.state().join("keyring.json");
    let meta = std::fs::symlink_metadata(&keyring).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_state_directory_inside_the_tokens_directory_is_refused_at_start() {
    let s = Setup::new("nested");
    s.manifest("a.yaml", &key("default", "analytics", None));
    let inside = s.args(&s.out(), &s.out().join(".tokenmint"));
    let error = from_manifests(&s.manifests(), &inside)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("--state-dir") && error.contains("is inside --tokens-dir"),
        "{error}"
    );
    let around = s.args(&s.state().join("out"), &s.state());
    let error = from_manifests(&s.manifests(), &around)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("is inside --state-dir"), "{error}");
    // Through a link to OUT, too.
    std::fs::create_dir_all(s.out()).unwrap();
    symlink(s.out(), s.root.join("link")).unwrap();
    let linked = s.args(&s.out(), &s.root.join("link/state"));
    let error = from_manifests(&s.manifests(), &linked)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("is inside --tokens-dir"), "{error}");
    assert!(!s.out().join("state").exists());
}

#[tokio::test]
async fn directories_others_may_write_in_or_own_are_refused_at_start() {
    let s = Setup::new("modes");
    s.manifest("a.yaml", &key("default", "analytics", None));
    std::fs::create_dir_all(s.out()).unwrap();
    std::fs::set_permissions(s.out(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let error = s.start().await.err().unwrap();
    assert!(
        error.contains("--tokens-dir")
            && error.contains(s.out().to_str().unwrap())
            && error.contains("writable by group or others")
            && error.contains("mode 0770"),
        "{error}"
    );
    assert!(!s.out().join("default").exists(), "wrote before refusing");
    std::fs::set_permissions(s.out(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir_all(s.state()).unwrap();
    std::fs::set_permissions(s.state(), std::fs::Permissions::from_mode(0o703)).unwrap();
    let error = s.start().await.err().unwrap();
    assert!(
        error.contains("--state-dir") && error.contains("mode 0703"),
        "{error}"
    );
    std::fs::set_permissions(s.state(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Someone else's directory (only root can make one to test with).
    if tokenmint::agent::trees::euid() == 0 {
        std::os::unix::fs::chown(s.state(), Some(65534), Some(65534)).unwrap();
        let error = s.start().await.err().unwrap();
        assert!(error.contains("owned by uid 65534"), "{error}");
        std::os::unix::fs::chown(s.state(), Some(0), Some(0)).unwrap();
    }
    s.start().await.unwrap();
}

#[tokio::test]
async fn a_keyring_at_the_old_place_inside_the_tokens_directory_moves_to_the_state_directory() {
    let s = Setup::new("migrate");
    s.manifest(
        "a.yaml",
        &format!(
            "{}---\n{}---\n{}",
            key("default", "analytics", None),
            key_secret("default", "analytics", KEY),
            grant("default", "dashboards", "d", None)
        ),
    );
    // What an earlier version left: OUT/.tokenmint/keyring.json, and a token signed with it.
    let before = s.start().await.unwrap();
    let token = s.token("default", "dashboards-token").unwrap();
    drop(before);
    std::fs::create_dir_all(s.out().join(".tokenmint")).unwrap();
    std::fs::rename(
        s.state().join("keyring.json"),
        s.out().join(".tokenmint/keyring.json"),
    )
    .unwrap();
    let after = s.start().await.unwrap();
    assert!(
        !s.out().join(".tokenmint").exists(),
        "the old state directory stays"
    );
    assert!(s.state().join("keyring.json").exists());
    claims(&after, &token);
    assert_eq!(
        s.token("default", "dashboards-token").unwrap(),
        token,
        "re-minted"
    );
}

#[tokio::test]
async fn a_revocation_survives_a_restart() {
    let s = Setup::new("revoke-restart");
    s.manifest(
        "a.yaml",
        &format!(
            "{}---\n{}",
            key("default", "analytics", None),
            key_secret("default", "analytics", KEY)
        ),
    );
    let started = s.start().await.unwrap();
    let token = access_token(&started).await;
    assert!(active(&started, &token).await);
    let form = format!("token={token}");
    let (status, _) = call(&started, "/oauth/revoke", KEY, &form).await;
    assert_eq!(status, 200);
    drop(started);
    let restarted = s.start().await.unwrap();
    let (_, after) = call(&restarted, "/oauth/introspect", KEY, &form).await;
    assert_eq!(after, serde_json::json!({"active": false}));
    // And the token itself is refused.
    let (status, _) = call(&restarted, "/api/admin/v1/get_datasource_token", &token, "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_object_removed_or_renamed_has_its_token_revoked_even_while_stopped() {
    let s = Setup::new("delete-revokes");
    let base = format!(
        "{}---\n{}",
        key("default", "analytics", None),
        key_secret("default", "analytics", KEY)
    );
    s.manifest(
        "a.yaml",
        &format!("{base}---\n{}", grant("default", "dashboards", "d", None)),
    );
    let started = s.start().await.unwrap();
    let jti = |started: &FromManifests, token: &str| {
        claims(started, token)["jti"].as_str().unwrap().to_owned()
    };
    let token = s.token("default", "dashboards-token").unwrap();
    let first = jti(&started, &token);
    drop(started);
    // Renamed while stopped (same Secret): the old object's token is revoked, a new one minted.
    s.manifest(
        "a.yaml",
        &format!(
            "{base}---\n{}",
            grant("default", "boards", "d", Some("dashboards-token"))
        ),
    );
    let started = s.start().await.unwrap();
    assert!(started.state.denylist.is_revoked(&first));
    let renamed = s.token("default", "dashboards-token").unwrap();
    let second = jti(&started, &renamed);
    assert_ne!(second, first);
    assert!(!started.state.denylist.is_revoked(&second));
    drop(started);
    // Removed while stopped: revoked at the next start, its files gone.
    s.manifest("a.yaml", &base);
    let started = s.start().await.unwrap();
    assert!(started.state.denylist.is_revoked(&second));
    assert!(
        started.state.denylist.is_revoked(&first),
        "kept across restarts"
    );
    assert!(s.token("default", "dashboards-token").is_none());
}

/// What a consumer sees in a token tree, and which version it is: any write changes it.
fn tree_state(dir: &Path) -> (PathBuf, String, String) {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    (
        std::fs::read_link(dir.join("..data")).unwrap(),
        read("token"),
        read("expires-at"),
    )
}

#[tokio::test]
async fn a_document_refused_at_start_holds_its_object_and_everything_else_starts() {
    let s = Setup::new("held-at-start");
    let base = format!(
        "{}---\n{}---\n{}",
        key("default", "analytics", None),
        key_secret("default", "analytics", KEY),
        grant("default", "dashboards", "d", None)
    );
    s.manifest("a.yaml", &base);
    let reports = grant("default", "reports", "r", None);
    s.manifest("b.yaml", &reports);
    let started = s.start().await.unwrap();
    let held = s.out().join("default/reports-token");
    let before = tree_state(&held);
    let jti = claims(&started, &before.1)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(started);

    // A typo in b.yaml while stopped (a reboot, an upgrade): refused at the next start, and
    // with no admitted version, `reports` is held. A grant that would take its Secret over is
    // a conflict, as against a Secret its stored owner still holds.
    let typo = format!("{reports}  expiration: soon\n");
    let thief = grant("default", "thief", "t", Some("reports-token"));
    // A ServiceKey whose key Secret is refused: no key is generated in that Secret's place.
    let bad_key = key_secret("default", "other", KEY).replace("stringData", "data");
    let other = key("default", "other", None);
    s.manifest(
        "b.yaml",
        &format!("{typo}---\n{thief}---\n{other}---\n{bad_key}"),
    );
    std::fs::remove_dir_all(s.out().join("default/dashboards-token")).unwrap();
    let started = s
        .start()
        .await
        .expect("one refused document stopped the start");
    // Everything else starts: the good grant is minted, the routes answer, ready.
    let dashboards = s.token("default", "dashboards-token").expect("not minted");
    assert_eq!(
        claims(&started, &dashboards)["identity"]["source_role"]["ds"],
        "d"
    );
    access_token(&started).await;
    assert_eq!(started.store.readiness(), Ok(()));
    // The held object's files are exactly as they were, and its token is not revoked.
    assert_eq!(tree_state(&held), before, "the held tree was rewritten");
    assert!(!started.state.denylist.is_revoked(&jti), "revoked");
    assert!(active(&started, &before.1).await, "inactive");
    let metrics = started.state.metrics.encode().unwrap();
    assert!(
        metrics.contains("tokenmint_token_file_errors_total{reason=\"conflict\"} 1"),
        "the thief: {metrics}"
    );
    assert!(!s.out().join("default/other-service-key").exists());
    drop(started);

    // Fixed: handled normally. Unchanged, its token is current and stays.
    s.manifest("b.yaml", &reports);
    let started = s.start().await.unwrap();
    assert_eq!(tree_state(&held), before);
    drop(started);
    // Edited validly: rotated, as any edit.
    s.manifest("b.yaml", &grant("default", "reports", "r2", None));
    let started = s.start().await.unwrap();
    let rotated = s.token("default", "reports-token").unwrap();
    assert_eq!(
        claims(&started, &rotated)["identity"]["source_role"]["ds"],
        "r2"
    );
    let second = claims(&started, &rotated)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(started);

    // Refused again, then removed while held: deleted as usual, revoked and retired.
    s.manifest("b.yaml", &typo.replace("dataSource: r", "dataSource: r2"));
    let started = s.start().await.unwrap();
    assert_eq!(s.token("default", "reports-token").unwrap(), rotated);
    assert!(!started.state.denylist.is_revoked(&second));
    drop(started);
    std::fs::remove_file(s.manifests().join("b.yaml")).unwrap();
    let started = s.start().await.unwrap();
    assert!(started.state.denylist.is_revoked(&second), "not revoked");
    assert!(!held.exists(), "not retired");
}

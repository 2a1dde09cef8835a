//! The token-file agent of `serve --manifests`: tokens kept in files as a pod sees its token
//! Secret, rotated at the renew time (a test clock), left alone across restarts, generated keys
//! persisted and never rewritten, live edits of the manifests, broken manifests, foreign files.

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokenmint::agent::{self, Agent, Paths};
use tokenmint::clock::Clock;
use tokenmint::key_store::{KeyStore, NotReady, SharedKeyStore};
use tokenmint::keyring::{Algorithm, Expect, Keyring};
use tokenmint::manifests::LiveManifests;
use tokenmint::revocation::{Denylist, Revoker};

const KEY_NO_SECRET: &str = r#"
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: analytics, namespace: default}
spec:
  principal: {id: "1", email: jcw@example.com, name: jcw, orgId: "1", orgName: Main Org.}
  dataSources: [Data_3_E, Other]
  workspaces: [w1]
  sessionToken: {secretName: analytics-session, ttl: 1h}
"#;

fn grant(data_source: &str, expiration: i64) -> String {
    format!(
        r#"
apiVersion: tokenmint.dev/v1alpha1
kind: DatasourceGrant
metadata: {{name: dashboards, namespace: default}}
spec:
  serviceKeyRef: {{name: analytics}}
  dataSource: {data_source}
  expiration: {expiration}
  renewBefore: 20m
"#
    )
}

struct Setup {
    root: PathBuf,
    paths: Paths,
}

impl Setup {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!(
            "tokenmint-agent-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        // As `serve --manifests` makes them: checked, created 0700.
        let paths = agent::state::prepare(
            &root.join("manifests"),
            &root.join("tokens"),
            &root.join("state"),
        )
        .unwrap();
        Setup { root, paths }
    }

    fn manifest(&self, file: &str, text: &str) {
        std::fs::write(self.paths.manifests.join(file), text).unwrap();
    }

    fn live(&self) -> LiveManifests {
        let mut live = LiveManifests::new().unwrap();
        assert!(live.reload(&self.paths.manifests).unwrap().is_empty());
        live
    }

    /// An agent as `serve --manifests` builds one: the keyring from the state directory.
    fn agent(&self, clock: Clock) -> Agent {
        let mut live = LiveManifests::new().unwrap();
        live.reload(&self.paths.manifests).unwrap();
        let manifests = live.merged();
        let (ring, _) = agent::keyring(
            &manifests,
            &self.paths,
            "tokenmint-system",
            "tokenmint-keyring",
            Algorithm::HS256,
        )
        .unwrap();
        Agent::new(
            self.paths.clone(),
            "tokenmint".into(),
            Arc::new(ring),
            clock,
            Revoker::Memory(Arc::new(Denylist::default())),
        )
    }

    fn dir(&self, secret: &str) -> PathBuf {
        self.paths.tokens.join("default").join(secret)
    }

    fn token(&self, secret: &str) -> String {
        std::fs::read_to_string(self.dir(secret).join("token")).unwrap()
    }

    /// The version directory `..data` points at: changes with every write.
    fn version(&self, secret: &str) -> PathBuf {
        std::fs::read_link(self.dir(secret).join("..data")).unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// When the tests with a clock start. The keyring checks exp/nbf against the system clock: 45
/// minutes in the past, a renew time (exp - 20m - jitter of a 1 h token) is before the real now.
fn forty_five_minutes_ago() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap() - SignedDuration::from_mins(45)
}

fn claims(ring: &Keyring, token: &str) -> Value {
    ring.verify(
        token,
        Expect {
            issuer: "tokenmint",
            require_exp: true,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_are_kept_rotated_at_their_renew_time_and_left_alone_across_restarts() {
    let s = Setup::new("rotate");
    s.manifest("key.yaml", KEY_NO_SECRET);
    s.manifest("grant.yaml", &grant("Data_3_E", 3600));
    let start = forty_five_minutes_ago();
    let clock = Clock::fixed(start);
    let mut agent = s.agent(clock.clone());
    let (_, first) = agent.pass(&s.live().merged()).await;
    assert_eq!(
        first.minted,
        [
            "ServiceKey default/analytics",
            "DatasourceGrant default/dashboards",
            "ServiceKey default/analytics session"
        ]
    );
    let token = s.token("dashboards-token");
    let c = claims(&agent.keyring, &token);
    assert_eq!(c["identity"]["source_role"]["ds"], "Data_3_E");
    assert_eq!(c["service_key"], "default/analytics");
    assert_eq!(
        std::fs::read_to_string(s.dir("dashboards-token").join("expires-at")).unwrap(),
        Timestamp::from_second(start.as_second() + 3600)
            .unwrap()
            .to_string()
    );
    let renew_at = first.next_renewal.unwrap();
    assert!(renew_at <= start + SignedDuration::from_mins(40));

    // Before the renew time: nothing written.
    let version = s.version("dashboards-token");
    clock.set(renew_at - SignedDuration::from_secs(1));
    let (_, quiet) = agent.pass(&s.live().merged()).await;
    assert!(quiet.minted.is_empty(), "{quiet:?}");
    assert_eq!(s.version("dashboards-token"), version);

    // A restart (a new agent, the keyring from the state directory): nothing re-minted.
    let mut restarted = s.agent(clock.clone());
    assert_eq!(restarted.keyring.to_json(), agent.keyring.to_json());
    let (_, after_restart) = restarted.pass(&s.live().merged()).await;
    assert!(after_restart.minted.is_empty(), "{after_restart:?}");
    assert_eq!(s.version("dashboards-token"), version);
    // The token from before the restart still verifies.
    claims(&restarted.keyring, &token);

    // At the renew time: a new token, the old one still valid until it expires.
    clock.set(renew_at);
    let (_, rotated) = restarted.pass(&s.live().merged()).await;
    assert_eq!(rotated.minted, ["DatasourceGrant default/dashboards"]);
    let new = s.token("dashboards-token");
    assert_ne!(claims(&restarted.keyring, &new)["jti"], c["jti"]);
    claims(&restarted.keyring, &token);
}

#[tokio::test]
async fn a_generated_key_is_persisted_never_rewritten_and_accepted_by_the_routes() {
    let s = Setup::new("key");
    s.manifest("key.yaml", KEY_NO_SECRET);
    let mut agent = s.agent(Clock::system());
    let (index, _) = agent.pass(&s.live().merged()).await;
    let key_dir = s.dir("analytics-service-key");
    let key = std::fs::read_to_string(key_dir.join("key")).unwrap();
    assert!(key.starts_with("tmk_") && key.len() > 40);
    assert_eq!(
        std::fs::read_to_string(key_dir.join("username")).unwrap(),
        "jcw"
    );
    assert_eq!(
        index.by_key(key.as_bytes()).unwrap().reference(),
        "default/analytics"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(key_dir.join("key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Restarted, and with a new user name: the same key, the new name.
    s.manifest(
        "key.yaml",
        &KEY_NO_SECRET.replace("name: jcw", "name: jeff"),
    );
    let mut restarted = s.agent(Clock::system());
    let (index, _) = restarted.pass(&s.live().merged()).await;
    assert_eq!(std::fs::read_to_string(key_dir.join("key")).unwrap(), key);
    assert_eq!(
        std::fs::read_to_string(key_dir.join("username")).unwrap(),
        "jeff"
    );
    assert!(index.by_key(key.as_bytes()).is_some());

    // The routes accept it.
    let store = Arc::new(SharedKeyStore::fixed(
        index,
        Keyring::from_json(&restarted.keyring.to_json()).unwrap(),
    ));
    assert!(store.readiness().is_ok());
    let app = tokenmint::http::router(tokenmint::http::AppState::new(store, "tokenmint"));
    let response = tower::ServiceExt::oneshot(
        app,
        axum::http::Request::post("/api/admin/v1/api_token/get_access_token")
            .header("authorization", format!("Bearer {key}"))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_file_tree_not_written_by_tokenmint_is_never_overwritten() {
    let s = Setup::new("foreign");
    s.manifest("key.yaml", KEY_NO_SECRET);
    s.manifest("grant.yaml", &grant("Data_3_E", 3600));
    let theirs = s.dir("dashboards-token");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("token"), "someone else's").unwrap();
    let mut agent = s.agent(Clock::system());
    let (_, pass) = agent.pass(&s.live().merged()).await;
    assert!(
        pass.failed
            .contains(&"DatasourceGrant default/dashboards".to_owned())
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("token")).unwrap(),
        "someone else's"
    );
    // Deleting the grant does not remove their files either.
    std::fs::remove_file(s.paths.manifests.join("grant.yaml")).unwrap();
    agent.pass(&s.live().merged()).await;
    assert!(theirs.join("token").exists());
}

#[tokio::test]
async fn a_broken_manifest_keeps_the_last_good_state_and_names_the_problem() {
    let s = Setup::new("broken");
    s.manifest("key.yaml", KEY_NO_SECRET);
    s.manifest("grant.yaml", &grant("Data_3_E", 3600));
    let mut live = s.live();
    assert_eq!(live.merged().datasource_grants.len(), 1);
    s.manifest(
        "grant.yaml",
        &grant("Data_3_E", 3600).replace("expiration: 3600", "expiration: soon"),
    );
    let errors = live.reload(&s.paths.manifests).unwrap();
    assert_eq!(errors.len(), 1);
    let message = errors[0].to_string();
    assert!(
        message.contains("grant.yaml")
            && message.contains("document 1")
            && message.contains("expiration"),
        "{message}"
    );
    // The grant as it was last read.
    let kept = live.merged();
    assert_eq!(kept.datasource_grants.len(), 1);
    assert_eq!(kept.datasource_grants[0].spec.expiration, 3600);
}

#[tokio::test]
async fn a_refused_edit_keeps_the_objects_last_good_version_and_the_others_work() {
    let s = Setup::new("refused-edit");
    s.manifest(
        "a.yaml",
        &format!("{KEY_NO_SECRET}---\n{}", grant("Data_3_E", 3600)),
    );
    let other = |name: &str, expiration: &str| {
        grant("Other", 3600)
            .replace("name: dashboards", &format!("name: {name}"))
            .replace("expiration: 3600", &format!("expiration: {expiration}"))
    };
    s.manifest("b.yaml", &other("reports", "3600"));
    let mut live = s.live();
    // The edit of `reports` is refused (out of bounds); `audit`, new in the same file, is not.
    s.manifest(
        "b.yaml",
        &format!(
            "{}---\n{}",
            other("reports", "50000"),
            other("audit", "3000")
        ),
    );
    let refused = live.reload(&s.paths.manifests).unwrap();
    let messages: Vec<String> = refused.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("b.yaml, document 1 (DatasourceGrant default/reports): spec.expiration: Invalid value: 50000")
            && messages[0].contains("the last admitted version stays in effect"),
        "{}",
        messages[0]
    );
    let grants = live.merged().datasource_grants;
    let expiration = |name: &str| {
        grants
            .iter()
            .find(|g| g.metadata.name.as_deref() == Some(name))
            .map(|g| g.spec.expiration)
    };
    assert_eq!(expiration("reports"), Some(3600), "the last good version");
    assert_eq!(expiration("audit"), Some(3000));
    assert_eq!(expiration("dashboards"), Some(3600));

    // Moved to another file and refused there: still the last good version (kept by object,
    // not by file). A second declaration of `dashboards` is refused, naming the first.
    s.manifest("b.yaml", &other("audit", "3000"));
    s.manifest(
        "c.yaml",
        &format!("{}---\n{}", other("reports", "soon"), grant("Other", 3000)),
    );
    let messages: Vec<String> = live
        .reload(&s.paths.manifests)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("c.yaml, document 1 (DatasourceGrant default/reports)"));
    assert!(
        messages[1].contains("c.yaml, document 2 (DatasourceGrant default/dashboards): DatasourceGrant default/dashboards is already declared in")
            && messages[1].contains("a.yaml, document 2"),
        "{}",
        messages[1]
    );
    let kept = live.merged();
    let dashboards = kept
        .datasource_grants
        .iter()
        .find(|g| g.metadata.name.as_deref() == Some("dashboards"))
        .unwrap();
    assert_eq!(
        dashboards.spec.data_source, "Data_3_E",
        "the first declaration"
    );
    assert!(
        kept.datasource_grants
            .iter()
            .any(|g| g.metadata.name.as_deref() == Some("reports") && g.spec.expiration == 3600)
    );
    // Removed from every file: gone.
    s.manifest("c.yaml", "");
    live.reload(&s.paths.manifests).unwrap();
    assert_eq!(live.merged().datasource_grants.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_in_the_manifests_take_effect_within_two_seconds() {
    let s = Setup::new("live");
    s.manifest("key.yaml", KEY_NO_SECRET);
    s.manifest("grant.yaml", &grant("Data_3_E", 3600));
    let live = s.live();
    let mut agent = s.agent(Clock::system());
    let ring = Keyring::from_json(&agent.keyring.to_json()).unwrap();
    let Revoker::Memory(denylist) = agent.revoker.clone() else {
        panic!("a memory revoker")
    };
    let (index, first) = agent.pass(&live.merged()).await;
    let store = Arc::new(SharedKeyStore::fixed(
        index,
        Keyring::from_json(&ring.to_json()).unwrap(),
    ));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(agent::run(
        agent,
        live,
        store,
        Arc::new(tokenmint::http::metrics::Metrics::default()),
        first,
        stop_rx,
    ));
    let within = |what: &'static str, check: Box<dyn Fn() -> bool + Send>| async move {
        let started = tokio::time::Instant::now();
        while !check() {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "not within 2 s: {what}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    // A new data source: a new token.
    s.manifest("grant.yaml", &grant("Other", 3600));
    let dir = s.dir("dashboards-token");
    let ring2 = Keyring::from_json(&ring.to_json()).unwrap();
    within(
        "the edited grant",
        Box::new(move || {
            std::fs::read_to_string(dir.join("token"))
                .is_ok_and(|t| claims(&ring2, &t)["identity"]["source_role"]["ds"] == "Other")
        }),
    )
    .await;
    // Deleted: its token revoked, its directory gone.
    let token = s.token("dashboards-token");
    let jti = claims(&ring, &token)["jti"].as_str().unwrap().to_owned();
    assert!(!denylist.is_revoked(&jti));
    std::fs::remove_file(s.paths.manifests.join("grant.yaml")).unwrap();
    let dir = s.dir("dashboards-token");
    within("the deleted grant's files", Box::new(move || !dir.exists())).await;
    assert!(
        denylist.is_revoked(&jti),
        "the deleted grant's token is still valid"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn reading_the_manifests_is_no_change_but_writing_one_is() {
    let s = Setup::new("dir-watch");
    s.manifest("key.yaml", KEY_NO_SECRET);
    let (_watcher, mut changed) = agent::dir_watch::watch(&s.paths.manifests).unwrap();
    assert_eq!(changed.recv().await, Some(()), "the signal at start");
    // What the agent does on every signal: read every file. Were that a change, it would re-read
    // the directory for ever.
    s.live();
    let quiet = tokio::time::timeout(Duration::from_millis(500), changed.recv()).await;
    assert!(quiet.is_err(), "reading the directory signalled a change");
    s.manifest("grant.yaml", &grant("Data_3_E", 3600));
    let signalled = tokio::time::timeout(Duration::from_secs(5), changed.recv()).await;
    assert_eq!(signalled, Ok(Some(())), "a new file is a change");
    while changed.try_recv().is_ok() {}
    std::fs::remove_file(s.paths.manifests.join("grant.yaml")).unwrap();
    let signalled = tokio::time::timeout(Duration::from_secs(5), changed.recv()).await;
    assert_eq!(signalled, Ok(Some(())), "a removed file is a change");
}

/// The revocations an agent of [`Setup::agent`] made.
fn denylist(agent: &Agent) -> Arc<Denylist> {
    match &agent.revoker {
        Revoker::Memory(denylist) => denylist.clone(),
        _ => unreachable!("Setup::agent revokes in memory"),
    }
}

/// A fresh read of the manifests, as at a restart (no last good version): what it refused.
fn restart_read(s: &Setup) -> (LiveManifests, usize) {
    let mut live = LiveManifests::new().unwrap();
    let refused = live.reload(&s.paths.manifests).unwrap().len();
    (live, refused)
}

#[tokio::test]
async fn held_objects_keep_their_files_until_admitted_or_removed_and_readyz_names_them_when_due() {
    let s = Setup::new("held");
    s.manifest("key.yaml", KEY_NO_SECRET);
    s.manifest("grant.yaml", &grant("Data_3_E", 3600));
    // Minted 45 minutes ago, so the renew times are past by now.
    let start = forty_five_minutes_ago();
    let mut agent = s.agent(Clock::fixed(start));
    let (_, first) = agent.pass(&s.live().merged()).await;
    assert_eq!(first.minted.len(), 3, "{first:?}");
    let trees = [
        "analytics-service-key",
        "analytics-session",
        "dashboards-token",
    ];
    let versions = || trees.map(|t| s.version(t));
    let before = versions();
    let key = std::fs::read_to_string(s.dir("analytics-service-key").join("key")).unwrap();
    let jti = |secret: &str| {
        claims(&agent.keyring, &s.token(secret))["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (grant_jti, session_jti) = (jti("dashboards-token"), jti("analytics-session"));

    // Restarted 41 minutes on, with the ServiceKey's manifest refused: it has no admitted
    // version, so it is held, and so are its session token and the grant minted from it.
    s.manifest(
        "key.yaml",
        &KEY_NO_SECRET.replace("dataSources: [Data_3_E, Other]", "dataSources: Data_3_E"),
    );
    let clock = Clock::fixed(start + SignedDuration::from_mins(41));
    let mut restarted = s.agent(clock.clone());
    let (mut live, refused) = restart_read(&s);
    assert_eq!(refused, 1);
    let (index, pass) = restarted.pass(&live.merged()).await;
    let mut held = pass.held.clone();
    held.sort();
    assert_eq!(
        held,
        [
            "DatasourceGrant default/dashboards",
            "ServiceKey default/analytics",
            "ServiceKey default/analytics session"
        ]
    );
    assert!(pass.minted.is_empty(), "{pass:?}");
    assert_eq!(versions(), before, "a held tree was rewritten");
    assert_eq!(
        std::fs::read_to_string(s.dir("analytics-service-key").join("key")).unwrap(),
        key
    );
    let revoked = denylist(&restarted);
    assert!(!revoked.is_revoked(&grant_jti) && !revoked.is_revoked(&session_jti));
    // The key stays, but its authority is the refused spec: it does not authenticate.
    assert!(index.by_key(key.as_bytes()).is_none());
    // Past their renew times, nobody renews them: `/readyz` names both tokens.
    let store = SharedKeyStore::fixed(
        index,
        Keyring::from_json(&restarted.keyring.to_json()).unwrap(),
    );
    store.set_overdue(pass.overdue.clone());
    let Err(NotReady::Overdue(mut overdue)) = store.readiness() else {
        panic!("ready with held tokens past their renew time: {pass:?}");
    };
    overdue.sort();
    assert_eq!(
        overdue,
        [
            "DatasourceGrant default/dashboards (held: its manifest is refused)",
            "ServiceKey default/analytics session (held: its manifest is refused)"
        ]
    );

    // Fixed while running: handled normally. The due tokens are rotated, the key stays and
    // authenticates again.
    s.manifest("key.yaml", KEY_NO_SECRET);
    assert!(live.reload(&s.paths.manifests).unwrap().is_empty());
    let (index, pass) = restarted.pass(&live.merged()).await;
    assert!(pass.held.is_empty() && pass.overdue.is_empty(), "{pass:?}");
    assert_eq!(
        pass.minted,
        [
            "DatasourceGrant default/dashboards",
            "ServiceKey default/analytics session"
        ]
    );
    assert!(index.by_key(key.as_bytes()).is_some());
    let rotated = s.version("dashboards-token");
    let rotated_jti = jti("dashboards-token");

    // A file that does not parse, at a restart: which objects it declares cannot be known,
    // so no tree is retired, and the grant it held is not revoked.
    s.manifest("grant.yaml", "kind: [unclosed");
    let mut restarted = s.agent(clock.clone());
    let (mut live, refused) = restart_read(&s);
    assert_eq!(refused, 1);
    let (_, pass) = restarted.pass(&live.merged()).await;
    assert_eq!(pass.held, ["DatasourceGrant default/dashboards"]);
    assert_eq!(s.version("dashboards-token"), rotated);
    assert!(!denylist(&restarted).is_revoked(&rotated_jti));
    // Removed: deleted as usual, its token revoked and its files gone.
    std::fs::remove_file(s.paths.manifests.join("grant.yaml")).unwrap();
    assert!(live.reload(&s.paths.manifests).unwrap().is_empty());
    let (_, pass) = restarted.pass(&live.merged()).await;
    assert!(pass.held.is_empty(), "{pass:?}");
    assert!(denylist(&restarted).is_revoked(&rotated_jti), "not revoked");
    assert!(!s.dir("dashboards-token").exists(), "not retired");
}

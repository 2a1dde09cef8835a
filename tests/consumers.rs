//! Consumers over the fake API server, through the real controllers and workload watches: each
//! way a pod template reads a Secret is classified; `restartConsumers` restarts exactly the
//! readers that cannot see a rotation; a workload that starts or stops reading a token changes
//! the status at once, without a restart of the operator; and the status stays at rest — a
//! restart of the controllers over everything in place writes nothing.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use support::fake_api::{Fake, TEAM, custom, service_key, wait_for};
use support::operator::{Controllers, keyring, writes_in};
use tokenmint::reconcile::SharedKeyring;
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::restart::{RESTARTED_AT_ANNOTATION, RESTARTED_FOR_ANNOTATION};

const PATIENCE: Duration = Duration::from_secs(20);
const SECRET: &str = "dashboards-token";

/// The keyring of every run of a test (the operator's survives its terms).
fn ring() -> SharedKeyring {
    static KEYRING: std::sync::OnceLock<SharedKeyring> = std::sync::OnceLock::new();
    KEYRING.get_or_init(keyring).clone()
}

/// The controllers over every namespace, consumers watched (or not), restarts after 300 ms.
fn start(fake: &Fake, consumers: bool) -> Controllers {
    Controllers::start(fake, ring(), consumers, Duration::from_millis(300))
}

/// The notes of the Events of `reason`.
fn events(running: &Controllers, reason: &str) -> Vec<String> {
    running
        .events
        .published()
        .into_iter()
        .filter(|e| e.reason == reason)
        .map(|e| e.note)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Fixtures: pod templates reading a Secret one way each, and the workloads around them.

fn env(secret: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1",
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}]}]})
}

fn env_from(secret: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1",
        "envFrom": [{"secretRef": {"name": secret}}]}]})
}

fn volume(secret: &str) -> Value {
    json!({"volumes": [{"name": "token", "secret": {"secretName": secret}}],
           "containers": [{"name": "app", "image": "app:1",
               "volumeMounts": [{"name": "token", "mountPath": "/var/run/tokenmint"}]}]})
}

fn projected(secret: &str) -> Value {
    json!({"volumes": [{"name": "all", "projected": {"sources": [
               {"serviceAccountToken": {"path": "sa", "audience": "x"}},
               {"secret": {"name": secret}}]}}],
           "containers": [{"name": "app", "image": "app:1",
               "volumeMounts": [{"name": "all", "mountPath": "/var/run/all"}]}]})
}

fn sub_path(secret: &str) -> Value {
    json!({"volumes": [{"name": "token", "secret": {"secretName": secret}}],
           "containers": [{"name": "app", "image": "app:1",
               "volumeMounts": [{"name": "token", "mountPath": "/etc/app/token", "subPath": "token"}]}]})
}

fn init_env(secret: &str) -> Value {
    json!({"initContainers": [{"name": "fetch", "image": "curl",
               "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}]}],
           "containers": [{"name": "app", "image": "app:1"}]})
}

/// `(group, resource)` of a kind.
fn resource(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Deployment" => ("apps", "deployments"),
        "StatefulSet" => ("apps", "statefulsets"),
        "DaemonSet" => ("apps", "daemonsets"),
        "ReplicaSet" => ("apps", "replicasets"),
        "Job" => ("batch", "jobs"),
        "CronJob" => ("batch", "cronjobs"),
        other => panic!("{other}"),
    }
}

/// Stores a workload of `kind` whose pod template is `pod` (a CronJob's in its job template).
fn put_workload(fake: &Fake, kind: &str, name: &str, pod: Value) {
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": pod});
    let (group, resource) = resource(kind);
    let spec = match kind {
        "CronJob" => {
            json!({"schedule": "@hourly", "jobTemplate": {"spec": {"template": template}}})
        }
        _ => json!({"selector": {"matchLabels": {"app": name}}, "template": template}),
    };
    fake.put(
        group,
        resource,
        json!({"apiVersion": format!("{group}/v1"), "kind": kind,
               "metadata": {"name": name, "namespace": TEAM, "uid": format!("uid-{name}")},
               "spec": spec}),
    );
}

fn put_grant(fake: &Fake, restart_consumers: bool) {
    fake.put(
        "tokenmint.dev",
        "datasourcegrants",
        custom(
            "DatasourceGrant",
            "dashboards",
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E",
                   "restartConsumers": restart_consumers}),
        ),
    );
}

fn grant_status(fake: &Fake) -> Value {
    fake.get("tokenmint.dev", "datasourcegrants", TEAM, "dashboards")
        .map(|g| g["status"].clone())
        .unwrap_or(Value::Null)
}

fn delivered(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Delivered")
        .cloned()
        .unwrap_or(Value::Null)
}

/// `kind/name` → (mode, modes, seesRotation) of `status.consumers`.
fn listed(status: &Value) -> BTreeMap<String, (String, Vec<String>, bool)> {
    status["consumers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let modes = c["modes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m.as_str().unwrap().to_owned())
                .collect();
            (
                format!(
                    "{}/{}",
                    c["kind"].as_str().unwrap(),
                    c["name"].as_str().unwrap()
                ),
                (
                    c["mode"].as_str().unwrap().to_owned(),
                    modes,
                    c["seesRotation"].as_bool().unwrap(),
                ),
            )
        })
        .collect()
}

fn token_id(fake: &Fake) -> Option<String> {
    fake.get("", "secrets", TEAM, SECRET)?["metadata"]["annotations"]["tokenmint.dev/token-id"]
        .as_str()
        .map(str::to_owned)
}

/// The workload patches (restarts) of `phase`, as `resource/name`.
fn restarts_in(fake: &Fake, phase: &str) -> Vec<String> {
    let mut restarted: Vec<String> = fake
        .calls()
        .iter()
        .filter(|c| c.phase == phase && c.verb == "patch")
        .filter(|c| matches!(c.group.as_str(), "apps" | "batch"))
        .map(|c| format!("{}/{}", c.resource, c.name.clone().unwrap_or_default()))
        .collect();
    restarted.sort();
    restarted
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_of_reading_a_secret_is_classified() {
    let fake = Fake::default();
    service_key(&fake);
    put_grant(&fake, false);
    put_workload(&fake, "Deployment", "by-volume", volume(SECRET));
    put_workload(&fake, "Deployment", "by-projected", projected(SECRET));
    put_workload(&fake, "Deployment", "by-env", env(SECRET));
    put_workload(&fake, "StatefulSet", "by-env-from", env_from(SECRET));
    put_workload(&fake, "DaemonSet", "by-sub-path", sub_path(SECRET));
    put_workload(&fake, "Deployment", "by-init", init_env(SECRET));
    put_workload(&fake, "CronJob", "export", env(SECRET));
    put_workload(&fake, "Job", "once", volume(SECRET));
    // Both ways at once: listed once, with both modes; it misses rotations.
    let mut both = env(SECRET);
    both["volumes"] = volume(SECRET)["volumes"].clone();
    both["containers"][0]["volumeMounts"] = volume(SECRET)["containers"][0]["volumeMounts"].clone();
    put_workload(&fake, "Deployment", "both", both);
    // Not consumers: a ReplicaSet its Deployment controls, a Job its CronJob controls, and a
    // workload reading another Secret.
    for (kind, name) in [("ReplicaSet", "by-env-5d4f8"), ("Job", "export-29000")] {
        put_workload(&fake, kind, name, env(SECRET));
        let (group, resource) = resource(kind);
        let mut owned = fake.get(group, resource, TEAM, name).unwrap();
        owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "by-env", "uid": "uid-by-env", "controller": true}]);
        fake.put(group, resource, owned);
    }
    put_workload(&fake, "Deployment", "elsewhere", env("another-secret"));

    let running = start(&fake, true);
    wait_for(&fake, PATIENCE, "the consumers in the status", || {
        grant_status(&fake)["consumerCount"] == 9
    })
    .await;
    let status = grant_status(&fake);
    let miss = |mode: &str| (mode.to_owned(), Vec::<String>::new(), false);
    let see = |mode: &str| (mode.to_owned(), Vec::<String>::new(), true);
    let want: BTreeMap<String, (String, Vec<String>, bool)> = [
        ("Deployment/by-volume", see("volume")),
        ("Deployment/by-projected", see("projected")),
        ("Deployment/by-env", miss("env")),
        ("StatefulSet/by-env-from", miss("envFrom")),
        ("DaemonSet/by-sub-path", miss("subPath")),
        ("Deployment/by-init", miss("env")),
        ("CronJob/export", miss("env")),
        ("Job/once", see("volume")),
        (
            "Deployment/both",
            ("env".into(), vec!["env".into(), "volume".into()], false),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(listed(&status), want, "{status:#}");
    // Those keeping a stale token are listed first.
    let sees: Vec<bool> = status["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seesRotation"].as_bool().unwrap())
        .collect();
    assert_eq!(
        sees,
        [false, false, false, false, false, false, true, true, true]
    );
    assert_eq!(status["consumersMissingRotation"], 6);
    let condition = delivered(&status);
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "ConsumerMissesRotation");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.starts_with("Deployment both (env, volume), Deployment by-env (env), Deployment by-init (env), StatefulSet by-env-from (envFrom), DaemonSet by-sub-path (subPath), 1 more keep the old token"),
        "{message}"
    );
    assert!(
        message.contains("Set spec.restartConsumers: true"),
        "{message}"
    );
    // One Warning Event for this set, not one per reconcile (it follows the status write).
    wait_for(&fake, PATIENCE, "the Warning Event", || {
        !events(&running, "ConsumerMissesRotation").is_empty()
    })
    .await;
    assert_eq!(events(&running, "ConsumerMissesRotation"), [message]);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_consumers_restarts_exactly_the_readers_that_miss_a_rotation() {
    let fake = Fake::default();
    service_key(&fake);
    put_grant(&fake, true);
    put_workload(&fake, "Deployment", "reads-env", env(SECRET));
    put_workload(&fake, "StatefulSet", "reads-sub-path", sub_path(SECRET));
    put_workload(&fake, "Deployment", "reads-volume", volume(SECRET));
    put_workload(&fake, "DaemonSet", "reads-projected", projected(SECRET));
    put_workload(&fake, "CronJob", "export", env_from(SECRET));

    fake.phase("first token");
    let running = start(&fake, true);
    wait_for(&fake, PATIENCE, "the first token and its consumers", || {
        grant_status(&fake)["consumerCount"] == 5
    })
    .await;
    let first = token_id(&fake).expect("a token");
    // A first token is the one every consumer starts with: recorded as theirs, no restart.
    let secret = fake.get("", "secrets", TEAM, SECRET).unwrap();
    assert_eq!(
        secret["metadata"]["annotations"][RESTARTED_FOR_ANNOTATION],
        first.as_str()
    );
    let status = grant_status(&fake);
    let restarted: Vec<(String, bool)> = status["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["restarted"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        restarted,
        [
            ("export".to_owned(), false),
            ("reads-env".to_owned(), true),
            ("reads-volume".to_owned(), false),
            ("reads-sub-path".to_owned(), true),
            ("reads-projected".to_owned(), false),
        ]
    );
    // Only the CronJob keeps a stale token: it cannot be restarted.
    let condition = delivered(&status);
    assert_eq!(condition["status"], "False");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("CronJob export (envFrom) keeps the old token"),
        "{condition}"
    );
    assert_eq!(status["consumersMissingRotation"], 1);

    // A rotation (the renew annotation): the readers that miss it are restarted once.
    fake.phase("rotation");
    let mut grant = fake
        .get("tokenmint.dev", "datasourcegrants", TEAM, "dashboards")
        .unwrap();
    grant["metadata"]["annotations"] = json!({"tokenmint.dev/renew": "1"});
    fake.put("tokenmint.dev", "datasourcegrants", grant);
    wait_for(
        &fake,
        PATIENCE,
        "the restarts recorded on the Secret",
        || {
            let secret = fake.get("", "secrets", TEAM, SECRET).unwrap();
            let annotations = &secret["metadata"]["annotations"];
            annotations["tokenmint.dev/token-id"] != first.as_str()
                && annotations[RESTARTED_FOR_ANNOTATION] == annotations["tokenmint.dev/token-id"]
        },
    )
    .await;
    // Later rotations' restarts would come after the window; none is due.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        restarts_in(&fake, "rotation"),
        ["deployments/reads-env", "statefulsets/reads-sub-path"]
    );
    assert_eq!(restarts_in(&fake, "first token"), Vec::<String>::new());
    for (group, resource, name, restarted) in [
        ("apps", "deployments", "reads-env", true),
        ("apps", "statefulsets", "reads-sub-path", true),
        ("apps", "deployments", "reads-volume", false),
        ("apps", "daemonsets", "reads-projected", false),
    ] {
        let workload = fake.get(group, resource, TEAM, name).unwrap();
        let annotation =
            &workload["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION];
        assert_eq!(annotation.is_string(), restarted, "{name}: {workload:#}");
    }
    // The CronJob is reported, not pretended to be restarted.
    let unsupported = events(&running, "RolloutRestartUnsupported");
    assert_eq!(unsupported.len(), 1, "{unsupported:?}");
    assert!(
        unsupported[0].starts_with(
            "Cannot restart CronJob export for the rotated token: a CronJob has no rollout"
        ),
        "{unsupported:?}"
    );
    assert_eq!(events(&running, "RolloutRestarted").len(), 2);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_that_come_change_or_go_are_judged_at_once_without_a_restart() {
    let fake = Fake::default();
    service_key(&fake);
    put_grant(&fake, false);
    put_workload(&fake, "Deployment", "unrelated", env("another-secret"));
    let running = start(&fake, true);
    wait_for(&fake, PATIENCE, "the token, with no consumer", || {
        delivered(&grant_status(&fake))["reason"] == "NoConsumers"
    })
    .await;
    assert_eq!(grant_status(&fake)["consumerCount"], 0);
    let first = token_id(&fake);

    // A consumer added after the token: the status changes, and nothing else.
    fake.phase("a consumer comes");
    put_workload(&fake, "Deployment", "api", env(SECRET));
    wait_for(&fake, PATIENCE, "the new consumer in the status", || {
        grant_status(&fake)["consumerCount"] == 1
    })
    .await;
    let status = grant_status(&fake);
    assert_eq!(
        listed(&status).keys().collect::<Vec<_>>(),
        ["Deployment/api"]
    );
    assert_eq!(delivered(&status)["reason"], "ConsumerMissesRotation");
    assert_eq!(token_id(&fake), first, "no new token");
    let writes = writes_in(&fake, "a consumer comes");
    assert_eq!(writes.len(), 1, "the status only: {writes:#?}");
    assert!(writes[0].contains("/datasourcegrants/dashboards/status"));

    // It reads the token another way now (a volume): judged again.
    fake.phase("it changes");
    put_workload(&fake, "Deployment", "api", volume(SECRET));
    wait_for(&fake, PATIENCE, "delivered", || {
        delivered(&grant_status(&fake))["reason"] == "RotationsDelivered"
    })
    .await;
    assert_eq!(listed(&grant_status(&fake))["Deployment/api"].0, "volume");

    // It stops reading the token: it leaves the list.
    fake.phase("it stops");
    put_workload(&fake, "Deployment", "api", env("another-secret"));
    wait_for(&fake, PATIENCE, "no consumer left", || {
        grant_status(&fake)["consumerCount"] == 0
    })
    .await;
    assert!(grant_status(&fake).get("consumers").is_none());
    assert_eq!(delivered(&grant_status(&fake))["reason"], "NoConsumers");

    // A CronJob comes and is deleted again.
    fake.phase("a cronjob comes and goes");
    put_workload(&fake, "CronJob", "export", env_from(SECRET));
    wait_for(&fake, PATIENCE, "the CronJob listed", || {
        grant_status(&fake)["consumerCount"] == 1
    })
    .await;
    fake.delete("batch", "cronjobs", TEAM, "export");
    wait_for(&fake, PATIENCE, "the CronJob gone", || {
        grant_status(&fake)["consumerCount"] == 0
    })
    .await;
    assert_eq!(token_id(&fake), first, "consumers never re-mint");
    assert!(running.readiness.is_ready());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_consumers_in_place_a_restart_and_a_resync_write_nothing() {
    let fake = Fake::default();
    service_key(&fake);
    put_grant(&fake, true);
    put_workload(&fake, "Deployment", "api", env(SECRET));
    put_workload(&fake, "Deployment", "web", volume(SECRET));
    put_workload(&fake, "CronJob", "export", env(SECRET));
    let running = start(&fake, true);
    wait_for(&fake, PATIENCE, "the consumers in the status", || {
        grant_status(&fake)["consumerCount"] == 3
    })
    .await;
    let reconciled = |metrics: &Metrics| {
        metrics
            .encode()
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "tokenmint_reconcile_duration_seconds_count{kind=\"DatasourceGrant\"} ",
                )
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // At rest, a change of a consumer that does not touch how it reads the token, and of the
    // grant's labels: reconciles, no write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.phase("resync");
    let before = reconciled(&running.metrics);
    let mut api = fake.get("apps", "deployments", TEAM, "api").unwrap();
    api["spec"]["replicas"] = json!(3);
    fake.put("apps", "deployments", api);
    let mut grant = fake
        .get("tokenmint.dev", "datasourcegrants", TEAM, "dashboards")
        .unwrap();
    grant["metadata"]["labels"] = json!({"team": "a"});
    fake.put("tokenmint.dev", "datasourcegrants", grant);
    wait_for(&fake, PATIENCE, "a resync", || {
        reconciled(&running.metrics) > before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(writes_in(&fake, "resync"), Vec::<String>::new());
    let warnings = events(&running, "ConsumerMissesRotation").len();
    assert_eq!(warnings, 1, "the CronJob's, once");
    running.stop().await;

    // A new term on fresh caches: every object reconciled, nothing written.
    fake.phase("restart");
    let running = start(&fake, true);
    wait_for(&fake, PATIENCE, "every object reconciled again", || {
        running.readiness.is_ready() && reconciled(&running.metrics) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(writes_in(&fake, "restart"), Vec::<String>::new());
    assert!(events(&running, "ConsumerMissesRotation").is_empty());
    running.stop().await;

    // Workloads no longer watched (`--consumers=false`): none is listed or watched, and the
    // status says nothing of consumers any more.
    fake.phase("consumers off");
    let running = start(&fake, false);
    wait_for(
        &fake,
        PATIENCE,
        "the consumers gone from the status",
        || grant_status(&fake).get("consumerCount").is_none(),
    )
    .await;
    let status = grant_status(&fake);
    assert!(delivered(&status).is_null() && status.get("consumers").is_none());
    let workload_calls: Vec<String> = fake
        .calls()
        .iter()
        .filter(|c| c.phase == "consumers off" && matches!(c.group.as_str(), "apps" | "batch"))
        .map(|c| c.request.clone())
        .collect();
    assert_eq!(workload_calls, Vec::<String>::new());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_tokens_and_session_tokens_know_their_consumers_too() {
    let fake = Fake::default();
    // The key with a session token whose env readers are restarted after each rotation.
    service_key(&fake);
    let mut key = fake
        .get("tokenmint.dev", "servicekeys", TEAM, "analytics")
        .unwrap();
    key["spec"]["sessionToken"] =
        json!({"secretName": "analytics-session", "restartConsumers": true});
    fake.put("tokenmint.dev", "servicekeys", key);
    support::fake_api::guest(&fake, "embed");
    put_workload(&fake, "Deployment", "session-env", env("analytics-session"));
    put_workload(
        &fake,
        "Deployment",
        "session-volume",
        volume("analytics-session"),
    );
    put_workload(&fake, "StatefulSet", "embed-env", env_from("embed-token"));
    // The key Secret itself is nobody's token: a reader of it is not listed anywhere.
    put_workload(
        &fake,
        "Deployment",
        "key-reader",
        env("analytics-service-key"),
    );

    let running = start(&fake, true);
    let status = |resource: &str, name: &str| {
        fake.get("tokenmint.dev", resource, TEAM, name)
            .map(|o| o["status"].clone())
            .unwrap_or(Value::Null)
    };
    wait_for(&fake, PATIENCE, "both consumer lists", || {
        status("servicekeys", "analytics")["consumerCount"] == 2
            && status("guesttokenrequests", "embed")["consumerCount"] == 1
    })
    .await;

    let session = status("servicekeys", "analytics");
    assert_eq!(
        listed(&session),
        BTreeMap::from([
            (
                "Deployment/session-env".to_owned(),
                ("env".to_owned(), vec![], false)
            ),
            (
                "Deployment/session-volume".to_owned(),
                ("volume".to_owned(), vec![], true)
            ),
        ]),
        "{session:#}"
    );
    // Its env reader is restarted after each rotation: every consumer gets the new token.
    assert_eq!(session["consumers"][0]["restarted"], true, "{session:#}");
    assert_eq!(session["consumersMissingRotation"], 0);
    assert_eq!(delivered(&session)["status"], "True", "{session:#}");
    assert_eq!(delivered(&session)["reason"], "RotationsDelivered");

    let guest = status("guesttokenrequests", "embed");
    assert_eq!(
        listed(&guest),
        BTreeMap::from([(
            "StatefulSet/embed-env".to_owned(),
            ("envFrom".to_owned(), vec![], false)
        )]),
        "{guest:#}"
    );
    assert_eq!(guest["consumersMissingRotation"], 1);
    let condition = delivered(&guest);
    assert_eq!(condition["reason"], "ConsumerMissesRotation", "{guest:#}");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("StatefulSet embed-env (envFrom) keeps the old token"),
        "{condition}"
    );
    // The Event follows the status write that the wait above saw.
    wait_for(&fake, PATIENCE, "the Warning Event", || {
        !events(&running, "ConsumerMissesRotation").is_empty()
    })
    .await;
    assert_eq!(
        events(&running, "ConsumerMissesRotation").len(),
        1,
        "the guest token's only"
    );
    running.stop().await;
}

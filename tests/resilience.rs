//! The operator and the REST sidecar against a fake API server that misbehaves the way real
//! ones do: first lists that answer late, `410 Gone` after an API-server restart, dropped
//! watches, outages; and leader election with its release on shutdown and its fencing. Also
//! what users do under the operator's feet: a ServiceKey's key replaced, a ServiceKey deleted
//! and created again.
//!
//! Each test asserts the outcome a user sees (every object Ready, a new object reconciled after
//! the fault) and that recovery needs no restart of the process.

mod support;

use serde_json::json;
use std::time::Duration;
use support::fake_api::{Fake, TEAM, custom, grant, guest, ready_names, service_key, wait_for};
use support::operator::{Controllers, keyring};
use tokenmint::fence::Fence;
use tokenmint::operator::lease::{Elector, LeaseTiming};
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::reconcile::restart::COALESCE_WINDOW;
use tokio::sync::watch;

const PATIENCE: Duration = Duration::from_secs(20);

/// Starts the controllers (all namespaces) against `fake`.
fn start(fake: &Fake) -> Controllers {
    Controllers::start(fake, keyring(), true, COALESCE_WINDOW)
}

fn token_secrets(fake: &Fake) -> usize {
    fake.all("", "secrets")
        .iter()
        .filter(|s| s["metadata"]["labels"]["tokenmint.dev/secret-role"] == "token")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_is_reconciled_after_every_start_even_when_lists_answer_late() {
    const GRANTS: usize = 40;
    const GUESTS: usize = 10;
    // Different late lists each time: the order in which caches fill varies.
    let delays = [
        [0, 300, 150, 50],
        [400, 0, 100, 250],
        [100, 100, 400, 0],
        [250, 50, 0, 400],
        [0, 0, 0, 0],
    ];
    for (run, delay) in delays.iter().enumerate() {
        let fake = Fake::default();
        service_key(&fake);
        for i in 0..GRANTS {
            grant(&fake, &format!("grant-{i}"));
        }
        for i in 0..GUESTS {
            guest(&fake, &format!("guest-{i}"));
        }
        for (resource, ms) in [
            "servicekeys",
            "datasourcegrants",
            "guesttokenrequests",
            "secrets",
        ]
        .iter()
        .zip(delay)
        {
            fake.delay_lists(resource, Duration::from_millis(*ms));
        }
        let running = start(&fake);
        wait_for(
            &fake,
            PATIENCE,
            &format!("run {run}: every object Ready"),
            || {
                ready_names(&fake, "datasourcegrants").len() == GRANTS
                    && ready_names(&fake, "guesttokenrequests").len() == GUESTS
                    && ready_names(&fake, "servicekeys").len() == 1
            },
        )
        .await;
        assert_eq!(token_secrets(&fake), GRANTS + GUESTS, "run {run}");
        assert!(running.readiness.is_ready());
        // One watch per kind and scope, not one per controller.
        let secret_watches = fake
            .calls()
            .iter()
            .filter(|c| c.verb == "watch" && c.resource == "secrets")
            .count();
        assert_eq!(secret_watches, 1, "run {run}");
        running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_api_server_restart_watches_relist_at_once_and_reconciles_resume() {
    let fake = Fake::default();
    service_key(&fake);
    grant(&fake, "before");
    let running = start(&fake);
    wait_for(&fake, PATIENCE, "the first grant Ready", || {
        ready_names(&fake, "datasourcegrants").contains("before")
    })
    .await;

    // The API server restarts with its data: every watch ends, and resuming from the old
    // resourceVersion is answered with 410 Gone.
    fake.phase("after restart");
    let lists_before = fake.count("list", "datasourcegrants");
    fake.restart();
    let restarted_at = tokio::time::Instant::now();
    grant(&fake, "after");
    wait_for(
        &fake,
        Duration::from_secs(10),
        "the new grant Ready",
        || ready_names(&fake, "datasourcegrants").contains("after"),
    )
    .await;
    let recovered_in = restarted_at.elapsed();
    // A 410 relists with a fresh resourceVersion at once, never after a long backoff.
    assert!(fake.count("list", "datasourcegrants") > lists_before);
    assert!(
        recovered_in < Duration::from_secs(5),
        "recovered in {recovered_in:?}"
    );
    let metrics = running.metrics.encode();
    assert!(
        metrics.contains("tokenmint_watch_restarts_total{resource=\"datasourcegrants\"}"),
        "{metrics}"
    );
    assert!(running.readiness.is_ready());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_on_the_watch_relists_and_nothing_is_lost() {
    let fake = Fake::default();
    service_key(&fake);
    let running = start(&fake);
    wait_for(&fake, PATIENCE, "synced", || running.readiness.is_ready()).await;
    // The sequence of the field report: watch -> 410 -> relist -> works.
    for resource in ["datasourcegrants", "secrets", "servicekeys"] {
        fake.gone_on_next_watch(resource);
    }
    fake.drop_watches();
    grant(&fake, "created-during-the-fault");
    wait_for(&fake, Duration::from_secs(10), "the grant Ready", || {
        ready_names(&fake, "datasourcegrants").contains("created-during-the-fault")
    })
    .await;
    // The Secret it got is watched too: deleting it restores it.
    let before = fake
        .get("", "secrets", TEAM, "created-during-the-fault-token")
        .expect("token Secret");
    fake.delete("", "secrets", TEAM, "created-during-the-fault-token");
    wait_for(
        &fake,
        Duration::from_secs(10),
        "the Secret restored",
        || {
            fake.get("", "secrets", TEAM, "created-during-the-fault-token")
                .is_some_and(|s| {
                    s["metadata"]["uid"] != before["metadata"]["uid"] || s["data"] != before["data"]
                })
        },
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_makes_the_operator_unready_and_it_recovers_by_itself() {
    let fake = Fake::default();
    service_key(&fake);
    let running = start(&fake);
    wait_for(&fake, PATIENCE, "synced", || running.readiness.is_ready()).await;
    fake.set_down(true);
    wait_for(
        &fake,
        Duration::from_secs(10),
        "not ready during the outage",
        || !running.readiness.is_ready(),
    )
    .await;
    let why = running.readiness.not_ready().unwrap();
    assert!(why.contains("watches not synced"), "{why}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    fake.set_down(false);
    let back = tokio::time::Instant::now();
    grant(&fake, "after-outage");
    wait_for(&fake, Duration::from_secs(10), "reconciles resume", || {
        ready_names(&fake, "datasourcegrants").contains("after-outage")
    })
    .await;
    wait_for(&fake, Duration::from_secs(10), "ready again", || {
        running.readiness.is_ready()
    })
    .await;
    // Capped retries: back within seconds, not the minute a default backoff can grow to.
    assert!(
        back.elapsed() < Duration::from_secs(8),
        "{:?}",
        back.elapsed()
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_grant_has_its_token_revoked() {
    let fake = Fake::default();
    service_key(&fake);
    grant(&fake, "doomed");
    let running = start(&fake);
    wait_for(&fake, PATIENCE, "Ready", || {
        ready_names(&fake, "datasourcegrants").contains("doomed")
    })
    .await;
    let secret = fake.get("", "secrets", TEAM, "doomed-token").unwrap();
    let jti = secret["metadata"]["annotations"]["tokenmint.dev/token-id"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.delete("tokenmint.dev", "datasourcegrants", TEAM, "doomed");
    wait_for(&fake, Duration::from_secs(10), "the token revoked", || {
        running.denylist.is_revoked(&jti)
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_deleted_during_an_outage_has_its_token_revoked_after_the_relist() {
    let fake = Fake::default();
    service_key(&fake);
    grant(&fake, "kept");
    grant(&fake, "gone");
    let running = start(&fake);
    wait_for(&fake, PATIENCE, "Ready", || {
        let ready = ready_names(&fake, "datasourcegrants");
        ready.contains("kept") && ready.contains("gone")
    })
    .await;
    let jti = |name: &str| {
        fake.get("tokenmint.dev", "datasourcegrants", TEAM, name)
            .unwrap()["status"]["tokenId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (kept, gone) = (jti("kept"), jti("gone"));
    // Deleted while no watch runs: the operator never sees the deletion event, only a list
    // without the grant once the API server is back.
    fake.set_down(true);
    fake.delete("tokenmint.dev", "datasourcegrants", TEAM, "gone");
    fake.restart();
    fake.set_down(false);
    wait_for(&fake, Duration::from_secs(10), "the token revoked", || {
        running.denylist.is_revoked(&gone)
    })
    .await;
    assert!(!running.denylist.is_revoked(&kept), "a grant still listed");
    running.stop().await;
}

/// Foreground deletion of the `resource` object `name`: it is marked, the garbage collector
/// deletes its token Secret, then the object. Its token is known from its status alone by then.
async fn delete_in_foreground(fake: &Fake, resource: &str, name: &str) {
    let mut marked = fake.get("tokenmint.dev", resource, TEAM, name).unwrap();
    marked["metadata"]["deletionTimestamp"] = jiff::Timestamp::now().to_string().into();
    fake.put("tokenmint.dev", resource, marked);
    fake.delete("", "secrets", TEAM, &format!("{name}-token"));
    // Time for the operator's Secret cache to see it go.
    tokio::time::sleep(Duration::from_secs(1)).await;
    fake.delete("tokenmint.dev", resource, TEAM, name);
}

/// The earliest-expiry gauge of the operator's metrics.
fn earliest_expiry(metrics: &Metrics) -> i64 {
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix("tokenmint_token_earliest_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_deleted_after_its_secret_leaves_a_revocation_that_expires_and_no_metric() {
    let fake = Fake::default();
    service_key(&fake);
    grant(&fake, "foreground");
    let running = start(&fake);
    wait_for(&fake, PATIENCE, "Ready", || {
        ready_names(&fake, "datasourcegrants").contains("foreground")
    })
    .await;
    let status = fake
        .get("tokenmint.dev", "datasourcegrants", TEAM, "foreground")
        .unwrap()["status"]
        .clone();
    let jti = status["tokenId"].as_str().unwrap().to_owned();
    let expires: jiff::Timestamp = status["expiresAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(earliest_expiry(&running.metrics), expires.as_second());
    delete_in_foreground(&fake, "datasourcegrants", "foreground").await;
    wait_for(&fake, Duration::from_secs(10), "the token revoked", || {
        running.denylist.is_revoked(&jti)
    })
    .await;
    wait_for(
        &fake,
        Duration::from_secs(10),
        "the expiry forgotten",
        || earliest_expiry(&running.metrics) == 0,
    )
    .await;
    // The revocation goes once the token has expired (it used to stay for ever).
    let swept = running
        .denylist
        .sweep(expires + jiff::SignedDuration::from_hours(1));
    assert_eq!(swept, 1);
    assert!(!running.denylist.is_revoked(&jti));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_expiring_guest_token_deleted_after_its_secret_pins_no_entry_and_is_refused() {
    let fake = Fake::default();
    service_key(&fake);
    let request = custom(
        "GuestTokenRequest",
        "forever",
        json!({"serviceKeyRef": {"name": "analytics"}, "workspaceName": "w1", "clientId": "c"}),
    );
    fake.put("tokenmint.dev", "guesttokenrequests", request);
    let running = start(&fake);
    wait_for(&fake, PATIENCE, "Ready", || {
        ready_names(&fake, "guesttokenrequests").contains("forever")
    })
    .await;
    let token = secret_token(&fake, "forever-token");
    let claims = tokenmint::token::claims::unverified(&token).unwrap();
    assert!(claims.get("exp").is_none(), "{claims}");
    let uid = claims["service_key_uid"].as_str().unwrap().to_owned();
    assert_eq!(uid, "uid-analytics");
    delete_in_foreground(&fake, "guesttokenrequests", "forever").await;
    // Revoked by its ServiceKey's marker, without an entry that would stay for ever.
    wait_for(&fake, Duration::from_secs(10), "the token revoked", || {
        running.denylist.denies(&claims).is_some()
    })
    .await;
    assert!(running.denylist.is_empty(), "no entry pinned");
    let far = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
    running.denylist.sweep(far);
    assert!(running.denylist.denies(&claims).is_some());
    running.stop().await;
}

/// The binding claims of the token in the Secret `name`: ServiceKey uid and key fingerprint.
fn binding_of(fake: &Fake, name: &str) -> Option<(String, String)> {
    fake.get("", "secrets", TEAM, name)?;
    let claims = tokenmint::token::claims::unverified(&secret_token(fake, name))?;
    Some((
        claims["service_key_uid"].as_str()?.to_owned(),
        claims["key_fingerprint"].as_str()?.to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_key_or_a_re_created_service_key_re_mints_every_token_bound_to_it() {
    use base64::Engine;
    use tokenmint::token::claims::key_fingerprint;
    let fake = Fake::default();
    service_key(&fake);
    grant(&fake, "dashboards");
    guest(&fake, "embed");
    let running = start(&fake);
    let key_secret = || fake.get("", "secrets", TEAM, "analytics-service-key");
    let key_of = |secret: serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["key"].as_str().unwrap())
            .unwrap()
    };
    let bound_to = |uid: &str, key: &[u8]| {
        let want = Some((uid.to_owned(), key_fingerprint(key)));
        binding_of(&fake, "dashboards-token") == want && binding_of(&fake, "embed-token") == want
    };
    wait_for(&fake, PATIENCE, "tokens bound to the key", || {
        key_secret().is_some_and(|s| bound_to("uid-analytics", &key_of(s)))
    })
    .await;
    // The key published in the ServiceKey's status is the one in its Secret.
    let key = key_of(key_secret().unwrap());
    let status = &fake
        .get("tokenmint.dev", "servicekeys", TEAM, "analytics")
        .unwrap()["status"];
    assert_eq!(status["keyFingerprint"], key_fingerprint(&key));

    // Someone replaces the key in its Secret: both tokens are minted again, bound to it.
    let mut replaced = key_secret().unwrap();
    replaced["data"]["key"] = base64::engine::general_purpose::STANDARD
        .encode("tmk_replaced_by_hand")
        .into();
    fake.put("", "secrets", replaced);
    wait_for(&fake, PATIENCE, "tokens bound to the new key", || {
        bound_to("uid-analytics", b"tmk_replaced_by_hand")
    })
    .await;

    // The ServiceKey is deleted (its key Secret with it, as the garbage collector does) and
    // created again under its name: a new uid, a new key, new tokens.
    fake.delete("tokenmint.dev", "servicekeys", TEAM, "analytics");
    fake.delete("", "secrets", TEAM, "analytics-service-key");
    let mut again = custom(
        "ServiceKey",
        "analytics",
        json!({"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"},
               "dataSources": ["*"], "workspaces": ["*"]}),
    );
    again["metadata"]["uid"] = json!("uid-analytics-again");
    fake.put("tokenmint.dev", "servicekeys", again);
    wait_for(
        &fake,
        PATIENCE,
        "tokens bound to the new ServiceKey",
        || key_secret().is_some_and(|s| bound_to("uid-analytics-again", &key_of(s))),
    )
    .await;
    running.stop().await;
}

/// The token in the Secret `name` of the team's namespace.
fn secret_token(fake: &Fake, name: &str) -> String {
    use base64::Engine;
    let secret = fake.get("", "secrets", TEAM, name).unwrap();
    let token = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["token"].as_str().unwrap())
        .unwrap();
    String::from_utf8(token).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Leader election

fn timing() -> LeaseTiming {
    LeaseTiming {
        duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry: Duration::from_millis(200),
    }
}

fn candidate(
    fake: &Fake,
    identity: &str,
) -> (
    Fence,
    watch::Receiver<bool>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let elector = Elector::new(
        kube::Api::namespaced(fake.client(), "tokenmint-system"),
        "tokenmint-leader",
        identity,
        timing(),
    );
    let fence = elector.fence();
    let (leading_tx, leading) = watch::channel(false);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(elector.run(leading_tx, stop_rx));
    (fence, leading, stop, task)
}

fn holder(fake: &Fake) -> Option<String> {
    fake.get(
        "coordination.k8s.io",
        "leases",
        "tokenmint-system",
        "tokenmint-leader",
    )
    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_released_on_shutdown_so_a_standby_takes_over_at_once() {
    let fake = Fake::default();
    let (fence_a, mut leading_a, stop_a, task_a) = candidate(&fake, "a");
    tokio::time::timeout(PATIENCE, leading_a.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    assert!(fence_a.is_valid());
    let (fence_b, mut leading_b, stop_b, task_b) = candidate(&fake, "b");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!*leading_b.borrow(), "one leader at a time");
    assert!(!fence_b.is_valid());

    stop_a.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task_a)
        .await
        .expect("a stopped promptly")
        .unwrap();
    assert!(!fence_a.is_valid(), "no write after stepping down");
    let released = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), leading_b.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    // Released: the standby did not wait for the 3 s lease to run out.
    assert!(
        released.elapsed() < timing().duration,
        "took over after {:?}",
        released.elapsed()
    );
    assert_eq!(holder(&fake).as_deref(), Some("b"));
    stop_b.send(true).unwrap();
    task_b.await.unwrap();
    assert_eq!(holder(&fake), None, "released on the way out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_writing_before_a_standby_can_take_over() {
    let fake = Fake::default();
    let (fence_a, mut leading_a, stop_a, task_a) = candidate(&fake, "a");
    tokio::time::timeout(PATIENCE, leading_a.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    // A standby appears while the leader is healthy: it waits.
    let (fence_b, mut leading_b, _stop_b, _task_b) = candidate(&fake, "b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!fence_b.is_valid());

    // The leader is cut off (every request fails); the standby is too, until the API server
    // is back. The leader's fence closes at its renew deadline.
    fake.set_down(true);
    let cut = tokio::time::Instant::now();
    while fence_a.is_valid() {
        assert!(cut.elapsed() < timing().renew_deadline + Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fenced_after = cut.elapsed();
    tokio::time::timeout(Duration::from_secs(5), leading_a.wait_for(|l| !*l))
        .await
        .unwrap()
        .unwrap();
    // The old leader goes away for good (its pod deleted, say): the standby takes over.
    stop_a.send(true).unwrap();
    task_a.await.unwrap();
    fake.set_down(false);
    tokio::time::timeout(Duration::from_secs(10), leading_b.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    let took_over_after = cut.elapsed();
    assert!(
        fenced_after < took_over_after,
        "the old leader stopped writing ({fenced_after:?}) before the standby started ({took_over_after:?})"
    );
    assert!(!fence_a.is_valid() && fence_b.is_valid());
    assert_eq!(holder(&fake).as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_renewed_fences_writes_at_its_deadline_and_the_process_leads_again()
{
    use support::operator::{TIMING, gauge, replica, writes_in};
    let fake = Fake::default();
    service_key(&fake);
    let replica = replica(&fake, "operator-0-1234abcd");
    let metrics = replica.metrics.clone();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(replica.run(stop_rx));
    wait_for(&fake, PATIENCE, "leading", || {
        gauge(&metrics, "tokenmint_leader") == 1
    })
    .await;

    // Only the Lease fails; the watches and every other request work, so the controllers
    // would go on writing if nothing stopped them. Grants keep coming in.
    fake.phase("partition");
    fake.set_down_for("leases", true);
    let cut = tokio::time::Instant::now();
    let fenced_from = cut + TIMING.renew_deadline + Duration::from_millis(200);
    let mut created = Vec::new();
    while cut.elapsed() < TIMING.renew_deadline + Duration::from_millis(1_500) {
        if tokio::time::Instant::now() >= fenced_from {
            fake.phase("partition: past the renew deadline");
        }
        let name = format!("during-{}", created.len());
        grant(&fake, &name);
        created.push(name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !writes_in(&fake, "partition").is_empty(),
        "the controllers wrote until the deadline"
    );
    assert_eq!(
        writes_in(&fake, "partition: past the renew deadline"),
        Vec::<String>::new(),
        "no write past the renew deadline"
    );
    assert_eq!(gauge(&metrics, "tokenmint_leader"), 0);
    assert!(!task.is_finished(), "stays up as a follower");

    // Healed: the same process leads again and mints what came in meanwhile.
    fake.phase("healed");
    fake.set_down_for("leases", false);
    wait_for(&fake, PATIENCE, "every grant Ready", || {
        let ready = ready_names(&fake, "datasourcegrants");
        created.iter().all(|n| ready.contains(n))
    })
    .await;
    assert_eq!(gauge(&metrics, "tokenmint_leader"), 1);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops within 5 s")
        .unwrap()
        .unwrap();
}

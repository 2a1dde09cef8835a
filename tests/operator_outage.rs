//! The operator rides out the control plane: one operator replica (`operator::Replica::run`, as
//! `tokenmint operator` runs it after connecting) against the fake API server, through five
//! outages in a row, each longer than the renew deadline and ending with an API-server restart
//! (every watch resumes with 410 Gone). In each outage it steps down — writes fenced at the
//! renew deadline, controllers stopped, `tokenmint_leader` 0, `/readyz` saying follower,
//! `/healthz` healthy — and when the API server is back the same process leads again and
//! reconciles a grant created then, without rewriting anything it had written before — also the
//! status that lists the consumers of a token, which workloads read — or reading again a Secret
//! it had verified. The log says so in a few lines per outage, not one per retry.
//!
//! Its own test binary: it counts log lines, and tracing's subscriber is process-wide.

mod support;

use serde_json::json;
use std::time::Duration;
use support::fake_api::{Fake, TEAM, grant, ready_names, service_key, wait_for};
use support::inproc::{Capture, get};
use support::operator::{LEASE, RELEASE_NS, TIMING, gauge, replica, writes_in};
use tokenmint::operator::admin::{self, AdminState};
use tokio::sync::watch;
use tokio::time::Instant;

/// Longer than the renew deadline and the lease duration.
const OUTAGE: Duration = Duration::from_millis(3_500);
/// After a return, a new grant is Ready within this (the bound on a real cluster).
const BACK_WITHIN: Duration = Duration::from_secs(20);

/// The warning and error lines logged so far.
fn loud_lines(capture: &Capture) -> Vec<String> {
    capture
        .text()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_outages_longer_than_the_renew_deadline_are_ridden_out_by_the_same_process() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    )
    .unwrap();

    let fake = Fake::default();
    service_key(&fake);
    grant(&fake, "before");
    // Consumers of its token: one that sees rotations, one that does not.
    for (name, pod) in [
        (
            "reads-volume",
            json!({"volumes": [{"name": "t", "secret": {"secretName": "before-token"}}],
                                "containers": [{"name": "c", "volumeMounts": [{"name": "t", "mountPath": "/t"}]}]}),
        ),
        (
            "reads-env",
            json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "before-token"}}]}]}),
        ),
    ] {
        fake.put(
            "apps",
            "deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": TEAM},
            "spec": {"selector": {}, "template": {"spec": pod}}}),
        );
    }
    let replica = replica(&fake, "operator-0-1234abcd");
    let (metrics, readiness) = (replica.metrics.clone(), replica.readiness.clone());
    let admin = admin::router(AdminState {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        heartbeat: replica.heartbeat.clone(),
    });
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(replica.run(stop_rx));
    wait_for(
        &fake,
        Duration::from_secs(20),
        "the first grant Ready, with its consumers",
        || {
            ready_names(&fake, "datasourcegrants").contains("before")
                && fake
                    .get("tokenmint.dev", "datasourcegrants", TEAM, "before")
                    .is_some_and(|g| g["status"]["consumerCount"] == 2)
        },
    )
    .await;
    assert_eq!(gauge(&metrics, "tokenmint_leader"), 1);

    let mut expected = vec!["before".to_owned()];
    for round in 1..=5 {
        let outage = format!("outage {round}");
        let fenced = format!("outage {round}: past the renew deadline");
        let back = format!("back {round}");
        let loud_before = loud_lines(&capture).len();
        fake.phase(&outage);
        fake.set_down(true);
        let cut = Instant::now();

        // Steps down: a follower, and says so; the process stays up and healthy.
        wait_for(&fake, TIMING.renew_deadline * 3, "stepped down", || {
            gauge(&metrics, "tokenmint_leader") == 0
        })
        .await;
        tokio::time::sleep_until(cut + TIMING.renew_deadline + Duration::from_millis(200)).await;
        fake.phase(&fenced);
        assert_eq!(
            get(&admin, "/readyz").await,
            (
                200,
                "ready: follower, campaigning for the leader Lease\n".into()
            ),
            "{outage}"
        );
        assert_eq!(get(&admin, "/healthz").await.0, 200, "{outage}");
        assert_eq!(
            gauge(
                &metrics,
                "tokenmint_token_earliest_expiry_timestamp_seconds"
            ),
            0,
            "a follower manages no token"
        );
        // In the last outage a Secret the process had verified is deleted: the new term must
        // not take its record for the Secret (it makes it again).
        let deleted_meanwhile = round == 5;
        if deleted_meanwhile {
            fake.delete("", "secrets", TEAM, "before-token");
        }
        tokio::time::sleep_until(cut + OUTAGE).await;
        assert!(!task.is_finished(), "{outage}: the operator exited");

        // The API server is back, restarted: resumed watches get 410 Gone.
        fake.phase(&back);
        fake.restart();
        fake.set_down(false);
        let returned = Instant::now();
        let name = format!("after-{round}");
        grant(&fake, &name);
        expected.push(name.clone());
        wait_for(&fake, BACK_WITHIN, &format!("{name} Ready"), || {
            ready_names(&fake, "datasourcegrants").contains(&name)
        })
        .await;
        let took = returned.elapsed();
        wait_for(&fake, Duration::from_secs(5), "leading again", || {
            gauge(&metrics, "tokenmint_leader") == 1 && readiness.is_ready()
        })
        .await;
        assert_eq!(
            get(&admin, "/readyz").await,
            (200, "ready: leader\n".into())
        );
        assert!(
            gauge(
                &metrics,
                "tokenmint_token_earliest_expiry_timestamp_seconds"
            ) > 0
        );
        // At rest: every grant Ready, and the new term wrote nothing but the new grant's
        // Secret and status (it read the others' Secrets once, and kept them).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ready = ready_names(&fake, "datasourcegrants");
        assert!(expected.iter().all(|n| ready.contains(n)), "{ready:?}");
        let writes = writes_in(&fake, &back);
        let secret_writes: Vec<&String> = writes
            .iter()
            .filter(|w| w.contains("/secrets") && !w.contains("tokenmint-keyring"))
            .collect();
        // One more of each in the last round: the Secret deleted meanwhile, made again.
        let made = 1 + usize::from(deleted_meanwhile);
        assert_eq!(secret_writes.len(), made, "{back}: {secret_writes:#?}");
        let status_writes = writes.iter().filter(|w| w.contains("/status")).count();
        assert_eq!(status_writes, made, "{back}: {writes:#?}");
        assert!(fake.get("", "secrets", TEAM, "before-token").is_some());
        // Nor did it read them: what the process verified of a Secret at its resourceVersion
        // holds in the new term too (a new term used to GET every Secret once).
        let earlier = &expected[..expected.len() - 1];
        let read_again: Vec<&String> = earlier
            .iter()
            .filter(|n| fake.saw(&back, "get", "secrets", Some(&format!("{n}-token"))))
            .collect();
        assert_eq!(
            read_again,
            Vec::<&String>::new(),
            "{back}: Secrets read again"
        );

        // Fenced: no write was even attempted past the renew deadline.
        assert_eq!(writes_in(&fake, &fenced), Vec::<String>::new(), "{fenced}");
        // A few lines per outage, not one per retry (the Lease alone was retried every
        // 200 ms: about 17 times): one per watch that fails (the keyring, the four caches and
        // the six workload kinds: 11) and three for the Lease, with a little room.
        let loud = loud_lines(&capture);
        let this_round = &loud[loud_before..];
        assert!(
            this_round.len() <= 18,
            "{outage}: {} warnings and errors:\n{}",
            this_round.len(),
            this_round.join("\n")
        );
        assert!(!task.is_finished());
        eprintln!(
            "{outage}: back, a new grant Ready {took:?} after the return; logged:\n{}",
            this_round.join("\n")
        );
    }

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops within 5 s")
        .unwrap()
        .expect("ends without an error");
    let holder = fake
        .get("coordination.k8s.io", "leases", RELEASE_NS, LEASE)
        .unwrap();
    assert!(holder["spec"]["holderIdentity"].is_null(), "released");
}

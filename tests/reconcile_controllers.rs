//! The controller wiring (`reconcile::controllers::run`) against the fake API server: the
//! caches sync (readiness), a grant listed at start-up gets its token and status, each kind is
//! watched once — Secrets label-selected and as metadata only — and shutdown ends the
//! controllers.

mod support;

use k8s_openapi::api::core::v1::Secret;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use support::fake_api::{Fake, TEAM, grant, service_key, wait_for};
use tokenmint::fence::Fence;
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::reconcile::Clock;
use tokenmint::reconcile::controllers::{self, Readiness, Shared};
use tokenmint::reconcile::events::Events;
use tokenmint::reconcile::metrics::Metrics;
use tokenmint::revocation::Revoker;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_sync_mint_and_shut_down() {
    let fake = Fake::default();
    service_key(&fake);
    grant(&fake, "dashboards");
    let (_changed_tx, changed_rx) = watch::channel(0u64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let readiness = Arc::new(Readiness::default());
    readiness.keyring_loaded();
    let shared = Shared {
        client: fake.client(),
        keyring: Arc::new(RwLock::new(
            Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap(),
        )),
        keyring_changed: changed_rx,
        issuer: "tokenmint".into(),
        events: Events::memory(),
        metrics: Arc::new(Metrics::default()),
        clock: Clock::system(),
        revoker: Revoker::disabled(),
        fence: Fence::always(),
        consumers: true,
        restart_window: tokenmint::reconcile::restart::COALESCE_WINDOW,
        verified: Default::default(),
    };
    let running = tokio::spawn({
        let readiness = readiness.clone();
        async move { controllers::run(shared, &[], stop_rx, readiness).await }
    });

    wait_for(&fake, Duration::from_secs(10), "the grant's token", || {
        readiness.is_ready()
            && fake.get("", "secrets", TEAM, "dashboards-token").is_some()
            && fake
                .get("", "secrets", TEAM, "analytics-service-key")
                .is_some()
            && fake
                .get("tokenmint.dev", "datasourcegrants", TEAM, "dashboards")
                .is_some_and(|g| g["status"]["tokenId"].is_string())
    })
    .await;
    let secret: Secret =
        serde_json::from_value(fake.get("", "secrets", TEAM, "dashboards-token").unwrap()).unwrap();
    assert!(secret.data.unwrap().contains_key("token"));

    // One list and one watch per kind; the Secret watch is label-selected and metadata-only.
    let calls = fake.calls();
    for resource in [
        "servicekeys",
        "datasourcegrants",
        "guesttokenrequests",
        "secrets",
    ] {
        for verb in ["list", "watch"] {
            let n = calls
                .iter()
                .filter(|c| c.verb == verb && c.resource == resource)
                .count();
            assert_eq!(n, 1, "{verb} {resource}: {n}");
        }
    }
    for call in calls
        .iter()
        .filter(|c| c.resource == "secrets" && matches!(c.verb.as_str(), "list" | "watch"))
    {
        assert!(
            call.request
                .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dtokenmint"),
            "{}",
            call.request
        );
        assert!(
            call.accept.contains("as=PartialObjectMetadata"),
            "not metadata-only: {}",
            call.accept
        );
    }

    // Shutdown ends the controllers.
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("controllers did not stop")
        .unwrap();
}

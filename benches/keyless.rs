//! Keyless callers cost no more than key holders once their ServiceAccount token is warm: the
//! access-token route, in process (no sockets, so only the server's own work is timed), called
//! with the service key and with a projected ServiceAccount token that TokenReview (a fake API
//! server) vouched for once.
//!
//!     cargo bench --bench keyless            # 5 alternating rounds of 20,000 requests each
//!
//! Prints requests per second of each and the ratio keyless / key (the target: ≥ 0.9).

#[path = "../tests/support/fake_api.rs"]
#[allow(dead_code)]
mod fake_api;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokenmint::http::{AppState, Config};
use tokenmint::key_store::{KeyIndex, SharedKeyStore};
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::manifests::Manifests;
use tokenmint::revocation::{Denylist, Revoker};
use tokenmint::tokenreview::Reviewer;
use tower::ServiceExt;

// The binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 5;
const PER_ROUND: usize = 20_000;
const ROUTE: &str = "/api/admin/v1/api_token/get_access_token";
const KEY: &str = "tmk_bench_key";
const MANIFESTS: &str = r#"
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: reports, namespace: team-a, uid: uid-reports, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  principal: {id: "7", email: reports@example.com, name: reports}
  dataSources: [Data_3_E]
  serviceAccounts: [report-api]
---
apiVersion: v1
kind: Secret
metadata: {name: reports-service-key, namespace: team-a}
stringData: {key: tmk_bench_key}
"#;

async fn round(router: &axum::Router, authorization: &str) -> Duration {
    let started = Instant::now();
    for _ in 0..PER_ROUND {
        let request = Request::post(ROUTE)
            .header("authorization", authorization)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await.unwrap();
    }
    started.elapsed()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fake = fake_api::Fake::default();
        let token = fake_api::projected_token("report-api", 3600);
        fake.service_account_token(
            &token,
            "system:serviceaccount:team-a:report-api",
            &["tokenmint"],
        );
        let manifests =
            Manifests::from_yaml(std::path::Path::new("bench.yaml"), MANIFESTS).unwrap();
        let index = KeyIndex::build(
            &manifests.service_keys,
            &manifests.secrets,
            tokenmint::key_store::Source::Manifests,
        );
        let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
        let denylist = Arc::new(Denylist::default());
        let state = AppState::from_config(Config {
            store: Arc::new(SharedKeyStore::fixed(index, ring)),
            issuer: "tokenmint".into(),
            revoker: Revoker::Memory(denylist.clone()),
            denylist,
            watch_restarts: Default::default(),
            reviewer: Some(Arc::new(Reviewer::new(
                kube::Api::all(fake.client()),
                vec!["tokenmint".into()],
                tokenmint::tokenreview::Issuers::fixed(vec![
                    fake_api::SERVICE_ACCOUNT_ISSUER.into(),
                ]),
            ))),
        });
        let router = tokenmint::http::router(state);
        let key = format!("Bearer {KEY}");
        let keyless = format!("Bearer {token}");
        // Warm-up, and the one TokenReview.
        round(&router, &key).await;
        round(&router, &keyless).await;
        let (mut with_key, mut with_token) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..ROUNDS {
            with_key += round(&router, &key).await;
            with_token += round(&router, &keyless).await;
        }
        let total = (ROUNDS * PER_ROUND) as f64;
        let (key_rate, token_rate) = (
            total / with_key.as_secs_f64(),
            total / with_token.as_secs_f64(),
        );
        println!("| caller | requests/s (in process, one thread) |");
        println!("|---|---|");
        println!("| service key | {key_rate:.0} |");
        println!("| warm ServiceAccount token | {token_rate:.0} |");
        println!(
            "\nkeyless / key: {:.2}; TokenReviews: {}",
            token_rate / key_rate,
            fake.count("create", "tokenreviews")
        );
    });
}

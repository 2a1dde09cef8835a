//! Keyless callers: a projected ServiceAccount token in place of the service key, checked with
//! TokenReview against the fake API server, which scripts the answers: authenticated with the
//! right audience, another audience, unauthenticated (expired, forged, deleted ServiceAccount),
//! and an API error. Also the cache (no second review for a warm token, at most 60 s) and the
//! conflict rule (a ServiceAccount listed by two ServiceKeys belongs to the oldest).

use super::common::*;
use crate::support::fake_api::{
    Fake, SERVICE_ACCOUNT_ISSUER, projected_token, projected_token_for,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokenmint::http::{AppState, Config};
use tokenmint::key_store::{KeyIndex, SharedKeyStore, Source};
use tokenmint::keyring::{Algorithm, Keyring};
use tokenmint::manifests::Manifests;
use tokenmint::revocation::{Denylist, Revoker};
use tokenmint::tokenreview::{Issuers, Reviewer};

/// A token of the ServiceAccount `team-a/name` that the fake vouches for, for our audience.
fn vouched(fake: &Fake, name: &str, exp_in: i64) -> String {
    let token = projected_token(name, exp_in);
    fake.service_account_token(
        &token,
        &format!("system:serviceaccount:team-a:{name}"),
        &["tokenmint"],
    );
    token
}

const KEYS: &str = r#"
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: analytics, namespace: team-a, uid: uid-analytics, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  principal: {id: "1", email: jcw@example.com, name: jcw, orgName: Main Org.}
  dataSources: [Data_3_E]
  workspaces: [w1]
  serviceAccounts: [report-api, shared]
---
apiVersion: v1
kind: Secret
metadata: {name: analytics-service-key, namespace: team-a}
stringData: {key: tmk_analytics}
---
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: later, namespace: team-a, uid: uid-later, creationTimestamp: "2026-06-01T00:00:00Z"}
spec:
  principal: {id: "2", email: l@example.com, name: later}
  dataSources: ["*"]
  serviceAccounts: [shared, own]
---
apiVersion: v1
kind: Secret
metadata: {name: later-service-key, namespace: team-a}
stringData: {key: tmk_later}
---
apiVersion: tokenmint.dev/v1alpha1
kind: ServiceKey
metadata: {name: other, namespace: team-b, uid: uid-other, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  principal: {id: "3", email: o@example.com, name: other}
  dataSources: ["*"]
  serviceAccounts: [report-api]
---
apiVersion: v1
kind: Secret
metadata: {name: other-service-key, namespace: team-b}
stringData: {key: tmk_other}
"#;

fn index() -> KeyIndex {
    let m = Manifests::from_yaml(std::path::Path::new("keys.yaml"), KEYS).unwrap();
    KeyIndex::build(&m.service_keys, &m.secrets, Source::Manifests)
}

/// The routes with keyless callers checked against `fake`.
fn app(fake: &Fake) -> (axum::Router, Arc<Keyring>) {
    reviewing_with(
        fake.client(),
        Issuers::fixed(vec![SERVICE_ACCOUNT_ISSUER.into()]),
    )
}

/// The routes with keyless callers checked by TokenReview through `client`, for tokens of
/// `issuers`.
fn reviewing_with(client: kube::Client, issuers: Issuers) -> (axum::Router, Arc<Keyring>) {
    let ring = Keyring::generate(Algorithm::HS256, jiff::Timestamp::now()).unwrap();
    let store = Arc::new(SharedKeyStore::fixed(index(), ring));
    let keyring = tokenmint::key_store::KeyStore::keyring(store.as_ref()).unwrap();
    let denylist = Arc::new(Denylist::default());
    let state = AppState::from_config(Config {
        store,
        issuer: ISSUER.into(),
        revoker: Revoker::Memory(denylist.clone()),
        denylist,
        watch_restarts: Default::default(),
        reviewer: Some(Arc::new(Reviewer::new(
            kube::Api::all(client),
            vec!["tokenmint".into()],
            issuers,
        ))),
    });
    (tokenmint::http::router(state), keyring)
}

const ACCESS: &str = "/api/admin/v1/api_token/get_access_token";
const DATASOURCE: &str = "/api/admin/v1/get_datasource_token";

#[tokio::test]
async fn a_service_account_token_acts_as_the_key_that_lists_it() {
    let fake = Fake::default();
    let token = vouched(&fake, "report-api", 600);
    let (router, keyring) = app(&fake);
    // Every token-issuing route, as if team-a/analytics's key had been presented.
    let r = call(&router, "POST", ACCESS, Some(&bearer(&token)), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = verify(&keyring, r.json["access_token"].as_str().unwrap(), true);
    assert_eq!(c["service_key"], "team-a/analytics");
    let r = call(
        &router,
        "POST",
        DATASOURCE,
        Some(&bearer(&token)),
        r#"{"data_source": "Data_3_E"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Its permissions, exactly: 403 for what the key may not grant.
    call(
        &router,
        "POST",
        DATASOURCE,
        Some(&bearer(&token)),
        r#"{"data_source": "Payroll"}"#,
    )
    .await
    .assert_error(403, "FORBIDDEN");
    let r = call(
        &router,
        "POST",
        "/api/v1/guest-token/create",
        Some(&bearer(&token)),
        json!({"workspaceName": "w1", "clientId": "c"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // `/token` takes it in place of `Basic <key>`; the Datasentinel routes in place of name:key.
    let r = call(&router, "POST", "/token", Some(&bearer(&token)), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["user"]["api_key"], "team-a/analytics");
    let r = call(
        &router,
        "POST",
        "/ds-api/user-token",
        Some(&bearer(&token)),
        "",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Warm: one TokenReview for all of the above.
    assert_eq!(fake.count("create", "tokenreviews"), 1);
}

#[tokio::test]
async fn refused_tokens_are_401_and_an_api_error_is_503() {
    let fake = Fake::default();
    let other_audience =
        projected_token_for("report-api", 600, &["https://kubernetes.default.svc"]);
    fake.service_account_token(
        &other_audience,
        "system:serviceaccount:team-a:report-api",
        &["https://kubernetes.default.svc"],
    );
    let unlisted = vouched(&fake, "nobody", 600);
    let not_a_service_account = projected_token("x", 600);
    fake.service_account_token(&not_a_service_account, "jcw", &["tokenmint"]);
    let unknown = projected_token("expired-or-forged", 600);
    let (router, _) = app(&fake);
    for (token, why) in [
        (&other_audience, "audience"),
        (&unlisted, "not listed"),
        (&not_a_service_account, "not a ServiceAccount"),
        (&unknown, "not accepted"),
    ] {
        let r = call(&router, "POST", ACCESS, Some(&bearer(token)), "").await;
        r.assert_error(401, "UNAUTHORIZED");
        assert!(
            r.text.contains(why) || why == "audience" && r.text.contains("not accepted"),
            "{why}: {}",
            r.text
        );
        assert!(
            !r.text.contains(token.as_str()),
            "the token is never echoed"
        );
    }
    // The API server is down: 503, not a 401 that would make a healthy client give up.
    let fresh = vouched(&fake, "report-api", 599);
    fake.set_down(true);
    let r = call(&router, "POST", ACCESS, Some(&bearer(&fresh)), "").await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    // Not cached: it works once the API server is back.
    fake.set_down(false);
    let r = call(&router, "POST", ACCESS, Some(&bearer(&fresh)), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(start_paused = true)]
async fn answers_are_cached_for_at_most_60_seconds_and_never_past_the_tokens_exp() {
    let fake = Fake::default();
    let token = vouched(&fake, "report-api", 3_600);
    let (router, _) = app(&fake);
    let auth = bearer(&token);
    let access = || call(&router, "POST", ACCESS, Some(&auth), "");
    assert_eq!(access().await.status, 200);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(access().await.status, 200);
    assert_eq!(fake.count("create", "tokenreviews"), 1, "a cache hit");
    // The ServiceAccount is deleted: within 60 s its token stops working.
    fake.revoke_service_account_token(&token);
    tokio::time::advance(Duration::from_secs(2)).await;
    access().await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(fake.count("create", "tokenreviews"), 2);
    // A negative answer is cached briefly too.
    access().await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(fake.count("create", "tokenreviews"), 2);

    // A token expiring in 10 s is not trusted for 60.
    let short = vouched(&fake, "report-api", 10);
    let short_auth = bearer(&short);
    let short_access = || call(&router, "POST", ACCESS, Some(&short_auth), "");
    assert_eq!(short_access().await.status, 200);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(short_access().await.status, 200);
    assert_eq!(
        fake.count("create", "tokenreviews"),
        4,
        "re-reviewed after its exp"
    );
}

#[tokio::test]
async fn concurrent_first_requests_with_one_token_share_one_review() {
    let fake = Fake::default();
    let token = vouched(&fake, "report-api", 600);
    let (router, _) = app(&fake);
    let auth = bearer(&token);
    // A pod starting with many requests at once: all in flight before any review answers.
    let answers =
        futures::future::join_all((0..8).map(|_| call(&router, "POST", ACCESS, Some(&auth), "")))
            .await;
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    assert_eq!(fake.count("create", "tokenreviews"), 1);
    // Another token is reviewed on its own.
    let other = vouched(&fake, "own", 600);
    let r = call(&router, "POST", ACCESS, Some(&bearer(&other)), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(fake.count("create", "tokenreviews"), 2);
}

#[tokio::test]
async fn a_service_account_listed_twice_belongs_to_the_oldest_service_key() {
    let fake = Fake::default();
    let shared = vouched(&fake, "shared", 600);
    let own = vouched(&fake, "own", 600);
    // team-b lists a ServiceAccount of the same name: a different ServiceAccount.
    let b = projected_token("report-api", 600);
    fake.service_account_token(
        &b,
        "system:serviceaccount:team-b:report-api",
        &["tokenmint"],
    );
    let (router, keyring) = app(&fake);
    for (token, key) in [
        (&shared, "team-a/analytics"),
        (&own, "team-a/later"),
        (&b, "team-b/other"),
    ] {
        let r = call(&router, "POST", ACCESS, Some(&bearer(token)), "").await;
        assert_eq!(r.status, 200, "{}", r.text);
        let c = verify(&keyring, r.json["access_token"].as_str().unwrap(), true);
        assert_eq!(c["service_key"], key);
    }
}

#[tokio::test]
async fn without_a_cluster_a_service_account_token_is_refused_with_the_reason() {
    let t = app_with(Algorithm::HS256);
    let r = call(
        &t.router,
        "POST",
        ACCESS,
        Some(&bearer(&projected_token("report-api", 600))),
        "",
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");
    assert!(r.text.contains("cluster"), "{}", r.text);
}

/// `token` with its claims changed by `edit` (the signature no longer matters: junk).
fn with_claims(token: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    )
}

#[tokio::test]
async fn junk_bearer_tokens_cause_no_review_and_leave_accepted_answers_cached() {
    let fake = Fake::default();
    let token = vouched(&fake, "report-api", 3_600);
    let (router, _) = app(&fake);
    assert_eq!(
        call(&router, "POST", ACCESS, Some(&bearer(&token)), "")
            .await
            .status,
        200
    );
    assert_eq!(fake.count("create", "tokenreviews"), 1);
    // 10,000 junk Bearer tokens: three dot-separated parts, not a JWT; another issuer; another
    // audience; expired; not valid for an hour yet.
    let now = jiff::Timestamp::now().as_second();
    for i in 0..10_000 {
        let junk = match i % 5 {
            0 => format!("{i}.{i}.{i}"),
            1 => with_claims(&token, |c| {
                c["iss"] = json!(format!("https://evil.example/{i}"))
            }),
            2 => projected_token_for(&format!("sa-{i}"), 600, &["https://kubernetes.default.svc"]),
            3 => with_claims(&token, |c| c["exp"] = json!(now - i)),
            _ => with_claims(&token, |c| c["nbf"] = json!(now + 3_600 + i)),
        };
        let r = call(&router, "POST", ACCESS, Some(&bearer(&junk)), "").await;
        r.assert_error(401, "UNAUTHORIZED");
    }
    assert_eq!(
        fake.count("create", "tokenreviews"),
        1,
        "no review for junk"
    );
    // Plausible tokens the API server refuses (more than the caches hold) are reviewed, and
    // their refusals never push the accepted answer out.
    for i in 0..(tokenmint::tokenreview::CACHE_CAPACITY + 10) {
        let unknown = projected_token(&format!("unknown-{i}"), 600);
        let r = call(&router, "POST", ACCESS, Some(&bearer(&unknown)), "").await;
        r.assert_error(401, "UNAUTHORIZED");
    }
    let reviews = fake.count("create", "tokenreviews");
    assert_eq!(reviews, 1 + tokenmint::tokenreview::CACHE_CAPACITY + 10);
    assert_eq!(
        call(&router, "POST", ACCESS, Some(&bearer(&token)), "")
            .await
            .status,
        200
    );
    assert_eq!(
        fake.count("create", "tokenreviews"),
        reviews,
        "still cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_in_flight_are_bounded_and_past_the_bound_answered_503_with_retry_after() {
    use axum::http::{Request, Response};
    use kube::client::Body;
    // An API server that takes its time: no review answers while the test runs.
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (router, _) = reviewing_with(client, Issuers::fixed(vec![SERVICE_ACCOUNT_ISSUER.into()]));
    let waiting: Vec<_> = (0..tokenmint::tokenreview::MAX_IN_FLIGHT)
        .map(|i| {
            let router = router.clone();
            let auth = bearer(&projected_token(&format!("sa-{i}"), 600));
            tokio::spawn(async move { call(&router, "POST", ACCESS, Some(&auth), "").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = call(
        &router,
        "POST",
        ACCESS,
        Some(&bearer(&projected_token("one-more", 600))),
        "",
    )
    .await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(r.text.contains("under way"), "{}", r.text);
    assert_eq!(r.headers["retry-after"], "1");
    // A key still works meanwhile.
    let r = call(&router, "POST", ACCESS, Some(&bearer("tmk_analytics")), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    for task in waiting {
        task.abort();
    }
}

#[tokio::test]
async fn the_issuer_is_read_from_the_api_server_and_until_then_keyless_callers_get_503() {
    let fake = Fake::default();
    let token = vouched(&fake, "report-api", 600);
    fake.set_down(true);
    let (router, _) = reviewing_with(fake.client(), Issuers::discover(fake.client()));
    let r = call(&router, "POST", ACCESS, Some(&bearer(&token)), "").await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(r.text.contains("issuer"), "{}", r.text);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(fake.count("create", "tokenreviews"), 0);
    // The API server answers: its discovery document names the issuer (retried within 1 s).
    fake.set_down(false);
    let started = tokio::time::Instant::now();
    loop {
        let r = call(&router, "POST", ACCESS, Some(&bearer(&token)), "").await;
        if r.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fake.saw("", "get", "/.well-known/openid-configuration", None),
        "{:?}",
        fake.calls()
    );
}

//! Revocation that no tenant can exhaust: a ServiceKey's callers are held to a quota of live
//! revocations (429 naming it, with Retry-After), the replica to its capacity (503), and the
//! system never; session families; never-expiring guest tokens revoked by their ServiceKey's
//! marker, pinning no entry.

use super::common::*;
use serde_json::json;
use std::sync::Arc;
use tokenmint::keyring::Algorithm;
use tokenmint::revocation::{Denylist, Origin, Revocation, Revoker, Target};

const ACCESS: &str = "/api/admin/v1/api_token/get_access_token";
const GUEST: &str = "/api/v1/guest-token/create";

async fn access_token(t: &TestApp, key: &str) -> String {
    let r = call(&t.router, "POST", ACCESS, Some(&bearer(key)), "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["access_token"].as_str().unwrap().to_owned()
}

fn retry_after(r: &Reply) -> u64 {
    r.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{:?}", r.headers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_revoking_as_fast_as_it_can_leaves_the_others_and_the_system_working() {
    const QUOTA: usize = 5;
    // Callers' entries only: B's five and A's three fill it.
    const CAPACITY: usize = 8;
    let denylist = Arc::new(Denylist::new(CAPACITY, QUOTA));
    let t = app_revoking_into(Algorithm::HS256, denylist.clone());
    let revoker = Revoker::Memory(denylist.clone());

    // Tenant B (team-b/sales) revokes as fast as it can: 40 fresh tokens, 8 at a time.
    let mut answers = Vec::new();
    for _ in 0..5 {
        let mut tokens = Vec::new();
        for _ in 0..8 {
            tokens.push(access_token(&t, KEY_B).await);
        }
        let round =
            futures::future::join_all(tokens.iter().map(|token| revoke(&t.router, KEY_B, token)))
                .await;
        answers.extend(round);
    }
    let done = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(done, QUOTA, "B's quota");
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(429, "TOO_MANY_REQUESTS");
        let message = r.json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("--max-revocations-per-service-key") && message.contains("5"),
            "{message}"
        );
        // Until B's earliest entry expires (its tokens live 90 minutes), with the leeway.
        let wait = retry_after(r);
        assert!((5_400..=5_500).contains(&wait), "{wait}");
    }

    // Tenant A's revocations work, and its revoked tokens are refused.
    for _ in 0..3 {
        let token = access_token(&t, KEY_A).await;
        assert!(is_active(&t.router, KEY_A, &token).await);
        assert_eq!(revoke(&t.router, KEY_A, &token).await.status, 200);
        assert!(!is_active(&t.router, KEY_A, &token).await);
    }

    // The system's revocations work, for B too: past B's quota and past the capacity (they do
    // not count towards it, so a tenant's revoke annotations or deletions crowd no one out).
    let mut system = Vec::new();
    for key in [KEY_B, KEY_B, KEY_A, KEY_A, KEY_B, KEY_A] {
        let token = access_token(&t, key).await;
        revoker
            .revoke(&by_the_system(&verify(&t.keyring, &token, true)))
            .await
            .expect("never refused for room");
        system.push((key, token));
    }
    assert!(denylist.len() > CAPACITY, "{}", denylist.len());
    for (key, token) in &system {
        assert!(!is_active(&t.router, key, token).await);
    }

    // Now the replica is full of callers' entries: a caller's revocation is refused with 503
    // (no tenant's entry is dropped for it), naming --max-revocations.
    let token = access_token(&t, KEY_C).await;
    let r = revoke(&t.router, KEY_C, &token).await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-revocations"),
        "{}",
        r.text
    );
    assert!(retry_after(&r) > 0);
    assert!(is_active(&t.router, KEY_C, &token).await);
}

/// A session token from `/token`, and its refresh.
async fn session(t: &TestApp) -> String {
    let r = call(
        &t.router,
        "POST",
        "/token",
        Some(&format!("Basic {KEY_A}")),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["access_token"].as_str().unwrap().to_owned()
}

async fn refresh(t: &TestApp, session: &str) -> Reply {
    call(
        &t.router,
        "POST",
        "/token/refresh",
        Some(&bearer(session)),
        "",
    )
    .await
}

#[tokio::test]
async fn revoking_a_session_revokes_its_family_and_nothing_else() {
    let t = app();
    // S, refreshed into S2, refreshed into S3: one family.
    let s1 = session(&t).await;
    let s2 = refresh(&t, &s1).await.json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let s3 = refresh(&t, &s2).await.json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sid = |token: &str| verify(&t.keyring, token, true)["sid"].clone();
    assert_eq!(sid(&s1), verify(&t.keyring, &s1, true)["jti"]);
    assert_eq!((sid(&s2), sid(&s3)), (sid(&s1), sid(&s1)));
    let other = session(&t).await;

    // S is revoked: its descendants are refused too, and cannot refresh any more.
    assert_eq!(revoke(&t.router, KEY_A, &s1).await.status, 200);
    for token in [&s1, &s2, &s3] {
        assert!(!is_active(&t.router, KEY_A, token).await);
        let r = refresh(&t, token).await;
        r.assert_error(401, "UNAUTHORIZED");
        assert!(r.text.contains("revoked"), "{}", r.text);
    }
    // Another session of the same key lives on.
    assert_eq!(refresh(&t, &other).await.status, 200);
    // Revoking a descendant revokes its ancestors' family as well.
    let o2 = refresh(&t, &other).await.json["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(revoke(&t.router, KEY_A, &o2).await.status, 200);
    refresh(&t, &other).await.assert_error(401, "UNAUTHORIZED");
    // One entry per family, not per session.
    assert_eq!(t.denylist.len(), 2);
}

async fn guest(t: &TestApp, expiry: Option<i64>) -> String {
    let mut body = json!({"workspaceName": "w1", "clientId": "c"});
    if let Some(ms) = expiry {
        body["expiryTime"] = json!(ms);
    }
    let r = call(
        &t.router,
        "POST",
        GUEST,
        Some(&bearer(KEY_A)),
        body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_revoked_never_expiring_guest_token_pins_no_entry_and_stays_refused() {
    let t = app();
    let earlier = guest(&t, None).await;
    let forever = guest(&t, None).await;
    let expiring = guest(&t, Some(600_000)).await;
    assert_eq!(revoke(&t.router, KEY_A, &forever).await.status, 200);
    // Refused; no entry (a marker of its ServiceKey, at its issue time).
    assert!(!is_active(&t.router, KEY_A, &forever).await);
    assert!(t.denylist.is_empty(), "no entry pinned");
    // Every never-expiring guest token of the ServiceKey issued up to that second goes with it
    // (the README says so); an expiring one does not.
    assert!(!is_active(&t.router, KEY_A, &earlier).await);
    assert!(is_active(&t.router, KEY_A, &expiring).await);
    // One minted now, in the same second as the revoked one or not, is not born revoked.
    let fresh = guest(&t, None).await;
    assert!(is_active(&t.router, KEY_A, &fresh).await);
    let claims = |token: &str| verify(&t.keyring, token, false);
    assert!(claims(&fresh)["iat"].as_i64() > claims(&forever)["iat"].as_i64());
    // Still refused a year on: nothing expires, nothing is swept.
    t.denylist
        .sweep(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365));
    assert!(!is_active(&t.router, KEY_A, &forever).await);
    assert!(is_active(&t.router, KEY_A, &fresh).await);
}

#[test]
fn a_family_entry_outlives_every_member_issued_before_it() {
    // A session living 2 h revoked 10 min after it was issued, its ServiceKey's sessions now
    // living 1 h: the family is denied for the longer of the two after the revocation.
    let now = 1_000_000;
    let claims = json!({"jti": "j", "sid": "s", "iat": now - 600, "exp": now - 600 + 7_200,
                        "service_key_uid": "u"});
    let revocation = Revocation::of_claims(
        &claims,
        Origin::Caller,
        "test".into(),
        Some(std::time::Duration::from_secs(3_600)),
        now,
    )
    .unwrap();
    assert_eq!(
        revocation.target,
        Target::Family {
            sid: "s".into(),
            until: now + 7_200
        }
    );
}

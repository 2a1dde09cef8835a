//! `renew` and `revoke`, answered by the real operator (its controllers over the fake API
//! server): the new token's id printed once it is in the Secret, nothing revoked by a renewal,
//! the old token revoked by a revocation; selections; no operator (timeout), `--wait=false`,
//! objects that are not Ready, and bad arguments.

use crate::support::fake_api::{TEAM, custom, wait_for};
use crate::world::{Operator, World, kubectl, now, start_operator};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use tokenmint::cli::output::Exit;

/// A world with the operator running and `grants` DatasourceGrants (`grant-0`...; the even
/// ones labelled `tier=gold`) and the GuestTokenRequest `acme-embed`, all with their tokens.
async fn running(grants: usize) -> (World, Operator) {
    let w = World::empty(Timestamp::now());
    w.put_service_key(
        "analytics",
        json!({"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"},
               "dataSources": ["Data_3_E"], "workspaces": ["w1"],
               "sessionToken": {"secretName": "analytics-session"}}),
    );
    for i in 0..grants {
        let mut grant = custom(
            "DatasourceGrant",
            &format!("grant-{i}"),
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
        );
        if i % 2 == 0 {
            grant["metadata"]["labels"] = json!({"tier": "gold"});
        }
        w.fake.put("tokenmint.dev", "datasourcegrants", grant);
    }
    w.put(
        "GuestTokenRequest",
        "acme-embed",
        json!({"serviceKeyRef": {"name": "analytics"}, "workspaceName": "w1", "clientId": "acme",
               "expiryTime": 3_600_000}),
    );
    let operator = start_operator(&w.fake);
    let fake = w.fake.clone();
    wait_for(
        &w.fake,
        Duration::from_secs(20),
        "every token minted",
        move || {
            let done = |resource: &str| {
                fake.all("tokenmint.dev", resource)
                    .iter()
                    .all(|o| o["status"]["tokenId"].is_string())
            };
            done("datasourcegrants") && done("guesttokenrequests") && done("servicekeys")
        },
    )
    .await;
    (w, operator)
}

fn token_id(w: &World, secret: &str) -> String {
    w.fake.get("", "secrets", TEAM, secret).unwrap()["metadata"]["annotations"]["tokenmint.dev/token-id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_waits_for_the_new_token_prints_its_id_and_revokes_nothing() {
    let (w, operator) = running(1).await;
    let old = token_id(&w, "grant-0-token");
    let at = Timestamp::now();
    let ran = kubectl(w.fake.client(), at, &["renew", "dsg/grant-0", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    let new = token_id(&w, "grant-0-token");
    assert_ne!(new, old);
    let secret = w.fake.get("", "secrets", TEAM, "grant-0-token").unwrap();
    let expires: Timestamp = secret["metadata"]["annotations"]["tokenmint.dev/expires-at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        ran.out,
        format!(
            "dsg/grant-0: new token {new} in Secret grant-0-token, expires {} ({}); the previous token {old} stays valid until it expires\n",
            tokenmint::token::assess::rfc3339(expires),
            tokenmint::cli::output::relative(at, expires)
        )
    );
    // The annotation the operator honoured, and what it recorded.
    let grant = w
        .fake
        .get("tokenmint.dev", "datasourcegrants", TEAM, "grant-0")
        .unwrap();
    assert_eq!(
        grant["metadata"]["annotations"]["tokenmint.dev/renew"],
        at.to_string()
    );
    assert_eq!(
        secret["metadata"]["annotations"]["tokenmint.dev/renew-handled"],
        at.to_string()
    );
    assert!(operator.denylist.is_empty(), "a renewal revokes nothing");

    // A guest token, structured.
    let old = token_id(&w, "acme-embed-token");
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["renew", "gtr", "acme-embed", "-n", TEAM, "-o", "json"],
    )
    .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    let outcomes: Value = serde_json::from_str(&ran.out).unwrap();
    assert_eq!(outcomes[0]["result"], "minted");
    assert_eq!(outcomes[0]["previousTokenId"], old);
    assert_eq!(outcomes[0]["tokenId"], token_id(&w, "acme-embed-token"));
    assert_ne!(outcomes[0]["tokenId"], old);

    // A ServiceKey's session token.
    let old = token_id(&w, "analytics-session");
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["renew", "sk/analytics", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    let new = token_id(&w, "analytics-session");
    assert_ne!(new, old);
    assert!(
        ran.out.starts_with(&format!(
            "sk/analytics: new token {new} in Secret analytics-session"
        )),
        "{}",
        ran.out
    );
    assert!(operator.denylist.is_empty());
    // status names the ServiceKey's two Secrets and the new session token.
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["status", "sk/analytics", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    crate::world::shows(
        &ran,
        &[
            "Key Secret       analytics-service-key\n",
            "Session Secret   analytics-session\n",
            &format!("Token id         {new}\n"),
            "Normal   Rotated: Replaced the token in Secret analytics-session because a renewal was requested",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_revokes_the_old_token_and_waits_for_the_new_one() {
    let (w, operator) = running(0).await;
    let old = token_id(&w, "acme-embed-token");
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["revoke", "gtr/acme-embed", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    let new = token_id(&w, "acme-embed-token");
    assert!(
        ran.out.starts_with(&format!("gtr/acme-embed: token {old} revoked; new token {new} in Secret acme-embed-token, expires ")),
        "{}",
        ran.out
    );
    assert!(operator.denylist.is_revoked(&old));
    assert!(!operator.denylist.is_revoked(&new));
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["revoke", "sk/analytics", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::Error);
    assert!(ran.err.contains("revoke takes a dsg or gtr"), "{}", ran.err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_and_a_selector_renew_each_object_they_select() {
    let (w, operator) = running(5).await;
    let before: Vec<String> = (0..5)
        .map(|i| token_id(&w, &format!("grant-{i}-token")))
        .collect();
    // More than three objects: the wait lists the Secrets instead of reading each.
    w.fake.phase("renew --all");
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["renew", "dsg", "--all", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    let lines: Vec<&str> = ran.out.lines().collect();
    assert_eq!(lines.len(), 5, "{}", ran.out);
    for (i, old) in before.iter().enumerate() {
        let new = token_id(&w, &format!("grant-{i}-token"));
        assert_ne!(&new, old);
        assert!(
            lines[i].starts_with(&format!("dsg/grant-{i}: new token {new} ")),
            "{}",
            lines[i]
        );
    }
    assert!(w.fake.saw("renew --all", "list", "secrets", None));
    w.fake.phase("");
    let before: Vec<String> = (0..5)
        .map(|i| token_id(&w, &format!("grant-{i}-token")))
        .collect();
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["renew", "dsg", "-l", "tier=gold", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    assert_eq!(ran.out.lines().count(), 3, "{}", ran.out);
    for (i, old) in before.iter().enumerate() {
        let renewed = token_id(&w, &format!("grant-{i}-token")) != *old;
        assert_eq!(renewed, i % 2 == 0, "grant-{i}");
    }
    assert!(operator.denylist.is_empty());
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["renew", "dsg", "-A", "-l", "tier=none"],
    )
    .await;
    assert_eq!(
        (ran.exit, ran.out.as_str()),
        (Exit::Fine, "No objects found.\n")
    );
}

#[tokio::test]
async fn without_an_operator_renew_times_out_and_not_ready_objects_fail_fast() {
    let w = World::installed(now());
    let ran = w
        .kubectl(&["renew", "dsg/dashboards", "-n", TEAM, "--timeout", "1s"])
        .await;
    assert_eq!(ran.exit, Exit::NotFine, "{}{}", ran.out, ran.err);
    assert_eq!(
        ran.out,
        "dsg/dashboards: no new token in Secret dashboards-token after 1s: is the operator running? kubectl tokenmint check\n"
    );
    // The request stays: the operator answers it when it runs.
    let grant = w
        .fake
        .get("tokenmint.dev", "datasourcegrants", TEAM, "dashboards")
        .unwrap();
    assert_eq!(
        grant["metadata"]["annotations"]["tokenmint.dev/renew"],
        "2026-12-01T10:00:00Z"
    );

    let ran = w
        .kubectl(&["revoke", "dsg/dashboards", "-n", TEAM, "--wait=false"])
        .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    assert_eq!(
        ran.out,
        "dsg/dashboards: requested (tokenmint.dev/revoke=2026-12-01T10:00:00Z); not waiting\n"
    );

    let ran = w.kubectl(&["renew", "dsg/payroll", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert_eq!(
        ran.out,
        "dsg/payroll: requested, but it is not Ready (Forbidden: ServiceKey analytics does not allow data source \"PayrollDB\" (dataSources: [\"Data_3_E\"])): the operator mints once it is Ready; see kubectl tokenmint status dsg/payroll -n team-a\n"
    );
}

#[tokio::test]
async fn bad_selections_are_refused_before_anything_is_written() {
    let w = World::installed(now());
    for (args, error) in [
        (
            &["renew", "dsg", "-n", TEAM][..],
            "error: name an object (dsg/NAME), or select with --all or -l",
        ),
        (
            &["renew", "dsg/dashboards", "--all", "-n", TEAM][..],
            "error: give either KIND/NAME, or KIND with --all or -l, not both",
        ),
        (
            &["renew", "sk/analytics", "-n", TEAM][..],
            "error: sk/analytics has no sessionToken: a ServiceKey's key is never re-minted; only a session token can be renewed",
        ),
        (
            &["revoke", "gtr", "-n", TEAM][..],
            "error: revoke needs one object: gtr/NAME",
        ),
        (
            &["renew", "dsg/nope", "-n", TEAM][..],
            "error: DatasourceGrant team-a/nope not found",
        ),
    ] {
        let ran = kubectl(w.fake.client(), w.now, args).await;
        assert_eq!(
            (ran.exit, ran.err.as_str()),
            (Exit::Error, error),
            "{args:?}"
        );
    }
    assert!(
        !w.fake.calls().iter().any(|c| c.verb == "patch"),
        "nothing written"
    );
    let ran = w
        .kubectl(&["renew", "dsg/dashboards", "--timeout", "soon"])
        .await;
    assert_eq!(ran.exit, Exit::Error);
    assert!(
        ran.err
            .contains("invalid value 'soon' for '--timeout <DURATION>'"),
        "{}",
        ran.err
    );
}

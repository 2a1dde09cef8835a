//! `status`: a fine object, each reason an object is not Ready (as the real operator reports
//! it), an object the operator has not reported on or not caught up with, a missing Secret, an
//! expired token, consumers a newer operator reports, lists.

use crate::support::fake_api::{TEAM, custom, wait_for};
use crate::world::{SERVICE_KEY_VALUE, World, ago, kubectl, now, shows, start_operator};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::time::Duration;
use tokenmint::cli::output::Exit;

#[tokio::test]
async fn a_fine_grant_shows_its_token_service_key_events_and_exits_zero() {
    let w = World::installed(now());
    let ran = w
        .kubectl(&["status", "dsg/dashboards", "-n", "team-a"])
        .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    let secret = w.fake.get("", "secrets", TEAM, "dashboards-token").unwrap();
    let id = secret["metadata"]["annotations"]["tokenmint.dev/token-id"]
        .as_str()
        .unwrap();
    let renew_at = secret["metadata"]["annotations"]["tokenmint.dev/renew-at"]
        .as_str()
        .unwrap();
    shows(
        &ran,
        &[
            "DatasourceGrant team-a/dashboards\n",
            "Ready            True (TokenReady): token in Secret dashboards-token\n",
            "since 2026-12-01T09:40:00Z (20m ago)",
            "Secret           dashboards-token\n",
            &format!("Token id         {id}\n"),
            "Issued           2026-12-01T09:40:00Z (20m ago)\n",
            "Expires          2026-12-01T10:40:00Z (in 40m)\n",
            &format!("Renews at        {renew_at} ("),
            "Signing kid      hs256-5f1c0e9a7b2d\n",
            "ServiceKey       analytics (Ready): allows data source \"Data_3_E\"\n",
            "Rollout restart  Deployment/report-api: restarted for the current token\n",
            "20m ago   Normal   Minted: Minted a token into Secret dashboards-token",
            "Next step\n  None: all is well.\n",
        ],
    );
    assert!(
        !ran.out.contains("Consumers"),
        "no consumers line before an operator reports them"
    );
    // Never the token.
    let token = w.token("dashboards-token");
    assert!(!ran.out.contains(&token));

    // The structured forms carry the same facts.
    for format in ["json", "yaml"] {
        let ran = w
            .kubectl(&["status", "dsg/dashboards", "-n", "team-a", "-o", format])
            .await;
        assert_eq!(ran.exit, Exit::Fine);
        let report: Value = if format == "json" {
            serde_json::from_str(&ran.out).unwrap()
        } else {
            serde_saphyr::from_str(&ran.out).unwrap()
        };
        assert_eq!(report["fine"], true, "{format}");
        assert_eq!(report["kind"], "DatasourceGrant");
        assert_eq!(report["token"]["id"], id);
        assert_eq!(report["token"]["kid"], "hs256-5f1c0e9a7b2d");
        assert_eq!(report["token"]["expiresAt"], "2026-12-01T10:40:00Z");
        assert_eq!(report["serviceKey"]["allows"], true);
        assert_eq!(report["ready"]["reason"], "TokenReady");
        assert_eq!(report["events"]["items"][0]["reason"], "Minted");
        assert!(!ran.out.contains(&token));
    }
}

#[tokio::test]
async fn a_service_key_shows_its_key_secret_by_name_only() {
    let w = World::installed(now());
    let ran = w.kubectl(&["status", "sk/analytics", "-n", "team-a"]).await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    shows(
        &ran,
        &[
            "ServiceKey team-a/analytics\n",
            "True (KeyReady): key in Secret analytics-service-key",
            "Key Secret       analytics-service-key\n",
            "Principal        jcw (id 1, jcw@example.com)\n",
            "Allows           dataSources Data_3_E; workspaces w1\n",
        ],
    );
    assert!(!ran.out.contains(SERVICE_KEY_VALUE));
    // The key Secret is read as metadata only: its key never reaches the plugin.
    let key_reads: Vec<_> = w
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.name.as_deref() == Some("analytics-service-key"))
        .collect();
    assert!(!key_reads.is_empty());
    assert!(
        key_reads
            .iter()
            .all(|c| c.accept.contains("as=PartialObjectMetadata")),
        "{key_reads:?}"
    );
}

/// The statuses the real operator writes for each reason, and what `status` says of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reason_the_operator_reports_has_its_next_step_and_a_non_zero_exit() {
    let w = World::empty(Timestamp::now());
    w.put_service_key(
        "analytics",
        json!({"principal": {"id": "1", "email": "jcw@example.com", "name": "jcw"},
               "dataSources": ["Data_3_E"], "workspaces": ["w1"]}),
    );
    let grant = |name: &str, spec: Value| w.put("DatasourceGrant", name, spec);
    let base = json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"});
    let with = |extra: Value| {
        let mut spec = base.clone();
        crate::support::fake_api::merge(&mut spec, &extra);
        spec
    };
    grant("fine", base.clone());
    grant("taken", with(json!({"secretName": "taken-token"})));
    w.fake.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "taken-token", "namespace": TEAM},
               "data": {"token": "c29tZW9uZSBlbHNl"}}),
    );
    grant(
        "orphan",
        with(json!({"serviceKeyRef": {"name": "missing"}})),
    );
    grant("payroll", with(json!({"dataSource": "PayrollDB"})));
    grant("badfilter", with(json!({"filter": "USER_id = 123 OR"})));
    grant("badspec", with(json!({"renewBefore": "soon"})));
    w.put(
        "GuestTokenRequest",
        "wrong-workspace",
        json!({"serviceKeyRef": {"name": "analytics"}, "workspaceName": "w2", "clientId": "acme"}),
    );
    for (name, created) in [
        ("first", "2026-01-01T00:00:00Z"),
        ("second", "2026-06-01T00:00:00Z"),
    ] {
        let mut key = custom(
            "ServiceKey",
            name,
            json!({"principal": {"id": "2", "email": "r@example.com", "name": name},
                   "serviceAccounts": ["report-api"]}),
        );
        key["metadata"]["creationTimestamp"] = json!(created);
        w.fake.put("tokenmint.dev", "servicekeys", key);
    }
    let _operator = start_operator(&w.fake);
    let reported = |resource: &str, name: &str| {
        w.fake
            .get("tokenmint.dev", resource, TEAM, name)
            .is_some_and(|o| o["status"]["conditions"][0]["type"] == "Ready")
    };
    wait_for(
        &w.fake,
        Duration::from_secs(20),
        "every object reported",
        || {
            ["fine", "taken", "orphan", "payroll", "badfilter", "badspec"]
                .iter()
                .all(|n| reported("datasourcegrants", n))
                && reported("guesttokenrequests", "wrong-workspace")
                && reported("servicekeys", "second")
        },
    )
    .await;
    // Published Events are there too (the recorder writes them asynchronously).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["status", "dsg/fine", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    assert!(
        ran.out
            .contains("Normal   Minted: Minted a token into Secret fine-token"),
        "{}",
        ran.out
    );

    for (target, reason, step) in [
        (
            "dsg/taken",
            "SecretConflict",
            "Secret taken-token is not this DatasourceGrant's, and tokenmint never overwrites it: delete it if it is stale (`kubectl delete secret taken-token -n team-a`), or set spec.secretName to a free name.",
        ),
        (
            "dsg/orphan",
            "ServiceKeyNotFound",
            "Create ServiceKey missing in namespace team-a, or point spec.serviceKeyRef.name at one that exists (`kubectl get sk -n team-a`).",
        ),
        (
            "dsg/payroll",
            "Forbidden",
            "Let ServiceKey analytics allow it in spec.dataSources (`kubectl edit sk analytics -n team-a`), or ask for what it allows.",
        ),
        (
            "dsg/badfilter",
            "InvalidFilter",
            "Fix spec.filter: one SQL boolean expression",
        ),
        (
            "dsg/badspec",
            "InvalidSpec",
            "Fix the field the message names (`kubectl explain datasourcegrants.spec` documents each).",
        ),
        (
            "gtr/wrong-workspace",
            "Forbidden",
            "Let ServiceKey analytics allow it in spec.workspaces (and spec.dataSources for datasourceName)",
        ),
        (
            "sk/second",
            "ServiceAccountConflict",
            "Remove the ServiceAccount the message names from spec.serviceAccounts",
        ),
    ] {
        let ran = kubectl(
            w.fake.client(),
            Timestamp::now(),
            &["status", target, "-n", TEAM],
        )
        .await;
        assert_eq!(ran.exit, Exit::NotFine, "{target}: {}{}", ran.out, ran.err);
        assert!(
            ran.out
                .contains(&format!("Ready            False ({reason}): ")),
            "{target}:\n{}",
            ran.out
        );
        assert!(
            ran.out.contains(&format!("Next step\n  - {step}")),
            "{target}:\n{}",
            ran.out
        );
        // The operator's Warning Event, from the Events API.
        assert!(
            ran.out.contains(&format!("Warning  {reason}: ")),
            "{target}:\n{}",
            ran.out
        );
    }
    // The ServiceKey check is the operator's own: its message.
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["status", "dsg/payroll", "-n", TEAM],
    )
    .await;
    assert!(
        ran.out.contains("ServiceKey       analytics (Ready): ServiceKey analytics does not allow data source \"PayrollDB\""),
        "{}",
        ran.out
    );
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["status", "dsg/orphan", "-n", TEAM],
    )
    .await;
    assert!(
        ran.out.contains(
            "ServiceKey       missing (not found): ServiceKey missing not found in namespace team-a"
        ),
        "{}",
        ran.out
    );
    let ran = kubectl(
        w.fake.client(),
        Timestamp::now(),
        &["status", "dsg/taken", "-n", TEAM],
    )
    .await;
    assert!(
        ran.out
            .contains("Secret           taken-token (someone else's: not owned by this object)"),
        "{}",
        ran.out
    );
}

#[tokio::test]
async fn an_object_the_operator_has_not_reported_on_or_caught_up_with_is_not_fine() {
    let w = World::installed(now());
    w.put(
        "DatasourceGrant",
        "fresh",
        json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
    );
    let ran = w.kubectl(&["status", "dsg/fresh", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine, "{}{}", ran.out, ran.err);
    assert!(
        ran.out
            .contains("Ready            unknown: no Ready condition yet"),
        "{}",
        ran.out
    );
    assert!(
        ran.out.contains("Secret           fresh-token (missing)"),
        "{}",
        ran.out
    );
    assert!(ran.out.contains(
        "The operator has not reported on this DatasourceGrant yet: is it running, and watching namespace team-a? Run `kubectl tokenmint check`, then read its log: `kubectl logs -n tokenmint-system -l app.kubernetes.io/name=tokenmint -c operator`."
    ), "{}", ran.out);

    // Ready, but for an older generation: the spec changed and the operator has not caught up.
    let mut grant = w
        .fake
        .get("tokenmint.dev", "datasourcegrants", TEAM, "dashboards")
        .unwrap();
    grant["metadata"]["generation"] = json!(2);
    w.fake.put("tokenmint.dev", "datasourcegrants", grant);
    let ran = w.kubectl(&["status", "dsg/dashboards", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert!(
        ran.out.contains("Generation       2, status describes 1"),
        "{}",
        ran.out
    );
    assert!(ran.out.contains("The status describes generation 1; the object is at generation 2: the operator has not caught up."), "{}", ran.out);
}

#[tokio::test]
async fn a_missing_secret_an_expired_token_and_a_pending_request_are_not_fine() {
    let w = World::installed(now());
    // An hour later the token (40 minutes left now) has expired: the operator did not renew it.
    let later = w.now + ago(-3_600);
    let ran = kubectl(
        w.fake.client(),
        later,
        &["status", "dsg/dashboards", "-n", TEAM],
    )
    .await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert!(
        ran.out
            .contains("Expires          2026-12-01T10:40:00Z (20m ago)"),
        "{}",
        ran.out
    );
    assert!(
        ran.out
            .contains("The token expired 20m ago: the operator is not renewing it."),
        "{}",
        ran.out
    );

    // A renewal asked for and not answered yet.
    let mut grant = w
        .fake
        .get("tokenmint.dev", "datasourcegrants", TEAM, "dashboards")
        .unwrap();
    grant["metadata"]["annotations"] = json!({"tokenmint.dev/renew": "2026-12-01T09:59:00Z"});
    w.fake.put("tokenmint.dev", "datasourcegrants", grant);
    let ran = w.kubectl(&["status", "dsg/dashboards", "-n", TEAM]).await;
    assert!(
        ran.out.contains(
            "Pending          tokenmint.dev/renew=2026-12-01T09:59:00Z is not handled yet"
        ),
        "{}",
        ran.out
    );
    assert!(
        ran.out
            .contains("The operator has not handled the request yet"),
        "{}",
        ran.out
    );

    w.fake.delete("", "secrets", TEAM, "dashboards-token");
    let ran = w.kubectl(&["status", "dsg/dashboards", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine);
    assert!(
        ran.out
            .contains("Secret dashboards-token is missing although the status is Ready"),
        "{}",
        ran.out
    );
}

#[tokio::test]
async fn what_the_caller_may_not_read_is_said_and_the_rest_shown() {
    let w = World::installed(now());
    w.fake.forbid("", "secrets", "get", Some(TEAM));
    w.fake.forbid("events.k8s.io", "events", "list", None);
    let ran = w.kubectl(&["status", "dsg/dashboards", "-n", TEAM]).await;
    // From the status alone, it is Ready.
    assert_eq!(ran.exit, Exit::Fine, "{}{}", ran.out, ran.err);
    assert!(
        ran.out
            .contains("Secret           dashboards-token (not readable: 403 Forbidden: Forbidden)"),
        "{}",
        ran.out
    );
    assert!(
        ran.out
            .contains("Expires          2026-12-01T10:40:00Z (in 40m)"),
        "{}",
        ran.out
    );
    assert!(
        ran.out
            .contains("Rollout restart  Deployment/report-api: restart state unknown"),
        "{}",
        ran.out
    );
    assert!(
        ran.out.contains("Events\n  not readable: 403 Forbidden"),
        "{}",
        ran.out
    );
    // A grant that does not exist is an error (exit 2), not "not fine".
    let ran = w.kubectl(&["status", "dsg/nope", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::Error);
    assert_eq!(ran.err, "error: DatasourceGrant team-a/nope not found");
}

#[tokio::test]
async fn consumers_a_newer_operator_reports_are_shown() {
    let w = World::installed(now());
    let mut grant = w
        .fake
        .get("tokenmint.dev", "datasourcegrants", TEAM, "dashboards")
        .unwrap();
    grant["status"]["consumerCount"] = json!(4);
    grant["status"]["consumersMissingRotation"] = json!(1);
    // As the operator writes them: those keeping a stale token first; `modes` when several,
    // `restarted` when restartConsumers or rolloutRestart restarts it.
    grant["status"]["consumers"] = json!([
        {"kind": "CronJob", "name": "export", "mode": "env", "seesRotation": false},
        {"kind": "StatefulSet", "name": "db", "mode": "subPath", "modes": ["subPath", "volume"],
         "seesRotation": false, "restarted": true},
        {"kind": "Deployment", "name": "report-api", "mode": "volume", "seesRotation": true}]);
    grant["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!(
        {"type": "Delivered", "status": "False", "reason": "ConsumerMissesRotation",
         "message": "CronJob export (env) keeps the old token after a rotation: it reads Secret dashboards-token from the environment or a subPath mount, which a running pod never sees change, and is not restarted. CronJob export cannot be restarted (a CronJob has no rollout: its next run starts with the new token, a run in progress keeps the old one): mount the Secret as a volume.",
         "lastTransitionTime": "2026-12-01T09:41:00Z"}));
    w.fake.put("tokenmint.dev", "datasourcegrants", grant);
    let ran = w.kubectl(&["status", "dsg/dashboards", "-n", TEAM]).await;
    assert!(ran.out.contains(
        "Consumers        4\n                   CronJob/export (env, does not see rotations)\n                   StatefulSet/db (subPath, volume, restarted after each rotation)\n                   Deployment/report-api (volume, sees rotations)\n"
    ), "{}", ran.out);
    assert!(
        ran.out
            .contains("Delivered        False (ConsumerMissesRotation): CronJob export"),
        "{}",
        ran.out
    );
    assert!(
        ran.out
            .contains("  - Delivered is False (ConsumerMissesRotation): CronJob export (env) keeps the old token"),
        "{}",
        ran.out
    );
    // Ready decides the exit code.
    assert_eq!(ran.exit, Exit::Fine);
    let json = w
        .kubectl(&["status", "dsg/dashboards", "-n", TEAM, "-o", "json"])
        .await;
    let report: Value = serde_json::from_str(&json.out).unwrap();
    assert_eq!(report["consumers"]["count"], 4);
    assert_eq!(report["consumers"]["items"][0]["name"], "export");
}

#[tokio::test]
async fn a_kind_alone_lists_its_objects_and_fails_when_one_is_not_ready() {
    let w = World::installed(now());
    let ran = w.kubectl(&["status", "dsg", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::NotFine, "payroll is not Ready: {}", ran.out);
    assert_eq!(
        ran.out,
        "NAME         READY   REASON       EXPIRES\n\
         dashboards   True    TokenReady   in 40m\n\
         payroll      False   Forbidden    -\n"
    );
    let ran = w.kubectl(&["status", "gtr", "-A"]).await;
    assert_eq!(ran.exit, Exit::Fine, "{}", ran.out);
    assert!(
        ran.out.starts_with("NAMESPACE   NAME         READY"),
        "{}",
        ran.out
    );
    assert!(
        ran.out
            .contains("team-a      acme-embed   True    TokenReady   in 40m"),
        "{}",
        ran.out
    );
    let ran = w.kubectl(&["status", "sk", "-n", "elsewhere"]).await;
    assert_eq!(
        (ran.exit, ran.out.as_str()),
        (Exit::Fine, "No objects found.\n")
    );
    let ran = w.kubectl(&["status", "secret/x", "-n", TEAM]).await;
    assert_eq!(ran.exit, Exit::Error);
    assert!(ran.err.contains("unknown kind \"secret\""), "{}", ran.err);
}

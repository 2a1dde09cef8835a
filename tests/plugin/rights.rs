//! The rights each command declares (what `check` asks the API server about, and what the
//! README lists) are exactly the rights it uses: every request the fake API server records
//! while a command runs is covered by one of its declared rights, and every declared right is
//! used by one of its runs.

use crate::support::fake_api::{Call, TEAM, custom};
use crate::world::{OPERATOR_NS, World, kubectl, now};
use serde_json::json;
use std::collections::BTreeSet;
use tokenmint::cli::output::Exit;
use tokenmint::cli::rights::{COMMANDS, Place, Right};

fn covers(right: &Right, call: &Call) -> bool {
    let place = match right.place {
        Place::Namespace => call.namespace.as_deref() == Some(TEAM),
        Place::OperatorNamespace => call.namespace.as_deref() == Some(OPERATOR_NS),
        Place::Keyring => {
            call.namespace.as_deref() == Some(OPERATOR_NS)
                && call.name.as_deref() == Some("tokenmint-keyring")
        }
        Place::Lease => {
            call.namespace.as_deref() == Some(OPERATOR_NS)
                && call.name.as_deref() == Some("tokenmint-leader")
        }
        Place::Cluster => call.namespace.is_none(),
    };
    place && right.group == call.group && right.resource == call.resource && right.verb == call.verb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_uses_exactly_the_rights_it_declares() {
    let w = World::installed(now());
    // Enough grants with tokens that renew --all waits by listing; a ServiceKey with a session
    // token to renew.
    for i in 0..4 {
        let grant = w.put(
            "DatasourceGrant",
            &format!("extra-{i}"),
            json!({"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E"}),
        );
        w.mint(&grant, 60, 1);
    }
    w.fake.put(
        "tokenmint.dev",
        "servicekeys",
        custom(
            "ServiceKey",
            "with-session",
            json!({"principal": {"id": "2", "email": "s@example.com", "name": "s"},
                   "sessionToken": {"secretName": "with-session-token"}}),
        ),
    );
    let _operator = w.stand_in_operator();
    let runs: &[(&str, &[&str])] = &[
        ("status", &["status", "dsg/dashboards"]),
        ("status", &["status", "gtr/acme-embed"]),
        ("status", &["status", "sk/analytics"]),
        ("status", &["status", "dsg"]),
        ("status", &["status", "gtr"]),
        ("status", &["status", "sk"]),
        ("inspect", &["inspect", "secret", "dashboards-token"]),
        ("renew", &["renew", "dsg/dashboards"]),
        ("renew", &["renew", "gtr/acme-embed"]),
        ("renew", &["renew", "sk/with-session", "--wait=false"]),
        ("renew", &["renew", "dsg", "--all"]),
        ("renew", &["renew", "gtr", "-l", "tier=gold"]),
        ("renew", &["renew", "sk", "--all", "--wait=false"]),
        ("revoke", &["revoke", "dsg/dashboards"]),
        ("revoke", &["revoke", "gtr/acme-embed"]),
        ("check", &["check"]),
    ];
    let mut used: Vec<(&str, BTreeSet<usize>)> = COMMANDS
        .iter()
        .map(|(c, _)| (*c, BTreeSet::new()))
        .collect();
    for (n, (command, args)) in runs.iter().enumerate() {
        let phase = format!("run {n}");
        w.fake.phase(&phase);
        let args: Vec<&str> = args.iter().copied().chain(["-n", TEAM]).collect();
        let ran = kubectl(w.fake.client(), w.now, &args).await;
        assert_ne!(ran.exit, Exit::Error, "{args:?}: {}", ran.err);
        let (_, rights) = COMMANDS.iter().find(|(c, _)| c == command).unwrap();
        let seen = &mut used.iter_mut().find(|(c, _)| c == command).unwrap().1;
        for call in w
            .fake
            .calls()
            .iter()
            .filter(|c| c.phase == phase && c.group != "<non-resource>")
        {
            let i = rights
                .iter()
                .position(|r| covers(r, call))
                .unwrap_or_else(|| {
                    panic!("{args:?} made a request no declared right covers: {call:?}")
                });
            seen.insert(i);
        }
    }
    for ((command, rights), (_, seen)) in COMMANDS.iter().zip(&used) {
        for (i, right) in rights.iter().enumerate() {
            assert!(
                seen.contains(&i),
                "{command} declares {right:?} but never used it"
            );
        }
    }
}

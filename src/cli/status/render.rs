//! The text of `status` for people, and its next steps: one per thing that is not fine, naming
//! what to change or run.

use super::report::{Row, SecretState, StatusReport};
use crate::cli::output::{Fields, relative, when};
use crate::cli::plugin::Operator;
use crate::cli::target::{Kind, Object};
use crate::desired::Reason;
use jiff::Timestamp;

/// The next steps for `r`; empty when everything is fine.
pub fn next_steps(
    r: &StatusReport,
    object: &Object,
    operator: &Operator,
    now: Timestamp,
) -> Vec<String> {
    let ns = &r.namespace;
    let kind = r.kind.name();
    let check = "`kubectl tokenmint check`";
    let logs = format!(
        "`kubectl logs -n {} -l app.kubernetes.io/name=tokenmint -c operator`",
        operator.namespace
    );
    let mut steps = Vec::new();
    match &r.ready {
        None => steps.push(format!(
            "The operator has not reported on this {kind} yet: is it running, and watching namespace {ns}? Run {check}, then read its log: {logs}."
        )),
        Some(c) if c.status != "True" => steps.push(reason_step(r, object, &c.reason)),
        Some(_) => {}
    }
    if let (Some(g), Some(o)) = (r.generation, r.observed_generation)
        && o < g
    {
        steps.push(format!(
            "The status describes generation {o}; the object is at generation {g}: the operator has not caught up. It retries transient errors (API requests, signing) with backoff and reports them in its log only: {logs}."
        ));
    }
    let ready = r.ready.as_ref().is_some_and(|c| c.status == "True");
    for secret in [&r.secret, &r.key_secret].into_iter().flatten() {
        if ready && secret.state == SecretState::Missing {
            steps.push(format!(
                "Secret {} is missing although the status is Ready: the operator re-creates it when it sees the deletion; if it does not come back, run {check} and read its log: {logs}.",
                secret.name
            ));
        }
    }
    if let Some(exp) = r.token.as_ref().and_then(|t| t.expires_at)
        && exp <= now
    {
        steps.push(format!(
            "The token expired {}: the operator is not renewing it. Run {check}, then read its log: {logs}.",
            relative(now, exp)
        ));
    }
    if !r.pending.is_empty() && ready {
        steps.push(format!(
            "The operator has not handled the request yet: it mints within seconds when it runs; otherwise run {check}."
        ));
    }
    if r.rollout_restart
        .as_ref()
        .is_some_and(|rr| rr.restarted_for_current_token == Some(false))
    {
        steps.push(
            "The workloads in spec.rolloutRestart have not been restarted for the current token yet: the operator restarts them within a minute of a rotation; otherwise see the Events (RolloutRestartFailed, RolloutRestartForbidden).".into(),
        );
    }
    for c in r.conditions.iter().filter(|c| c.status == "False") {
        steps.push(format!(
            "{} is False ({}): {}",
            c.type_, c.reason, c.message
        ));
    }
    steps
}

/// What to do about a Ready=False `reason` (the reasons of [`Reason`]).
fn reason_step(r: &StatusReport, object: &Object, reason: &str) -> String {
    let ns = &r.namespace;
    let key = r.service_key.as_ref().map_or("", |k| k.name.as_str());
    let is = |known: Reason| reason == known.as_str();
    if is(Reason::SecretConflict) {
        let name = [&r.secret, &r.key_secret]
            .into_iter()
            .flatten()
            .find(|s| s.state == SecretState::Foreign)
            .map_or("named in the message".to_owned(), |s| s.name.clone());
        let field = match r.kind {
            Kind::ServiceKey => "spec.secretName or spec.sessionToken.secretName",
            _ => "spec.secretName",
        };
        format!(
            "Secret {name} is not this {}'s, and tokenmint never overwrites it: delete it if it is stale (`kubectl delete secret {name} -n {ns}`), or set {field} to a free name.",
            r.kind.name()
        )
    } else if is(Reason::ServiceKeyNotFound) {
        format!(
            "Create ServiceKey {key} in namespace {ns}, or point spec.serviceKeyRef.name at one that exists (`kubectl get sk -n {ns}`)."
        )
    } else if is(Reason::Forbidden) {
        let fields = match r.kind {
            Kind::GuestTokenRequest => "spec.workspaces (and spec.dataSources for datasourceName)",
            _ => "spec.dataSources",
        };
        format!(
            "Let ServiceKey {key} allow it in {fields} (`kubectl edit sk {key} -n {ns}`), or ask for what it allows. Any token this {} held was revoked and removed.",
            r.kind.name()
        )
    } else if is(Reason::ServiceKeyNotReady) {
        format!(
            "ServiceKey {key} has no key in place, and every token is bound to its key: see why with `kubectl tokenmint status sk/{key} -n {ns}` (usually its key Secret is someone else's). The token is minted once the key is in place."
        )
    } else if is(Reason::InvalidFilter) {
        "Fix spec.filter: one SQL boolean expression such as `USER_id = 123` (comparisons, IN, BETWEEN, LIKE, IS NULL, joined by AND, OR, NOT); the message names what was refused.".into()
    } else if is(Reason::ServiceAccountConflict) {
        "Remove the ServiceAccount the message names from spec.serviceAccounts, here or in the older ServiceKey listing it: a ServiceAccount acts for one ServiceKey per namespace (the oldest). The key itself works.".into()
    } else if is(Reason::InvalidSpec) {
        format!(
            "Fix the field the message names (`kubectl explain {}.spec` documents each).",
            object.kind.plural()
        )
    } else {
        format!("Reason {reason}: see the message and the Events; run `kubectl tokenmint check`.")
    }
}

/// The text of one object's status.
/// Width of the label column: the longest label ("Rollout restart", "ServiceAccounts").
const LABELS: usize = 15;

pub fn report(r: &StatusReport, now: Timestamp) -> String {
    let mut f = Fields::padded(LABELS);
    match &r.ready {
        Some(c) => f.add(
            "Ready",
            format!(
                "{} ({}): {}\nsince {}",
                c.status,
                c.reason,
                c.message,
                when(now, c.last_transition_time.0)
            ),
        ),
        None => f.add("Ready", "unknown: no Ready condition yet"),
    };
    if let (Some(g), Some(o)) = (r.generation, r.observed_generation)
        && o < g
    {
        f.add("Generation", format!("{g}, status describes {o}"));
    }
    for c in &r.conditions {
        f.add(
            &c.type_,
            format!("{} ({}): {}", c.status, c.reason, c.message),
        );
    }
    let secret_line = |s: &super::report::SecretView| match (&s.state, &s.detail) {
        (SecretState::Present, _) => s.name.clone(),
        (state, Some(detail)) => format!("{} ({}: {detail})", s.name, state_word(*state)),
        (state, None) => format!("{} ({})", s.name, state_word(*state)),
    };
    if let Some(s) = &r.key_secret {
        f.add("Key Secret", secret_line(s));
    }
    if let Some(s) = &r.secret {
        let label = if r.kind == Kind::ServiceKey {
            "Session Secret"
        } else {
            "Secret"
        };
        f.add(label, secret_line(s));
    }
    if let Some(t) = &r.token {
        if let Some(id) = &t.id {
            f.add("Token id", id);
        }
        if let Some(at) = t.issued_at {
            f.add("Issued", when(now, at));
        }
        match t.expires_at {
            Some(at) => f.add("Expires", when(now, at)),
            None if t.never_expires => f.add("Expires", "never (no expiryTime)"),
            None => &mut f,
        };
        if let Some(at) = t.renew_at {
            f.add("Renews at", when(now, at));
        }
        if let Some(kid) = &t.kid {
            f.add("Signing kid", kid);
        }
    }
    if let Some(k) = &r.service_key {
        let state = match (k.found, &k.ready) {
            (Some(false), _) => "not found".to_owned(),
            (Some(true), Some(ready)) => ready.clone(),
            (Some(true), None) => "no status yet".to_owned(),
            (None, _) => "not readable".to_owned(),
        };
        f.add("ServiceKey", format!("{} ({state}): {}", k.name, k.detail));
    }
    if let Some(p) = &r.principal {
        f.add(
            "Principal",
            format!("{} (id {}, {})", p.name, p.id, p.email),
        );
        f.add(
            "Allows",
            format!(
                "dataSources {}; workspaces {}",
                list(&p.data_sources),
                list(&p.workspaces)
            ),
        );
        if !p.service_accounts.is_empty() {
            f.add("ServiceAccounts", p.service_accounts.join(", "));
        }
    }
    if let Some(rr) = &r.rollout_restart {
        let state = match rr.restarted_for_current_token {
            Some(true) => "restarted for the current token",
            Some(false) => "restart pending for the current token",
            None => "restart state unknown (Secret not readable)",
        };
        f.add(
            "Rollout restart",
            format!("{}: {state}", rr.workloads.join(", ")),
        );
    }
    if let Some(c) = &r.consumers {
        f.add("Consumers", consumers(c));
    }
    for p in &r.pending {
        f.add("Pending", p);
    }
    let title = format!("{} {}/{}", r.kind.name(), r.namespace, r.name);
    let mut out = format!("{title}\n{}", f.render(2));
    out.push_str(&events(r, now));
    out.push_str("Next step\n");
    if r.next_steps.is_empty() {
        out.push_str("  None: all is well.\n");
    }
    for step in &r.next_steps {
        out.push_str(&format!("  - {step}\n"));
    }
    out
}

fn state_word(state: SecretState) -> &'static str {
    match state {
        SecretState::Present => "present",
        SecretState::Missing => "missing",
        SecretState::Foreign => "someone else's",
        SecretState::Unreadable => "not readable",
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn consumers(c: &super::report::Consumers) -> String {
    let count = c.count.unwrap_or(c.items.len() as i64);
    let mut lines = vec![count.to_string()];
    for item in &c.items {
        let restarted = item["restarted"].as_bool() == Some(true);
        let sees = match item["seesRotation"].as_bool() {
            Some(true) => ", sees rotations",
            Some(false) if restarted => ", restarted after each rotation",
            Some(false) => ", does not see rotations",
            None => "",
        };
        // Every way it reads the token when there are several, else the one.
        let modes: Vec<&str> = item["modes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        let how = match modes.as_slice() {
            [] => item["mode"].as_str().unwrap_or("?").to_owned(),
            several => several.join(", "),
        };
        lines.push(format!(
            "{}/{} ({how}{sees})",
            item["kind"].as_str().unwrap_or("?"),
            item["name"].as_str().unwrap_or("?"),
        ));
    }
    lines.join("\n")
}

fn events(r: &StatusReport, now: Timestamp) -> String {
    let mut out = String::from("Events\n");
    if let Some(why) = &r.events.unreadable {
        out.push_str(&format!("  not readable: {why}\n"));
        return out;
    }
    if r.events.items.is_empty() {
        out.push_str("  none\n");
        return out;
    }
    for e in &r.events.items {
        let age = e.time.map_or("?".to_owned(), |t| relative(now, t));
        let times = if e.count > 1 {
            format!(" (x{})", e.count)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {age:<9} {:<8} {}{times}: {}\n",
            e.type_, e.reason, e.note
        ));
    }
    out
}

/// The text of `status KIND`: a table.
pub fn rows(rows: &[Row], all_namespaces: bool, now: Timestamp) -> String {
    if rows.is_empty() {
        return "No objects found.\n".into();
    }
    let mut table = vec![vec![
        "NAMESPACE".to_owned(),
        "NAME".into(),
        "READY".into(),
        "REASON".into(),
        "EXPIRES".into(),
    ]];
    for r in rows {
        table.push(vec![
            r.namespace.clone(),
            r.name.clone(),
            r.ready.clone().unwrap_or_else(|| "-".into()),
            r.reason.clone().unwrap_or_else(|| "-".into()),
            r.expires_at.map_or("-".into(), |t| relative(now, t)),
        ]);
    }
    if !all_namespaces {
        for row in &mut table {
            row.remove(0);
        }
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    table
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            cells.join("   ").trim_end().to_owned() + "\n"
        })
        .collect()
}

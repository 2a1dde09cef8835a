//! What `renew` and `revoke` share: set the annotation the operator honours to a new value on
//! each object, then wait until the Secret holds a token minted after it (the Secret records
//! the value it answered, `tokenmint.dev/renew-handled` or `revoke-handled`), and report the
//! new token's id. Waiting reads Secret metadata only: the plugin never receives a token here.

use super::output::{self, CliError, Exit, relative};
use super::plugin::Session;
use super::target::{self, Kind, Object};
use crate::labels::MANAGED_SELECTOR;
use crate::reconcile::owned_secret::{
    EXPIRES_AT_ANNOTATION, RENEW_ANNOTATION, RENEW_HANDLED_ANNOTATION, REVOKE_ANNOTATION,
    REVOKE_HANDLED_ANNOTATION, TOKEN_ID_ANNOTATION,
};
use crate::reconcile::status::READY;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// How often a wait looks at the Secrets again.
const POLL: Duration = Duration::from_millis(500);
/// Up to this many objects, a wait reads each one; beyond, it lists the namespace (one request
/// per poll, however many objects).
const READ_EACH_UP_TO: usize = 3;

#[derive(clap::Args, Debug, Clone)]
pub struct WaitArgs {
    /// Wait until the new token is in the Secret (--wait=false: only ask).
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub wait: bool,
    /// How long to wait, as a duration (90s, 2m).
    #[arg(long, default_value = "2m", value_parser = parse_timeout, value_name = "DURATION")]
    pub timeout: Duration,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    crate::token::duration::parse(text).map_err(|e| e.to_string())
}

/// `renew` or `revoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Renew,
    Revoke,
}

impl Action {
    fn annotation(self) -> &'static str {
        match self {
            Action::Renew => RENEW_ANNOTATION,
            Action::Revoke => REVOKE_ANNOTATION,
        }
    }

    fn handled(self) -> &'static str {
        match self {
            Action::Renew => RENEW_HANDLED_ANNOTATION,
            Action::Revoke => REVOKE_HANDLED_ANNOTATION,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer {
    /// The Secret holds a token minted after the request.
    Minted,
    /// Asked, not waited for (`--wait=false`).
    Requested,
    /// Asked, but the object is not Ready: the operator mints once it is.
    NotReady,
    TimedOut,
    /// Nothing to ask for (a ServiceKey without a session token).
    Skipped,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub result: Answer,
    /// `tokenmint.dev/renew=<value>` as set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Outcome {
    fn of(object: &Object, result: Answer) -> Outcome {
        Outcome {
            kind: object.kind,
            namespace: object.namespace(),
            name: object.name(),
            result,
            annotation: None,
            secret: object.token_secret(),
            previous_token_id: None,
            token_id: None,
            expires_at: None,
            message: None,
        }
    }
}

/// The objects a `renew`/`revoke` command line names: one, `--all`, or `-l`.
pub async fn select(
    session: &Session,
    kind: Kind,
    name: Option<&str>,
    all: bool,
    selector: Option<&str>,
) -> Result<Vec<Object>, CliError> {
    match (name, all || selector.is_some()) {
        (Some(name), false) => Ok(vec![
            target::get(&session.client, kind, &session.namespace, name).await?,
        ]),
        (Some(_), true) => Err(CliError::Usage(
            "give either KIND/NAME, or KIND with --all or -l, not both".into(),
        )),
        (None, false) => Err(CliError::Usage(format!(
            "name an object ({short}/NAME), or select with --all or -l",
            short = kind.short()
        ))),
        (None, true) => target::list(&session.client, kind, session.scope(), selector).await,
    }
}

/// Asks for `action` on each object and, with `--wait`, waits for the new tokens; prints one
/// line per object (or the structured list) and returns the exit code.
pub async fn request(
    session: &Session,
    objects: Vec<Object>,
    action: Action,
    wait: &WaitArgs,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    // The instant of the command, to the nanosecond: a new value every time.
    let value = session.now.to_string();
    let mut outcomes = Vec::new();
    let mut waiting = Vec::new();
    for object in &objects {
        let mut outcome = Outcome::of(object, Answer::Requested);
        let Some(secret) = outcome.secret.clone() else {
            outcome.result = Answer::Skipped;
            outcome.message = Some(
                "it has no sessionToken: a ServiceKey's key is never re-minted, only its session token".into(),
            );
            outcomes.push(outcome);
            continue;
        };
        outcome.previous_token_id = token_id(session, &outcome.namespace, &secret).await?;
        annotate(session, object, action.annotation(), &value).await?;
        outcome.annotation = Some(format!("{}={value}", action.annotation()));
        if !object.is_ready() {
            outcome.result = Answer::NotReady;
            outcome.message = Some(not_ready(object));
        } else if wait.wait {
            waiting.push(outcomes.len());
        }
        outcomes.push(outcome);
    }
    if !waiting.is_empty() {
        wait_for(
            session,
            &mut outcomes,
            &waiting,
            action,
            &value,
            wait.timeout,
        )
        .await?;
    }
    let fine = outcomes.iter().all(|o| {
        matches!(
            o.result,
            Answer::Minted | Answer::Requested | Answer::Skipped
        )
    });
    match session.format {
        Some(format) => out.write_all(output::structured(&outcomes, format)?.as_bytes())?,
        None => {
            let text = render(
                &outcomes,
                action,
                wait.timeout,
                session.now,
                session.all_namespaces,
            );
            out.write_all(text.as_bytes())?
        }
    }
    Ok(Exit::from_fine(fine))
}

fn not_ready(object: &Object) -> String {
    match object.condition(READY) {
        Some(c) => format!("it is not Ready ({}: {})", c.reason, c.message),
        None => "it is not Ready yet (no Ready condition)".into(),
    }
}

async fn token_id(
    session: &Session,
    namespace: &str,
    secret: &str,
) -> Result<Option<String>, CliError> {
    let api: Api<Secret> = Api::namespaced(session.client.clone(), namespace);
    let meta = api
        .get_metadata_opt(secret)
        .await
        .map_err(|e| CliError::api(format!("Secret {namespace}/{secret}"), e))?;
    Ok(meta.and_then(|m| annotation(&m, TOKEN_ID_ANNOTATION)))
}

fn annotation(meta: &PartialObjectMeta<Secret>, key: &str) -> Option<String> {
    meta.metadata.annotations.as_ref()?.get(key).cloned()
}

/// A merge patch of one annotation, as `kubectl annotate --overwrite` sends it.
async fn annotate(
    session: &Session,
    object: &Object,
    key: &str,
    value: &str,
) -> Result<(), CliError> {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    object
        .kind
        .api(&session.client, Some(&object.namespace()))
        .patch(
            &object.name(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            CliError::api(
                format!(
                    "{} {}/{}",
                    object.kind.name(),
                    object.namespace(),
                    object.name()
                ),
                e,
            )
        })?;
    Ok(())
}

/// Polls until each waiting outcome's Secret answers `value`, its object turns not Ready, or
/// `timeout` passes.
async fn wait_for(
    session: &Session,
    outcomes: &mut [Outcome],
    waiting: &[usize],
    action: Action,
    value: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut left: Vec<usize> = waiting.to_vec();
    loop {
        let (secrets, objects) = snapshot(session, outcomes, &left).await?;
        left.retain(|&i| {
            let o = &mut outcomes[i];
            let key = (o.namespace.clone(), o.secret.clone().unwrap_or_default());
            if let Some(meta) = secrets.get(&key)
                && annotation(meta, action.handled()).as_deref() == Some(value)
            {
                o.result = Answer::Minted;
                o.token_id = annotation(meta, TOKEN_ID_ANNOTATION);
                o.expires_at = annotation(meta, EXPIRES_AT_ANNOTATION).and_then(|t| t.parse().ok());
                return false;
            }
            if let Some(object) = objects.get(&(o.namespace.clone(), o.name.clone()))
                && object.condition(READY).is_some_and(|c| c.status == "False")
            {
                o.result = Answer::NotReady;
                o.message = Some(not_ready(object));
                return false;
            }
            true
        });
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            for &i in &left {
                outcomes[i].result = Answer::TimedOut;
            }
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

type Secrets = BTreeMap<(String, String), PartialObjectMeta<Secret>>;
type Objects = BTreeMap<(String, String), Object>;

/// The Secrets (metadata) and objects of the outcomes still waiting: read one by one when few,
/// else listed.
async fn snapshot(
    session: &Session,
    outcomes: &[Outcome],
    left: &[usize],
) -> Result<(Secrets, Objects), CliError> {
    let mut secrets = Secrets::new();
    let mut objects = Objects::new();
    if left.len() <= READ_EACH_UP_TO {
        for &i in left {
            let o = &outcomes[i];
            let secret = o.secret.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(session.client.clone(), &o.namespace);
            if let Some(meta) = api
                .get_metadata_opt(&secret)
                .await
                .map_err(|e| CliError::api(format!("Secret {}/{secret}", o.namespace), e))?
            {
                secrets.insert((o.namespace.clone(), secret), meta);
            }
            let object = target::get(&session.client, o.kind, &o.namespace, &o.name).await?;
            objects.insert((o.namespace.clone(), o.name.clone()), object);
        }
        return Ok((secrets, objects));
    }
    let api: Api<Secret> = match session.scope() {
        Some(ns) => Api::namespaced(session.client.clone(), ns),
        None => Api::all(session.client.clone()),
    };
    let listed = api
        .list_metadata(&ListParams::default().labels(MANAGED_SELECTOR))
        .await
        .map_err(|e| CliError::api("token Secrets", e))?;
    for meta in listed.items {
        let key = (
            meta.metadata.namespace.clone().unwrap_or_default(),
            meta.metadata.name.clone().unwrap_or_default(),
        );
        secrets.insert(key, meta);
    }
    let kinds: std::collections::BTreeSet<Kind> = left.iter().map(|&i| outcomes[i].kind).collect();
    for kind in kinds {
        for object in target::list(&session.client, kind, session.scope(), None).await? {
            objects.insert((object.namespace(), object.name()), object);
        }
    }
    Ok((secrets, objects))
}

pub fn render(
    outcomes: &[Outcome],
    action: Action,
    timeout: Duration,
    now: Timestamp,
    all_namespaces: bool,
) -> String {
    if outcomes.is_empty() {
        return "No objects found.\n".into();
    }
    let mut out = String::new();
    for o in outcomes {
        let who = format!("{}/{}", o.kind.short(), o.name);
        let place = if all_namespaces {
            format!(" in {}", o.namespace)
        } else {
            String::new()
        };
        let secret = o.secret.as_deref().unwrap_or("?");
        let previous = o.previous_token_id.as_deref().unwrap_or("(none)");
        let line = match o.result {
            Answer::Minted => {
                let new = o.token_id.as_deref().unwrap_or("?");
                let expires = match o.expires_at {
                    Some(at) => format!(
                        ", expires {} ({})",
                        crate::token::assess::rfc3339(at),
                        relative(now, at)
                    ),
                    None => ", never expires".into(),
                };
                match action {
                    Action::Renew => format!(
                        "new token {new} in Secret {secret}{expires}; the previous token {previous} stays valid until it expires"
                    ),
                    Action::Revoke => format!(
                        "token {previous} revoked; new token {new} in Secret {secret}{expires}"
                    ),
                }
            }
            Answer::Requested => format!(
                "requested ({}); not waiting",
                o.annotation.as_deref().unwrap_or_default()
            ),
            Answer::NotReady => format!(
                "requested, but {}: the operator mints once it is Ready; see kubectl tokenmint status {who} -n {}",
                o.message.as_deref().unwrap_or("it is not Ready"),
                o.namespace
            ),
            Answer::TimedOut => format!(
                "no new token in Secret {secret} after {}s: is the operator running? kubectl tokenmint check",
                timeout.as_secs()
            ),
            Answer::Skipped => format!("skipped: {}", o.message.as_deref().unwrap_or_default()),
        };
        out.push_str(&format!("{who}{place}: {line}\n"));
    }
    out
}

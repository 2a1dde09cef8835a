//! `kubectl tokenmint status KIND/NAME`: one screen that answers "is my token fine?".
//!
//! Gathered here (the object, its Secrets, its ServiceKey, its Events, each read as far as the
//! caller may), judged in [`report`] from the parts [`facts`] makes of them (pure: what is
//! fine, what to do next) and printed by [`render`]. `status KIND` (with `-A`: in every namespace) lists the objects of a kind from
//! their status alone. Exit code 1 when anything shown is not Ready.

pub mod facts;
pub mod render;
pub mod report;

use super::output::{self, CliError, Exit};
use super::plugin::Session;
use super::rights::{Place, Right};
use super::target::{self, Kind, Object, TargetArgs, Typed};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use report::Gathered;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How many of the object's latest Events to show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub events: usize,
}

/// What `status` reads.
pub const RIGHTS: &[Right] = &[
    Right::ours("datasourcegrants", "get"),
    Right::ours("guesttokenrequests", "get"),
    Right::ours("servicekeys", "get"),
    Right::ours("datasourcegrants", "list").optional("status KIND (a list)"),
    Right::ours("guesttokenrequests", "list").optional("status KIND (a list)"),
    Right::ours("servicekeys", "list").optional("status KIND (a list)"),
    Right::required("", "secrets", "get", Place::Namespace)
        .optional("the Secret and the token's issue time and key"),
    Right::required("events.k8s.io", "events", "list", Place::Namespace).optional("Events"),
];

pub async fn run(
    args: StatusArgs,
    session: &Session,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let target = args.target.parse()?;
    let Some(name) = &target.name else {
        let objects = target::list(&session.client, target.kind, session.scope(), None).await?;
        let rows: Vec<report::Row> = objects.iter().map(report::Row::of).collect();
        let fine = rows.iter().all(|r| r.fine);
        match session.format {
            Some(format) => out.write_all(output::structured(&rows, format)?.as_bytes())?,
            None => {
                out.write_all(render::rows(&rows, session.all_namespaces, session.now).as_bytes())?
            }
        }
        return Ok(Exit::from_fine(fine));
    };
    let gathered = gather(session, target.kind, name, args.events).await?;
    let report = report::report(&gathered, &session.operator, session.now);
    match session.format {
        Some(format) => out.write_all(output::structured(&report, format)?.as_bytes())?,
        None => out.write_all(render::report(&report, session.now).as_bytes())?,
    }
    Ok(Exit::from_fine(report.fine))
}

/// Reads everything the report shows. Only the object itself must be readable; anything else
/// the caller may not read is reported as such.
pub async fn gather(
    session: &Session,
    kind: Kind,
    name: &str,
    events: usize,
) -> Result<Gathered, CliError> {
    let client = &session.client;
    let namespace = &session.namespace;
    let object = target::get(client, kind, namespace, name).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match object.token_secret() {
        Some(name) => Some((name.clone(), readable(secrets.get_opt(&name).await))),
        None => None,
    };
    let (key_secret, service_key) = match &object.typed {
        // Metadata only: the plugin never even receives a key.
        Typed::Key(key) => {
            let name = key.key_secret_name();
            let meta = readable(secrets.get_metadata_opt(&name).await);
            (Some((name, meta)), None)
        }
        Typed::Grant(g) => (
            None,
            Some(service_key(session, &g.spec.service_key_ref.name).await),
        ),
        Typed::Guest(g) => (
            None,
            Some(service_key(session, &g.spec.service_key_ref.name).await),
        ),
    };
    let events = object_events(session, &object, events).await;
    Ok(Gathered {
        object,
        secret,
        key_secret,
        service_key,
        events,
    })
}

/// What a read gave: the object, its absence, or why it could not be read.
pub type Read<T> = Result<Option<T>, String>;

fn readable<T>(result: Result<Option<T>, kube::Error>) -> Read<T> {
    result.map_err(|e| output::describe(&e))
}

async fn service_key(session: &Session, name: &str) -> (String, Read<Object>) {
    let read = match target::get(&session.client, Kind::ServiceKey, &session.namespace, name).await
    {
        Ok(key) => Ok(Some(key)),
        Err(CliError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    };
    (name.to_owned(), read)
}

/// The latest `max` Events regarding `object` (events.k8s.io, selected by kind and name),
/// oldest first.
async fn object_events(session: &Session, object: &Object, max: usize) -> Read<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(session.client.clone(), &session.namespace);
    let selector = format!(
        "regarding.kind={},regarding.name={}",
        object.kind.name(),
        object.name()
    );
    let mut events = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|e| output::describe(&e))?
        .items;
    events.sort_by_key(facts::event_time);
    let skip = events.len().saturating_sub(max);
    Ok(Some(events.split_off(skip)))
}

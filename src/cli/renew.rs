//! `kubectl tokenmint renew KIND/NAME` (or `KIND --all`, `KIND -l SELECTOR`): a fresh token
//! now, through the annotation `tokenmint.dev/renew=<new value>` the operator honours on
//! DatasourceGrants, GuestTokenRequests and ServiceKeys (their session token). The token in
//! place is not revoked: it stays valid until it expires, as after any rotation.

use super::annotate::{self, Action, WaitArgs};
use super::output::{CliError, Exit};
use super::plugin::Session;
use super::rights::{Place, Right};
use super::target::TargetArgs;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct RenewArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Every object of the kind in the namespace (with -A: in every namespace).
    #[arg(long)]
    pub all: bool,
    /// The objects of the kind whose labels match, as kubectl's -l.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// What `renew` reads and writes.
pub const RIGHTS: &[Right] = &[
    Right::ours("datasourcegrants", "get"),
    Right::ours("guesttokenrequests", "get"),
    Right::ours("servicekeys", "get"),
    Right::ours("datasourcegrants", "patch"),
    Right::ours("guesttokenrequests", "patch"),
    Right::ours("servicekeys", "patch"),
    Right::ours("datasourcegrants", "list").optional("--all and -l"),
    Right::ours("guesttokenrequests", "list").optional("--all and -l"),
    Right::ours("servicekeys", "list").optional("--all and -l"),
    Right::required("", "secrets", "get", Place::Namespace),
    Right::required("", "secrets", "list", Place::Namespace)
        .optional("waiting for more than three objects at once"),
];

pub async fn run(
    args: RenewArgs,
    session: &Session,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let target = args.target.parse()?;
    let objects = annotate::select(
        session,
        target.kind,
        target.name.as_deref(),
        args.all,
        args.selector.as_deref(),
    )
    .await?;
    // A ServiceKey named on its own must have a session token: there is nothing else to renew.
    if let [one] = objects.as_slice()
        && target.name.is_some()
        && one.token_secret().is_none()
    {
        return Err(CliError::Usage(format!(
            "{} has no sessionToken: a ServiceKey's key is never re-minted; only a session token can be renewed",
            one.reference()
        )));
    }
    annotate::request(session, objects, Action::Renew, &args.wait, out).await
}

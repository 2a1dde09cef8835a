//! `kubectl tokenmint renew KIND/NAME` (or `KIND --all`, `KIND -l SELECTOR`): a fresh token
//! now, through the annotation `tokenmint.dev/renew=<new value>` the operator honours on
//! DatasourceGrants, GuestTokenRequests and ServiceKeys (their session token). The token in
//! place is not revoked: it stays valid until it expires, as after any rotation.

use super::annotate::{self, Action, WaitArgs};
use super::check::{Place, Right};
use super::output::{CliError, Exit};
use super::plugin::Session;
use super::target::Target;
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct RenewArgs {
    /// KIND/NAME (dsg/x, gtr/x, sk/x) or KIND NAME; KIND alone with --all or -l.
    #[arg(value_name = "KIND[/NAME]")]
    pub target: String,
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
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
    Right::required("tokenmint.dev", "datasourcegrants", "get", Place::Namespace),
    Right::required(
        "tokenmint.dev",
        "guesttokenrequests",
        "get",
        Place::Namespace,
    ),
    Right::required("tokenmint.dev", "servicekeys", "get", Place::Namespace),
    Right::required(
        "tokenmint.dev",
        "datasourcegrants",
        "patch",
        Place::Namespace,
    ),
    Right::required(
        "tokenmint.dev",
        "guesttokenrequests",
        "patch",
        Place::Namespace,
    ),
    Right::required("tokenmint.dev", "servicekeys", "patch", Place::Namespace),
    Right::required(
        "tokenmint.dev",
        "datasourcegrants",
        "list",
        Place::Namespace,
    )
    .optional("--all and -l"),
    Right::required(
        "tokenmint.dev",
        "guesttokenrequests",
        "list",
        Place::Namespace,
    )
    .optional("--all and -l"),
    Right::required("tokenmint.dev", "servicekeys", "list", Place::Namespace)
        .optional("--all and -l"),
    Right::required("", "secrets", "get", Place::Namespace),
    Right::required("", "secrets", "list", Place::Namespace)
        .optional("waiting for more than three objects at once"),
];

pub async fn run(
    args: RenewArgs,
    session: &Session,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target, args.name.as_deref())?;
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

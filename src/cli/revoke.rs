//! `kubectl tokenmint revoke KIND/NAME`: revoke the token in place and mint a fresh one,
//! through the annotation `tokenmint.dev/revoke=<new value>` the operator honours on
//! DatasourceGrants and GuestTokenRequests. The operator records the revocation before it mints
//! the replacement, so once the new token is in the Secret the old one is refused everywhere.

use super::annotate::{self, Action, WaitArgs};
use super::check::{Place, Right};
use super::output::{CliError, Exit};
use super::plugin::Session;
use super::target::{Kind, Target};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// KIND/NAME (dsg/x, gtr/x) or KIND NAME.
    #[arg(value_name = "KIND/NAME")]
    pub target: String,
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// What `revoke` reads and writes.
pub const RIGHTS: &[Right] = &[
    Right::required("tokenmint.dev", "datasourcegrants", "get", Place::Namespace),
    Right::required(
        "tokenmint.dev",
        "guesttokenrequests",
        "get",
        Place::Namespace,
    ),
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
    Right::required("", "secrets", "get", Place::Namespace),
];

pub async fn run(
    args: RevokeArgs,
    session: &Session,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let target = Target::parse(&args.target, args.name.as_deref())?;
    if target.kind == Kind::ServiceKey {
        return Err(CliError::Usage(
            "revoke takes a dsg or gtr: a ServiceKey's tokens die with its key (delete and re-create the ServiceKey), and its session token is replaced with renew".into(),
        ));
    }
    let name = target.require_name("revoke")?;
    let objects = annotate::select(session, target.kind, Some(name), false, None).await?;
    annotate::request(session, objects, Action::Revoke, &args.wait, out).await
}

//! `kubectl tokenmint revoke KIND/NAME`: revoke the token in place and mint a fresh one,
//! through the annotation `tokenmint.dev/revoke=<new value>` the operator honours on
//! DatasourceGrants and GuestTokenRequests. The operator records the revocation before it mints
//! the replacement, so once the new token is in the Secret the old one is refused everywhere.

use super::annotate::{self, Action, WaitArgs};
use super::output::{CliError, Exit};
use super::plugin::Session;
use super::rights::{Place, Right};
use super::target::{Kind, TargetArgs};
use std::io::Write;

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// What `revoke` reads and writes.
pub const RIGHTS: &[Right] = &[
    Right::ours("datasourcegrants", "get"),
    Right::ours("guesttokenrequests", "get"),
    Right::ours("datasourcegrants", "patch"),
    Right::ours("guesttokenrequests", "patch"),
    Right::required("", "secrets", "get", Place::Namespace),
];

pub async fn run(
    args: RevokeArgs,
    session: &Session,
    out: &mut dyn Write,
) -> Result<Exit, CliError> {
    let target = args.target.parse()?;
    if target.kind == Kind::ServiceKey {
        return Err(CliError::Usage(
            "revoke takes a dsg or gtr: a ServiceKey's tokens die with its key (delete and re-create the ServiceKey), and its session token is replaced with renew".into(),
        ));
    }
    let name = target.require_name("revoke")?;
    let objects = annotate::select(session, target.kind, Some(name), false, None).await?;
    annotate::request(session, objects, Action::Revoke, &args.wait, out).await
}

//! `kubectl tokenmint` (CONTRACT §11): the `tokenmint` binary invoked by the name
//! `kubectl-tokenmint` (a link or copy of it on PATH, which is how kubectl finds plugins).
//!
//! Flags as kubectl's: the current kubeconfig context (`--kubeconfig`, `--context`),
//! `-n/--namespace`, `-A`, `-o json|yaml`. The plugin acts with the caller's own rights: it
//! needs nothing of the operator's RBAC, and `check` says which of its commands the caller may
//! run. One module per sub-command; each gathers a report through the API, then renders it.

use super::completion::KUBECTL_COMPLETE_BINARY;
use super::output::{CliError, Exit, Format};
use super::{check, completion, connect, inspect, renew, revoke, status};
use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use kube::Client;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// The name the binary answers to as a plugin (kubectl runs `kubectl-<name>` for
/// `kubectl <name>`).
pub const PLUGIN_BINARY: &str = "kubectl-tokenmint";
/// Defaults of the operator's `--namespace`, `--keyring-secret` and `--lease-name` (a test
/// holds them equal to the operator's own defaults).
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "tokenmint-system";
pub const DEFAULT_KEYRING_SECRET: &str = "tokenmint-keyring";
pub const DEFAULT_LEASE_NAME: &str = "tokenmint-leader";

#[derive(Parser, Debug)]
#[command(
    name = PLUGIN_BINARY,
    bin_name = "kubectl tokenmint",
    version,
    about = "Status, inspection, renewal and revocation of tokenmint's tokens, and a preflight check",
    after_help = "Exit codes: 0 fine; 1 something is wrong (not Ready, a failed check, a bad or expired token, a renewal that did not complete); 2 the command could not run."
)]
pub struct Plugin {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Path of the kubeconfig file. Default: $KUBECONFIG, else ~/.kube/config (in a pod: its
    /// ServiceAccount).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use. Default: the current context.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the objects. Default: the context's namespace, else "default".
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,
    /// Every namespace (status and renew of a kind).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Print a structured form instead of the text for people.
    #[arg(short = 'o', long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// Namespace of the tokenmint operator (its --namespace): where its keyring Secret and
    /// leader Lease live.
    #[arg(
        long,
        global = true,
        value_name = "NS",
        env = "TOKENMINT_OPERATOR_NAMESPACE",
        default_value = DEFAULT_OPERATOR_NAMESPACE
    )]
    pub operator_namespace: String,
    /// Name of the keyring Secret in the operator's namespace (its --keyring-secret).
    #[arg(long, global = true, value_name = "NAME", default_value = DEFAULT_KEYRING_SECRET)]
    pub keyring_secret: String,
    /// Name of the leader Lease in the operator's namespace (its --lease-name).
    #[arg(long, global = true, value_name = "NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Is my token fine? Ready and why, the Secret, the token's times and key, the ServiceKey,
    /// consumers, recent Events and the next step. `status KIND` lists every object of a kind.
    Status(status::StatusArgs),
    /// A token's header and claims, its times, and whether its signature verifies against the
    /// cluster's keyring. Never prints the token, its signature or a key.
    #[command(subcommand)]
    Inspect(inspect::InspectArgs),
    /// Mint a fresh token now (tokenmint.dev/renew), without revoking the one in place, and
    /// wait until it is in the Secret. `renew KIND --all` or `-l SELECTOR` renews several.
    Renew(renew::RenewArgs),
    /// Revoke the token in place and mint a fresh one (tokenmint.dev/revoke; dsg and gtr), and
    /// wait until it is in the Secret.
    Revoke(revoke::RevokeArgs),
    /// Preflight of a cluster: the API, the CRDs of this version, the operator's Lease, the
    /// keyring, and your rights for each command.
    Check(check::CheckArgs),
    /// Print a shell completion script.
    Completion(completion::CompletionArgs),
}

/// The operator whose keyring and Lease the commands read.
#[derive(Debug, Clone)]
pub struct Operator {
    pub namespace: String,
    pub keyring_secret: String,
    pub lease_name: String,
}

/// What every command works with.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    /// `-n`, else the context's namespace.
    pub namespace: String,
    pub all_namespaces: bool,
    pub format: Option<Format>,
    pub operator: Operator,
    /// The time the command runs at: one instant for every relative time it prints.
    pub now: Timestamp,
}

impl Session {
    /// The session of `global` over `client`, whose context's namespace is `context_namespace`.
    pub fn new(global: &Global, client: Client, context_namespace: String, now: Timestamp) -> Self {
        Session {
            client,
            namespace: global.namespace.clone().unwrap_or(context_namespace),
            all_namespaces: global.all_namespaces,
            format: global.output,
            operator: Operator {
                namespace: global.operator_namespace.clone(),
                keyring_secret: global.keyring_secret.clone(),
                lease_name: global.lease_name.clone(),
            },
            now,
        }
    }

    /// The namespace to list in: `None` with `-A`.
    pub fn scope(&self) -> Option<&str> {
        (!self.all_namespaces).then_some(self.namespace.as_str())
    }
}

/// Where a command reads (`inspect token -`) and writes.
pub struct Io<'a> {
    pub stdin: &'a mut dyn Read,
    pub out: &'a mut dyn Write,
}

/// Whether this process was started as the plugin: by the name `kubectl-tokenmint` (as kubectl
/// runs it) or `kubectl_complete-tokenmint` (as kubectl runs its completer), whatever the
/// directory or a Windows `.exe`.
pub fn invoked_as_plugin(argv0: Option<&std::ffi::OsStr>) -> bool {
    matches!(
        stem(argv0).as_deref(),
        Some(PLUGIN_BINARY | KUBECTL_COMPLETE_BINARY)
    )
}

fn stem(argv0: Option<&std::ffi::OsStr>) -> Option<String> {
    let stem = std::path::Path::new(argv0?).file_stem()?;
    Some(stem.to_string_lossy().into_owned())
}

/// Runs a command of a session; errors are the caller's to print.
pub async fn execute(
    command: PluginCommand,
    session: &Session,
    io: &mut Io<'_>,
) -> Result<Exit, CliError> {
    match command {
        PluginCommand::Status(args) => status::run(args, session, io.out).await,
        PluginCommand::Inspect(args) => inspect::run(args, session, io).await,
        PluginCommand::Renew(args) => renew::run(args, session, io.out).await,
        PluginCommand::Revoke(args) => revoke::run(args, session, io.out).await,
        PluginCommand::Check(args) => check::run(args, session, io.out).await,
        PluginCommand::Completion(args) => completion::run(&args, io.out),
    }
}

/// The plugin's `main`: parses the command line, connects with the kubeconfig, runs the
/// command on a single-threaded runtime and returns its exit code.
pub fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    if stem(argv.next().as_deref()).as_deref() == Some(KUBECTL_COMPLETE_BINARY) {
        let words: Vec<String> = argv.map(|w| w.to_string_lossy().into_owned()).collect();
        print!("{}", completion::kubectl_candidates(&words));
        return ExitCode::SUCCESS;
    }
    let plugin = Plugin::parse();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let exit = match plugin.command {
        // No cluster needed.
        PluginCommand::Completion(args) => completion::run(&args, &mut stdout),
        command => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(async {
                let (client, namespace) = connect::connect(&plugin.global).await?;
                let session = Session::new(&plugin.global, client, namespace, Timestamp::now());
                let mut io = Io {
                    stdin: &mut stdin,
                    out: &mut stdout,
                };
                execute(command, &session, &mut io).await
            }),
            Err(e) => Err(CliError::Io(e)),
        },
    };
    let exit = exit.unwrap_or_else(|e| {
        let _ = stdout.flush();
        eprintln!("error: {e}");
        Exit::Error
    });
    let _ = stdout.flush();
    ExitCode::from(exit.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_plugin_is_chosen_by_its_name_alone() {
        for argv0 in [
            "kubectl-tokenmint",
            "/usr/local/bin/kubectl-tokenmint",
            "C:\\bin\\kubectl-tokenmint.exe",
        ] {
            let path = argv0.replace('\\', std::path::MAIN_SEPARATOR_STR);
            assert!(invoked_as_plugin(Some(OsStr::new(&path))), "{argv0}");
        }
        assert!(invoked_as_plugin(Some(OsStr::new(
            "/bin/kubectl_complete-tokenmint"
        ))));
        for argv0 in ["tokenmint", "/usr/bin/tokenmint", "kubectl-tokenmint-old"] {
            assert!(!invoked_as_plugin(Some(OsStr::new(argv0))), "{argv0}");
        }
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn defaults_are_the_operators() {
        use crate::cli::{Cli, Command};
        let cli = Cli::try_parse_from(["tokenmint", "operator"]).unwrap();
        let Command::Operator(operator) = cli.command else {
            panic!("not operator")
        };
        // $POD_NAMESPACE may be set where the tests run; the default is what matters.
        if std::env::var_os("POD_NAMESPACE").is_none() {
            assert_eq!(operator.common.namespace, DEFAULT_OPERATOR_NAMESPACE);
        }
        assert_eq!(operator.common.keyring_secret, DEFAULT_KEYRING_SECRET);
        assert_eq!(operator.lease_name, DEFAULT_LEASE_NAME);
    }

    #[test]
    fn flags_are_kubectls_and_come_anywhere() {
        let plugin = Plugin::try_parse_from([
            "kubectl-tokenmint",
            "status",
            "dsg/x",
            "-n",
            "team-a",
            "-o",
            "yaml",
            "--context",
            "prod",
        ])
        .unwrap();
        assert_eq!(plugin.global.namespace.as_deref(), Some("team-a"));
        assert_eq!(plugin.global.output, Some(Format::Yaml));
        assert_eq!(plugin.global.context.as_deref(), Some("prod"));
        assert!(
            Plugin::try_parse_from(["kubectl-tokenmint", "status", "-o", "wide", "dsg/x"]).is_err()
        );
        assert!(
            Plugin::try_parse_from(["kubectl-tokenmint", "-A", "renew", "dsg", "--all"]).is_ok()
        );
        // --wait takes a value only as --wait=BOOL: a name after it stays the name.
        let wait = |args: &[&str]| {
            let argv = ["kubectl-tokenmint", "renew"].iter().chain(args);
            match Plugin::try_parse_from(argv).unwrap().command {
                PluginCommand::Renew(r) => (r.wait.wait, r.target.target),
                _ => unreachable!(),
            }
        };
        assert_eq!(wait(&["--wait", "dsg/x"]), (true, "dsg/x".into()));
        assert_eq!(wait(&["dsg/x", "--wait=false"]), (false, "dsg/x".into()));
        assert_eq!(wait(&["dsg/x"]), (true, "dsg/x".into()));
    }
}

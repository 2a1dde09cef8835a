//! Command-line flags (CONTRACT §1). `main.rs` parses them; the subcommands take their struct.

use crate::keyring::Algorithm;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "tokenmint",
    version,
    about = "Mints vendor-style API tokens into Kubernetes Secrets and keeps them fresh"
)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TOKENMINT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the Kubernetes controller: mint tokens into Secrets and rotate them before expiry.
    Operator(OperatorArgs),
    /// Serve the vendors' REST routes (the sidecar), from the cluster or from manifests.
    Serve(ServeArgs),
    /// Print the three CustomResourceDefinitions as YAML (the source of crds/).
    Crd(CrdArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CrdArgs {
    /// Instead of printing, write one `<plural>.yaml` per CRD into DIR (repeatable), e.g.
    /// `--output-dir crds --output-dir charts/tokenmint/crds`.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Vec<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags shared by `operator` and `serve`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Algorithm of newly created signing keys.
    #[arg(long, default_value = "HS256", value_parser = parse_algorithm)]
    pub algorithm: Algorithm,
    /// The `iss` claim of every token.
    #[arg(long, default_value = "tokenmint")]
    pub issuer: String,
    /// Namespace of the keyring Secret and the leader Lease. Default: $POD_NAMESPACE, else
    /// tokenmint-system.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tokenmint-system")]
    pub namespace: String,
    /// Namespace to watch; repeatable. Default: all namespaces.
    #[arg(long = "watch-namespace", value_name = "NS")]
    pub watch_namespaces: Vec<String>,
    /// Name of the keyring Secret in --namespace.
    #[arg(long, default_value = "tokenmint-keyring")]
    pub keyring_secret: String,
}

#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Name of the leader-election Lease in --namespace.
    #[arg(long, default_value = "tokenmint-leader")]
    pub lease_name: String,
    /// Identity of this replica in the Lease. Default: $POD_NAME, else the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Watch the workloads of the watched namespaces (Deployments, StatefulSets, DaemonSets,
    /// ReplicaSets, Jobs, CronJobs: list and watch) to know who reads each token
    /// (status.consumers, the Delivered condition, restartConsumers). `--consumers=false`
    /// starts no workload watch (and needs no right on workloads).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub consumers: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// REST listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve without a cluster: read ServiceKeys, their key Secrets, DatasourceGrants,
    /// GuestTokenRequests and optionally a keyring Secret from the YAML manifests in DIR (edits
    /// take effect live), and keep the grants' tokens in files under --tokens-dir.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// With --manifests: where the token files are kept, as a pod sees its token Secret:
    /// DIR/<namespace>/<secretName>/token and expires-at.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TOKENS_DIR)]
    pub tokens_dir: PathBuf,
    /// With --manifests: private state that must outlive the process — the keyring (unless the
    /// manifests hold one) and the revocation denylist. Never inside --tokens-dir (consumers
    /// mount that); owned by this user and not writable by others (refused at start otherwise).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Most client connections served at once; further clients wait until one closes.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: std::num::NonZeroUsize,
    /// Threads serving the REST connections, one single-threaded runtime each. Default: the
    /// CPUs this process may use (its cgroup CPU limit, rounded up).
    #[arg(long, value_name = "N")]
    pub http_workers: Option<std::num::NonZeroUsize>,
    /// Also serve /healthz and /readyz on this address, with connections of their own, so
    /// that no load on --listen can starve the probes (the chart points its probes here).
    #[arg(long, value_name = "ADDR")]
    pub probe_listen: Option<SocketAddr>,
    /// Most revocations this replica holds past which POST /oauth/revoke is refused (503)
    /// rather than forgotten. Revocations by tokenmint itself (deleted resources, withdrawn
    /// permissions, the revoke annotation) and those learned from other replicas are always
    /// kept.
    #[arg(long, default_value_t = DEFAULT_MAX_REVOCATIONS)]
    pub max_revocations: usize,
    /// Most live revocations the callers of one ServiceKey may have asked for with
    /// POST /oauth/revoke; past it, 429 with Retry-After (until its earliest one expires), so
    /// that no tenant can fill the denylist for the others.
    #[arg(long, default_value_t = DEFAULT_MAX_REVOCATIONS_PER_SERVICE_KEY)]
    pub max_revocations_per_service_key: usize,
    /// Audience a projected ServiceAccount token must carry to act as a ServiceKey that lists
    /// its ServiceAccount; repeatable.
    #[arg(long = "token-audience", value_name = "AUD", default_values_t = [DEFAULT_TOKEN_AUDIENCE.to_owned()])]
    pub token_audiences: Vec<String>,
    /// The `iss` of the cluster's ServiceAccount tokens (the API server's
    /// --service-account-issuer); repeatable. Only tokens of these issuers are sent to
    /// TokenReview. Default: read from the API server's /.well-known/openid-configuration.
    #[arg(long = "service-account-issuer", value_name = "URL")]
    pub service_account_issuers: Vec<String>,
}

/// Default of `--tokens-dir`: `tokens` in the working directory, printed in the log.
pub const DEFAULT_TOKENS_DIR: &str = "tokens";

/// Default of `--state-dir`: `.tokenmint` in the working directory, beside (not inside) the
/// default `--tokens-dir`.
pub const DEFAULT_STATE_DIR: &str = ".tokenmint";

/// Default of `--token-audience`.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "tokenmint";

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: std::num::NonZeroUsize =
    std::num::NonZeroUsize::new(1024).unwrap();

/// Default of `--max-revocations`.
pub const DEFAULT_MAX_REVOCATIONS: usize = 100_000;

/// Default of `--max-revocations-per-service-key`.
pub const DEFAULT_MAX_REVOCATIONS_PER_SERVICE_KEY: usize = 1_000;

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    s.parse()
        .map_err(|e: crate::keyring::KeyringError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_defaults() {
        let cli = Cli::try_parse_from(["tokenmint", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(args.common.algorithm, Algorithm::HS256);
        assert_eq!(args.common.issuer, "tokenmint");
        assert!(args.common.watch_namespaces.is_empty());
        assert_eq!(args.token_audiences, ["tokenmint"]);
        assert_eq!(cli.log_format, LogFormat::Text);
        let cli = Cli::try_parse_from(["tokenmint", "operator"]).unwrap();
        let Command::Operator(args) = cli.command else {
            panic!("not operator")
        };
        assert_eq!(args.admin_listen.to_string(), "127.0.0.1:8081");
        assert!(args.consumers, "consumers are watched by default");
        let cli = Cli::try_parse_from(["tokenmint", "operator", "--consumers=false"]).unwrap();
        let Command::Operator(args) = cli.command else {
            panic!("not operator")
        };
        assert!(!args.consumers);
    }

    #[test]
    fn flags_parse_and_bad_values_are_refused() {
        let cli = Cli::try_parse_from([
            "tokenmint",
            "operator",
            "--algorithm",
            "EdDSA",
            "--watch-namespace",
            "a",
            "--watch-namespace",
            "b",
            "--log-format",
            "json",
            "--issuer",
            "me",
        ])
        .unwrap();
        let Command::Operator(args) = cli.command else {
            panic!("not operator")
        };
        assert_eq!(args.common.algorithm, Algorithm::EdDSA);
        assert_eq!(args.common.watch_namespaces, ["a", "b"]);
        assert_eq!(args.common.issuer, "me");
        assert_eq!(cli.log_format, LogFormat::Json);
        let err = Cli::try_parse_from(["tokenmint", "serve", "--algorithm", "none"]).unwrap_err();
        assert!(err.to_string().contains("unknown algorithm"), "{err}");
        assert!(Cli::try_parse_from(["tokenmint", "serve", "--listen", "nowhere"]).is_err());
    }
}

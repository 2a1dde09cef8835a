use clap::Parser;
use std::process::ExitCode;
use tokenmint::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropping it flushes the queued log lines.
    let _log = tokenmint::telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Operator(args) => tokenmint::operator::run(args).await,
        Command::Serve(args) => tokenmint::serve::run(args).await,
        Command::Crd(args) => tokenmint::crd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

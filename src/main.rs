use clap::Parser;
use std::process::ExitCode;
use tokenmint::cli::{Cli, Command, CrdArgs};
use tokenmint::crd;

// See Cargo.toml: RSS at scale, and the allocation-heavy REST routes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Installed (or linked) as `kubectl-tokenmint`: the kubectl plugin (CONTRACT §11).
    if tokenmint::cli::plugin::invoked_as_plugin(std::env::args_os().next().as_deref()) {
        return tokenmint::cli::plugin::main();
    }
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropping it flushes the queued log lines.
    let _log = tokenmint::telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Operator(args) => tokenmint::operator::run(args).await,
        Command::Serve(args) => tokenmint::serve::run(args).await,
        Command::Crd(args) => write_crds(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `tokenmint crd`: prints the CRDs, or writes one file per CRD into each of `--output-dir`.
fn write_crds(args: CrdArgs) -> Result<(), tokenmint::BoxError> {
    if args.output_dir.is_empty() {
        print!("{}", crd::render_yaml()?);
        return Ok(());
    }
    for dir in &args.output_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for one in crd::all() {
            let path = dir.join(crd::file_name(&one));
            std::fs::write(&path, crd::render_one(&one)?)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

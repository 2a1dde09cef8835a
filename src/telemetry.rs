//! Logging setup. `RUST_LOG` filters (default `info`); `--log-format json` for log pipelines.
//!
//! Lines go to stderr through a background writer thread: a request thread only formats its
//! line and queues it (never a write syscall or a contended stderr lock on the request path);
//! the writer drains the queue in batches, one write per batch. The queue is not lossy: when it
//! is full (a stalled stderr), logging waits rather than dropping lines. ANSI colours only when
//! stderr is a terminal.

use crate::cli::LogFormat;
use std::io::IsTerminal;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Bytes the writer thread gathers before writing (it also writes whenever the queue is empty).
const WRITE_BUFFER: usize = 64 * 1024;

/// Keeps the log writer running; dropping it flushes every queued line. Hold it until exit.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("tokenmint-log")
        .finish(std::io::BufWriter::with_capacity(
            WRITE_BUFFER,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    LogGuard(guard)
}

//! Logging setup. `RUST_LOG` filters (default `info`); `--log-format json` for log pipelines.
//!
//! Lines are batched: a request thread formats its line into memory and appends it to a shared
//! buffer (no syscall, no thread wake-up on the request path — the REST sidecar writes one
//! access-log line per request); a background thread writes the buffer to stderr every
//! [`FLUSH_INTERVAL`], and a writer that finds the buffer past [`FLUSH_BYTES`] writes it at
//! once. Nothing is dropped: the [`LogGuard`] writes what is left when the process exits.
//! ANSI colours only when stderr is a terminal.

use crate::cli::LogFormat;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in memory before it reaches stderr.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Buffered bytes past which the writer of a line writes the batch itself.
const FLUSH_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct Batch {
    buffer: Arc<Mutex<Vec<u8>>>,
    /// Buffered bytes past which a line's writer writes the batch ([`FLUSH_BYTES`]; 0 when no
    /// flusher thread could be started: every line is then written at once).
    flush_bytes: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            buffer: Arc::default(),
            flush_bytes: FLUSH_BYTES,
        }
    }
}

impl Batch {
    /// Writes everything buffered to stderr. The lock is held only to take the buffer.
    fn flush(&self) {
        let pending = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()));
        if !pending.is_empty() {
            // Nowhere to report a failed write to stderr.
            let _ = std::io::stderr().lock().write_all(&pending);
        }
    }
}

/// One line being formatted; appended to the batch when tracing drops it.
struct Line {
    batch: Batch,
    bytes: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let full = {
            let mut buffer = self.batch.buffer.lock().unwrap_or_else(|e| e.into_inner());
            buffer.extend_from_slice(&self.bytes);
            buffer.len() >= self.batch.flush_bytes
        };
        if full {
            self.batch.flush();
        }
    }
}

impl<'a> MakeWriter<'a> for Batch {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            batch: self.clone(),
            bytes: Vec::with_capacity(256),
        }
    }
}

/// Writes the remaining log lines when dropped. Hold it until exit.
#[must_use = "dropping the guard writes the remaining lines; hold it until exit"]
pub struct LogGuard(Batch);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut batch = Batch::default();
    let flusher = batch.clone();
    let started = std::thread::Builder::new()
        .name("tokenmint-log".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flusher.flush();
            }
        });
    if started.is_err() {
        batch.flush_bytes = 0;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(batch.clone());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    LogGuard(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered(batch: &Batch) -> Vec<u8> {
        batch.buffer.lock().unwrap().clone()
    }

    #[test]
    fn a_line_reaches_the_batch_whole_when_formatting_ends() {
        let batch = Batch::default();
        let mut line = batch.make_writer();
        line.write_all(b"first half, ").unwrap();
        assert!(
            buffered(&batch).is_empty(),
            "a partial line is never visible"
        );
        line.write_all(b"second half\n").unwrap();
        drop(line);
        assert_eq!(buffered(&batch), b"first half, second half\n");
        let mut another = batch.make_writer();
        another.write_all(b"next\n").unwrap();
        drop(another);
        assert_eq!(buffered(&batch), b"first half, second half\nnext\n");
    }

    #[test]
    fn a_full_batch_is_written_by_the_line_that_fills_it() {
        let batch = Batch {
            flush_bytes: 6,
            ..Batch::default()
        };
        let mut line = batch.make_writer();
        line.write_all(b"<4>").unwrap();
        drop(line);
        assert_eq!(buffered(&batch), b"<4>");
        let mut line = batch.make_writer();
        line.write_all(b"<5>\n").unwrap();
        drop(line);
        assert!(buffered(&batch).is_empty(), "written to stderr");
    }
}

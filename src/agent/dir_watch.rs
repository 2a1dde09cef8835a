//! The file watch on the manifests directory: a signal per change to what is in it.
//!
//! Only changes count. Reading the directory raises inotify events too (open, read, close), and
//! the agent reads it on every signal: counting those would re-read it for ever.

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::Path;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Watches `dir` (not its subdirectories). The receiver gets one `()` per change, and one at
/// once, so that a change made before the watch was in place is not missed. The watch lasts as
/// long as the returned watcher.
pub fn watch(dir: &Path) -> notify::Result<(RecommendedWatcher, UnboundedReceiver<()>)> {
    let (changed_tx, changed) = unbounded_channel();
    let _ = changed_tx.send(());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error (e.g. the kernel's event queue overflowed) may hide a change: re-read.
        if event.is_err() || event.is_ok_and(|e| changes_content(&e.kind)) {
            let _ = changed_tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok((watcher, changed))
}

/// The receiver without a watch: the one signal at start, then closed.
pub fn signalled_once() -> UnboundedReceiver<()> {
    let (tx, rx) = unbounded_channel();
    let _ = tx.send(());
    rx
}

/// Whether an event can change what the directory holds: a file created, written, renamed or
/// removed (a ConfigMap volume swaps a symlink), or an event the backend could not classify.
/// Opening, reading and closing a file without writing change nothing.
pub fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    }
}

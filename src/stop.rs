//! Stop flags: a `watch::Receiver<bool>` that turns true when a task must stop (SIGTERM, the end
//! of a term of leadership). Shared by the operator, its controllers and the restart worker.

use tokio::sync::watch;

/// Completes when `rx` turns true (or its sender is gone).
pub async fn signalled(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

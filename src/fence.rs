//! The write fence of a leader: whether this replica may still write. The Lease elector
//! ([`crate::operator::lease`]) opens it on every renewal and closes it at the renew deadline;
//! every writer (reconcilers, the restarter, the revocation sweep) checks it before each write.

use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Whether this replica may still write. Cloned into every writer; checked before each write.
#[derive(Clone, Debug)]
pub struct Fence(Option<Arc<Mutex<Option<Instant>>>>);

impl Fence {
    /// A fence that is always open (tests and single-writer tools).
    pub fn always() -> Self {
        Fence(None)
    }

    /// A closed fence, opened by [`Fence::extend`].
    pub fn closed() -> Self {
        Fence(Some(Arc::new(Mutex::new(None))))
    }

    pub fn is_valid(&self) -> bool {
        match &self.0 {
            None => true,
            Some(until) => until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|until| Instant::now() < until),
        }
    }

    pub(crate) fn extend(&self, until: Instant) {
        if let Some(slot) = &self.0 {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
        }
    }

    pub(crate) fn close(&self) {
        if let Some(slot) = &self.0 {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

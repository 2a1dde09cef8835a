//! The write fence of a leader: whether this replica may still write. The Lease elector
//! ([`crate::operator::lease`]) opens it on every renewal and closes it at the renew deadline;
//! every writer (reconcilers, the restarter, the revocation sweep) checks it before each write.
//!
//! A leadership has terms: the fence's term ends when the elector steps down, and a later
//! acquisition starts a new one. A fence [`Fence::pinned`] to a term stays closed after it, even
//! once the same process leads again, so nothing of a previous term (an in-flight reconcile
//! acting on that term's caches) can write in the next.

use std::sync::{Arc, Mutex};
use tokio::time::Instant;

#[derive(Debug, Default)]
struct Held {
    /// Writes are allowed until then (`None`: closed).
    until: Option<Instant>,
    /// Incremented on every close: the number of the current term.
    term: u64,
}

/// Whether this replica may still write. Cloned into every writer; checked before each write.
#[derive(Clone, Debug)]
pub struct Fence {
    held: Option<Arc<Mutex<Held>>>,
    /// The term this fence is valid in (`None`: whichever is current).
    pinned: Option<u64>,
}

impl Fence {
    /// A fence that is always open (tests and single-writer tools).
    pub fn always() -> Self {
        Fence {
            held: None,
            pinned: None,
        }
    }

    /// A closed fence, opened by [`Fence::extend`].
    pub fn closed() -> Self {
        Fence {
            held: Some(Arc::default()),
            pinned: None,
        }
    }

    fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
        held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_valid(&self) -> bool {
        match &self.held {
            None => true,
            Some(held) => {
                let held = Self::lock(held);
                held.until.is_some_and(|until| Instant::now() < until)
                    && self.pinned.is_none_or(|term| term == held.term)
            }
        }
    }

    /// This fence, valid only during the current term: closed for good once the elector steps
    /// down, whatever follows.
    pub fn pinned(&self) -> Fence {
        Fence {
            held: self.held.clone(),
            pinned: self.held.as_deref().map(|held| Self::lock(held).term),
        }
    }

    pub(crate) fn extend(&self, until: Instant) {
        if let Some(held) = &self.held {
            Self::lock(held).until = Some(until);
        }
    }

    /// Closes the fence and ends the current term.
    pub(crate) fn close(&self) {
        if let Some(held) = &self.held {
            let mut held = Self::lock(held);
            held.until = None;
            held.term += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_pinned_fence_ends_with_its_term() {
        let fence = Fence::closed();
        fence.extend(Instant::now() + Duration::from_secs(10));
        let term = fence.pinned();
        assert!(term.is_valid());
        // Renewed within the term: still valid.
        fence.extend(Instant::now() + Duration::from_secs(20));
        assert!(term.is_valid());
        // Stepped down and leading again: the new term's fence is open, the old one is not.
        fence.close();
        fence.extend(Instant::now() + Duration::from_secs(10));
        assert!(fence.is_valid() && fence.pinned().is_valid());
        assert!(!term.is_valid(), "a previous term never writes again");
        assert!(Fence::always().pinned().is_valid());
    }
}

//! Where "now" comes from, for the operator and the agent alike.

use jiff::{SignedDuration, Timestamp};
use std::sync::{Arc, Mutex};

/// Where "now" comes from: the system clock, or a fixed time tests move by hand so they can
/// assert exact renew times.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Mutex<Timestamp>>>);

impl Clock {
    pub fn system() -> Self {
        Clock(None)
    }

    pub fn fixed(at: Timestamp) -> Self {
        Clock(Some(Arc::new(Mutex::new(at))))
    }

    pub fn now(&self) -> Timestamp {
        match &self.0 {
            None => Timestamp::now(),
            Some(t) => *t.lock().expect("clock lock"),
        }
    }

    /// Moves a fixed clock (no effect on the system clock).
    pub fn set(&self, at: Timestamp) {
        if let Some(t) = &self.0 {
            *t.lock().expect("clock lock") = at;
        }
    }

    pub fn advance(&self, by: SignedDuration) {
        self.set(self.now() + by);
    }
}

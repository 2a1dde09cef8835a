//! What the operator's `/readyz` reports: ready once the keyring is loaded and either this
//! replica is a follower campaigning for the Lease, or it leads and every watch of its term is
//! synced (listed, and not failing since).

use crate::watch::Health;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

const FOLLOWER: u8 = 1;
const LEADER: u8 = 2;

#[derive(Debug, Default)]
pub struct Readiness {
    keyring_loaded: AtomicBool,
    /// Starting (0), follower or leader.
    role: AtomicU8,
    pub health: Health,
}

impl Readiness {
    pub fn keyring_loaded(&self) {
        self.keyring_loaded.store(true, Ordering::SeqCst);
    }

    pub fn follower(&self) {
        self.role.store(FOLLOWER, Ordering::SeqCst);
    }

    pub fn leader(&self) {
        self.role.store(LEADER, Ordering::SeqCst);
    }

    /// Whether this replica leads (and so runs the controllers).
    pub fn is_leader(&self) -> bool {
        self.role.load(Ordering::SeqCst) == LEADER
    }

    /// Why this replica is not ready (`None`: ready).
    pub fn not_ready(&self) -> Option<String> {
        if !self.keyring_loaded.load(Ordering::SeqCst) {
            return Some("the keyring is not loaded".into());
        }
        match self.role.load(Ordering::SeqCst) {
            FOLLOWER => None,
            LEADER => {
                let unsynced = self.health.unsynced();
                (!unsynced.is_empty())
                    .then(|| format!("watches not synced: {}", unsynced.join(", ")))
            }
            _ => Some("starting".into()),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// The `/readyz` answer: whether ready, and a line saying what this replica is doing.
    pub fn report(&self) -> (bool, String) {
        match self.not_ready() {
            Some(why) => (false, format!("not ready: {why}\n")),
            None if self.is_leader() => (true, "ready: leader\n".into()),
            None => (
                true,
                "ready: follower, campaigning for the leader Lease\n".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_ready_and_says_so() {
        let readiness = Readiness::default();
        readiness.keyring_loaded();
        assert_eq!(readiness.report(), (false, "not ready: starting\n".into()));
        assert!(!readiness.is_ready());
        readiness.follower();
        assert_eq!(
            readiness.report(),
            (
                true,
                "ready: follower, campaigning for the leader Lease\n".into()
            )
        );
        readiness.leader();
        assert_eq!(readiness.report(), (true, "ready: leader\n".into()));
        let probe = readiness
            .health
            .probe("secrets", &crate::watch::RestartCounter::default());
        assert_eq!(
            readiness.report(),
            (false, "not ready: watches not synced: secrets\n".into())
        );
        drop(probe);
        assert!(
            readiness.is_ready(),
            "a watch of an ended term counts no more"
        );
    }
}

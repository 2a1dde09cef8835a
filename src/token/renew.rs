//! When to replace a token.
//!
//! A token issued at `iat` and expiring at `exp` is replaced `renewBefore` ahead of expiry
//! (default: a third of its lifetime, cert-manager's convention). So that a fleet of resources
//! created together does not renew in one burst, each resource's renew time is pulled earlier by
//! a deterministic jitter derived from its UID — stable across operator restarts, so a restart
//! never changes the schedule — and never later than `exp - renewBefore`.

use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// Share of the renewable window (`exp - renewBefore - iat`) the jitter may pull a renewal
/// earlier by, in per mille.
const JITTER_PER_MILLE: u64 = 100;

/// The shortest time a token lives before it is due (for lifetimes of at least 45 s; shorter
/// ones get two thirds of their lifetime). A `renewBefore` closer to the lifetime is shortened to
/// leave this window: otherwise rounding and jitter make a token due the moment it is minted,
/// and every write would trigger the next mint.
pub const MIN_RENEW_WINDOW: Duration = Duration::from_secs(30);

/// The renewal schedule of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub issued_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// When the token should be replaced; `None` for a token that never expires.
    pub renew_at: Option<Timestamp>,
}

impl Schedule {
    /// Computes the schedule of a token. `renew_before` (default a third of the lifetime) is
    /// shortened where needed so that the token lives at least [`MIN_RENEW_WINDOW`] before it
    /// is due (admission refuses such values; this guards every other path).
    pub fn new(
        issued_at: Timestamp,
        expires_at: Option<Timestamp>,
        renew_before: Option<Duration>,
        jitter_seed: &str,
    ) -> Self {
        let renew_at = expires_at.map(|exp| {
            let lifetime = exp.duration_since(issued_at).max(SignedDuration::ZERO);
            let min_window = SignedDuration::try_from(MIN_RENEW_WINDOW)
                .unwrap_or(SignedDuration::ZERO)
                .min(lifetime * 2 / 3);
            let before = renew_before
                .and_then(|d| SignedDuration::try_from(d).ok())
                .filter(|d| *d > SignedDuration::ZERO)
                .unwrap_or(lifetime / 3)
                .min(lifetime - min_window);
            let latest = exp - before;
            let window = latest.duration_since(issued_at).max(SignedDuration::ZERO);
            latest - jitter(window, jitter_seed)
        });
        Schedule {
            issued_at,
            expires_at,
            renew_at,
        }
    }

    /// Whether the token must be replaced at `now`. A token that never expires is never due.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.renew_at.is_some_and(|at| now >= at)
    }

    /// How long from `now` until the renewal; `None` when the token never expires.
    pub fn until_renewal(&self, now: Timestamp) -> Option<Duration> {
        self.renew_at.map(|at| {
            at.duration_since(now)
                .max(SignedDuration::ZERO)
                .unsigned_abs()
        })
    }
}

/// A deterministic share (0 to JITTER_PER_MILLE ‰) of `window`, chosen by the FNV-1a hash of
/// `seed`.
fn jitter(window: SignedDuration, seed: &str) -> SignedDuration {
    let hash = fnv1a(seed.as_bytes());
    let per_mille = (hash % (JITTER_PER_MILLE + 1)) as i32;
    window * per_mille / 1000
}

/// FNV-1a, 64 bits: a stable (across builds and platforms) non-cryptographic hash for
/// deterministic spreading and change detection.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn default_renews_with_a_third_of_the_lifetime_left() {
        let s = Schedule::new(ts(0), Some(ts(3_600)), None, "");
        // Empty seed: FNV offset basis % 101 picks some jitter; bound it instead of guessing.
        let at = s.renew_at.unwrap();
        assert!(at <= ts(2_400), "{at}");
        assert!(at >= ts(2_400 - 240), "{at}");
    }

    #[test]
    fn explicit_renew_before_is_the_latest_point() {
        let s = Schedule::new(
            ts(0),
            Some(ts(3_600)),
            Some(Duration::from_secs(1_200)),
            "uid",
        );
        let at = s.renew_at.unwrap();
        assert!(at <= ts(2_400));
        assert!(at >= ts(2_400 - 240));
        let s = Schedule::new(ts(0), Some(ts(3_600)), Some(Duration::from_secs(60)), "uid");
        let at = s.renew_at.unwrap();
        assert!(at <= ts(3_540) && at >= ts(3_540 - 354));
    }

    #[test]
    fn jitter_is_deterministic_and_spreads_a_fleet() {
        let a = Schedule::new(ts(0), Some(ts(3_600)), None, "uid-a");
        assert_eq!(a, Schedule::new(ts(0), Some(ts(3_600)), None, "uid-a"));
        let distinct: std::collections::BTreeSet<_> = (0..200)
            .map(|i| {
                Schedule::new(ts(0), Some(ts(3_600)), None, &format!("uid-{i}"))
                    .renew_at
                    .unwrap()
            })
            .collect();
        assert!(
            distinct.len() > 50,
            "only {} distinct renew times",
            distinct.len()
        );
        assert!(
            distinct
                .iter()
                .all(|at| *at <= ts(2_400) && *at >= ts(2_160))
        );
    }

    #[test]
    fn zero_renew_before_falls_back_to_a_third() {
        let s = Schedule::new(ts(0), Some(ts(3_600)), Some(Duration::ZERO), "x");
        let at = s.renew_at.unwrap();
        assert!(at <= ts(2_400) && at >= ts(2_160), "{at}");
    }

    #[test]
    fn a_token_always_lives_the_minimum_window_before_it_is_due() {
        // The write storm of a 1 s window: renewBefore 3599s of 3600s, 59s of 60s, or more
        // than the lifetime. Every one leaves 30 s (less at most 10% jitter).
        for (lifetime, rb) in [(3_600, 3_599), (60, 59), (3_600, 9_999), (60, 60), (45, 44)] {
            for seed in ["a", "b", "c", "uid-17"] {
                let s = Schedule::new(
                    ts(0),
                    Some(ts(lifetime)),
                    Some(Duration::from_secs(rb)),
                    seed,
                );
                let at = s.renew_at.unwrap();
                assert!(
                    at >= ts(27) && at <= ts(30),
                    "{lifetime}/{rb}/{seed} -> {at}"
                );
                assert!(!s.is_due(ts(26)));
            }
        }
        // A lifetime shorter than twice the window keeps two thirds of it.
        let s = Schedule::new(ts(0), Some(ts(30)), Some(Duration::from_secs(29)), "x");
        assert!(s.renew_at.unwrap() >= ts(18) && s.renew_at.unwrap() <= ts(20));
    }

    #[test]
    fn due_exactly_at_renew_time() {
        let s = Schedule::new(
            ts(1_000),
            Some(ts(4_600)),
            Some(Duration::from_secs(600)),
            "k",
        );
        let at = s.renew_at.unwrap();
        assert!(!s.is_due(at - SignedDuration::from_secs(1)));
        assert!(s.is_due(at));
        assert!(s.is_due(ts(4_600)));
        assert_eq!(
            s.until_renewal(at - SignedDuration::from_secs(90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(s.until_renewal(ts(9_999)), Some(Duration::ZERO));
    }

    #[test]
    fn never_expiring_tokens_are_never_due() {
        let s = Schedule::new(ts(0), None, Some(Duration::from_secs(60)), "x");
        assert_eq!(s.renew_at, None);
        assert!(!s.is_due(ts(i32::MAX as i64)));
        assert_eq!(s.until_renewal(ts(0)), None);
    }
}

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

/// The renewal schedule of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub issued_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// When the token should be replaced; `None` for a token that never expires.
    pub renew_at: Option<Timestamp>,
}

impl Schedule {
    /// Computes the schedule of a token. `renew_before` is clamped into the lifetime: a value at
    /// or beyond the lifetime (rejected at admission, but possible through the REST path) falls
    /// back to the default third.
    pub fn new(
        issued_at: Timestamp,
        expires_at: Option<Timestamp>,
        renew_before: Option<Duration>,
        jitter_seed: &str,
    ) -> Self {
        let renew_at = expires_at.map(|exp| {
            let lifetime = exp.duration_since(issued_at).max(SignedDuration::ZERO);
            let default = lifetime / 3;
            let before = renew_before
                .and_then(|d| SignedDuration::try_from(d).ok())
                .filter(|d| *d > SignedDuration::ZERO && *d < lifetime)
                .unwrap_or(default);
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
    fn out_of_range_renew_before_falls_back_to_a_third() {
        for rb in [
            Duration::ZERO,
            Duration::from_secs(3_600),
            Duration::from_secs(9_999),
        ] {
            let s = Schedule::new(ts(0), Some(ts(3_600)), Some(rb), "x");
            let at = s.renew_at.unwrap();
            assert!(at <= ts(2_400) && at >= ts(2_160), "{rb:?} -> {at}");
        }
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

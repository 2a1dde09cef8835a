//! Readable logs while something keeps failing (the API server away, a watch refused): a
//! warning when the trouble starts, a summary once a minute while it lasts, one line when it
//! ends — never a line per retry. [`Outage`] only decides which line is due; its user words it.

use std::time::Duration;
use tokio::time::Instant;

/// How often a summary is logged while failures go on.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What to log about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The first failure of an outage: warn.
    Started,
    /// A summary is due: the outage has lasted `lasted`, with `attempts` failures so far.
    Ongoing { lasted: Duration, attempts: u32 },
    /// Nothing new to say (log at debug at most).
    Again,
}

/// An outage that ended: how long it lasted and how many attempts failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub lasted: Duration,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy)]
struct Failing {
    since: Instant,
    attempts: u32,
    last_line: Instant,
    /// Whether its end was logged since the last summary (a flapping source is not reported
    /// recovered at every brief success).
    end_logged: bool,
}

/// The outage state of one thing that can fail (a watch, the Lease).
#[derive(Debug, Clone)]
pub struct Outage {
    /// A success within this long after a failure is not the end yet: a failure within it
    /// continues the same outage (a watch whose list works but whose watch is refused).
    settle: Duration,
    failing: Option<Failing>,
    /// The outage that ended last, and when: resumed by a failure within `settle`.
    ended: Option<(Instant, Failing)>,
}

impl Outage {
    pub fn new(settle: Duration) -> Self {
        Outage {
            settle,
            failing: None,
            ended: None,
        }
    }

    /// Whether an outage is going on.
    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }

    /// Records a failure; says what to log.
    pub fn failed(&mut self) -> Failure {
        let now = Instant::now();
        let resumed = match self.ended.take() {
            Some((at, previous)) if now.duration_since(at) < self.settle => Some(previous),
            _ => None,
        };
        let failing = match (&mut self.failing, resumed) {
            (Some(failing), _) => failing,
            (none, Some(previous)) => none.insert(previous),
            (none, None) => {
                *none = Some(Failing {
                    since: now,
                    attempts: 1,
                    last_line: now,
                    end_logged: false,
                });
                return Failure::Started;
            }
        };
        failing.attempts = failing.attempts.saturating_add(1);
        if now.duration_since(failing.last_line) >= SUMMARY_EVERY {
            failing.last_line = now;
            failing.end_logged = false;
            return Failure::Ongoing {
                lasted: now.duration_since(failing.since),
                attempts: failing.attempts,
            };
        }
        Failure::Again
    }

    /// Records a success; `Some` when the end of an outage is to be logged.
    pub fn succeeded(&mut self) -> Option<Recovered> {
        let mut failing = self.failing.take()?;
        let now = Instant::now();
        let report = (!failing.end_logged).then(|| Recovered {
            lasted: now.duration_since(failing.since),
            attempts: failing.attempts,
        });
        failing.end_logged = true;
        self.ended = Some((now, failing));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_to_start_one_a_minute_and_one_to_end() {
        let mut outage = Outage::new(Duration::ZERO);
        assert_eq!(outage.succeeded(), None, "no outage, nothing to say");
        assert_eq!(outage.failed(), Failure::Started);
        let mut lines = 0;
        // Two and a half minutes of retries every 2 s: two summaries, nothing else.
        for _ in 0..75 {
            tokio::time::advance(Duration::from_secs(2)).await;
            match outage.failed() {
                Failure::Again => {}
                Failure::Ongoing { lasted, attempts } => {
                    lines += 1;
                    assert!(lasted >= SUMMARY_EVERY && attempts > 1);
                }
                Failure::Started => panic!("started twice"),
            }
        }
        assert_eq!(lines, 2);
        let ended = outage.succeeded().expect("the end is logged");
        assert_eq!(ended.attempts, 76);
        assert_eq!(ended.lasted, Duration::from_secs(150));
        assert!(!outage.is_failing());
        assert_eq!(
            outage.failed(),
            Failure::Started,
            "the next outage starts anew"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_source_is_one_outage() {
        let settle = Duration::from_secs(10);
        let mut outage = Outage::new(settle);
        assert_eq!(outage.failed(), Failure::Started);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(outage.succeeded().is_some(), "the first recovery is logged");
        // Fails again right after each brief success: no new start, no new end.
        let mut lines = 0;
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(4)).await;
            if outage.failed() != Failure::Again {
                lines += 1;
            }
            if outage.succeeded().is_some() {
                lines += 1;
            }
        }
        // One summary after a minute, and the end after it.
        assert_eq!(lines, 4, "two summaries and two ends in two minutes");
        // Stable for longer than `settle`: a new failure is a new outage.
        tokio::time::advance(settle).await;
        assert_eq!(outage.failed(), Failure::Started);
    }
}

//! What went wrong with a stream's calls lately, for the log: one summary
//! line per interval instead of silence (or a line per failure) during an
//! outage. Pure: the actor asks for the summary and logs it.

use crate::kinesis::ApiError;
use crate::retry::ErrorClass;
use std::time::Duration;
use tokio::time::Instant;

/// How often a stream with failures logs a summary at most.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Failures since the last summary.
#[derive(Debug, Default)]
pub struct Trouble {
    calls_failed: u64,
    entries_throttled: u64,
    entries_failed: u64,
    last: Option<ApiError>,
    since: Option<Instant>,
    last_summary: Option<Instant>,
}

/// One summary: what failed since the previous one.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub over: Duration,
    /// PutRecords calls that failed as a whole.
    pub calls_failed: u64,
    /// Entries refused by throttling, and for other reasons.
    pub entries_throttled: u64,
    pub entries_failed: u64,
    pub last_error: ApiError,
}

impl Summary {
    /// Only throttling: the shard limits at work, not an outage.
    pub fn only_throttling(&self) -> bool {
        self.calls_failed == 0 && self.entries_failed == 0
    }
}

impl Trouble {
    /// A call failed as a whole.
    pub fn call_failed(&mut self, e: &ApiError, now: Instant) {
        self.calls_failed += 1;
        self.note(e, now);
    }

    /// An entry was refused.
    pub fn entry_failed(&mut self, e: &ApiError, now: Instant) {
        if e.class == ErrorClass::Throttled {
            self.entries_throttled += 1;
        } else {
            self.entries_failed += 1;
        }
        self.note(e, now);
    }

    fn note(&mut self, e: &ApiError, now: Instant) {
        self.since.get_or_insert(now);
        self.last = Some(e.clone());
    }

    /// The summary of what failed since the last one, once `SUMMARY_EVERY`
    /// has passed since that one (the first failure is reported at once).
    pub fn take_summary(&mut self, now: Instant) -> Option<Summary> {
        let since = self.since?;
        if self
            .last_summary
            .is_some_and(|t| now.saturating_duration_since(t) < SUMMARY_EVERY)
        {
            return None;
        }
        let s = Summary {
            over: now.saturating_duration_since(since),
            calls_failed: self.calls_failed,
            entries_throttled: self.entries_throttled,
            entries_failed: self.entries_failed,
            last_error: self.last.take().expect("set with since"),
        };
        *self = Trouble {
            last_summary: Some(now),
            ..Trouble::default()
        };
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;

    #[test]
    fn an_outage_gives_one_summary_per_interval_naming_the_last_error() {
        let t0 = Instant::now();
        let mut t = Trouble::default();
        assert_eq!(t.take_summary(t0), None, "nothing failed");
        let down = ApiError::new(ErrorCode::ConnectionError, "connection refused");
        t.call_failed(&down, t0);
        let first = t
            .take_summary(t0)
            .expect("the first failure is reported at once");
        assert_eq!(
            (first.calls_failed, first.last_error.clone()),
            (1, down.clone())
        );
        assert!(!first.only_throttling());
        // 1,000 more failures within the interval: no line until it is over.
        for i in 0..1000 {
            t.call_failed(&down, t0 + Duration::from_millis(i));
        }
        let throttle = ApiError::new(ErrorCode::ProvisionedThroughputExceeded, "slow down");
        t.entry_failed(&throttle, t0 + Duration::from_secs(2));
        assert_eq!(t.take_summary(t0 + Duration::from_secs(9)), None);
        let s = t.take_summary(t0 + SUMMARY_EVERY).unwrap();
        assert_eq!(
            (s.calls_failed, s.entries_throttled, s.entries_failed),
            (1000, 1, 0)
        );
        assert_eq!(s.last_error, throttle);
        // Quiet again: no summary, however long.
        assert_eq!(t.take_summary(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn throttling_alone_is_told_apart_from_an_outage() {
        let t0 = Instant::now();
        let mut t = Trouble::default();
        let throttle = ApiError::new(ErrorCode::ProvisionedThroughputExceeded, "slow down");
        t.entry_failed(&throttle, t0);
        assert!(t.take_summary(t0).unwrap().only_throttling());
    }
}

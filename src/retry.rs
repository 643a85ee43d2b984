//! Error classification and full-jitter exponential backoff (pure).
//!
//! The KPL retries everything with no backoff, which makes retry storms. kpld
//! retries only what retrying can fix (throttling, 5xx, timeouts, broken
//! connections), waits a random delay in [0, min(cap, base * 2^n)] between
//! attempts, and never schedules an attempt past the record's TTL.

use crate::error_code::ErrorCode;
use std::time::Duration;

/// What to do with a record after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The shard or account is over its limits: retry unless
    /// `fail_if_throttled` is set.
    Throttled,
    /// A transient fault: retry within the TTL.
    Retryable,
    /// Retrying cannot help (validation, access denied, unknown stream):
    /// fail the record at once with the service's message.
    Fatal,
}

/// Classifies a whole-request failure that carries an HTTP status: a 5xx
/// or 429 is worth retrying whatever its code says (but stays throttled
/// when it is), anything else is what its code says.
pub fn classify_http(status: u16, code: &ErrorCode) -> ErrorClass {
    let by_code = code.class();
    if (status >= 500 || status == 429) && by_code != ErrorClass::Throttled {
        ErrorClass::Retryable
    } else {
        by_code
    }
}

/// Why a backoff could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("retry_backoff_base_ms must be greater than 0")]
    ZeroBase,
    #[error("retry_backoff_base_ms ({base} ms) must not exceed retry_backoff_max_ms ({max} ms)")]
    BaseAboveMax { base: u64, max: u64 },
}

/// Full-jitter exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Result<Self, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        if base > max {
            return Err(BackoffError::BaseAboveMax {
                base: base.as_millis() as u64,
                max: max.as_millis() as u64,
            });
        }
        Ok(Backoff { base, max })
    }

    /// Upper bound of the delay before retry number `retry` (1 = first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }

    /// The delay before retry number `retry`, given a uniform sample in [0, 1).
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        self.ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http_status_overrides_a_fatal_code_but_not_a_throttle() {
        let c = ErrorCode::from_service;
        assert_eq!(
            classify_http(500, &c("ValidationException")),
            ErrorClass::Retryable
        );
        assert_eq!(classify_http(503, &c("SlowDown")), ErrorClass::Throttled);
        assert_eq!(
            classify_http(400, &c("ValidationException")),
            ErrorClass::Fatal
        );
        assert_eq!(
            classify_http(400, &c("LimitExceededException")),
            ErrorClass::Throttled
        );
        assert_eq!(
            classify_http(429, &c("ResourceNotFoundException")),
            ErrorClass::Retryable
        );
    }

    #[test]
    fn invalid_backoffs_are_refused() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::from_secs(1)).unwrap_err(),
            BackoffError::ZeroBase
        );
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000)).unwrap();
        let c: Vec<_> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(c, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(1000));
    }

    proptest! {
        #[test]
        fn delay_stays_within_zero_and_ceiling(base in 1u64..1000, extra in 0u64..100_000, retry in 0u32..100, unit in 0.0f64..1.0) {
            let b = Backoff::new(Duration::from_millis(base), Duration::from_millis(base + extra)).unwrap();
            let d = b.delay(retry, unit);
            // Worked out apart from `ceiling`: min(base * 2^(retry-1), max),
            // in nanoseconds, with the exponent bounded as the KPL's is not.
            let max_ns = u128::from(base + extra) * 1_000_000;
            let doubled = (u128::from(base) * 1_000_000) << retry.saturating_sub(1).min(30);
            let ceiling_ns = doubled.min(max_ns);
            prop_assert!(d.as_nanos() <= ceiling_ns);
            // Full jitter: the delay is the sample's fraction of the
            // ceiling (so a delay stuck at zero, or at the ceiling, fails).
            let want = ceiling_ns as f64 * unit;
            prop_assert!((d.as_nanos() as f64 - want).abs() <= 1.0 + want * 1e-9,
                "delay {:?}, want {} ns", d, want);
        }
    }
}

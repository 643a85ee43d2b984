//! Retries: what becomes of a Kinesis record after a failed attempt (fail
//! now, or wait out one full-jitter backoff within the TTL), and the queue
//! of records waiting out their backoff (pure; time and randomness are
//! passed in).

use super::record::{KinesisRecord, UserRecord};
use crate::kinesis::ApiError;
use crate::retry::{Backoff, ErrorClass};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use tokio::time::Instant;

/// A retry waiting out its backoff.
pub enum Retry {
    /// A whole Kinesis record: an aggregate stays whole and is paced again
    /// by its shard's limit, if the map has not changed since it was built.
    Whole(KinesisRecord),
    /// User records to route again (their aggregate lost some records),
    /// and the ordered lane their Kinesis record held, still held.
    Loose(Vec<UserRecord>, Option<(u64, usize)>),
}

/// What [`Retries::after_failure`] decided.
pub enum Verdict {
    /// Retrying cannot help: these fail with the attempt's error.
    Fail(Vec<UserRecord>),
    /// Scheduled again (`retried` records); `expired` would outlive their
    /// TTL before the next try and fail as expired.
    Retry {
        retried: usize,
        expired: Vec<UserRecord>,
        /// The ordered lane given up (nothing of the record is retried).
        lane: Option<(u64, usize)>,
    },
}

pub struct Retries {
    queue: BTreeMap<(Instant, u64), Retry>,
    seq: u64,
    backoff: Backoff,
    rng: StdRng,
}

impl Retries {
    pub fn new(backoff: Backoff, rng: StdRng) -> Retries {
        Retries {
            queue: BTreeMap::new(),
            seq: 0,
            backoff,
            rng,
        }
    }

    /// Randomness from the OS, for the daemon; where the OS has none to
    /// give (an empty chroot without /dev/urandom), the clock and the
    /// process id seed it: jitter needs spread, not secrecy.
    pub fn from_os(backoff: Backoff) -> Retries {
        let rng = StdRng::try_from_os_rng().unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            StdRng::seed_from_u64(nanos ^ (u64::from(std::process::id()) << 32))
        });
        Self::new(backoff, rng)
    }

    /// After a failed attempt of `k` (whose records already carry the
    /// attempt): fail it (a fatal error, a throttle with
    /// `fail_if_throttled`, shutting down) or schedule it again after one
    /// full-jitter backoff. Records that would expire before the next try
    /// fail now; the others go back loose, to be aggregated anew.
    pub fn after_failure(
        &mut self,
        k: KinesisRecord,
        err: &ApiError,
        fail_if_throttled: bool,
        aborted: bool,
        now: Instant,
    ) -> Verdict {
        if aborted
            || err.class == ErrorClass::Fatal
            || (err.class == ErrorClass::Throttled && fail_if_throttled)
        {
            return Verdict::Fail(k.records);
        }
        let n = k
            .records
            .iter()
            .map(|u| u.attempts.len())
            .max()
            .unwrap_or(1) as u32;
        let at = now + self.backoff.delay(n, self.rng.random::<f64>());
        if at < k.expiry {
            let retried = k.records.len();
            self.schedule(at, Retry::Whole(k));
            return Verdict::Retry {
                retried,
                expired: Vec::new(),
                lane: None,
            };
        }
        let lane = k.lane;
        let (expired, rest): (Vec<_>, Vec<_>) = k.records.into_iter().partition(|u| at >= u.expiry);
        let retried = rest.len();
        if !rest.is_empty() {
            self.schedule(at, Retry::Loose(rest, lane));
        }
        Verdict::Retry {
            retried,
            expired,
            lane: if retried == 0 { lane } else { None },
        }
    }

    /// Queues a retry. Its records are detached from their request frames
    /// first ([`UserRecord::detach`]): a retry may wait long (throttling,
    /// within `record_ttl_ms`), and is charged only for its own size.
    pub fn schedule(&mut self, at: Instant, mut r: Retry) {
        match &mut r {
            Retry::Whole(k) => k.detach(),
            Retry::Loose(v, _) => v.iter_mut().for_each(UserRecord::detach),
        }
        self.seq += 1;
        self.queue.insert((at, self.seq), r);
    }

    /// The next retry whose backoff is over at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Retry> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    pub fn next_at(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Takes every waiting record out.
    pub fn drain(&mut self) -> Vec<UserRecord> {
        let mut all = Vec::new();
        for (_, r) in std::mem::take(&mut self.queue) {
            match r {
                Retry::Whole(k) => all.extend(k.records),
                Retry::Loose(v, _) => all.extend(v),
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;
    use crate::pipeline::testkit::{kinesis_record, records};
    use std::time::Duration;

    fn retries() -> Retries {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).unwrap();
        Retries::new(b, StdRng::seed_from_u64(7))
    }

    #[test]
    fn a_throttled_aggregate_is_retried_whole_within_the_backoff_ceiling() {
        let t0 = Instant::now();
        let mut r = retries();
        let k = kinesis_record(0, records(&[1, 2, 3], 10, t0, Duration::from_secs(30)));
        let e = ApiError::new(ErrorCode::ProvisionedThroughputExceeded, "slow down");
        let Verdict::Retry {
            retried, expired, ..
        } = r.after_failure(k, &e, false, false, t0)
        else {
            panic!("a throttle is retried");
        };
        assert_eq!((retried, expired.len()), (3, 0));
        let at = r.next_at().unwrap();
        assert!(
            at <= t0 + Duration::from_millis(100),
            "first retry ceiling is the base"
        );
        assert!(r.pop_due(t0 - Duration::from_millis(1)).is_none());
        match r.pop_due(at) {
            Some(Retry::Whole(k)) => assert_eq!(k.records.len(), 3),
            _ => panic!("the aggregate comes back whole"),
        }
    }

    #[test]
    fn fatal_errors_and_throttles_with_fail_if_throttled_fail_at_once() {
        let t0 = Instant::now();
        let mut r = retries();
        let k = kinesis_record(0, records(&[1], 10, t0, Duration::from_secs(30)));
        let e = ApiError::new(ErrorCode::AccessDenied, "no");
        assert!(
            matches!(r.after_failure(k, &e, false, false, t0), Verdict::Fail(v) if v.len() == 1)
        );
        let k = kinesis_record(0, records(&[2], 10, t0, Duration::from_secs(30)));
        let e = ApiError::new(ErrorCode::ProvisionedThroughputExceeded, "slow down");
        assert!(matches!(
            r.after_failure(k, &e, true, false, t0),
            Verdict::Fail(_)
        ));
        assert!(r.is_empty());
    }

    #[test]
    fn records_that_would_expire_before_the_next_try_fail_and_the_rest_go_loose() {
        let t0 = Instant::now();
        let mut r = retries();
        let mut recs = records(&[1, 2], 10, t0, Duration::from_secs(30));
        // Record 1 has 1 ms left; the backoff after its 6th attempt is up
        // to 3.2 s, so it cannot have another try; record 2 can.
        recs[0].expiry = t0 + Duration::from_millis(1);
        for u in &mut recs {
            u.attempts = vec![Default::default(); 6];
        }
        let k = kinesis_record(0, recs);
        let e = ApiError::new(ErrorCode::InternalFailure, "oops");
        // Seeded so that the delay is not below 1 ms.
        let Verdict::Retry {
            retried, expired, ..
        } = r.after_failure(k, &e, false, false, t0)
        else {
            panic!("retryable");
        };
        assert_eq!(retried, 1);
        assert_eq!(expired.iter().map(|u| u.id).collect::<Vec<_>>(), vec![1]);
        assert!(
            matches!(r.pop_due(t0 + Duration::from_secs(10)), Some(Retry::Loose(v, _)) if v[0].id == 2)
        );
    }

    #[test]
    fn a_scheduled_retry_no_longer_holds_its_request_frame() {
        let t0 = Instant::now();
        let frame = bytes::Bytes::from(vec![7u8; 1 << 20]);
        let in_frame = |b: &bytes::Bytes| {
            let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
            range.contains(&(b.as_ptr() as usize))
        };
        let mut r = retries();
        let e = ApiError::new(ErrorCode::ProvisionedThroughputExceeded, "slow down");
        // One record sent on its own (its entry shares its data), and one
        // of two in an aggregate.
        for ids in [&[1u64][..], &[2, 3]] {
            let mut recs = records(ids, 10, t0, Duration::from_secs(30));
            for (i, u) in recs.iter_mut().enumerate() {
                u.data = frame.slice(i * 10..i * 10 + 10);
                u.detached = false;
            }
            let mut k = kinesis_record(0, recs);
            if ids.len() == 1 {
                k.entry.data = k.records[0].data.clone();
            }
            assert!(k.records.iter().all(|u| in_frame(&u.data)));
            assert!(matches!(
                r.after_failure(k, &e, false, false, t0),
                Verdict::Retry { .. }
            ));
        }
        while let Some(retry) = r.pop_due(t0 + Duration::from_secs(60)) {
            let Retry::Whole(k) = retry else {
                panic!("retried whole")
            };
            for u in &k.records {
                assert!(!in_frame(&u.data), "record {} still in its frame", u.id);
                assert_eq!(&u.data[..], &[7u8; 10][..]);
            }
            assert!(!in_frame(&k.entry.data));
        }
    }
}

//! Collection: ready Kinesis records into PutRecords calls, at once when a
//! call's worth is ready (`collection_max_count` entries or
//! `collection_max_size` bytes), else when the earliest deadline among
//! them comes (pure; time is passed in).

use super::record::KinesisRecord;
use crate::collect::{take_batch, BatchLimits, RequestSize};
use std::collections::VecDeque;
use tokio::time::Instant;

pub struct Collector {
    ready: VecDeque<KinesisRecord>,
    bytes: usize,
    /// The earliest deadline among `ready` (or now, after a flush).
    due: Option<Instant>,
    limits: BatchLimits,
}

impl Collector {
    pub fn new(limits: BatchLimits) -> Collector {
        Collector {
            ready: VecDeque::new(),
            bytes: 0,
            due: None,
            limits,
        }
    }

    pub fn push(&mut self, k: KinesisRecord) {
        let due = k.deadline;
        self.due = Some(self.due.map_or(due, |d| d.min(due)));
        self.bytes += k.request_bytes();
        self.ready.push_back(k);
    }

    /// Everything ready goes out at `now`, deadlines or not.
    pub fn flush(&mut self, now: Instant) {
        if !self.ready.is_empty() {
            self.due = Some(now);
        }
    }

    /// The next call to make at `now`, if one is due.
    pub fn next_batch(&mut self, now: Instant) -> Option<Vec<KinesisRecord>> {
        if self.ready.is_empty() {
            self.due = None;
            self.bytes = 0;
            return None;
        }
        let full = self.ready.len() >= self.limits.max_count || self.bytes >= self.limits.max_bytes;
        if !(full || self.due.is_some_and(|d| d <= now)) {
            return None;
        }
        let batch = take_batch(&mut self.ready, self.limits);
        self.bytes -= batch.iter().map(|k| k.request_bytes()).sum::<usize>();
        if self.ready.is_empty() {
            self.due = None;
        }
        Some(batch)
    }

    /// When the records ready now are due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due
    }

    /// Takes every ready record out.
    pub fn drain(&mut self) -> impl Iterator<Item = KinesisRecord> + '_ {
        self.bytes = 0;
        self.due = None;
        self.ready.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testkit::{kinesis_record, records};
    use std::time::Duration;

    #[test]
    fn a_partial_call_waits_for_its_earliest_deadline() {
        let t0 = Instant::now();
        let mut c = Collector::new(BatchLimits {
            max_count: 3,
            max_bytes: 1 << 20,
        });
        c.push(kinesis_record(
            0,
            records(&[1], 10, t0, Duration::from_secs(30)),
        ));
        assert!(c.next_batch(t0).is_some(), "its deadline is t0");
        let later = t0 + Duration::from_millis(100);
        let mut u = records(&[2], 10, t0, Duration::from_secs(30));
        u[0].deadline = later;
        c.push(kinesis_record(0, u));
        assert!(c.next_batch(t0).is_none());
        assert_eq!(c.next_due(), Some(later));
        assert_eq!(c.next_batch(later).map(|b| b.len()), Some(1));
    }

    #[test]
    fn a_full_call_goes_at_once_and_never_exceeds_the_count() {
        let t0 = Instant::now();
        let mut c = Collector::new(BatchLimits {
            max_count: 2,
            max_bytes: 1 << 20,
        });
        for id in 0..5 {
            let mut u = records(&[id], 10, t0, Duration::from_secs(30));
            u[0].deadline = t0 + Duration::from_secs(1);
            c.push(kinesis_record(0, u));
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| c.next_batch(t0).map(|b| b.len())).collect();
        assert_eq!(sizes, vec![2, 2], "the fifth waits for its deadline");
        c.flush(t0);
        assert_eq!(c.next_batch(t0).map(|b| b.len()), Some(1));
    }
}

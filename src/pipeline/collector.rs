//! Collection: ready Kinesis records into PutRecords calls, at once when a
//! call's worth is ready (`collection_max_count` entries or
//! `collection_max_size` bytes), else when the earliest deadline among
//! them comes (pure; time is passed in).
//!
//! A call is only cut when the stream holds a send permit (see
//! `StreamCore::next_send`): while none is free, ready records wait here,
//! so the next call is as full as the wait allowed, and their TTL runs
//! ([`Collector::take_expired`]).

use super::record::KinesisRecord;
use crate::collect::{has_full_batch, take_batch, BatchLimits, RequestSize};
use std::collections::VecDeque;
use tokio::time::Instant;

pub struct Collector {
    ready: VecDeque<KinesisRecord>,
    bytes: usize,
    /// The earliest deadline among `ready` (or now, after a flush).
    due: Option<Instant>,
    /// No record in `ready` expires before this (the earliest TTL among
    /// those pushed since the last look; records sent since may have held it).
    expiry: Option<Instant>,
    limits: BatchLimits,
}

impl Collector {
    pub fn new(limits: BatchLimits) -> Collector {
        Collector {
            ready: VecDeque::new(),
            bytes: 0,
            due: None,
            expiry: None,
            limits,
        }
    }

    pub fn push(&mut self, k: KinesisRecord) {
        let due = k.deadline;
        self.due = Some(self.due.map_or(due, |d| d.min(due)));
        let exp = k.expiry;
        self.expiry = Some(self.expiry.map_or(exp, |e| e.min(exp)));
        self.bytes += k.request_bytes();
        self.ready.push_back(k);
    }

    /// Everything ready goes out at `now`, deadlines or not.
    pub fn flush(&mut self, now: Instant) {
        if !self.ready.is_empty() {
            self.due = Some(now);
        }
    }

    /// True when a call's worth is ready (count or bytes).
    pub fn holds_full_call(&self) -> bool {
        has_full_batch(&self.ready, self.bytes, self.limits)
    }

    /// True when [`next_batch`](Self::next_batch) at `now` would cut a call.
    pub fn has_due(&self, now: Instant) -> bool {
        !self.ready.is_empty() && (self.holds_full_call() || self.due.is_some_and(|d| d <= now))
    }

    /// The next call to make at `now`, if one is due.
    pub fn next_batch(&mut self, now: Instant) -> Option<Vec<KinesisRecord>> {
        if self.ready.is_empty() {
            self.due = None;
            self.bytes = 0;
            self.expiry = None;
            return None;
        }
        if !self.has_due(now) {
            return None;
        }
        let batch = take_batch(&mut self.ready, self.limits);
        self.bytes -= batch.iter().map(|k| k.request_bytes()).sum::<usize>();
        if self.ready.is_empty() {
            self.due = None;
            self.expiry = None;
        }
        Some(batch)
    }

    /// When the records ready now are due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due
    }

    /// When [`take_expired`](Self::take_expired) may have something to take.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry
    }

    /// Takes out the ready records whose first TTL ran out at `now` (they
    /// waited for a send permit), keeping the others in order. Walks the
    /// queue only when the earliest TTL pushed is reached.
    pub fn take_expired(&mut self, now: Instant, out: &mut Vec<KinesisRecord>) {
        if self.expiry.is_none_or(|e| e > now) {
            return;
        }
        let mut next: Option<Instant> = None;
        let mut keep = VecDeque::with_capacity(self.ready.len());
        for k in self.ready.drain(..) {
            if k.expiry <= now {
                self.bytes -= k.request_bytes();
                out.push(k);
            } else {
                next = Some(next.map_or(k.expiry, |e| e.min(k.expiry)));
                keep.push_back(k);
            }
        }
        self.ready = keep;
        self.expiry = next;
        if self.ready.is_empty() {
            self.due = None;
        }
    }

    /// Takes every ready record out.
    pub fn drain(&mut self) -> impl Iterator<Item = KinesisRecord> + '_ {
        self.bytes = 0;
        self.due = None;
        self.expiry = None;
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

    #[test]
    fn records_past_their_ttl_are_taken_out_and_the_rest_keep_their_order() {
        let t0 = Instant::now();
        let mut c = Collector::new(BatchLimits {
            max_count: 500,
            max_bytes: 1 << 20,
        });
        for (id, ttl) in [(1, 50), (2, 10), (3, 30), (4, 10)] {
            let u = records(&[id], 10, t0, Duration::from_millis(ttl));
            c.push(kinesis_record(0, u));
        }
        assert_eq!(c.next_expiry(), Some(t0 + Duration::from_millis(10)));
        let mut out = Vec::new();
        c.take_expired(t0 + Duration::from_millis(5), &mut out);
        assert!(out.is_empty(), "nothing expired yet");
        c.take_expired(t0 + Duration::from_millis(10), &mut out);
        let ids = |v: &[KinesisRecord]| v.iter().map(|k| k.records[0].id).collect::<Vec<_>>();
        assert_eq!(ids(&out), [2, 4]);
        assert_eq!(c.next_expiry(), Some(t0 + Duration::from_millis(30)));
        let left = c.next_batch(t0 + Duration::from_millis(10)).unwrap();
        assert_eq!(ids(&left), [1, 3]);
        assert_eq!(c.next_expiry(), None);
    }
}

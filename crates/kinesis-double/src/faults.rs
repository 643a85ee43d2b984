//! Fault plan (what to break, how often) and per-shard token buckets (the service's write
//! limits). Pure: time comes in as seconds, randomness from a seeded RNG the caller owns.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the double breaks, and how often. Fractions are probabilities in `0.0..=1.0`.
///
/// Request-level faults (`reset`, `http_500`, `http_503`, `drop_response`) are mutually
/// exclusive: one uniform draw per request picks at most one of them, so each fraction is
/// the share of all requests in scope that get that fault (their sum is capped at 1).
/// `slow` is drawn independently. Entry-level faults (`internal_failure`, `throttle`) are
/// drawn once per entry of a request that reached processing.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Share of requests whose TCP connection is reset (RST) with no answer and nothing
    /// accepted.
    pub reset: f64,
    /// Share of requests answered `500 InternalFailure`, nothing accepted.
    pub http_500: f64,
    /// Share of requests answered `503 ServiceUnavailable`, nothing accepted.
    pub http_503: f64,
    /// Share of requests processed normally (entries accepted and logged) whose answer is
    /// never sent: the connection is closed instead. The client cannot tell this from a
    /// reset: this is the fault that makes duplicates.
    pub drop_response: f64,
    /// Share of requests answered only after `slow_delay`.
    pub slow: f64,
    /// Delay applied to slow requests (make it longer than the client's timeout to time
    /// the client out).
    pub slow_delay: Duration,
    /// Where a slow request waits. `AfterAccept` (default): entries are accepted at once and
    /// the answer is late (a client that gives up has still written them). `BeforeAccept`:
    /// the request waits first and is processed after the delay; if the client closed the
    /// connection meanwhile, hyper may cancel the handler and nothing is accepted.
    pub slow_phase: SlowPhase,
    /// Share of PutRecords entries failed with `InternalFailure` (per entry, HTTP 200);
    /// for PutRecord the whole call is answered `500 InternalFailure`.
    pub internal_failure: f64,
    /// Share of PutRecords entries failed with `ProvisionedThroughputExceededException`
    /// regardless of the token buckets (a timing-free way to see throttling).
    pub throttle: f64,
    /// Entries whose partition key starts with this are always failed with
    /// `ProvisionedThroughputExceededException` (a hot key that never gets
    /// through, while every other entry does). Applied after the draws, so it
    /// does not change the fates the seed gives the others.
    pub throttle_key_prefix: Option<String>,
    /// Which operations the request-level faults hit.
    pub scope: FaultScope,
}

/// Where a slow request spends its delay; see [`FaultPlan::slow_phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowPhase {
    /// Accept the entries, then wait, then answer.
    #[default]
    AfterAccept,
    /// Wait, then accept and answer.
    BeforeAccept,
}

/// Which operations request-level faults apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultScope {
    /// Only PutRecords and PutRecord (the default: shard-map refreshes keep working).
    #[default]
    Puts,
    /// Every operation, ListShards included.
    All,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            reset: 0.0,
            http_500: 0.0,
            http_503: 0.0,
            drop_response: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_secs(10),
            slow_phase: SlowPhase::AfterAccept,
            internal_failure: 0.0,
            throttle: 0.0,
            throttle_key_prefix: None,
            scope: FaultScope::Puts,
        }
    }
}

impl FaultPlan {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when no entry-level fault can happen (lets the hot path skip per-entry draws).
    pub fn no_entry_faults(&self) -> bool {
        self.internal_failure <= 0.0 && self.throttle <= 0.0
    }

    /// True when no request-level fault can happen.
    pub fn no_request_faults(&self) -> bool {
        self.reset <= 0.0
            && self.http_500 <= 0.0
            && self.http_503 <= 0.0
            && self.drop_response <= 0.0
            && self.slow <= 0.0
    }
}

/// The fate of one request, decided before it is processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestFate {
    /// At most one of the exclusive faults.
    pub kind: RequestFault,
    /// Delay and its phase, when the request is slow.
    pub slow: Option<(Duration, SlowPhase)>,
}

/// The exclusive request-level faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestFault {
    /// Process and answer normally.
    #[default]
    None,
    /// Reset the connection without processing.
    Reset,
    /// Answer 500 without processing.
    Http500,
    /// Answer 503 without processing.
    Http503,
    /// Process, then close the connection without answering.
    DropResponse,
}

/// The fate of one entry, decided before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EntryFault {
    /// Route and (limits permitting) accept.
    #[default]
    None,
    /// Fail with `InternalFailure`.
    InternalFailure,
    /// Fail with `ProvisionedThroughputExceededException`.
    Throttle,
}

/// A fault plan plus the seeded RNG that draws from it. One per double, behind a lock.
#[derive(Debug)]
pub struct FaultDice {
    plan: FaultPlan,
    rng: StdRng,
}

impl FaultDice {
    /// A plan and an RNG seeded with `seed` (same seed, same order of requests: same fates).
    pub fn new(plan: FaultPlan, seed: u64) -> Self {
        FaultDice {
            plan,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The current plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Replace the plan; the RNG keeps its state.
    pub fn set_plan(&mut self, plan: FaultPlan) {
        self.plan = plan;
    }

    /// Draw the fate of a request.
    pub fn request(&mut self) -> RequestFate {
        let p = &self.plan;
        if p.no_request_faults() {
            return RequestFate::default();
        }
        let u: f64 = self.rng.random();
        let mut edge = 0.0;
        let mut kind = RequestFault::None;
        for (fraction, fault) in [
            (p.reset, RequestFault::Reset),
            (p.http_500, RequestFault::Http500),
            (p.http_503, RequestFault::Http503),
            (p.drop_response, RequestFault::DropResponse),
        ] {
            edge += fraction.max(0.0);
            if u < edge {
                kind = fault;
                break;
            }
        }
        let slow = if p.slow > 0.0 && self.rng.random::<f64>() < p.slow {
            Some((p.slow_delay, p.slow_phase))
        } else {
            None
        };
        RequestFate { kind, slow }
    }

    /// Draw the fates of `n` entries into `out` (cleared first). Leaves `out` empty when
    /// the plan has no entry-level faults, so callers can treat empty as "all None".
    pub fn entries(&mut self, n: usize, out: &mut Vec<EntryFault>) {
        out.clear();
        if self.plan.no_entry_faults() {
            return;
        }
        let internal = self.plan.internal_failure.max(0.0);
        let throttle = internal + self.plan.throttle.max(0.0);
        out.extend((0..n).map(|_| {
            let u: f64 = self.rng.random();
            if u < internal {
                EntryFault::InternalFailure
            } else if u < throttle {
                EntryFault::Throttle
            } else {
                EntryFault::None
            }
        }));
    }
}

/// The service's per-shard write limits, as token buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardLimits {
    /// Records per second per shard (service: 1000).
    pub records_per_sec: f64,
    /// Bytes (data + partition key) per second per shard (service: 1 MiB).
    pub bytes_per_sec: f64,
    /// Bucket capacity in seconds of rate (service: about 1 s of burst).
    pub burst_secs: f64,
}

impl Default for ShardLimits {
    fn default() -> Self {
        ShardLimits {
            records_per_sec: 1000.0,
            bytes_per_sec: 1024.0 * 1024.0,
            burst_secs: 1.0,
        }
    }
}

/// One token bucket: `rate` tokens per second, holding at most `capacity`; starts full.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last: f64,
}

impl TokenBucket {
    /// A full bucket as of time `now` (seconds).
    pub fn full(capacity: f64, now: f64) -> Self {
        TokenBucket {
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, capacity: f64, now: f64) {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * rate).min(capacity);
            self.last = now;
        }
        // A shrunken capacity (limits changed at run time) applies at once.
        self.tokens = self.tokens.min(capacity);
    }

    /// Tokens available at `now` after refilling.
    pub fn available(&mut self, rate: f64, capacity: f64, now: f64) -> f64 {
        self.refill(rate, capacity, now);
        self.tokens
    }
}

/// The two buckets of one shard (records and bytes). Absent until limits are first used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardBuckets {
    records: TokenBucket,
    bytes: TokenBucket,
}

impl ShardBuckets {
    /// Full buckets for `limits` as of `now`.
    pub fn full(limits: &ShardLimits, now: f64) -> Self {
        ShardBuckets {
            records: TokenBucket::full(limits.records_per_sec * limits.burst_secs, now),
            bytes: TokenBucket::full(limits.bytes_per_sec * limits.burst_secs, now),
        }
    }

    /// Take one record of `bytes` bytes if both buckets allow it (then both pay), else
    /// take nothing and return false.
    pub fn try_take(&mut self, limits: &ShardLimits, bytes: u64, now: f64) -> bool {
        let rc = limits.records_per_sec * limits.burst_secs;
        let bc = limits.bytes_per_sec * limits.burst_secs;
        let r = self.records.available(limits.records_per_sec, rc, now);
        let b = self.bytes.available(limits.bytes_per_sec, bc, now);
        let need = bytes as f64;
        if r >= 1.0 && b >= need {
            self.records.tokens -= 1.0;
            self.bytes.tokens -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_one_second_burst_then_refills_at_rate() {
        let l = ShardLimits::default();
        let mut b = ShardBuckets::full(&l, 0.0);
        let ok = (0..1500).filter(|_| b.try_take(&l, 10, 0.0)).count();
        assert_eq!(ok, 1000);
        // Half a second later: 500 more records.
        let ok = (0..1500).filter(|_| b.try_take(&l, 10, 0.5)).count();
        assert_eq!(ok, 500);
    }

    #[test]
    fn bytes_bucket_limits_large_records_and_refused_takes_cost_nothing() {
        let l = ShardLimits::default();
        let mut b = ShardBuckets::full(&l, 0.0);
        let big = 700 * 1024;
        assert!(b.try_take(&l, big, 0.0));
        assert!(!b.try_take(&l, big, 0.0));
        // The refused take did not consume a record token: small records still pass.
        let ok = (0..2000).filter(|_| b.try_take(&l, 1, 0.0)).count();
        assert_eq!(ok, 999);
    }

    #[test]
    fn request_faults_are_exclusive_and_follow_fractions() {
        let plan = FaultPlan {
            reset: 0.1,
            http_500: 0.1,
            http_503: 0.1,
            drop_response: 0.1,
            ..FaultPlan::default()
        };
        let mut dice = FaultDice::new(plan, 7);
        let mut counts = [0usize; 5];
        for _ in 0..10_000 {
            let i = match dice.request().kind {
                RequestFault::None => 0,
                RequestFault::Reset => 1,
                RequestFault::Http500 => 2,
                RequestFault::Http503 => 3,
                RequestFault::DropResponse => 4,
            };
            counts[i] += 1;
        }
        for c in &counts[1..] {
            assert!((800..1200).contains(c), "{counts:?}");
        }
        assert!((5500..6500).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn same_seed_same_fates() {
        let plan = FaultPlan {
            internal_failure: 0.3,
            throttle: 0.2,
            ..FaultPlan::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        FaultDice::new(plan.clone(), 42).entries(100, &mut a);
        FaultDice::new(plan, 42).entries(100, &mut b);
        assert_eq!(a, b);
        assert!(a.contains(&EntryFault::InternalFailure));
        assert!(a.contains(&EntryFault::Throttle));
    }

    #[test]
    fn no_entry_faults_draws_nothing() {
        let mut dice = FaultDice::new(FaultPlan::none(), 1);
        let mut out = vec![EntryFault::Throttle];
        dice.entries(10, &mut out);
        assert!(out.is_empty());
        assert_eq!(dice.request(), RequestFate::default());
    }
}

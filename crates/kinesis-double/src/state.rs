//! State shared by the server tasks and the test-facing handle: the model, the fault dice,
//! the request limits and the counters. Lock order: `dice` is never held while taking
//! `model` (each is taken alone), so no deadlock is possible.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::faults::FaultDice;
use super::model::Model;

/// Request-size limits the double validates against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Entries per PutRecords (service: 500).
    pub max_entries: usize,
    /// Data + partition key bytes per entry (service: 1 MiB).
    pub max_record_bytes: usize,
    /// Data + partition key bytes per PutRecords (service: 5 MiB).
    pub max_request_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_entries: 500,
            max_record_bytes: 1024 * 1024,
            max_request_bytes: 5 * 1024 * 1024,
        }
    }
}

/// A snapshot of the double's counters. Request-level counters count HTTP requests;
/// entry-level ones count PutRecords/PutRecord entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// HTTP requests received (every operation).
    pub requests: u64,
    /// PutRecords and PutRecord requests received.
    pub put_requests: u64,
    /// Entries accepted (sequence number assigned), whether or not the answer got out.
    pub entries_accepted: u64,
    /// Data + partition key bytes of the accepted entries.
    pub bytes_accepted: u64,
    /// Entries refused with ProvisionedThroughputExceededException (limits or injected).
    pub entries_throttled: u64,
    /// Entries failed with an injected InternalFailure.
    pub internal_failures: u64,
    /// Requests answered with an injected 500 or 503.
    pub http_5xx: u64,
    /// Connections reset instead of answering (nothing accepted).
    pub resets: u64,
    /// Requests processed whose answer was dropped (connection closed).
    pub dropped_responses: u64,
    /// Requests delayed by the slow fault.
    pub slow_responses: u64,
    /// Requests answered with a 4xx error (validation, unknown stream, ...).
    pub client_errors: u64,
}

/// Atomic cells behind [`Counters`].
#[derive(Debug, Default)]
pub struct CounterCells {
    pub requests: AtomicU64,
    pub put_requests: AtomicU64,
    pub entries_accepted: AtomicU64,
    pub bytes_accepted: AtomicU64,
    pub entries_throttled: AtomicU64,
    pub internal_failures: AtomicU64,
    pub http_5xx: AtomicU64,
    pub resets: AtomicU64,
    pub dropped_responses: AtomicU64,
    pub slow_responses: AtomicU64,
    pub client_errors: AtomicU64,
}

impl CounterCells {
    /// Add `n` to a cell.
    pub fn add(cell: &AtomicU64, n: u64) {
        if n != 0 {
            cell.fetch_add(n, Relaxed);
        }
    }

    /// Read every cell.
    pub fn snapshot(&self) -> Counters {
        Counters {
            requests: self.requests.load(Relaxed),
            put_requests: self.put_requests.load(Relaxed),
            entries_accepted: self.entries_accepted.load(Relaxed),
            bytes_accepted: self.bytes_accepted.load(Relaxed),
            entries_throttled: self.entries_throttled.load(Relaxed),
            internal_failures: self.internal_failures.load(Relaxed),
            http_5xx: self.http_5xx.load(Relaxed),
            resets: self.resets.load(Relaxed),
            dropped_responses: self.dropped_responses.load(Relaxed),
            slow_responses: self.slow_responses.load(Relaxed),
            client_errors: self.client_errors.load(Relaxed),
        }
    }
}

/// Everything the server and the handle share.
#[derive(Debug)]
pub struct Shared {
    /// Streams, shards and the accepted-entry log.
    pub model: Mutex<Model>,
    /// Fault plan and its seeded RNG.
    pub dice: Mutex<FaultDice>,
    /// Counters.
    pub counters: CounterCells,
    /// Validation limits.
    pub limits: RequestLimits,
    /// No data decoding, no log.
    pub count_only: bool,
    /// Refuse requests without an Authorization header, like every real endpoint.
    pub require_auth: bool,
    /// Create a stream with this many shards when a request names one that does not
    /// exist (`kpld local`); `None`: `ResourceNotFoundException`, as Kinesis answers.
    pub auto_create_shards: Option<usize>,
    /// Monotonic origin for the token buckets.
    pub epoch: Instant,
    /// The access key ids that signed requests, each once, in first-seen
    /// order (signatures are not checked; tests check credential swaps).
    pub access_key_ids: Mutex<Vec<String>>,
}

impl Shared {
    /// Notes the access key id of a SigV4 `Authorization` header
    /// (`AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, ...`).
    pub fn saw_authorization(&self, header: &str) {
        let Some(akid) = header
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next())
        else {
            return;
        };
        let mut seen = self
            .access_key_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !seen.iter().any(|k| k == akid) {
            seen.push(akid.to_string());
        }
    }

    /// The model, even if a panicking thread poisoned its lock (the model stays usable).
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fault dice, ignoring poisoning.
    pub fn dice(&self) -> MutexGuard<'_, FaultDice> {
        self.dice.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the double started (monotonic).
    pub fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }
}

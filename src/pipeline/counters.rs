//! Totals since start, for `kpld stats` and the tests' reports; shared by
//! the producer and every stream's core.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Counters {
    pub user_records_received: AtomicU64,
    pub user_records_put: AtomicU64,
    pub user_records_failed: AtomicU64,
    /// Records refused before they reached a stream (invalid, or a stream
    /// not allowed): a result each, never accepted.
    pub user_records_refused: AtomicU64,
    pub kinesis_records_put: AtomicU64,
    pub put_records_calls: AtomicU64,
    pub entries_throttled: AtomicU64,
    pub entries_failed: AtomicU64,
    pub requests_failed: AtomicU64,
    pub retries: AtomicU64,
    pub expired: AtomicU64,
    pub wrong_shard: AtomicU64,
    pub shard_map_loads: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let g = Self::get;
        serde_json::json!({
            "user_records_received": g(&self.user_records_received),
            "user_records_put": g(&self.user_records_put),
            "user_records_failed": g(&self.user_records_failed),
            "user_records_refused": g(&self.user_records_refused),
            "kinesis_records_put": g(&self.kinesis_records_put),
            "put_records_calls": g(&self.put_records_calls),
            "entries_throttled": g(&self.entries_throttled),
            "entries_failed": g(&self.entries_failed),
            "requests_failed": g(&self.requests_failed),
            "retries": g(&self.retries),
            "expired": g(&self.expired),
            "wrong_shard": g(&self.wrong_shard),
            "shard_map_loads": g(&self.shard_map_loads),
        })
    }
}

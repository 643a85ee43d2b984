//! The memory and count bounds: what a record costs, and giving it back
//! once its result is delivered.

use super::validate::failure;
use super::Inner;
use crate::error_code::ErrorCode;
use crate::pipeline::{Counters, UserRecord};
use std::sync::atomic::Ordering;

/// What a record costs in memory, counted against `max_buffered_bytes` so
/// that the bound holds for resident memory: [`RECORD_BYTE_FACTOR`] bytes per
/// byte of data and key (the request frame it arrived in, its aggregate,
/// the SDK's copy of that and the base64 JSON body of the call) plus
/// [`RECORD_OVERHEAD`] (its bookkeeping, its result, allocator slack).
/// Measured with kpld-bench under maximum load: about 4.8 bytes per byte
/// plus 1.6 KiB (BENCHMARKS.md, "Memory"). A record never costs more than
/// the whole budget, so a single record always fits.
pub fn record_cost(data_and_key: usize, budget: u64) -> u32 {
    let cost = (data_and_key as u64)
        .saturating_mul(RECORD_BYTE_FACTOR)
        .saturating_add(RECORD_OVERHEAD);
    cost.min(budget).min(u32::MAX as u64) as u32
}

/// See [`record_cost`].
pub const RECORD_BYTE_FACTOR: u64 = 5;
/// See [`record_cost`].
pub const RECORD_OVERHEAD: u64 = 2048;

impl Inner {
    pub(super) fn bytes_budget_total(&self) -> u64 {
        self.cfg.max_buffered_bytes.min(u32::MAX as u64)
    }

    pub(super) fn records_budget_total(&self) -> u64 {
        self.cfg.max_outstanding_records.min(u32::MAX as u64)
    }

    pub(super) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.outstanding.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Takes `bytes` and `count` of the budget: waits for room
    /// (backpressure), or with `busy_if_full` takes it only if it is there
    /// now (false: it was not). `bytes` never exceeds the budget
    /// ([`record_cost`]), so a wait always ends.
    pub(super) async fn take_budget(&self, bytes: u32, count: u32, busy_if_full: bool) -> bool {
        if busy_if_full {
            let Ok(b) = self.bytes_budget.try_acquire_many(bytes) else {
                return false;
            };
            let Ok(r) = self.records_budget.try_acquire_many(count) else {
                return false;
            };
            b.forget();
            r.forget();
            return true;
        }
        let (Ok(b), Ok(r)) = (
            self.bytes_budget.acquire_many(bytes).await,
            self.records_budget.acquire_many(count).await,
        ) else {
            unreachable!("the budget semaphores are never closed")
        };
        b.forget();
        r.forget();
        true
    }

    /// Like [`fail`](Self::fail), for a record that was never accepted
    /// (its result has `refused` set).
    pub(crate) fn refuse(&self, u: UserRecord, code: ErrorCode, message: String) {
        self.fail_as(u, code, message, true)
    }

    /// Delivers a record's failure and gives back its budget.
    pub(crate) fn fail(&self, u: UserRecord, code: ErrorCode, message: String) {
        self.fail_as(u, code, message, false)
    }

    fn fail_as(&self, u: UserRecord, code: ErrorCode, message: String, refused: bool) {
        let c = &self.counters;
        Counters::add(&c.user_records_failed, 1);
        if code == ErrorCode::Expired {
            Counters::add(&c.expired, 1);
        }
        let mut r = failure(u.id, code, message, u.attempts);
        r.refused = refused;
        u.origin.sink.deliver(u.origin.tag, r);
        self.release(1, u.cost as usize);
    }

    /// Gives back the budget of `records` records that are now final and
    /// together held `bytes` of it.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        self.bytes_budget.add_permits(bytes);
        self.records_budget.add_permits(records);
        if self.outstanding.fetch_sub(records as u64, Ordering::AcqRel) == records as u64 {
            self.idle.notify_waiters();
        }
    }
}

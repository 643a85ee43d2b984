//! Hot-shard visibility (pure): per shard, what Kinesis accepted per second
//! against the shard's write limits, throttles, and the heaviest partition
//! keys by bytes.
//!
//! The heavy hitters are a bounded *space-saving* summary (Metwally et al.):
//! [`KEY_SLOTS`] counters per shard, never a map of every key. Every key
//! whose true byte share of the window exceeds `1 / KEY_SLOTS` is in the
//! summary, and each reported count overestimates the truth by at most its
//! `error`. Offering a key allocates nothing once the slots are filled (a
//! slot's key buffer is reused), so it can run for every record.
//!
//! Rates are measured between two samples (one per stream-actor commit, about
//! a second apart); the key summary covers a window of [`KEY_WINDOW`] plus the
//! previous window, so the heaviest keys do not vanish at a window edge.

use std::time::Duration;
use tokio::time::Instant;

/// Kinesis per-shard write limits (bytes include partition keys).
pub const SHARD_BYTES_PER_S: f64 = 1_048_576.0;
pub const SHARD_RECORDS_PER_S: f64 = 1000.0;

/// Counters kept per shard for the heavy-hitters summary.
pub const KEY_SLOTS: usize = 32;
/// Keys reported per shard.
pub const TOP_KEYS: usize = 5;
/// Length of one heavy-hitters window.
pub const KEY_WINDOW: Duration = Duration::from_secs(10);

/// One key of a space-saving summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCount {
    pub key: String,
    /// Bytes counted for the key (an overestimate by at most `error`).
    pub bytes: u64,
    /// Upper bound of the overestimate.
    pub error: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    hash: u64,
    /// The key's bytes (checked UTF-8 when its record arrived; turned into
    /// text only when the summary is read, not once per record).
    key: Vec<u8>,
    count: u64,
    error: u64,
}

/// Weighted space-saving summary with a fixed number of slots. One pass
/// over the slots per offer finds the key or the smallest counter (32
/// slots: about 200 instructions; a heap-ordered variant measured slower
/// here, as nearly every offer of a spread-out key stream is a miss).
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    slots: Vec<Slot>,
    capacity: usize,
    total: u64,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> SpaceSaving {
        assert!(capacity > 0, "a summary needs at least one slot");
        SpaceSaving {
            slots: Vec::with_capacity(capacity),
            capacity,
            total: 0,
        }
    }

    /// Counts `weight` bytes for `key`. `hash` identifies the key cheaply
    /// (the pipeline passes the MD5-derived hash it already computed); keys
    /// are still compared, so colliding hashes never merge two keys.
    #[inline]
    pub fn offer(&mut self, key: &[u8], hash: u64, weight: u64) {
        self.total += weight;
        let mut min_i = 0usize;
        let mut min_c = u64::MAX;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.hash == hash && s.key == key {
                s.count += weight;
                return;
            }
            if s.count < min_c {
                min_c = s.count;
                min_i = i;
            }
        }
        if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                hash,
                key: key.to_vec(),
                count: weight,
                error: 0,
            });
            return;
        }
        // Replace the smallest counter: the newcomer inherits its count as
        // the error bound. The slot's key buffer is reused.
        let s = &mut self.slots[min_i];
        s.key.clear();
        s.key.extend_from_slice(key);
        s.hash = hash;
        s.error = s.count;
        s.count += weight;
    }

    /// Bytes offered since the last reset.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The `n` heaviest keys, heaviest first.
    pub fn top(&self, n: usize) -> Vec<KeyCount> {
        let mut v: Vec<KeyCount> = self
            .slots
            .iter()
            .filter(|s| s.count > 0)
            .map(|s| KeyCount {
                key: String::from_utf8_lossy(&s.key).into_owned(),
                bytes: s.count,
                error: s.error,
            })
            .collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
        v.truncate(n);
        v
    }

    /// Empties the summary. Slots and their key buffers are kept for reuse:
    /// an emptied slot counts 0 (so it is replaced first) and holds the
    /// empty key, which no partition key (1..=256 characters) matches.
    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.count = 0;
            s.error = 0;
            s.hash = 0;
            s.key.clear();
        }
        self.total = 0;
    }
}

/// Merges two summaries' tops (e.g. two windows): counts and errors add.
pub fn merge_tops(a: &[KeyCount], b: &[KeyCount], n: usize) -> Vec<KeyCount> {
    let mut out: Vec<KeyCount> = a.to_vec();
    for k in b {
        match out.iter_mut().find(|x| x.key == k.key) {
            Some(x) => {
                x.bytes += k.bytes;
                x.error += k.error;
            }
            None => out.push(k.clone()),
        }
    }
    out.retain(|k| !k.key.is_empty() && k.bytes > 0);
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
    out.truncate(n);
    out
}

/// What one shard looked like at its last sample.
#[derive(Debug, Clone)]
pub struct HotSample {
    pub at: Instant,
    /// Accepted by Kinesis since the previous sample, per second.
    pub bytes_per_s: f64,
    pub records_per_s: f64,
    pub throttles_per_s: f64,
    /// Cumulative counters since start.
    pub kinesis_records_total: u64,
    pub bytes_total: u64,
    pub user_records_put_total: u64,
    pub user_records_failed_total: u64,
    pub errors_total: u64,
    pub throttles_total: u64,
    /// Heaviest keys over `keys_window`, with the window's total bytes.
    pub top_keys: Vec<KeyCount>,
    pub keys_window: Duration,
    pub keys_total_bytes: u64,
}

impl HotSample {
    pub fn bytes_utilization(&self) -> f64 {
        self.bytes_per_s / SHARD_BYTES_PER_S
    }
    pub fn records_utilization(&self) -> f64 {
        self.records_per_s / SHARD_RECORDS_PER_S
    }
}

/// Per-shard hot tracking, owned by the shard's stream actor.
#[derive(Debug, Clone)]
pub struct HotShard {
    last_sample: Instant,
    bytes: u64,
    records: u64,
    throttles: u64,
    kinesis_records_total: u64,
    bytes_total: u64,
    user_records_put_total: u64,
    user_records_failed_total: u64,
    errors_total: u64,
    throttles_total: u64,
    keys: SpaceSaving,
    keys_since: Instant,
    previous_keys: Vec<KeyCount>,
    previous_total: u64,
    previous_window: Duration,
    /// Anything happened since the last sample.
    pub dirty: bool,
}

impl HotShard {
    pub fn new(now: Instant) -> HotShard {
        HotShard {
            last_sample: now,
            bytes: 0,
            records: 0,
            throttles: 0,
            kinesis_records_total: 0,
            bytes_total: 0,
            user_records_put_total: 0,
            user_records_failed_total: 0,
            errors_total: 0,
            throttles_total: 0,
            keys: SpaceSaving::new(KEY_SLOTS),
            keys_since: now,
            previous_keys: Vec::new(),
            previous_total: 0,
            previous_window: Duration::ZERO,
            dirty: false,
        }
    }

    /// A Kinesis record (an aggregate or a single record) Kinesis accepted:
    /// `bytes` is its data plus partition key, what the shard limit counts.
    #[inline]
    pub fn accepted(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.records += 1;
        self.bytes_total += bytes;
        self.kinesis_records_total += 1;
        self.dirty = true;
    }

    /// A Kinesis record refused with `code`.
    #[inline]
    pub fn refused(&mut self, throttled: bool) {
        self.errors_total += 1;
        if throttled {
            self.throttles += 1;
            self.throttles_total += 1;
        }
        self.dirty = true;
    }

    #[inline]
    pub fn user_record_final(&mut self, success: bool) {
        if success {
            self.user_records_put_total += 1;
        } else {
            self.user_records_failed_total += 1;
        }
        self.dirty = true;
    }

    #[inline]
    pub fn key(&mut self, key: &[u8], hash: u64, bytes: u64) {
        self.keys.offer(key, hash, bytes);
        self.dirty = true;
    }

    /// Rates over the time since the previous sample or since
    /// `activity_since` (when the stream became active again after being
    /// idle), whichever is later; the heavy hitters; starts the next
    /// measurement.
    pub fn sample(&mut self, now: Instant, activity_since: Instant) -> HotSample {
        let start = self.last_sample.max(activity_since);
        let elapsed = now.saturating_duration_since(start).as_secs_f64().max(1e-3);
        let rate = |n: u64| n as f64 / elapsed;
        let current = self.keys.top(KEY_SLOTS);
        let since = now.saturating_duration_since(self.keys_since);
        let top_keys = merge_tops(&self.previous_keys, &current, TOP_KEYS);
        let keys_total_bytes = self.previous_total + self.keys.total();
        let keys_window = self.previous_window + since;
        let s = HotSample {
            at: now,
            bytes_per_s: rate(self.bytes),
            records_per_s: rate(self.records),
            throttles_per_s: rate(self.throttles),
            kinesis_records_total: self.kinesis_records_total,
            bytes_total: self.bytes_total,
            user_records_put_total: self.user_records_put_total,
            user_records_failed_total: self.user_records_failed_total,
            errors_total: self.errors_total,
            throttles_total: self.throttles_total,
            top_keys,
            keys_window,
            keys_total_bytes,
        };
        if since >= KEY_WINDOW {
            self.previous_keys = current;
            self.previous_total = self.keys.total();
            self.previous_window = since;
            self.keys.reset();
            self.keys_since = now;
        }
        self.bytes = 0;
        self.records = 0;
        self.throttles = 0;
        self.last_sample = now;
        self.dirty = false;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn h(s: &str) -> u64 {
        // Any stable hash will do for the tests.
        s.bytes().fold(0xcbf29ce484222325u64, |a, b| {
            (a ^ b as u64).wrapping_mul(0x100000001b3)
        })
    }

    #[test]
    fn a_dominant_key_is_found_among_many_small_ones() {
        let mut ss = SpaceSaving::new(8);
        for i in 0..10_000u64 {
            let k = format!("user-{i}");
            ss.offer(k.as_bytes(), h(&k), 100);
            if i % 4 == 0 {
                ss.offer(b"hot-key", h("hot-key"), 400);
            }
        }
        let top = ss.top(3);
        assert_eq!(top[0].key, "hot-key");
        // True weight 2500 * 400 = 1_000_000; the count may overestimate by
        // at most `error`.
        assert!(top[0].bytes >= 1_000_000 && top[0].bytes - top[0].error <= 1_000_000);
        assert_eq!(ss.total(), 10_000 * 100 + 2500 * 400);
    }

    #[test]
    fn colliding_hashes_do_not_merge_keys() {
        let mut ss = SpaceSaving::new(4);
        ss.offer(b"a", 7, 10);
        ss.offer(b"b", 7, 20);
        let top = ss.top(4);
        assert_eq!(top.len(), 2);
        assert_eq!(
            top[0],
            KeyCount {
                key: "b".into(),
                bytes: 20,
                error: 0
            }
        );
    }

    #[test]
    fn samples_measure_rates_against_the_limits() {
        let t0 = Instant::now();
        let mut hs = HotShard::new(t0);
        for _ in 0..500 {
            hs.accepted(1024);
        }
        hs.refused(true);
        hs.refused(false);
        let s = hs.sample(t0 + Duration::from_secs(2), t0);
        assert_eq!(s.records_per_s, 250.0);
        assert_eq!(s.bytes_per_s, 256_000.0);
        assert!((s.records_utilization() - 0.25).abs() < 1e-9);
        assert!((s.bytes_utilization() - 256_000.0 / 1_048_576.0).abs() < 1e-9);
        assert_eq!((s.throttles_total, s.errors_total), (1, 2));
        assert_eq!(s.throttles_per_s, 0.5);
        let s2 = hs.sample(t0 + Duration::from_secs(3), t0);
        assert_eq!(s2.records_per_s, 0.0);
        assert_eq!(s2.kinesis_records_total, 500);
    }

    #[test]
    fn heavy_hitters_span_the_previous_window() {
        let t0 = Instant::now();
        let mut hs = HotShard::new(t0);
        hs.key(b"k1", h("k1"), 1000);
        let s = hs.sample(t0 + KEY_WINDOW, t0);
        assert_eq!(s.top_keys[0].key, "k1");
        hs.key(b"k2", h("k2"), 10);
        let s = hs.sample(t0 + KEY_WINDOW + Duration::from_secs(1), t0);
        let keys: Vec<&str> = s.top_keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(s.keys_total_bytes, 1010);
        // The sample that ends a window still covers it and the one before.
        let s = hs.sample(t0 + KEY_WINDOW * 2 + Duration::from_secs(1), t0);
        assert_eq!(s.top_keys.len(), 2);
        let s = hs.sample(t0 + KEY_WINDOW * 3 + Duration::from_secs(2), t0);
        let keys: Vec<&str> = s.top_keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["k2"], "k1 is two windows old");
        let s = hs.sample(t0 + KEY_WINDOW * 4 + Duration::from_secs(3), t0);
        assert!(s.top_keys.is_empty());
    }

    proptest! {
        /// The space-saving guarantees: every key heavier than total/capacity
        /// is kept, and each count is within [truth, truth + error].
        #[test]
        fn space_saving_bounds_hold(
            stream in proptest::collection::vec((0u8..40, 1u64..500), 1..3000),
            capacity in 4usize..16,
        ) {
            let mut ss = SpaceSaving::new(capacity);
            let mut truth: HashMap<String, u64> = HashMap::new();
            for (k, w) in &stream {
                let key = format!("key-{k}");
                ss.offer(key.as_bytes(), h(&key), *w);
                *truth.entry(key).or_default() += w;
            }
            let total: u64 = truth.values().sum();
            prop_assert_eq!(ss.total(), total);
            let kept = ss.top(capacity);
            for kc in &kept {
                let t = truth[&kc.key];
                prop_assert!(kc.bytes >= t, "count {} below truth {}", kc.bytes, t);
                prop_assert!(kc.bytes - kc.error <= t);
            }
            for (k, t) in &truth {
                if *t * capacity as u64 > total {
                    prop_assert!(kept.iter().any(|x| &x.key == k), "heavy key {} ({} of {}) missing", k, t, total);
                }
            }
        }
    }
}

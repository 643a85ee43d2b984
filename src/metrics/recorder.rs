//! The record path's side of metrics: [`StreamMetrics`], owned by one stream
//! actor (`&mut self`, no locks, no atomics, no allocation per call once a
//! shard and an error code have been seen).
//!
//! The actor records into local statistic sets, histograms and hot-shard
//! counters, and commits them to the shared [`Registry`] under its mutex at
//! most once per [`COMMIT_EVERY`] (and when dropped). [`StreamMetrics::next_commit`]
//! tells the actor when to wake up for that: only while it holds uncommitted
//! values, so an idle stream costs nothing.
//!
//! Which call records which KPL metric (as the KPL's retrier does):
//! - [`user_records_received`](StreamMetrics::user_records_received): UserRecordsReceived
//!   (stream level), and the pending count behind UserRecordsPending.
//! - [`put_records_result`](StreamMetrics::put_records_result): RequestTime,
//!   KinesisRecordsPerPutRecordsRequest, UserRecordsPerPutRecordsRequest (stream
//!   level), and ErrorsByCode/AllErrors when the whole call failed.
//! - [`kinesis_record`](StreamMetrics::kinesis_record): UserRecordsPerKinesisRecord,
//!   KinesisRecordsPut (1, or 0 on failure), KinesisRecordsDataPut,
//!   ErrorsByCode and AllErrors (0 or 1), per predicted shard.
//! - [`user_record_landed`](StreamMetrics::user_record_landed) and
//!   [`user_record_failed`](StreamMetrics::user_record_failed): UserRecordsPut (1,
//!   or 0 on failure), UserRecordsDataPut, UserRecordExpired, BufferingTime (one
//!   sample per attempt: its `delay_ms`), RetriesPerRecord.
//! - [`partition_key`](StreamMetrics::partition_key): the hot-shard key summary.

use super::hot::HotShard;
use super::registry::{
    new_time_histogram, Filter, Granularity, Metric, Registry, SeriesKey, Stat, HIST_METRICS,
    METRIC_COUNT,
};
use super::Shared;
use crate::ipc::Attempt;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest time a value stays in a stream actor before it reaches the registry.
pub const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// The error code that means a shard's write limit was hit.
pub const THROTTLED: &str = "ProvisionedThroughputExceededException";
/// The per-record error code of a record whose TTL ran out.
pub const EXPIRED: &str = "Expired";

/// What happened to one entry of a PutRecords call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOutcome<'a> {
    /// Kinesis accepted it (on any shard).
    Put,
    /// Kinesis refused this entry with an error code.
    Failed(&'a str),
    /// The whole call failed; the error is counted once per call by
    /// [`StreamMetrics::put_records_result`].
    NotSent,
}

struct ShardAcc {
    id: Arc<str>,
    stats: [Stat; METRIC_COUNT],
    stats_dirty: bool,
    hot: HotShard,
    /// Whether its last published sample showed traffic (so the next commit
    /// publishes the drop to zero).
    was_busy: bool,
}

struct ErrAcc {
    code: Arc<str>,
    direct: Stat,
    shards: Vec<(usize, Stat)>,
}

/// Metrics of one stream, recorded by its actor. See the module docs.
pub struct StreamMetrics {
    shared: Arc<Shared>,
    stream: Arc<str>,
    recording: [bool; METRIC_COUNT],
    /// Granularity is `shard`: keep shard-level leaves (else shard values go
    /// straight into the stream-level leaf, which is all that is published).
    shard_series: bool,
    /// Values recorded at stream level (or all values below shard granularity).
    direct: [Stat; METRIC_COUNT],
    hists: [Option<Histogram<u64>>; 2],
    shards: Vec<ShardAcc>,
    // Looked up for nearly every record when records of many shards interleave.
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    last: usize,
    errors: Vec<ErrAcc>,
    pending: u64,
    received_total: u64,
    /// Final failures of records that never had a shard (e.g. the stream
    /// does not exist): in the stream's FAILED, on no shard's.
    failed_unrouted_total: u64,
    requests_total: u64,
    request_errors_total: u64,
    /// When the first uncommitted value was recorded.
    dirty_since: Option<Instant>,
    commit_every: Duration,
}

impl StreamMetrics {
    pub(crate) fn new(shared: Arc<Shared>, stream: Arc<str>) -> StreamMetrics {
        let filter: Filter = shared.filter;
        let mut recording = [false; METRIC_COUNT];
        for m in Metric::ALL {
            recording[m.index()] = filter.records(m);
        }
        let hists = [0, 1].map(|i| recording[HIST_METRICS[i].index()].then(new_time_histogram));
        shared.recorder_started();
        let commit_every = shared.commit_every;
        StreamMetrics {
            shared,
            stream,
            recording,
            shard_series: filter.granularity == Granularity::Shard,
            direct: [Stat::EMPTY; METRIC_COUNT],
            hists,
            shards: Vec::new(),
            index: HashMap::default(),
            last: usize::MAX,
            errors: Vec::new(),
            pending: 0,
            received_total: 0,
            failed_unrouted_total: 0,
            requests_total: 0,
            request_errors_total: 0,
            dirty_since: None,
            commit_every,
        }
    }

    pub fn stream(&self) -> &Arc<str> {
        &self.stream
    }

    // ------------------------------------------------------------------
    // the record path

    /// `n` user records reached the stream actor.
    #[inline]
    pub fn user_records_received(&mut self, n: usize) {
        self.mark();
        self.pending += n as u64;
        self.received_total += n as u64;
        self.put_n(Metric::UserRecordsReceived, None, 1.0, n as u64);
    }

    /// A PutRecords call ended: `duration_ms` from its start to its answer,
    /// with `kinesis_records` entries holding `user_records` user records;
    /// `request_error` is the code when the whole call failed.
    pub fn put_records_result(
        &mut self,
        duration_ms: u64,
        kinesis_records: usize,
        user_records: usize,
        request_error: Option<&str>,
    ) {
        self.mark();
        self.requests_total += 1;
        self.put(Metric::RequestTime, None, duration_ms as f64);
        self.hist(Metric::RequestTime, duration_ms);
        self.put(
            Metric::KinesisRecordsPerPutRecordsRequest,
            None,
            kinesis_records as f64,
        );
        self.put(
            Metric::UserRecordsPerPutRecordsRequest,
            None,
            user_records as f64,
        );
        if let Some(code) = request_error {
            self.request_errors_total += 1;
            self.error(code, None);
            self.put(Metric::AllErrors, None, 1.0);
        }
    }

    /// One entry of a PutRecords call, predicted for `shard`, holding
    /// `user_records` user records and `bytes` of data plus partition key.
    #[inline]
    pub fn kinesis_record(
        &mut self,
        shard: &Arc<str>,
        user_records: usize,
        bytes: usize,
        outcome: EntryOutcome<'_>,
    ) {
        self.mark();
        let i = self.slot(shard);
        self.put(
            Metric::UserRecordsPerKinesisRecord,
            Some(i),
            user_records as f64,
        );
        match outcome {
            EntryOutcome::Put => {
                self.put(Metric::KinesisRecordsPut, Some(i), 1.0);
                self.put(Metric::KinesisRecordsDataPut, Some(i), bytes as f64);
                self.put(Metric::AllErrors, Some(i), 0.0);
                self.shards[i].hot.accepted(bytes as u64);
            }
            EntryOutcome::Failed(code) => {
                self.put(Metric::KinesisRecordsPut, Some(i), 0.0);
                self.error(code, Some(i));
                self.put(Metric::AllErrors, Some(i), 1.0);
                self.shards[i].hot.refused(code == THROTTLED);
            }
            EntryOutcome::NotSent => {}
        }
    }

    /// The tests' shorthand for a final result given as its attempts:
    /// `shard` is where it landed on success, the predicted shard on failure.
    #[cfg(test)]
    pub fn user_record_final(
        &mut self,
        shard: Option<&Arc<str>>,
        success: bool,
        error_code: &str,
        data_len: usize,
        attempts: &[Attempt],
    ) {
        match (success, attempts.split_last()) {
            (true, Some((last, earlier))) => {
                let shard = shard.expect("a success has a shard");
                self.user_record_landed(shard, data_len, earlier, last.delay_ms)
            }
            _ => self.user_record_failed(shard, error_code, attempts),
        }
    }

    /// A user record landed on `shard` after the failed attempts `earlier`;
    /// its successful attempt waited `delay_ms`.
    #[inline]
    pub fn user_record_landed(
        &mut self,
        shard: &Arc<str>,
        data_len: usize,
        earlier: &[Attempt],
        delay_ms: u64,
    ) {
        self.mark();
        self.pending = self.pending.saturating_sub(1);
        let i = Some(self.slot(shard));
        if let Some(i) = i {
            self.shards[i].hot.user_record_final(true);
        }
        self.put(Metric::UserRecordsPut, i, 1.0);
        self.put(Metric::UserRecordsDataPut, i, data_len as f64);
        for d in earlier.iter().map(|a| a.delay_ms).chain([delay_ms]) {
            self.put(Metric::BufferingTime, i, d as f64);
            self.hist(Metric::BufferingTime, d);
        }
        self.put(Metric::RetriesPerRecord, i, earlier.len() as f64);
    }

    /// A user record failed with `error_code` after `attempts`. `shard`:
    /// the predicted one (None when it never had one).
    pub fn user_record_failed(
        &mut self,
        shard: Option<&Arc<str>>,
        error_code: &str,
        attempts: &[Attempt],
    ) {
        self.mark();
        self.pending = self.pending.saturating_sub(1);
        let i = shard.map(|s| self.slot(s));
        match i {
            Some(i) => self.shards[i].hot.user_record_final(false),
            None => self.failed_unrouted_total += 1,
        }
        self.put(Metric::UserRecordsPut, i, 0.0);
        if error_code == EXPIRED {
            self.put(Metric::UserRecordExpired, i, 1.0);
        }
        for a in attempts {
            self.put(Metric::BufferingTime, i, a.delay_ms as f64);
            self.hist(Metric::BufferingTime, a.delay_ms);
        }
        self.put(
            Metric::RetriesPerRecord,
            i,
            attempts.len().saturating_sub(1) as f64,
        );
    }

    /// A user record with partition key `key` (and the 128-bit hash the
    /// pipeline computed for it) was routed to `shard`: `bytes` of data plus key.
    #[inline]
    pub fn partition_key(&mut self, shard: &Arc<str>, key: &[u8], hash: u128, bytes: usize) {
        self.mark();
        let i = self.slot(shard);
        let h = (hash as u64) ^ ((hash >> 64) as u64);
        self.shards[i].hot.key(key, h, bytes as u64);
    }

    // ------------------------------------------------------------------
    // committing

    /// When the actor must call [`maybe_commit`](Self::maybe_commit) next
    /// (None while nothing is uncommitted).
    pub fn next_commit(&self) -> Option<Instant> {
        self.dirty_since.map(|t| t + self.commit_every)
    }

    /// Commits when the commit time has come.
    pub fn maybe_commit(&mut self, now: Instant) {
        if self.next_commit().is_some_and(|t| t <= now) {
            self.commit(now);
        }
    }

    /// Hands everything recorded so far to the registry.
    pub fn commit(&mut self, now: Instant) {
        let window_start = self.dirty_since.unwrap_or(now);
        if self.recording[Metric::UserRecordsPending.index()] {
            self.direct[Metric::UserRecordsPending.index()].put(self.pending as f64);
        }
        let shared = self.shared.clone();
        let mut reg = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
        self.commit_into(&mut reg, now, window_start);
        self.dirty_since = None;
    }

    fn commit_into(&mut self, reg: &mut Registry, now: Instant, window_start: Instant) {
        let key = |m: Metric, code: Option<&Arc<str>>, shard: Option<&Arc<str>>| SeriesKey {
            metric: m,
            error_code: code.cloned(),
            stream: Some(self.stream.clone()),
            shard: shard.cloned(),
            file: None,
        };
        for m in Metric::ALL {
            let s = self.direct[m.index()].take();
            reg.add_leaf(key(m, None, None), &s);
        }
        for e in &mut self.errors {
            let s = e.direct.take();
            reg.add_leaf(key(Metric::ErrorsByCode, Some(&e.code), None), &s);
            for (i, s) in &mut e.shards {
                let s = s.take();
                reg.add_leaf(
                    key(
                        Metric::ErrorsByCode,
                        Some(&e.code),
                        Some(&self.shards[*i].id),
                    ),
                    &s,
                );
            }
        }
        for (slot, h) in self.hists.iter_mut().enumerate() {
            if let Some(h) = h {
                reg.add_hist(HIST_METRICS[slot], &self.stream, h);
                h.reset();
            }
        }
        let st = reg.stream_mut(&self.stream);
        st.pending = self.pending;
        st.received_total = self.received_total;
        st.failed_unrouted_total = self.failed_unrouted_total;
        st.requests_total = self.requests_total;
        st.request_errors_total = self.request_errors_total;
        for sh in &mut self.shards {
            if sh.hot.dirty || sh.was_busy {
                let sample = sh.hot.sample(now, window_start);
                sh.was_busy = sample.records_per_s > 0.0 || sample.throttles_per_s > 0.0;
                st.shards
                    .insert(sh.id.clone(), super::registry::ShardState { hot: sample });
            }
        }
        for sh in &mut self.shards {
            if !sh.stats_dirty {
                continue;
            }
            sh.stats_dirty = false;
            for m in Metric::ALL {
                let s = sh.stats[m.index()].take();
                if !s.is_empty() {
                    reg.add_leaf(
                        SeriesKey {
                            metric: m,
                            error_code: None,
                            stream: Some(self.stream.clone()),
                            shard: Some(sh.id.clone()),
                            file: None,
                        },
                        &s,
                    );
                }
            }
        }
    }

    // ------------------------------------------------------------------
    // helpers

    #[inline]
    fn mark(&mut self) {
        if self.dirty_since.is_none() {
            // One clock read per commit cycle, not per call.
            self.dirty_since = Some(Instant::now());
        }
    }

    /// The local slot of a shard: a pointer comparison in the common case
    /// (the same `Arc` as the previous call), a hash lookup otherwise, an
    /// allocation only for a shard never seen before.
    #[inline]
    fn slot(&mut self, shard: &Arc<str>) -> usize {
        if let Some(s) = self.shards.get(self.last) {
            if Arc::ptr_eq(&s.id, shard) || *s.id == **shard {
                return self.last;
            }
        }
        let i = match self.index.get(shard) {
            Some(i) => *i,
            None => {
                let i = self.shards.len();
                self.shards.push(ShardAcc {
                    id: shard.clone(),
                    stats: [Stat::EMPTY; METRIC_COUNT],
                    stats_dirty: false,
                    hot: HotShard::new(self.dirty_since.unwrap_or_else(Instant::now)),
                    was_busy: false,
                });
                self.index.insert(shard.clone(), i);
                i
            }
        };
        self.last = i;
        i
    }

    #[inline]
    fn target(&mut self, m: Metric, shard: Option<usize>) -> Option<&mut Stat> {
        if !self.recording[m.index()] {
            return None;
        }
        match shard {
            Some(i) if self.shard_series => {
                let sh = &mut self.shards[i];
                sh.stats_dirty = true;
                Some(&mut sh.stats[m.index()])
            }
            _ => Some(&mut self.direct[m.index()]),
        }
    }

    #[inline]
    fn put(&mut self, m: Metric, shard: Option<usize>, v: f64) {
        if let Some(s) = self.target(m, shard) {
            s.put(v);
        }
    }

    #[inline]
    fn put_n(&mut self, m: Metric, shard: Option<usize>, v: f64, n: u64) {
        if let Some(s) = self.target(m, shard) {
            s.put_n(v, n);
        }
    }

    #[inline]
    fn hist(&mut self, m: Metric, v: u64) {
        if let Some(Some(h)) = m.hist_slot().map(|i| &mut self.hists[i]) {
            h.saturating_record(v);
        }
    }

    fn error(&mut self, code: &str, shard: Option<usize>) {
        if !self.recording[Metric::ErrorsByCode.index()] {
            return;
        }
        let e = match self.errors.iter().position(|e| &*e.code == code) {
            Some(p) => &mut self.errors[p],
            None => {
                self.errors.push(ErrAcc {
                    code: code.into(),
                    direct: Stat::EMPTY,
                    shards: Vec::new(),
                });
                self.errors.last_mut().expect("pushed")
            }
        };
        match shard {
            Some(i) if self.shard_series => match e.shards.iter_mut().find(|(j, _)| *j == i) {
                Some((_, s)) => s.put(1.0),
                None => {
                    let mut s = Stat::EMPTY;
                    s.put(1.0);
                    e.shards.push((i, s));
                }
            },
            _ => e.direct.put(1.0),
        }
    }
}

impl Drop for StreamMetrics {
    fn drop(&mut self) {
        if self.dirty_since.is_some() || self.pending > 0 {
            self.commit(Instant::now());
        }
        self.shared.recorder_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::super::registry::Level;
    use super::super::{MetricsConfig, MetricsHandle};
    use super::*;

    fn handle(level: Level, granularity: Granularity) -> MetricsHandle {
        MetricsHandle::new(&MetricsConfig {
            level,
            granularity,
            ..MetricsConfig::default()
        })
    }

    fn attempt(delay_ms: u64) -> Attempt {
        Attempt {
            success: true,
            delay_ms,
            duration_ms: 5,
            ..Default::default()
        }
    }

    fn find(
        rep: &super::super::registry::IntervalReport,
        m: Metric,
        dims: &[(&str, &str)],
    ) -> Option<Stat> {
        rep.data
            .iter()
            .find(|d| d.key.metric == m && d.key.dimensions() == dims)
            .map(|d| d.stat)
    }

    #[tokio::test]
    async fn a_pipeline_story_becomes_kpl_series() {
        let h = handle(Level::Detailed, Granularity::Shard);
        let stream: Arc<str> = "orders".into();
        let s0: Arc<str> = "shardId-000000000000".into();
        let s1: Arc<str> = "shardId-000000000001".into();
        let mut m = h.stream(&stream);
        m.user_records_received(3);
        m.put_records_result(40, 2, 3, None);
        m.kinesis_record(&s0, 2, 300, EntryOutcome::Put);
        m.kinesis_record(&s1, 1, 120, EntryOutcome::Failed(THROTTLED));
        m.user_record_final(Some(&s0), true, "", 100, &[attempt(20)]);
        m.user_record_final(Some(&s0), true, "", 180, &[attempt(30)]);
        m.partition_key(&s0, b"k", 1, 101);
        m.user_record_final(Some(&s1), false, EXPIRED, 110, &[attempt(10), attempt(50)]);
        m.commit(Instant::now());
        let rep = h.close_interval();
        let stream_dims = [("StreamName", "orders")];
        let shard0 = [
            ("StreamName", "orders"),
            ("ShardId", "shardId-000000000000"),
        ];
        let put = find(&rep, Metric::UserRecordsPut, &stream_dims).unwrap();
        assert_eq!(
            (put.count, put.sum),
            (3, 2.0),
            "average is the success rate"
        );
        let data = find(&rep, Metric::UserRecordsDataPut, &shard0).unwrap();
        assert_eq!(
            (data.count, data.sum, data.min, data.max),
            (2, 280.0, 100.0, 180.0)
        );
        let kput = find(&rep, Metric::KinesisRecordsPut, &[]).unwrap();
        assert_eq!((kput.count, kput.sum), (2, 1.0));
        let errs = find(
            &rep,
            Metric::ErrorsByCode,
            &[
                ("ErrorCode", THROTTLED),
                ("StreamName", "orders"),
                ("ShardId", "shardId-000000000001"),
            ],
        )
        .unwrap();
        assert_eq!(errs.sum, 1.0);
        let all = find(&rep, Metric::AllErrors, &stream_dims).unwrap();
        assert_eq!((all.count, all.sum), (2, 1.0));
        let expired = find(&rep, Metric::UserRecordExpired, &[]).unwrap();
        assert_eq!(expired.sum, 1.0);
        let retries = find(&rep, Metric::RetriesPerRecord, &stream_dims).unwrap();
        assert_eq!((retries.sum, retries.max), (1.0, 1.0));
        let buf = find(&rep, Metric::BufferingTime, &stream_dims).unwrap();
        assert_eq!((buf.count, buf.sum, buf.max), (4, 110.0, 50.0));
        let d = rep
            .data
            .iter()
            .find(|d| d.key.metric == Metric::BufferingTime && d.key.dimensions() == stream_dims)
            .unwrap();
        assert_eq!(d.hist.as_ref().unwrap().len(), 4);
        let recv = find(&rep, Metric::UserRecordsReceived, &stream_dims).unwrap();
        assert_eq!((recv.count, recv.sum, recv.max), (3, 3.0, 1.0));
        let pending = find(&rep, Metric::UserRecordsPending, &stream_dims).unwrap();
        assert_eq!(pending.sum, 0.0);
        let rt = find(&rep, Metric::RequestTime, &stream_dims).unwrap();
        assert_eq!(rt.sum, 40.0);
        assert!(
            find(&rep, Metric::RequestTime, &shard0).is_none(),
            "request metrics are stream level"
        );
        drop(m);
    }

    #[tokio::test]
    async fn summary_level_and_stream_granularity_record_less() {
        let h = handle(Level::Summary, Granularity::Stream);
        let stream: Arc<str> = "s".into();
        let shard: Arc<str> = "shardId-0".into();
        let mut m = h.stream(&stream);
        m.user_records_received(1);
        m.kinesis_record(&shard, 1, 10, EntryOutcome::Put);
        m.user_record_final(Some(&shard), true, "", 5, &[attempt(1)]);
        m.commit(Instant::now());
        let rep = h.close_interval();
        assert!(rep
            .data
            .iter()
            .all(|d| d.key.metric.level() == Level::Summary));
        assert!(rep.data.iter().all(|d| d.key.shard.is_none()));
        assert_eq!(
            find(&rep, Metric::UserRecordsPut, &[("StreamName", "s")])
                .unwrap()
                .sum,
            1.0
        );
        assert!(find(&rep, Metric::UserRecordsReceived, &[("StreamName", "s")]).is_none());
    }

    #[tokio::test]
    async fn level_none_records_no_kpl_series_but_keeps_hot_shards() {
        let h = handle(Level::None, Granularity::Shard);
        let stream: Arc<str> = "s".into();
        let shard: Arc<str> = "shardId-0".into();
        let mut m = h.stream(&stream);
        m.kinesis_record(&shard, 1, 10, EntryOutcome::Put);
        m.user_record_final(Some(&shard), true, "", 5, &[attempt(1)]);
        m.commit(Instant::now());
        assert!(h.close_interval().data.is_empty());
        let v: serde_json::Value = serde_json::from_str(&h.stats_json(0)).unwrap();
        assert_eq!(v["streams"][0]["shards"][0]["user_records_put_total"], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn commits_wait_for_the_interval_and_drop_commits_the_rest() {
        let h = handle(Level::Detailed, Granularity::Shard);
        let stream: Arc<str> = "s".into();
        let mut m = h.stream(&stream);
        assert_eq!(m.next_commit(), None);
        m.user_records_received(2);
        let due = m.next_commit().unwrap();
        m.maybe_commit(Instant::now());
        assert!(
            h.close_interval().data.is_empty(),
            "not committed before its time"
        );
        tokio::time::advance(COMMIT_EVERY).await;
        assert!(due <= Instant::now());
        m.maybe_commit(Instant::now());
        assert_eq!(m.next_commit(), None);
        let rep = h.close_interval();
        assert_eq!(
            find(&rep, Metric::UserRecordsReceived, &[]).unwrap().sum,
            2.0
        );
        m.user_records_received(5);
        assert_eq!(h.live_recorders(), 1);
        drop(m);
        assert_eq!(h.live_recorders(), 0);
        let rep = h.close_interval();
        assert_eq!(
            find(&rep, Metric::UserRecordsReceived, &[]).unwrap().sum,
            5.0
        );
    }
}

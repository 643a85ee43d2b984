//! The metrics registry (pure: no I/O, no clocks of its own).
//!
//! What it holds, as the KPL defines it:
//! - Every KPL metric ([`Metric`]) is a *statistic set* ([`Stat`]: sample
//!   count, sum, min, max) per series per upload interval. Time metrics are
//!   also kept as HDR histograms per stream, so p50/p99/p999 are real.
//! - A series is a metric plus dimensions. The KPL's dimension chain is
//!   `MetricName → [ErrorCode] → StreamName → [ShardId]`, and a value put at
//!   the end of the chain also counts in every prefix of it: a shard-level
//!   UserRecordsPut counts in its `{StreamName, ShardId}` series, in the
//!   `{StreamName}` series and in the global (dimensionless) series.
//! - The registry stores *leaves* only (the most specific dimensions a value
//!   was recorded with); [`Registry::close_interval`] rolls leaves up into
//!   every prefix, then applies the level and granularity filter.
//!
//! Invariants:
//! - A leaf's cumulative `total` only grows (Prometheus counters are built
//!   from it); `interval` is reset by every `close_interval`.
//! - Rolling up is a merge of statistic sets and histograms, which is exactly
//!   what putting each value into every prefix would have given.

use super::hot::HotSample;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The KPL's metrics, in its documentation's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    UserRecordsReceived,
    UserRecordsPending,
    UserRecordsPut,
    UserRecordsDataPut,
    KinesisRecordsPut,
    KinesisRecordsDataPut,
    ErrorsByCode,
    AllErrors,
    RetriesPerRecord,
    UserRecordExpired,
    BufferingTime,
    RequestTime,
    UserRecordsPerKinesisRecord,
    KinesisRecordsPerPutRecordsRequest,
    UserRecordsPerPutRecordsRequest,
    // Beyond the KPL: the `[[files]]` readers, per stream and file
    // (`super::files`).
    FileLinesRead,
    FileRecordsSent,
    FileBytesBehind,
    FileParseErrors,
    FileLongLines,
    FileRotations,
}

/// Number of [`Metric`] variants (array sizes on the record path).
pub const METRIC_COUNT: usize = 21;

/// CloudWatch units the KPL uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
}

impl Unit {
    /// The CloudWatch `StandardUnit` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

// Config values (config::values): the config module must not depend on metrics.
pub use crate::config::{Granularity, Level};

impl Metric {
    pub const ALL: [Metric; METRIC_COUNT] = [
        Metric::UserRecordsReceived,
        Metric::UserRecordsPending,
        Metric::UserRecordsPut,
        Metric::UserRecordsDataPut,
        Metric::KinesisRecordsPut,
        Metric::KinesisRecordsDataPut,
        Metric::ErrorsByCode,
        Metric::AllErrors,
        Metric::RetriesPerRecord,
        Metric::UserRecordExpired,
        Metric::BufferingTime,
        Metric::RequestTime,
        Metric::UserRecordsPerKinesisRecord,
        Metric::KinesisRecordsPerPutRecordsRequest,
        Metric::UserRecordsPerPutRecordsRequest,
        Metric::FileLinesRead,
        Metric::FileRecordsSent,
        Metric::FileBytesBehind,
        Metric::FileParseErrors,
        Metric::FileLongLines,
        Metric::FileRotations,
    ];

    /// Index into per-metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The CloudWatch metric name (the KPL's).
    pub fn name(self) -> &'static str {
        match self {
            Metric::UserRecordsReceived => "UserRecordsReceived",
            Metric::UserRecordsPending => "UserRecordsPending",
            Metric::UserRecordsPut => "UserRecordsPut",
            Metric::UserRecordsDataPut => "UserRecordsDataPut",
            Metric::KinesisRecordsPut => "KinesisRecordsPut",
            Metric::KinesisRecordsDataPut => "KinesisRecordsDataPut",
            Metric::ErrorsByCode => "ErrorsByCode",
            Metric::AllErrors => "AllErrors",
            Metric::RetriesPerRecord => "RetriesPerRecord",
            Metric::UserRecordExpired => "UserRecordExpired",
            Metric::BufferingTime => "BufferingTime",
            Metric::RequestTime => "RequestTime",
            Metric::UserRecordsPerKinesisRecord => "UserRecordsPerKinesisRecord",
            Metric::KinesisRecordsPerPutRecordsRequest => "KinesisRecordsPerPutRecordsRequest",
            Metric::UserRecordsPerPutRecordsRequest => "UserRecordsPerPutRecordsRequest",
            Metric::FileLinesRead => "FileLinesRead",
            Metric::FileRecordsSent => "FileRecordsSent",
            Metric::FileBytesBehind => "FileBytesBehind",
            Metric::FileParseErrors => "FileParseErrors",
            Metric::FileLongLines => "FileLongLines",
            Metric::FileRotations => "FileRotations",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Metric::UserRecordsDataPut
            | Metric::KinesisRecordsDataPut
            | Metric::FileBytesBehind => Unit::Bytes,
            Metric::BufferingTime | Metric::RequestTime => Unit::Milliseconds,
            _ => Unit::Count,
        }
    }

    /// The level the KPL assigns (aws/metrics/metrics_constants.cc). Of the
    /// file metrics, what an alarm watches (lines flowing, lag, lines that
    /// did not parse) is in `summary`.
    pub fn level(self) -> Level {
        match self {
            Metric::UserRecordsPut
            | Metric::KinesisRecordsPut
            | Metric::ErrorsByCode
            | Metric::AllErrors
            | Metric::UserRecordExpired
            | Metric::BufferingTime
            | Metric::FileLinesRead
            | Metric::FileBytesBehind
            | Metric::FileParseErrors => Level::Summary,
            _ => Level::Detailed,
        }
    }

    /// Fed by the `[[files]]` readers, with a FilePath dimension.
    pub fn is_file(self) -> bool {
        matches!(
            self,
            Metric::FileLinesRead
                | Metric::FileRecordsSent
                | Metric::FileBytesBehind
                | Metric::FileParseErrors
                | Metric::FileLongLines
                | Metric::FileRotations
        )
    }

    /// Times are also kept as HDR histograms.
    pub fn is_time(self) -> bool {
        matches!(self, Metric::BufferingTime | Metric::RequestTime)
    }

    /// Slot in the per-stream histogram arrays (time metrics only).
    pub(crate) fn hist_slot(self) -> Option<usize> {
        match self {
            Metric::BufferingTime => Some(0),
            Metric::RequestTime => Some(1),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.name() == name)
    }
}

/// Time metrics with a histogram, in `hist_slot` order.
pub(crate) const HIST_METRICS: [Metric; 2] = [Metric::BufferingTime, Metric::RequestTime];

/// Level and granularity, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    pub level: Level,
    pub granularity: Granularity,
}

impl Filter {
    /// Whether values of `m` are recorded at all.
    pub fn records(&self, m: Metric) -> bool {
        self.level != Level::None && m.level() <= self.level
    }

    /// Whether a series of `m` with dimensions of granularity `g` is published.
    pub fn publishes(&self, m: Metric, g: Granularity) -> bool {
        self.records(m) && g <= self.granularity
    }
}

/// A statistic set: what CloudWatch's `StatisticValues` carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for Stat {
    fn default() -> Self {
        Stat::EMPTY
    }
}

impl Stat {
    pub const EMPTY: Stat = Stat {
        count: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    /// One sample.
    #[inline]
    pub fn put(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
    }

    /// `n` samples of the same value (e.g. `n` records that each count 1).
    #[inline]
    pub fn put_n(&mut self, v: f64, n: u64) {
        if n == 0 {
            return;
        }
        self.count += n;
        self.sum += v * n as f64;
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
    }

    pub fn merge(&mut self, o: &Stat) {
        if o.count == 0 {
            return;
        }
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Resets to empty and returns what was there.
    pub fn take(&mut self) -> Stat {
        std::mem::replace(self, Stat::EMPTY)
    }
}

/// Largest time a histogram tracks (longer values are clamped): one hour.
pub const HIST_MAX_MS: u64 = 3_600_000;

/// A histogram of milliseconds: 1 ms .. 1 h, 2 significant digits (1%).
/// About 16 KiB, allocated once; recording never allocates.
pub fn new_time_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_MS, 2).expect("static histogram bounds are valid")
}

/// The dimensions of one series. `stream` is None only for global series.
/// File metrics have `file` (the path) where the KPL's have `shard`: the
/// most specific dimension, below the stream, published at `shard`
/// granularity only (a host can have as many files as a stream has shards).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub metric: Metric,
    pub error_code: Option<Arc<str>>,
    pub stream: Option<Arc<str>>,
    pub shard: Option<Arc<str>>,
    pub file: Option<Arc<str>>,
}

impl SeriesKey {
    pub fn granularity(&self) -> Granularity {
        if self.shard.is_some() || self.file.is_some() {
            Granularity::Shard
        } else if self.stream.is_some() {
            Granularity::Stream
        } else {
            Granularity::Global
        }
    }

    /// CloudWatch dimensions, in the KPL's order.
    pub fn dimensions(&self) -> Vec<(&'static str, &str)> {
        let mut d = Vec::with_capacity(3);
        if let Some(c) = &self.error_code {
            d.push(("ErrorCode", &**c));
        }
        if let Some(s) = &self.stream {
            d.push(("StreamName", &**s));
        }
        if let Some(s) = &self.shard {
            d.push(("ShardId", &**s));
        }
        if let Some(f) = &self.file {
            d.push(("FilePath", &**f));
        }
        d
    }

    /// Every prefix of the KPL dimension chain, this key included:
    /// `[] → [ErrorCode] → [.., StreamName] → [.., ShardId]` (or `[.., FilePath]`).
    pub fn prefixes(&self) -> Vec<SeriesKey> {
        let mut out = Vec::with_capacity(4);
        let mut k = SeriesKey {
            metric: self.metric,
            error_code: None,
            stream: None,
            shard: None,
            file: None,
        };
        out.push(k.clone());
        if self.error_code.is_some() {
            k.error_code = self.error_code.clone();
            out.push(k.clone());
        }
        if self.stream.is_some() {
            k.stream = self.stream.clone();
            out.push(k.clone());
            if self.shard.is_some() || self.file.is_some() {
                k.shard = self.shard.clone();
                k.file = self.file.clone();
                out.push(k);
            }
        }
        out
    }
}

/// One leaf series.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    /// This upload interval.
    pub interval: Stat,
    /// Since start (Prometheus counters).
    pub total: Stat,
    /// Since the last windowed sample (KPL mode's `MetricsRequest`): a
    /// window's min and max are those of the seconds in it, which
    /// cumulative totals cannot give.
    pub since_sample: Stat,
    /// Intervals closed in a row without a value (to forget dead shards).
    idle_intervals: u32,
}

/// Per stream, per time metric: the histogram of this interval and of the
/// previous one (the "recent" window for quantiles).
#[derive(Debug, Clone)]
pub struct StreamHist {
    pub interval: Histogram<u64>,
    pub previous: Histogram<u64>,
}

impl StreamHist {
    fn new() -> Self {
        StreamHist {
            interval: new_time_histogram(),
            previous: new_time_histogram(),
        }
    }

    /// This interval and the previous one merged.
    pub fn recent(&self) -> Histogram<u64> {
        let mut h = self.previous.clone();
        h.add(&self.interval).expect("same bounds");
        h
    }
}

/// Per shard: the last hot-shard sample its stream actor committed.
#[derive(Debug, Clone)]
pub struct ShardState {
    pub hot: HotSample,
}

/// Per stream state that is not a KPL series.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// User records accepted by the stream actor and not yet final.
    pub pending: u64,
    pub received_total: u64,
    /// Failed without a shard (see `StreamMetrics`).
    pub failed_unrouted_total: u64,
    pub requests_total: u64,
    pub request_errors_total: u64,
    pub shards: BTreeMap<Arc<str>, ShardState>,
}

/// One published datum of a closed interval.
#[derive(Debug, Clone)]
pub struct Datum {
    pub key: SeriesKey,
    pub stat: Stat,
    /// Stream-level and global series of time metrics.
    pub hist: Option<Histogram<u64>>,
}

/// What [`Registry::close_interval`] hands the uploaders.
#[derive(Debug, Clone)]
pub struct IntervalReport {
    /// Milliseconds since the Unix epoch at the close (the datums' timestamp).
    pub timestamp_ms: i64,
    pub data: Vec<Datum>,
}

/// Intervals a leaf may stay empty before it is forgotten (its shard closed
/// by a reshard, say); its Prometheus counters then disappear.
const FORGET_AFTER_IDLE_INTERVALS: u32 = 60;

/// The global registry, shared behind one mutex that stream actors lock
/// about once a second (never per record).
#[derive(Debug)]
pub struct Registry {
    pub filter: Filter,
    pub leaves: HashMap<SeriesKey, Leaf>,
    /// (time metric slot, stream) → histograms.
    pub hists: HashMap<(usize, Arc<str>), StreamHist>,
    pub streams: BTreeMap<Arc<str>, StreamState>,
    pub intervals_closed: u64,
}

impl Registry {
    pub fn new(filter: Filter) -> Registry {
        Registry {
            filter,
            leaves: HashMap::new(),
            hists: HashMap::new(),
            streams: BTreeMap::new(),
            intervals_closed: 0,
        }
    }

    /// Adds a leaf's values of one commit.
    pub fn add_leaf(&mut self, key: SeriesKey, stat: &Stat) {
        if stat.is_empty() {
            return;
        }
        let leaf = self.leaves.entry(key).or_default();
        leaf.interval.merge(stat);
        leaf.total.merge(stat);
        leaf.since_sample.merge(stat);
    }

    /// Adds a stream's histogram of one commit.
    pub fn add_hist(&mut self, metric: Metric, stream: &Arc<str>, h: &Histogram<u64>) {
        let Some(slot) = metric.hist_slot() else {
            return;
        };
        if h.is_empty() {
            return;
        }
        self.hists
            .entry((slot, stream.clone()))
            .or_insert_with(StreamHist::new)
            .interval
            .add(h)
            .expect("same bounds");
    }

    pub fn stream_mut(&mut self, stream: &Arc<str>) -> &mut StreamState {
        if !self.streams.contains_key(stream) {
            self.streams.insert(stream.clone(), StreamState::default());
        }
        self.streams.get_mut(stream).expect("inserted")
    }

    /// Ends the upload interval: rolls every leaf up into all prefixes of
    /// its dimension chain, keeps the series the filter publishes, and
    /// starts a new interval. Series without samples are left out (as in
    /// the KPL).
    pub fn close_interval(&mut self, timestamp_ms: i64) -> IntervalReport {
        let filter = self.filter;
        let mut series: BTreeMap<SeriesKey, Stat> = BTreeMap::new();
        self.leaves.retain(|key, leaf| {
            let stat = leaf.interval.take();
            if stat.is_empty() {
                leaf.idle_intervals += 1;
                return leaf.idle_intervals < FORGET_AFTER_IDLE_INTERVALS;
            }
            leaf.idle_intervals = 0;
            for p in key.prefixes() {
                if filter.publishes(p.metric, p.granularity()) {
                    series.entry(p).or_default().merge(&stat);
                }
            }
            true
        });
        // Histograms: per stream, and merged for the global series.
        let mut global: HashMap<usize, Histogram<u64>> = HashMap::new();
        let mut per_stream: HashMap<(usize, Arc<str>), Histogram<u64>> = HashMap::new();
        for ((slot, stream), h) in self.hists.iter_mut() {
            let closed = std::mem::replace(&mut h.interval, new_time_histogram());
            h.previous = closed;
            if h.previous.is_empty() {
                continue;
            }
            global
                .entry(*slot)
                .or_insert_with(new_time_histogram)
                .add(&h.previous)
                .expect("same bounds");
            per_stream.insert((*slot, stream.clone()), h.previous.clone());
        }
        self.hists.retain(|_, h| !h.previous.is_empty());
        let data = series
            .into_iter()
            .map(|(key, stat)| {
                let hist = match (
                    key.metric.hist_slot(),
                    &key.error_code,
                    &key.stream,
                    &key.shard,
                ) {
                    (Some(slot), None, None, None) => global.get(&slot).cloned(),
                    (Some(slot), None, Some(stream), None) => {
                        per_stream.get(&(slot, stream.clone())).cloned()
                    }
                    _ => None,
                };
                Datum { key, stat, hist }
            })
            .collect();
        self.intervals_closed += 1;
        IntervalReport { timestamp_ms, data }
    }

    /// Cumulative totals of the series at `granularity` (leaves rolled up
    /// to it), for Prometheus. Series the filter does not record are absent.
    pub fn totals_at(&self, granularity: Granularity) -> BTreeMap<SeriesKey, Stat> {
        let mut out: BTreeMap<SeriesKey, Stat> = BTreeMap::new();
        for (key, leaf) in &self.leaves {
            if !self.filter.records(key.metric) || leaf.total.is_empty() {
                continue;
            }
            let k = truncate(key, granularity);
            out.entry(k).or_default().merge(&leaf.total);
        }
        out
    }

    /// Recent (this + previous interval) histogram of a time metric for
    /// one stream, or across streams when `stream` is None.
    pub fn recent_hist(&self, metric: Metric, stream: Option<&Arc<str>>) -> Option<Histogram<u64>> {
        let slot = metric.hist_slot()?;
        let mut acc: Option<Histogram<u64>> = None;
        for ((s, name), h) in &self.hists {
            if *s != slot || stream.is_some_and(|x| x != name) {
                continue;
            }
            let r = h.recent();
            match &mut acc {
                None => acc = Some(r),
                Some(a) => a.add(&r).expect("same bounds"),
            }
        }
        acc.filter(|h| !h.is_empty())
    }
}

/// The key with dimensions more specific than `g` removed.
pub fn truncate(key: &SeriesKey, g: Granularity) -> SeriesKey {
    let mut k = key.clone();
    if g < Granularity::Shard {
        k.shard = None;
        k.file = None;
    }
    if g < Granularity::Stream {
        k.stream = None;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(m: Metric, code: Option<&str>, stream: Option<&str>, shard: Option<&str>) -> SeriesKey {
        SeriesKey {
            metric: m,
            error_code: code.map(Arc::from),
            stream: stream.map(Arc::from),
            shard: shard.map(Arc::from),
            file: None,
        }
    }

    fn stat_of(values: &[f64]) -> Stat {
        let mut s = Stat::EMPTY;
        for v in values {
            s.put(*v);
        }
        s
    }

    fn all() -> Filter {
        Filter {
            level: Level::Detailed,
            granularity: Granularity::Shard,
        }
    }

    #[test]
    fn levels_are_the_kpls() {
        let summary: Vec<&str> = Metric::ALL
            .iter()
            .filter(|m| m.level() == Level::Summary)
            .map(|m| m.name())
            .collect();
        assert_eq!(
            summary,
            [
                "UserRecordsPut",
                "KinesisRecordsPut",
                "ErrorsByCode",
                "AllErrors",
                "UserRecordExpired",
                "BufferingTime",
                // kpld's own, after the KPL's:
                "FileLinesRead",
                "FileBytesBehind",
                "FileParseErrors",
            ]
        );
        let kpl = Metric::ALL.iter().take_while(|m| !m.is_file()).count();
        assert_eq!(kpl, 15, "the KPL's metrics come first, in its order");
        assert!(Metric::ALL[kpl..].iter().all(|m| m.is_file()));
        for m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(m));
        }
        assert_eq!(Metric::ALL.len(), METRIC_COUNT);
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }

    #[test]
    fn statistic_sets_aggregate_sum_min_max_count() {
        let mut s = Stat::EMPTY;
        s.put(3.0);
        s.put_n(1.0, 4);
        s.put(7.0);
        assert_eq!((s.count, s.sum, s.min, s.max), (6, 14.0, 1.0, 7.0));
        let mut t = stat_of(&[0.5, 10.0]);
        t.merge(&s);
        assert_eq!((t.count, t.sum, t.min, t.max), (8, 24.5, 0.5, 10.0));
        t.merge(&Stat::EMPTY);
        assert_eq!(t.count, 8);
        assert_eq!(Stat::EMPTY.mean(), None);
        s.put_n(5.0, 0);
        assert_eq!(s.count, 6);
    }

    #[test]
    fn a_shard_value_counts_in_its_stream_and_global_series() {
        let mut r = Registry::new(all());
        r.add_leaf(
            key(Metric::UserRecordsPut, None, Some("s1"), Some("shardId-0")),
            &stat_of(&[1.0, 1.0]),
        );
        r.add_leaf(
            key(Metric::UserRecordsPut, None, Some("s1"), Some("shardId-1")),
            &stat_of(&[1.0, 0.0]),
        );
        r.add_leaf(
            key(Metric::UserRecordsPut, None, Some("s1"), None),
            &stat_of(&[0.0]),
        );
        r.add_leaf(
            key(Metric::UserRecordsPut, None, Some("s2"), Some("shardId-0")),
            &stat_of(&[1.0]),
        );
        let rep = r.close_interval(0);
        let get = |k: SeriesKey| rep.data.iter().find(|d| d.key == k).map(|d| d.stat);
        let s = get(key(Metric::UserRecordsPut, None, Some("s1"), None)).unwrap();
        assert_eq!(
            (s.count, s.sum),
            (5, 3.0),
            "stream series sums its shards and its own values"
        );
        let g = get(key(Metric::UserRecordsPut, None, None, None)).unwrap();
        assert_eq!((g.count, g.sum, g.min, g.max), (6, 4.0, 0.0, 1.0));
        let sh = get(key(
            Metric::UserRecordsPut,
            None,
            Some("s1"),
            Some("shardId-1"),
        ))
        .unwrap();
        assert_eq!((sh.count, sh.sum), (2, 1.0));
        assert_eq!(
            rep.data.len(),
            1 + 2 + 3,
            "global, two streams, three shards"
        );
    }

    #[test]
    fn error_codes_form_their_own_chain() {
        let mut r = Registry::new(all());
        let k = key(
            Metric::ErrorsByCode,
            Some("ProvisionedThroughputExceededException"),
            Some("s"),
            Some("shardId-3"),
        );
        r.add_leaf(k, &stat_of(&[1.0, 1.0]));
        r.add_leaf(
            key(
                Metric::ErrorsByCode,
                Some("InternalFailure"),
                Some("s"),
                None,
            ),
            &stat_of(&[1.0]),
        );
        let rep = r.close_interval(0);
        let dims: Vec<Vec<(&str, &str)>> = rep.data.iter().map(|d| d.key.dimensions()).collect();
        assert!(dims.contains(&vec![]));
        assert!(dims.contains(&vec![(
            "ErrorCode",
            "ProvisionedThroughputExceededException"
        )]));
        assert!(dims.contains(&vec![
            ("ErrorCode", "ProvisionedThroughputExceededException"),
            ("StreamName", "s"),
            ("ShardId", "shardId-3")
        ]));
        assert!(dims.contains(&vec![("ErrorCode", "InternalFailure"), ("StreamName", "s")]));
        let root = rep
            .data
            .iter()
            .find(|d| d.key.dimensions().is_empty())
            .unwrap();
        assert_eq!(root.stat.sum, 3.0);
    }

    #[test]
    fn granularity_drops_finer_series_but_keeps_their_values() {
        for (g, expect) in [
            (Granularity::Global, 1usize),
            (Granularity::Stream, 2),
            (Granularity::Shard, 3),
        ] {
            let mut r = Registry::new(Filter {
                level: Level::Detailed,
                granularity: g,
            });
            r.add_leaf(
                key(
                    Metric::KinesisRecordsPut,
                    None,
                    Some("s"),
                    Some("shardId-0"),
                ),
                &stat_of(&[1.0]),
            );
            let rep = r.close_interval(0);
            assert_eq!(rep.data.len(), expect, "{g:?}");
            assert!(rep
                .data
                .iter()
                .all(|d| d.key.granularity() <= g && d.stat.sum == 1.0));
        }
    }

    #[test]
    fn level_filters_metrics() {
        let f = Filter {
            level: Level::Summary,
            granularity: Granularity::Shard,
        };
        assert!(f.records(Metric::UserRecordsPut));
        assert!(f.records(Metric::BufferingTime));
        assert!(!f.records(Metric::UserRecordsDataPut));
        assert!(!f.records(Metric::RequestTime));
        let none = Filter {
            level: Level::None,
            granularity: Granularity::Shard,
        };
        assert!(Metric::ALL.iter().all(|m| !none.records(*m)));
        let mut r = Registry::new(f);
        r.add_leaf(
            key(Metric::UserRecordsDataPut, None, Some("s"), None),
            &stat_of(&[100.0]),
        );
        r.add_leaf(
            key(Metric::UserRecordsPut, None, Some("s"), None),
            &stat_of(&[1.0]),
        );
        let rep = r.close_interval(0);
        assert!(rep
            .data
            .iter()
            .all(|d| d.key.metric == Metric::UserRecordsPut));
    }

    #[test]
    fn intervals_reset_but_totals_accumulate() {
        let mut r = Registry::new(all());
        let k = key(Metric::UserRecordsReceived, None, Some("s"), None);
        r.add_leaf(k.clone(), &stat_of(&[1.0, 1.0]));
        assert_eq!(r.close_interval(0).data.len(), 2);
        assert!(
            r.close_interval(1).data.is_empty(),
            "nothing new: nothing published"
        );
        r.add_leaf(k.clone(), &stat_of(&[1.0]));
        let rep = r.close_interval(2);
        assert_eq!(rep.data.iter().find(|d| d.key == k).unwrap().stat.count, 1);
        let totals = r.totals_at(Granularity::Stream);
        assert_eq!(totals[&k].count, 3);
        assert_eq!(
            r.totals_at(Granularity::Global)[&truncate(&k, Granularity::Global)].count,
            3
        );
    }

    #[test]
    fn histograms_attach_to_stream_and_global_time_series() {
        let mut r = Registry::new(all());
        let s1: Arc<str> = "s1".into();
        let s2: Arc<str> = "s2".into();
        let mut h = new_time_histogram();
        for v in 1..=100u64 {
            h.record(v).unwrap();
        }
        r.add_hist(Metric::BufferingTime, &s1, &h);
        let mut h2 = new_time_histogram();
        h2.record(5000).unwrap();
        r.add_hist(Metric::BufferingTime, &s2, &h2);
        let mut st = Stat::EMPTY;
        for v in 1..=100 {
            st.put(v as f64);
        }
        r.add_leaf(
            key(Metric::BufferingTime, None, Some("s1"), Some("shardId-0")),
            &st,
        );
        r.add_leaf(
            key(Metric::BufferingTime, None, Some("s2"), Some("shardId-0")),
            &stat_of(&[5000.0]),
        );
        let recent = r.recent_hist(Metric::BufferingTime, Some(&s1)).unwrap();
        assert_eq!(recent.len(), 100);
        let rep = r.close_interval(0);
        let global = rep.data.iter().find(|d| d.key.stream.is_none()).unwrap();
        let gh = global.hist.as_ref().unwrap();
        assert_eq!(gh.len(), 101);
        assert!(gh.value_at_quantile(0.999) >= 4950);
        let stream1 = rep
            .data
            .iter()
            .find(|d| d.key.stream.as_deref() == Some("s1") && d.key.shard.is_none())
            .unwrap();
        let p50 = stream1.hist.as_ref().unwrap().value_at_quantile(0.5);
        assert!((49..=51).contains(&p50), "p50 {p50}");
        assert!(rep
            .data
            .iter()
            .filter(|d| d.key.shard.is_some())
            .all(|d| d.hist.is_none()));
        // The previous interval stays available for quantiles.
        assert_eq!(
            r.recent_hist(Metric::BufferingTime, None).unwrap().len(),
            101
        );
    }

    proptest! {
        /// Rolling up leaves equals putting every value into every prefix.
        #[test]
        fn roll_up_equals_putting_into_every_prefix(
            values in proptest::collection::vec((0usize..3, 0usize..4, 0u32..1000), 1..200)
        ) {
            let streams = ["a", "b", "c"];
            let shards = [None, Some("shardId-0"), Some("shardId-1"), Some("shardId-2")];
            let mut r = Registry::new(all());
            let mut expect: BTreeMap<SeriesKey, Stat> = BTreeMap::new();
            for (s, sh, v) in &values {
                let k = key(Metric::UserRecordsDataPut, None, Some(streams[*s]), shards[*sh]);
                let mut one = Stat::EMPTY;
                one.put(*v as f64);
                r.add_leaf(k.clone(), &one);
                // Written out apart from `prefixes`: the global series, the
                // stream's, and the shard's when the value has one.
                let mut series = vec![
                    key(Metric::UserRecordsDataPut, None, None, None),
                    key(Metric::UserRecordsDataPut, None, Some(streams[*s]), None),
                ];
                if shards[*sh].is_some() {
                    series.push(k.clone());
                }
                for p in series {
                    expect.entry(p).or_default().put(*v as f64);
                }
            }
            let rep = r.close_interval(0);
            prop_assert_eq!(rep.data.len(), expect.len());
            for d in rep.data {
                let e = expect[&d.key];
                prop_assert_eq!(d.stat.count, e.count);
                prop_assert_eq!(d.stat.min, e.min);
                prop_assert_eq!(d.stat.max, e.max);
                prop_assert!((d.stat.sum - e.sum).abs() < 1e-6);
            }
        }
    }
}

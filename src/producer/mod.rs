//! The pipeline: validation, per-stream routing, aggregation, collection,
//! sending, retries and one final result per record.
//!
//! ```text
//! put() ──validate──▶ budget ──▶ stream actor ──▶ shard buffer (aggregate)
//!                                   │  ▲                 │ size/count/deadline
//!                                   │  │                 ▼
//!                                   │  └── results ◀── send task ◀── ready queue
//!                                   ▼                 (max_connections permits)
//!                               ResultSink
//! ```
//!
//! Invariants:
//! - Every record accepted by [`Producer::put`] gets exactly one result
//!   through its [`ResultSink`], and releases its budget exactly then.
//! - One stream actor task per stream owns that stream's shard map, buffers
//!   and retry queue; nothing else touches them, so there are no locks on
//!   the record path.
//! - A shard buffer only ever holds records that hash into its shard in the
//!   current map; when the map changes, everything not yet sent is
//!   re-routed, so no aggregate mixes shards.
//! - An aggregate that lands on a shard other than the predicted one is
//!   judged against the refreshed map: if every record in it hashes into
//!   the shard it landed on (what the KCL checks), it succeeded; otherwise
//!   its records are sent again (attempt error `WrongShard`).

mod actor;

use crate::config::{Compression, Config, StreamSettings};
use crate::ipc::{Attempt, RecordResult};
use crate::metrics::{MetricsConfig, MetricsHandle};
use crate::retry::Backoff;
use crate::send::KinesisApi;
use crate::shard_map::{hash_partition_key, parse_explicit_hash_key};
use actor::{StreamActor, StreamMsg};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Error codes kpld itself puts in results (Kinesis codes pass through).
pub mod codes {
    pub const RECORD_TOO_LARGE: &str = "RecordTooLarge";
    pub const INVALID_PARTITION_KEY: &str = "InvalidPartitionKey";
    pub const INVALID_EXPLICIT_HASH_KEY: &str = "InvalidExplicitHashKey";
    pub const INVALID_STREAM_NAME: &str = "InvalidStreamName";
    pub const BUSY: &str = "Busy";
    pub const EXPIRED: &str = "Expired";
    pub const SHUTTING_DOWN: &str = "ShuttingDown";
    pub const WRONG_SHARD: &str = "WrongShard";
    pub const STREAM_NOT_ALLOWED: &str = "StreamNotAllowed";
}

/// A record as an application hands it over. Text fields arrive as bytes so
/// that invalid UTF-8 is a per-record error.
#[derive(Debug, Clone)]
pub struct RecordInput {
    /// Chosen by the caller, echoed in the result.
    pub id: u64,
    pub stream: Bytes,
    pub partition_key: Bytes,
    pub explicit_hash_key: Option<Bytes>,
    pub data: Bytes,
    /// None: the stream's `compression` setting.
    pub compression: Option<Compression>,
}

/// Where a record's final result goes. `tag` is the caller's, given to
/// [`Producer::put`]; the socket server uses it to track flushes.
pub trait ResultSink: Send + Sync + 'static {
    /// One record's result: every failure, and successes of a sink that
    /// does not override [`landed`](Self::landed).
    fn deliver(&self, tag: u64, result: RecordResult);

    /// Records of one `put` that landed together in one Kinesis record, in
    /// their order inside it. Successes come this way, one call per run of
    /// records from the same `put` in an aggregate, so that nothing per
    /// record is allocated or shared between threads on the result path.
    fn landed(&self, tag: u64, landing: &Arc<Landing>, records: Vec<Landed>) {
        for l in records {
            self.deliver(tag, l.into_result(landing));
        }
    }
}

/// Where a Kinesis record landed; shared by the user records it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    pub shard_id: Arc<str>,
    pub sequence_number: String,
    /// Milliseconds the successful PutRecords call took.
    pub duration_ms: u64,
}

/// One user record's success inside a [`Landing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub id: u64,
    /// The record's index inside its aggregate (0 when sent alone).
    pub sub_sequence_number: u64,
    /// `delay_ms` of the successful attempt.
    pub delay_ms: u64,
    /// Failed attempts before the successful one (usually none).
    pub earlier: Vec<Attempt>,
}

impl Landed {
    /// The record's result as the protocol carries it.
    pub fn into_result(self, landing: &Landing) -> RecordResult {
        let mut attempts = self.earlier;
        attempts.push(Attempt {
            success: true,
            delay_ms: self.delay_ms,
            duration_ms: landing.duration_ms,
            ..Default::default()
        });
        RecordResult {
            id: self.id,
            success: true,
            shard_id: String::from(&*landing.shard_id),
            sequence_number: landing.sequence_number.clone(),
            sub_sequence_number: self.sub_sequence_number,
            attempts,
            error_code: String::new(),
            error_message: String::new(),
        }
    }
}

/// The sink and tag of one [`Producer::put`], shared by its records.
pub(crate) struct Origin {
    pub(crate) sink: Arc<dyn ResultSink>,
    pub(crate) tag: u64,
}

impl Origin {
    /// Whether results for `other`'s records may be delivered together with
    /// this one's: the same sink (by address) and the same tag.
    pub(crate) fn same_destination(&self, other: &Origin) -> bool {
        let addr = |s: &Arc<dyn ResultSink>| Arc::as_ptr(s).cast::<()>();
        self.tag == other.tag && addr(&self.sink) == addr(&other.sink)
    }
}

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

mod reload;
pub use reload::Reload;

/// What [`Producer::shutdown`] left undelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Records that got a `ShuttingDown` error: left when the grace period
    /// ran out, or handed over after the drain began.
    pub undelivered: u64,
    /// Of those, the ones handed over after the drain began.
    pub refused_during_drain: u64,
}

/// The KPL pipeline as a library type. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cfg: Arc<Config>,
    pub(crate) api: Arc<dyn KinesisApi>,
    /// Streams with a Kinesis client of their own (region, endpoint, role).
    pub(crate) stream_apis: HashMap<String, Arc<dyn KinesisApi>>,
    /// The settings that SIGHUP can change while records flow.
    pub(crate) live: ArcSwap<Live>,
    pub(crate) backoff: Backoff,
    pub(crate) streams: Mutex<HashMap<Arc<str>, mpsc::UnboundedSender<StreamMsg>>>,
    /// Buffered bytes (data + keys of records not yet final): the memory bound.
    pub(crate) bytes_budget: Semaphore,
    /// Records not yet final: the count bound.
    pub(crate) records_budget: Semaphore,
    /// PutRecords calls in flight, across all streams (`max_connections`).
    pub(crate) send_permits: Arc<Semaphore>,
    pub(crate) outstanding: AtomicU64,
    pub(crate) idle: Notify,
    pub(crate) draining: AtomicBool,
    /// Cancelled when the shutdown grace period runs out.
    pub(crate) abort: CancellationToken,
    pub(crate) counters: Counters,
    /// The metrics registry; each stream actor records into its own
    /// `StreamMetrics` from it.
    pub(crate) metrics: MetricsHandle,
    /// Records refused with ShuttingDown because they arrived during the drain.
    pub(crate) refused_at_shutdown: AtomicU64,
}

/// Totals since start, for `stats` and the tests' reports.
#[derive(Default, Debug)]
pub struct Counters {
    pub user_records_received: AtomicU64,
    pub user_records_put: AtomicU64,
    pub user_records_failed: AtomicU64,
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

    pub fn snapshot(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "user_records_received": g(&self.user_records_received),
            "user_records_put": g(&self.user_records_put),
            "user_records_failed": g(&self.user_records_failed),
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

impl Producer {
    /// A producer that sends through `api`. Must be called within a Tokio
    /// runtime; stream actors start on the first record of each stream.
    pub fn new(cfg: Config, api: Arc<dyn KinesisApi>) -> Producer {
        Self::with_stream_apis(cfg, api, HashMap::new())
    }

    /// Like [`new`](Self::new), with other Kinesis clients for the streams
    /// whose settings name another region, endpoint or role.
    pub fn with_stream_apis(
        cfg: Config,
        api: Arc<dyn KinesisApi>,
        stream_apis: HashMap<String, Arc<dyn KinesisApi>>,
    ) -> Producer {
        let backoff = Backoff::new(
            Duration::from_millis(cfg.retry_backoff_base_ms),
            Duration::from_millis(cfg.retry_backoff_max_ms),
        )
        .expect("the config validated the backoff bounds");
        let permits_max = Semaphore::MAX_PERMITS as u64;
        let metrics = MetricsHandle::new(&MetricsConfig::from_config(&cfg));
        Producer {
            inner: Arc::new(Inner {
                bytes_budget: Semaphore::new(cfg.max_buffered_bytes.min(permits_max) as usize),
                records_budget: Semaphore::new(
                    cfg.max_outstanding_records.min(permits_max) as usize
                ),
                send_permits: Arc::new(Semaphore::new(cfg.max_connections as usize)),
                live: ArcSwap::from_pointee(Live::from_config(&cfg)),
                cfg: Arc::new(cfg),
                api,
                stream_apis,
                backoff,
                streams: Mutex::new(HashMap::new()),
                outstanding: AtomicU64::new(0),
                idle: Notify::new(),
                draining: AtomicBool::new(false),
                abort: CancellationToken::new(),
                counters: Counters::default(),
                metrics,
                refused_at_shutdown: AtomicU64::new(0),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The metrics registry (the binary starts its uploader and endpoint).
    pub fn metrics(&self) -> &MetricsHandle {
        &self.inner.metrics
    }

    /// A JSON snapshot of the daemon's state for `stats` (shape: see
    /// `metrics::stats`), with the pipeline's counters added.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = self.inner.metrics.stats_value(self.outstanding());
        v["buffered_bytes_available"] = self.inner.bytes_budget.available_permits().into();
        v["counters"] = self.inner.counters.snapshot();
        v
    }

    /// Records accepted and not yet final.
    pub fn outstanding(&self) -> u64 {
        self.inner.outstanding.load(Ordering::Acquire)
    }

    /// Hands records over. Invalid records get their error result at once.
    /// When the buffers are full this waits for room (backpressure), unless
    /// `busy_if_full` is set: then the records fail at once with `Busy`.
    pub async fn put(
        &self,
        records: Vec<RecordInput>,
        tag: u64,
        sink: Arc<dyn ResultSink>,
        busy_if_full: bool,
    ) {
        let inner = &self.inner;
        let now = Instant::now();
        let live = inner.live.load();
        let origin = Arc::new(Origin { sink, tag });
        let fail = |id: u64, code: &str, message: String| {
            origin
                .sink
                .deliver(tag, failure(id, code, message, Vec::new()))
        };
        // Valid records per stream, in order.
        let mut runs: Vec<(Arc<str>, Vec<UserRecord>)> = Vec::new();
        let n = records.len();
        let mut cache = StreamCache::default();
        let max_bytes = inner.bytes_budget_total();
        for r in records {
            let entry = match cache.lookup(&r.stream, &live) {
                Ok(e) => e,
                Err((code, message)) => {
                    fail(r.id, code, message);
                    continue;
                }
            };
            match validate(r, now, &origin, entry, max_bytes) {
                Ok(u) => {
                    // Nearly always the stream of the record before; records
                    // of streams that alternate still gather per stream.
                    let run = match runs.last() {
                        Some((s, _)) if Arc::ptr_eq(s, &entry.name) => runs.len() - 1,
                        _ => match runs.iter().position(|(s, _)| **s == *entry.name) {
                            Some(i) => i,
                            None => {
                                // Room for the whole request only for the first stream.
                                let cap = if runs.is_empty() { n } else { 16 };
                                runs.push((entry.name.clone(), Vec::with_capacity(cap)));
                                runs.len() - 1
                            }
                        },
                    };
                    runs[run].1.push(u);
                }
                Err((id, code, message)) => fail(id, code, message),
            }
        }
        if runs.is_empty() {
            return;
        }
        if inner.draining.load(Ordering::Acquire) {
            let n: usize = runs.iter().map(|(_, v)| v.len()).sum();
            inner
                .refused_at_shutdown
                .fetch_add(n as u64, Ordering::AcqRel);
            for u in runs.into_iter().flat_map(|(_, v)| v) {
                fail(
                    u.id,
                    codes::SHUTTING_DOWN,
                    "kpld is shutting down and accepts no new records".into(),
                );
            }
            return;
        }
        // Take budget in chunks that fit the bounds, so a huge batch from an
        // embedding program cannot wait forever.
        let max_records = inner.records_budget_total();
        let mut busy = false;
        for (stream, mut rest) in runs {
            while !rest.is_empty() {
                if busy {
                    for u in rest.drain(..) {
                        fail(u.id, codes::BUSY, "kpld's buffers are full (max_buffered_bytes / max_outstanding_records); retry later".into());
                    }
                    break;
                }
                let mut bytes = 0u64;
                let mut n = 0usize;
                for u in &rest {
                    if n > 0 && (bytes + u.cost as u64 > max_bytes || n as u64 >= max_records) {
                        break;
                    }
                    bytes += u.cost as u64;
                    n += 1;
                }
                let chunk = if n == rest.len() {
                    std::mem::take(&mut rest)
                } else {
                    let tail = rest.split_off(n);
                    std::mem::replace(&mut rest, tail)
                };
                // record_cost never exceeds the budget, so one record always fits.
                let bytes = bytes as u32;
                let count = n as u32;
                if busy_if_full {
                    let ok = match inner.bytes_budget.try_acquire_many(bytes) {
                        Ok(b) => match inner.records_budget.try_acquire_many(count) {
                            Ok(r) => {
                                b.forget();
                                r.forget();
                                true
                            }
                            Err(_) => false,
                        },
                        Err(_) => false,
                    };
                    if !ok {
                        // This chunk and everything after it fail with Busy.
                        busy = true;
                        let mut all = chunk;
                        all.append(&mut rest);
                        rest = all;
                        continue;
                    }
                } else {
                    let (Ok(b), Ok(r)) = (
                        inner.bytes_budget.acquire_many(bytes).await,
                        inner.records_budget.acquire_many(count).await,
                    ) else {
                        unreachable!("the budget semaphores are never closed")
                    };
                    b.forget();
                    r.forget();
                }
                inner
                    .outstanding
                    .fetch_add(chunk.len() as u64, Ordering::AcqRel);
                Counters::add(&inner.counters.user_records_received, chunk.len() as u64);
                inner.dispatch(&stream, chunk);
            }
        }
    }

    /// Applies a re-read configuration (SIGHUP). Stream settings and
    /// `streams_allowed` change at once, for records already buffered too;
    /// returns the keys that changed live and those that need a restart.
    pub fn reconfigure(&self, old_cfg: &Config, new: &Config) -> Reload {
        let report = Reload::between(old_cfg, new);
        let live = Live::from_config(new);
        for (name, tx) in self.inner.streams.lock().expect("streams lock").iter() {
            let _ = tx.send(StreamMsg::Settings(live.settings_for(name).clone()));
        }
        self.inner.live.store(Arc::new(live));
        report
    }

    /// Sends everything buffered now instead of at its deadline.
    pub fn flush(&self) {
        for tx in self.inner.streams.lock().expect("streams lock").values() {
            let _ = tx.send(StreamMsg::Flush);
        }
    }

    /// Drains: refuses new records, sends everything now, waits up to
    /// `grace` for every record to be final, then fails the rest with
    /// `ShuttingDown`.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &self.inner;
        inner.draining.store(true, Ordering::Release);
        for tx in inner.streams.lock().expect("streams lock").values() {
            let _ = tx.send(StreamMsg::Drain);
        }
        let drained = tokio::time::timeout(grace, inner.wait_idle()).await.is_ok();
        let left = if drained { 0 } else { self.outstanding() };
        inner.abort.cancel();
        // Actors fail what is left and in-flight calls are cancelled, so
        // this ends quickly.
        let _ = tokio::time::timeout(Duration::from_secs(10), inner.wait_idle()).await;
        let refused = inner.refused_at_shutdown.load(Ordering::Acquire);
        ShutdownReport {
            undelivered: left + refused,
            refused_during_drain: refused,
        }
    }
}

impl Inner {
    fn bytes_budget_total(&self) -> u64 {
        self.cfg.max_buffered_bytes.min(u32::MAX as u64)
    }

    fn records_budget_total(&self) -> u64 {
        self.cfg.max_outstanding_records.min(u32::MAX as u64)
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Sends validated records of one stream to its actor.
    fn dispatch(self: &Arc<Self>, name: &Arc<str>, recs: Vec<UserRecord>) {
        let mut streams = self.streams.lock().expect("streams lock");
        let tx = streams
            .entry(name.clone())
            .or_insert_with(|| StreamActor::spawn(self.clone(), name.clone()));
        if let Err(mpsc::error::SendError(StreamMsg::Records(recs))) =
            tx.send(StreamMsg::Records(recs))
        {
            drop(streams);
            // The actor is gone only after an abort.
            for u in recs {
                self.fail(u, codes::SHUTTING_DOWN, "kpld is shutting down".into());
            }
        }
    }

    /// Delivers a record's failure and gives back its budget.
    pub(crate) fn fail(&self, u: UserRecord, code: &str, message: String) {
        let c = &self.counters;
        Counters::add(&c.user_records_failed, 1);
        if code == codes::EXPIRED {
            Counters::add(&c.expired, 1);
        }
        u.origin
            .sink
            .deliver(u.origin.tag, failure(u.id, code, message, u.attempts));
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

/// Checks one record against its stream's settings and builds its
/// pipeline form.
fn validate(
    r: RecordInput,
    now: Instant,
    origin: &Arc<Origin>,
    entry: &StreamEntry,
    budget: u64,
) -> Result<UserRecord, (u64, &'static str, String)> {
    let id = r.id;
    let (stream, settings) = (&entry.name, &entry.settings);
    if !entry.allowed {
        return Err((
            id,
            codes::STREAM_NOT_ALLOWED,
            format!("stream {stream:?} is not in streams_allowed; records for it are refused"),
        ));
    }
    let pk = std::str::from_utf8(&r.partition_key).map_err(|_| {
        (
            id,
            codes::INVALID_PARTITION_KEY,
            "partition key is not valid UTF-8".to_string(),
        )
    })?;
    let chars = pk.chars().count();
    if chars == 0 {
        return Err((
            id,
            codes::INVALID_PARTITION_KEY,
            "partition key is empty; it must have 1 to 256 Unicode characters".into(),
        ));
    }
    if chars > 256 {
        return Err((
            id,
            codes::INVALID_PARTITION_KEY,
            format!("partition key has {chars} characters; at most 256 are allowed"),
        ));
    }
    let how = r.compression.unwrap_or(settings.compression);
    let data = match crate::compress::compress(&r.data, how, settings.compression_level) {
        Some(c) => Bytes::from(c),
        None => r.data,
    };
    // Limits apply to what is sent: the compressed size.
    let size = data.len() + r.partition_key.len();
    if size as u64 > settings.max_record_size {
        return Err((
            id,
            codes::RECORD_TOO_LARGE,
            format!(
                "record is {size} bytes (data {}{} + partition key {}); max_record_size for stream {stream} is {}",
                data.len(),
                if how == Compression::None { "" } else { " after compression" },
                r.partition_key.len(),
                settings.max_record_size
            ),
        ));
    }
    let (hash, ehk) = match &r.explicit_hash_key {
        None => (hash_partition_key(pk), None),
        Some(k) => {
            let s = std::str::from_utf8(k).map_err(|_| {
                (
                    id,
                    codes::INVALID_EXPLICIT_HASH_KEY,
                    "explicit hash key is not valid UTF-8".to_string(),
                )
            })?;
            let h = parse_explicit_hash_key(s)
                .map_err(|e| (id, codes::INVALID_EXPLICIT_HASH_KEY, e.to_string()))?;
            // Normalised ("007" -> "7"): Kinesis refuses leading zeros,
            // and would fail the whole PutRecords call for it.
            (h, Some(h.to_string()))
        }
    };
    Ok(UserRecord {
        id,
        origin: origin.clone(),
        partition_key: PartitionKey(r.partition_key),
        explicit_hash_key: ehk,
        hash,
        cost: record_cost(size, budget),
        data,
        deadline: now + entry.buffered_time,
        expiry: now + entry.ttl,
        ready_since: now,
        attempts: Vec::new(),
    })
}

pub(crate) fn failure(
    id: u64,
    code: &str,
    message: String,
    attempts: Vec<Attempt>,
) -> RecordResult {
    RecordResult {
        id,
        success: false,
        attempts,
        error_code: code.to_string(),
        error_message: message,
        ..Default::default()
    }
}

fn valid_stream_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// The settings SIGHUP can change: swapped whole, read once per request.
pub(crate) struct Live {
    default: Arc<StreamSettings>,
    streams: HashMap<String, Arc<StreamSettings>>,
    allowed: Option<Vec<String>>,
}

impl Live {
    fn from_config(cfg: &Config) -> Live {
        Live {
            default: Arc::new(cfg.default_stream_settings()),
            streams: cfg
                .streams
                .iter()
                .map(|(k, v)| (k.clone(), Arc::new(v.clone())))
                .collect(),
            allowed: cfg.streams_allowed.clone(),
        }
    }

    pub(crate) fn settings_for(&self, stream: &str) -> &Arc<StreamSettings> {
        self.streams.get(stream).unwrap_or(&self.default)
    }

    fn allowed(&self, stream: &str) -> bool {
        match &self.allowed {
            None => true,
            Some(p) => p.iter().any(|p| crate::config::glob_match(p, stream)),
        }
    }
}

/// A stream's name, permission and settings, looked up once per run of
/// records for it.
struct StreamEntry {
    name: Arc<str>,
    allowed: bool,
    settings: Arc<StreamSettings>,
    buffered_time: Duration,
    ttl: Duration,
}

/// The last stream name seen in a request, checked: records of one request
/// nearly always share a stream.
#[derive(Default)]
struct StreamCache {
    name: Option<Bytes>,
    entry: Option<StreamEntry>,
}

impl StreamCache {
    fn lookup(
        &mut self,
        stream: &Bytes,
        live: &Live,
    ) -> Result<&StreamEntry, (&'static str, String)> {
        if self.name.as_deref() != Some(&stream[..]) {
            self.name = Some(stream.clone());
            self.entry = std::str::from_utf8(stream)
                .ok()
                .filter(|s| valid_stream_name(s))
                .map(|s| {
                    let settings = live.settings_for(s).clone();
                    StreamEntry {
                        name: Arc::from(s),
                        allowed: live.allowed(s),
                        buffered_time: settings.record_max_buffered_time(),
                        ttl: settings.record_ttl(),
                        settings,
                    }
                });
        }
        self.entry.as_ref().ok_or_else(|| {
            (
                codes::INVALID_STREAM_NAME,
                format!(
                    "stream name {:?} is not valid: 1 to 128 characters of a-z, A-Z, 0-9, '_', '-', '.'",
                    String::from_utf8_lossy(&stream[..stream.len().min(200)])
                ),
            )
        })
    }
}

/// A partition key checked to be 1 to 256 characters of UTF-8, kept as the
/// slice of the request it arrived in (no copy per record).
#[derive(Debug, Clone)]
pub(crate) struct PartitionKey(Bytes);

impl PartitionKey {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn to_string_lossless(&self) -> String {
        String::from_utf8(self.0.to_vec()).expect("checked to be UTF-8 when the record arrived")
    }
}

/// A record inside the pipeline.
pub(crate) struct UserRecord {
    pub(crate) id: u64,
    /// Where its result goes.
    pub(crate) origin: Arc<Origin>,
    pub(crate) partition_key: PartitionKey,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) hash: u128,
    pub(crate) data: Bytes,
    /// Budget bytes held until the result.
    pub(crate) cost: u32,
    /// When it must be sent (arrival + record_max_buffered_time; now for retries).
    pub(crate) deadline: Instant,
    /// record_ttl_ms after arrival: no attempt starts after this.
    pub(crate) expiry: Instant,
    /// Arrival, or the end of the previous attempt: the start of `delay_ms`.
    pub(crate) ready_since: Instant,
    /// Failed attempts so far.
    pub(crate) attempts: Vec<Attempt>,
}

//! The producer: the pipeline as a library type ([`Producer`]). Records are
//! validated, charged to the budget and handed to their stream's actor,
//! which drives the stream's sans-IO core (`crate::pipeline`).
//!
//! ```text
//! put() ──validate──▶ budget ──▶ stream actor ──▶ StreamCore (router, pacer,
//!                                   │  ▲           collector, retries, shards)
//!                                   │  └── Sent ◀── PutRecords task ◀── next_send
//!                                   ▼         (cut once a max_connections permit is held)
//!                               ResultSink  ◀── Action::Landed / Failed
//! ```
//!
//! - this file: the API (`put`, `flush`, `shutdown`, stats) and the state
//!   shared by the actors ([`Inner`]);
//! - `validate`: one record checked against its stream's settings;
//! - `budget`: what a record costs, and giving it back;
//! - `actor`: the task per stream that performs the core's actions;
//! - `reload`: SIGHUP's diff of two configurations.
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

mod acceptance;
mod actor;
mod budget;
mod spooled;
#[cfg(test)]
mod tests;
mod validate;

use crate::config::{Compression, Config, Durability, StreamSettings};
use crate::error_code::ErrorCode;
use crate::kinesis::KinesisApi;
use crate::metrics::{MetricsConfig, MetricsHandle};
use crate::pipeline::{Input, Origin, UserRecord};
use crate::retry::Backoff;
use actor::{StreamActor, StreamMsg};
use arc_swap::ArcSwap;
use bytes::Bytes;
use spooled::inner_durable;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use validate::{failure, validate, StreamCache};

pub use crate::pipeline::{Counters, Landed, Landing, ResultSink};
pub use acceptance::{Acceptance, IdRuns};
pub use budget::{record_cost, RECORD_BYTE_FACTOR, RECORD_OVERHEAD};
pub use spooled::{spool_dead_letter_path, ReplayCounts};

/// How a put is taken.
struct PutHow {
    spool: SpoolUse,
    busy_if_full: bool,
    /// None: the stream's `record_ttl_ms`.
    ttl: Option<Duration>,
    /// Build the [`Acceptance`] (only the socket's clients that asked).
    want_accepted: bool,
}

/// What a put does with the spool for the records of `disk` streams.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SpoolUse {
    /// Write them to it before they count as accepted.
    Append,
    /// They are in it already: replayed, their id is their sequence number.
    Replayed,
    /// Never (log files: the file is their buffer and their checkpoint
    /// their record of what is done).
    Skip,
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

mod reload;
pub use reload::Reload;

/// What [`Producer::shutdown`] left undelivered. kpld exits 0 only when
/// `undelivered` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Accepted records that were not final when the drain began and did not
    /// get a success: failed during the drain for any reason (cut off by the
    /// grace period, their TTL, the service's refusal), or with no result
    /// at all. Records that failed before the signal had their result then.
    pub undelivered: u64,
    /// Of those, the ones still unfinished when `shutdown_grace_ms` ran out.
    pub cut_off_by_grace: u64,
    /// Records refused with `ShuttingDown`, never accepted: handed over after
    /// the drain began, or still waiting for room in the buffers then.
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
    /// Cancelled when the drain begins (wakes puts waiting for room).
    pub(crate) drain_started: CancellationToken,
    /// Gives memory back after evictions (see `heap`).
    pub(crate) trim: crate::heap::TrimAfterEvictions,
    pub(crate) counters: Arc<Counters>,
    /// The metrics registry; each stream actor records into its own
    /// `StreamMetrics` from it.
    pub(crate) metrics: MetricsHandle,
    /// Records refused with ShuttingDown because they arrived during the drain.
    pub(crate) refused_at_shutdown: AtomicU64,
    /// The spool of `durability = "disk"` streams, once attached.
    pub(crate) durable: std::sync::OnceLock<spooled::Durable>,
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
                drain_started: CancellationToken::new(),
                trim: Default::default(),
                abort: CancellationToken::new(),
                counters: Arc::default(),
                metrics,
                refused_at_shutdown: AtomicU64::new(0),
                durable: std::sync::OnceLock::new(),
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
        v["live_streams"] = self.live_streams().into();
        if let Some(f) = self.inner.metrics.files_stats() {
            v["files"] = f;
        }
        if let Some(s) = self.spool_stats() {
            v["spool"] = s;
        }
        v
    }

    /// Streams with an actor now (at most `max_streams`).
    pub fn live_streams(&self) -> usize {
        self.inner.streams.lock().expect("streams lock").len()
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
        self.put_with_ttl(records, tag, sink, busy_if_full, None)
            .await
    }

    /// Like [`put`](Self::put), with a TTL of the caller's instead of the
    /// stream's `record_ttl_ms` (log files: their records wait out outages).
    pub async fn put_with_ttl(
        &self,
        records: Vec<RecordInput>,
        tag: u64,
        sink: Arc<dyn ResultSink>,
        busy_if_full: bool,
        ttl: Option<Duration>,
    ) {
        let how = PutHow {
            spool: if ttl.is_some() {
                SpoolUse::Skip
            } else {
                SpoolUse::Append
            },
            busy_if_full,
            ttl,
            want_accepted: false,
        };
        self.put_inner(records, tag, sink, how).await;
    }

    /// Like [`put`](Self::put), and says which records were accepted (the
    /// others got a failure result with `refused` set).
    pub async fn put_accepting(
        &self,
        records: Vec<RecordInput>,
        tag: u64,
        sink: Arc<dyn ResultSink>,
        busy_if_full: bool,
    ) -> Acceptance {
        let how = PutHow {
            spool: SpoolUse::Append,
            busy_if_full,
            ttl: None,
            want_accepted: true,
        };
        self.put_inner(records, tag, sink, how).await
    }

    async fn put_inner(
        &self,
        records: Vec<RecordInput>,
        tag: u64,
        sink: Arc<dyn ResultSink>,
        how: PutHow,
    ) -> Acceptance {
        let PutHow {
            spool,
            busy_if_full,
            ttl,
            want_accepted,
        } = how;
        let durable = inner_durable(&self.inner, spool);
        let mut acceptance = Acceptance::default();
        let inner = &self.inner;
        let now = Instant::now();
        let live = inner.live.load();
        let origin = Arc::new(Origin { sink, tag });
        // Every failure here is of a record never accepted.
        let fail = |id: u64, code: ErrorCode, message: String| {
            let mut r = failure(id, code, message, Vec::new());
            r.refused = true;
            origin.sink.deliver(tag, r)
        };
        // Refused before reaching a stream: counted, or `kpld stats` would
        // show no failure for a client whose every record is refused.
        let refuse = |id: u64, code: ErrorCode, message: String| {
            Counters::add(&inner.counters.user_records_refused, 1);
            fail(id, code, message)
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
                    refuse(r.id, code, message);
                    continue;
                }
            };
            match validate(r, now, &origin, entry, max_bytes, ttl) {
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
                Err((id, code, message)) => refuse(id, code, message),
            }
        }
        if runs.is_empty() {
            return acceptance;
        }
        // Records that arrive during the drain, or that were still waiting for
        // room when it began, are refused: never accepted, they do not count
        // against the exit status (see `ShutdownReport`).
        let refuse_at_shutdown = |recs: &mut dyn Iterator<Item = UserRecord>| {
            for u in recs {
                inner.refused_at_shutdown.fetch_add(1, Ordering::AcqRel);
                fail(
                    u.id,
                    ErrorCode::ShuttingDown,
                    "kpld is shutting down and accepts no new records".into(),
                );
            }
        };
        if inner.draining.load(Ordering::SeqCst) {
            refuse_at_shutdown(&mut runs.into_iter().flat_map(|(_, v)| v));
            return acceptance;
        }
        // Take budget in chunks that fit the bounds, so a huge batch from an
        // embedding program cannot wait forever.
        let max_records = inner.records_budget_total();
        let mut busy = false;
        for (stream, mut rest) in runs {
            while !rest.is_empty() {
                if busy {
                    for u in rest.drain(..) {
                        fail(u.id, ErrorCode::Busy, "kpld's buffers are full (max_buffered_bytes / max_outstanding_records); retry later".into());
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
                // A put waiting for room when the drain begins stops waiting: its
                // records were never accepted.
                let took = tokio::select! {
                    took = inner.take_budget(bytes, count, busy_if_full) => Some(took),
                    _ = inner.drain_started.cancelled() => None,
                };
                let Some(took) = took else {
                    refuse_at_shutdown(&mut chunk.into_iter().chain(rest.drain(..)));
                    continue;
                };
                if !took {
                    // This chunk and everything after it fail with Busy.
                    busy = true;
                    let mut all = chunk;
                    all.append(&mut rest);
                    rest = all;
                    continue;
                }
                // Counted before the second look at `draining` (both SeqCst, as in
                // `shutdown`): either the drain sees these records outstanding and
                // waits for them, or this put sees the drain and refuses them.
                inner
                    .outstanding
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                if inner.draining.load(Ordering::SeqCst) {
                    inner.release(chunk.len(), bytes as usize);
                    refuse_at_shutdown(&mut chunk.into_iter().chain(rest.drain(..)));
                    continue;
                }
                Counters::add(&inner.counters.user_records_received, chunk.len() as u64);
                let mut chunk = chunk;
                let mut ticket = None;
                match (durable, spool) {
                    // Whatever the stream's durability is now: in the spool
                    // they are, and done there they must be marked.
                    (Some(_), SpoolUse::Replayed) => {
                        chunk.iter_mut().for_each(|u| u.set_spool_seq(u.id))
                    }
                    (Some(d), SpoolUse::Append)
                        if live.settings_for(&stream).durability == Durability::Disk =>
                    {
                        match self.spool_chunk(d, &stream, &mut chunk, busy_if_full).await {
                            Some(t) => ticket = Some(t),
                            // Refused, each with its result.
                            None => continue,
                        }
                    }
                    _ => {}
                }
                let mut ids = IdRuns::default();
                if want_accepted {
                    chunk.iter().for_each(|u| ids.push(u.id));
                }
                if inner.dispatch(&stream, chunk) {
                    match ticket {
                        Some(t) => acceptance.spooled.push((ids, t)),
                        None => acceptance.now.append(ids),
                    }
                }
            }
        }
        acceptance
    }

    /// Applies a re-read configuration (SIGHUP). Stream settings and
    /// `streams_allowed` change at once, for records already buffered too;
    /// returns the keys that changed live and those that need a restart.
    pub fn reconfigure(&self, old_cfg: &Config, new: &Config) -> Reload {
        let report = Reload::between(old_cfg, new);
        let live = Live::from_config(new);
        for (name, tx) in self.inner.streams.lock().expect("streams lock").iter() {
            let _ = tx.send(Input::Settings(live.settings_for(name).clone()));
        }
        self.inner.live.store(Arc::new(live));
        report
    }

    /// Sends everything buffered now instead of at its deadline.
    pub fn flush(&self) {
        for tx in self.inner.streams.lock().expect("streams lock").values() {
            let _ = tx.send(Input::Flush);
        }
    }

    /// Sends what one stream has buffered now (the KPL's `flush(stream)`).
    pub fn flush_stream(&self, stream: &str) {
        if let Some(tx) = self.inner.streams.lock().expect("streams lock").get(stream) {
            let _ = tx.send(Input::Flush);
        }
    }

    /// Drains: refuses new records, sends everything now, waits up to
    /// `grace` for every record to be final, then fails the rest with
    /// `ShuttingDown`.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let inner = &self.inner;
        // Every accepted record that fails from here on goes through
        // `Inner::fail`, whatever the cause (the grace running out, its TTL,
        // the service's refusal): the difference of this counter is exact.
        let failed_before = Counters::get(&inner.counters.user_records_failed);
        inner.draining.store(true, Ordering::SeqCst);
        inner.drain_started.cancel();
        for tx in inner.streams.lock().expect("streams lock").values() {
            let _ = tx.send(Input::Drain);
        }
        let drained = tokio::time::timeout(grace, inner.wait_idle()).await.is_ok();
        let cut_off = if drained { 0 } else { self.outstanding() };
        inner.abort.cancel();
        // Actors fail what is left and in-flight calls are cancelled, so
        // this ends quickly; a record still without a result after it is
        // undelivered too.
        let _ = tokio::time::timeout(Duration::from_secs(10), inner.wait_idle()).await;
        let failed = Counters::get(&inner.counters.user_records_failed) - failed_before;
        ShutdownReport {
            undelivered: failed + self.outstanding(),
            cut_off_by_grace: cut_off,
            refused_during_drain: inner.refused_at_shutdown.load(Ordering::Acquire),
        }
    }
}

impl Inner {
    /// Sends validated records of one stream to its actor, starting one if
    /// the stream has none and `max_streams` allows.
    ///
    /// Sending under the streams lock is what makes eviction safe: an actor
    /// leaves the map only under this lock and only with an empty queue, so
    /// a record either reaches a live actor's queue or finds no entry and
    /// starts a new actor.
    ///
    /// False when the records were refused instead (each got its failure).
    pub(crate) fn dispatch(self: &Arc<Self>, name: &Arc<str>, recs: Vec<UserRecord>) -> bool {
        let mut streams = self.streams.lock().expect("streams lock");
        if !streams.contains_key(name) && streams.len() as u64 >= self.cfg.max_streams {
            drop(streams);
            let msg = format!(
                "kpld already has {} streams live (config key max_streams); a new stream is \
                 refused until one has been idle for stream_idle_timeout_ms ({} ms)",
                self.cfg.max_streams, self.cfg.stream_idle_timeout_ms
            );
            for u in recs {
                self.refuse(u, ErrorCode::TooManyStreams, msg.clone());
            }
            return false;
        }
        let tx = streams
            .entry(name.clone())
            .or_insert_with(|| StreamActor::spawn(self.clone(), name.clone()));
        if let Err(mpsc::error::SendError(Input::Records(recs))) = tx.send(Input::Records(recs)) {
            drop(streams);
            // The actor is gone only after an abort.
            for u in recs {
                self.refuse(u, ErrorCode::ShuttingDown, "kpld is shutting down".into());
            }
            return false;
        }
        true
    }
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

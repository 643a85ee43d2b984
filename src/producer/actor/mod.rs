//! The stream actor: one task per stream that owns its shard map, shard
//! buffers (aggregation), rate limiters, ready queue (collection), in-flight
//! PutRecords calls and retry queue. Nothing else touches them, so the
//! record path takes no locks.
//!
//! - this file: the actor's state, its message loop and timed work;
//! - [`route`]: user records to a shard's buffer, aggregation, the shard's
//!   rate limit, the ready queue;
//! - [`send`]: PutRecords calls, successes, failures and retries;
//! - [`map`]: loading the shard map, reshards, misrouted aggregates.

mod map;
mod route;
mod send;

use super::{codes, Inner, UserRecord};
use crate::aggregate::AggregateBuilder;
use crate::collect::{BatchLimits, RequestSize};
use crate::config::StreamSettings;
use crate::limit::ShardLimiter;
use crate::metrics::StreamMetrics;
use crate::send::{ApiError, EntryResult, KinesisApi, PutEntry};
use crate::shard_map::ShardMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Destinations (connections) whose results one Kinesis record's successes
/// are grouped for before delivery; more start a new round of groups.
const MAX_RESULT_GROUPS: usize = 64;

/// One PutRecords entry: an aggregate or a single raw record.
pub(crate) struct KinesisRecord {
    /// The shard it was predicted for (id and index in the map), and the map
    /// generation that did it.
    shard_id: Arc<str>,
    shard_idx: usize,
    map_gen: u64,
    aggregated: bool,
    entry: PutEntry,
    records: Vec<UserRecord>,
    /// The earliest deadline and TTL expiry among `records`, kept so that
    /// the send path need not walk records that are no longer in the cache.
    deadline: Instant,
    expiry: Instant,
}

impl KinesisRecord {
    fn new(
        shard_id: Arc<str>,
        shard_idx: usize,
        map_gen: u64,
        aggregated: bool,
        entry: PutEntry,
        records: Vec<UserRecord>,
    ) -> KinesisRecord {
        let deadline = records.iter().map(|u| u.deadline).min().expect("records");
        let expiry = records.iter().map(|u| u.expiry).min().expect("records");
        KinesisRecord {
            shard_id,
            shard_idx,
            map_gen,
            aggregated,
            entry,
            records,
            deadline,
            expiry,
        }
    }
}

impl RequestSize for KinesisRecord {
    fn request_bytes(&self) -> usize {
        self.entry.data.len() + self.entry.partition_key.len()
    }
}

/// A retry waiting out its backoff.
enum Retry {
    Whole(KinesisRecord),
    Loose(Vec<UserRecord>),
}

pub(crate) enum StreamMsg {
    Records(Vec<UserRecord>),
    Flush,
    Drain,
    Sent {
        batch: Vec<KinesisRecord>,
        outcome: Result<Vec<EntryResult>, ApiError>,
        started: Instant,
        ended: Instant,
    },
    MapLoaded(Result<ShardMap, ApiError>),
    /// Part of a batch not sent because a record in it expired first.
    Unsent(Vec<KinesisRecord>),
    /// New settings from a reload.
    Settings(Arc<StreamSettings>),
}

/// Records waiting for one shard, being aggregated.
struct ShardBuffer {
    shard_id: Arc<str>,
    records: Vec<UserRecord>,
    builder: AggregateBuilder,
    deadline: Option<Instant>,
    /// Bumped on every flush, to recognise stale timer entries.
    generation: u64,
    /// Kinesis records for this shard held back by its rate limit, in order.
    held: VecDeque<KinesisRecord>,
    limiter: ShardLimiter,
}

enum MapState {
    /// Never loaded yet (a load is in flight).
    Loading,
    Ready(ShardMap),
    /// The stream cannot be used (unknown stream, access denied): records
    /// fail at once until a reload succeeds.
    Failed {
        code: String,
        message: String,
        at: Instant,
    },
}

pub(crate) struct StreamActor {
    inner: Arc<Inner>,
    name: Arc<str>,
    settings: Arc<StreamSettings>,
    api: Arc<dyn KinesisApi>,
    tx: mpsc::UnboundedSender<StreamMsg>,
    map: MapState,
    map_gen: u64,
    loading: bool,
    reload_at: Option<Instant>,
    load_failures: u32,
    /// Records waiting for a shard map.
    waiting: Vec<UserRecord>,
    buffers: Vec<ShardBuffer>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    ready: VecDeque<KinesisRecord>,
    ready_bytes: usize,
    /// Shards with records held by their rate limit, and when to look again.
    held_shards: Vec<usize>,
    held_wake: Option<Instant>,
    ready_due: Option<Instant>,
    /// Records waiting out their backoff: whole Kinesis records (so an
    /// aggregate stays whole and is metered again by its shard's limit), or
    /// loose user records to route again.
    retries: BTreeMap<(Instant, u64), Retry>,
    retry_seq: u64,
    /// Aggregates that landed on an unexpected shard, judged after the next map load.
    misrouted: Vec<(KinesisRecord, Arc<str>, String)>,
    in_flight: usize,
    /// A flush came while records waited for the shard map.
    flush_after_load: bool,
    draining: bool,
    aborted: bool,
    limits: BatchLimits,
    /// This stream's metrics, committed to the registry about once a second.
    metrics: StreamMetrics,
}

impl StreamActor {
    pub(crate) fn spawn(inner: Arc<Inner>, name: Arc<str>) -> mpsc::UnboundedSender<StreamMsg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let limits = BatchLimits {
            max_count: inner.cfg.collection_max_count as usize,
            max_bytes: inner.cfg.collection_max_size as usize,
        };
        let draining = inner.draining.load(Ordering::Acquire);
        let settings = inner.live.load().settings_for(&name).clone();
        let api = inner.stream_apis.get(&*name).unwrap_or(&inner.api).clone();
        let metrics = inner.metrics.stream(&name);
        let actor = StreamActor {
            inner,
            name,
            settings,
            api,
            tx: tx.clone(),
            map: MapState::Loading,
            map_gen: 0,
            loading: false,
            reload_at: None,
            load_failures: 0,
            waiting: Vec::new(),
            buffers: Vec::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            ready_bytes: 0,
            held_shards: Vec::new(),
            held_wake: None,
            ready_due: None,
            retries: BTreeMap::new(),
            retry_seq: 0,
            misrouted: Vec::new(),
            in_flight: 0,
            flush_after_load: false,
            draining,
            aborted: false,
            limits,
            metrics,
        };
        tokio::spawn(actor.run(rx));
        tx
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<StreamMsg>) {
        self.start_load();
        let abort = self.inner.abort.clone();
        loop {
            let wake = self.next_wakeup();
            tokio::select! {
                biased;
                _ = abort.cancelled(), if !self.aborted => self.abort_all(),
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => return,
                },
                _ = sleep_until_opt(wake), if wake.is_some() => {}
            }
            // Take whatever else is queued before doing timed work, so one
            // wake-up serves many messages.
            while let Ok(m) = rx.try_recv() {
                self.handle(m);
            }
            self.on_tick(Instant::now());
            if self.aborted && self.in_flight == 0 {
                self.abort_all();
                self.inner
                    .streams
                    .lock()
                    .expect("streams lock")
                    .remove(&self.name);
                // Late senders see a closed channel and fail their records.
                rx.close();
                while let Some(m) = rx.recv().await {
                    self.handle(m);
                    self.abort_all();
                }
                return;
            }
        }
    }

    fn handle(&mut self, msg: StreamMsg) {
        match msg {
            StreamMsg::Records(recs) => {
                self.metrics.user_records_received(recs.len());
                // One clock read per message, not per record (2% of the CPU).
                let now = Instant::now();
                for u in recs {
                    self.route(u, now);
                }
            }
            StreamMsg::Flush => {
                // Records waiting for the shard map go out as soon as it is there.
                self.flush_after_load = !self.waiting.is_empty();
                self.flush_all(Instant::now());
            }
            StreamMsg::Drain => {
                self.draining = true;
                self.flush_all(Instant::now());
            }
            StreamMsg::Sent {
                batch,
                outcome,
                started,
                ended,
            } => {
                self.in_flight -= 1;
                self.on_sent(batch, outcome, started, ended);
            }
            StreamMsg::MapLoaded(r) => self.on_map_loaded(r),
            StreamMsg::Unsent(batch) => self.on_unsent(batch),
            StreamMsg::Settings(s) => {
                if s.rate_limit != self.settings.rate_limit {
                    let now = Instant::now();
                    for b in &mut self.buffers {
                        b.limiter = ShardLimiter::new(s.rate_limit, now);
                    }
                }
                self.settings = s;
            }
        }
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        // Drop stale timer entries so the heap top is a live deadline.
        while let Some(Reverse((_, idx, gen))) = self.timers.peek().copied() {
            match self.buffers.get(idx) {
                Some(b) if b.generation == gen && b.deadline.is_some() => break,
                _ => {
                    self.timers.pop();
                }
            }
        }
        let mut t = self.timers.peek().map(|Reverse((d, _, _))| *d);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.ready_due);
        consider(self.retries.keys().next().map(|(at, _)| *at));
        consider(self.reload_at);
        consider(self.held_wake);
        consider(self.waiting.iter().map(|u| u.expiry).min());
        consider(self.metrics.next_commit());
        t
    }

    fn on_tick(&mut self, now: Instant) {
        self.metrics.maybe_commit(now);
        if self.aborted {
            return;
        }
        if let Some(at) = self.reload_at {
            if at <= now && !self.loading {
                self.reload_at = None;
                self.start_load();
            }
        }
        // Retries that are due: a whole Kinesis record goes back to its
        // shard's rate limit if the map has not changed since it was built;
        // anything else is routed again with the current map.
        while let Some(entry) = self.retries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let loose = match entry.remove() {
                Retry::Whole(k)
                    if k.map_gen == self.map_gen && matches!(self.map, MapState::Ready(_)) =>
                {
                    let idx = k.shard_idx;
                    self.admit(idx, k, now);
                    continue;
                }
                Retry::Whole(k) => k.records,
                Retry::Loose(v) => v,
            };
            for mut u in loose {
                u.deadline = now;
                self.route(u, now);
            }
        }
        // Buffers whose oldest record reached its deadline.
        while let Some(Reverse((d, idx, gen))) = self.timers.peek().copied() {
            if d > now {
                break;
            }
            self.timers.pop();
            if self.buffers.get(idx).is_some_and(|b| b.generation == gen) {
                self.flush_buffer(idx, now);
            }
        }
        if !self.held_shards.is_empty() && self.held_wake.is_none_or(|w| w <= now) {
            self.release_held(now);
        }
        if !self.waiting.is_empty() {
            self.expire_waiting(now);
        }
        if self.draining {
            self.flush_all(now);
        }
        self.send_ready(now);
    }

    /// Fails everything this actor holds (not what is in flight: those calls
    /// are cancelled and come back as `Sent`).
    fn abort_all(&mut self) {
        self.aborted = true;
        let msg = || {
            "kpld shut down before the record could be delivered (shutdown_grace_ms ran out)"
                .to_string()
        };
        let mut all: Vec<UserRecord> = std::mem::take(&mut self.waiting);
        for b in &mut self.buffers {
            all.append(&mut b.records);
            b.builder.clear();
            for k in b.held.drain(..) {
                all.extend(k.records);
            }
        }
        self.held_shards.clear();
        for k in self.ready.drain(..) {
            all.extend(k.records);
        }
        for (_, r) in std::mem::take(&mut self.retries) {
            match r {
                Retry::Whole(k) => all.extend(k.records),
                Retry::Loose(v) => all.extend(v),
            }
        }
        for (k, _, _) in std::mem::take(&mut self.misrouted) {
            all.extend(k.records);
        }
        for u in all {
            self.fail(u, None, codes::SHUTTING_DOWN, msg());
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

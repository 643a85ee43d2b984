//! The stream actor: one task per stream that owns its shard map, shard
//! buffers (aggregation), rate limiters, ready queue (collection), in-flight
//! PutRecords calls and retry queue. Nothing else touches them, so the
//! record path takes no locks.

use super::{codes, Counters, Inner, Landed, Landing, Origin, UserRecord};
use crate::aggregate::AggregateBuilder;
use crate::collect::{take_batch, BatchLimits, RequestSize};
use crate::config::StreamSettings;
use crate::ipc::Attempt;
use crate::limit::ShardLimiter;
use crate::metrics::{EntryOutcome, StreamMetrics};
use crate::retry::ErrorClass;
use crate::send::{ApiError, EntryResult, KinesisApi, PutEntry};
use crate::shard_map::ShardMap;
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
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

    /// Puts a record into the buffer of its shard (or the waiting list).
    fn route(&mut self, u: UserRecord, now: Instant) {
        let MapState::Ready(map) = &self.map else {
            if let MapState::Failed { code, message, at } = &self.map {
                if !self.loading && at.elapsed() < Duration::from_secs(1) {
                    // Fail fast on a stream that was just found unusable.
                    let (code, message) = (code.clone(), message.clone());
                    return self.fail(u, None, &code, message);
                }
                self.start_load();
            }
            self.waiting.push(u);
            return;
        };
        let idx = map.index_of(u.hash);
        // Counted here, while the key is still in the cache from its
        // arrival: at its result it is cold memory (a cache miss per record
        // cost 12% of the daemon's CPU there).
        self.metrics.partition_key(
            &self.buffers[idx].shard_id,
            u.partition_key.as_bytes(),
            u.hash,
            u.data.len() + u.partition_key.len(),
        );
        if !self.settings.aggregation_enabled {
            let b = &self.buffers[idx];
            let k = single(b.shard_id.clone(), idx, self.map_gen, u);
            return self.admit(idx, k, now);
        }
        let max_count = self.settings.aggregation_max_count;
        // The PutRecords entry of an aggregate is its bytes plus the first
        // record's partition key, and must stay within max_record_size.
        let (agg_max, record_max) = (
            self.settings.aggregation_max_size as usize,
            self.settings.max_record_size as usize,
        );
        let limit = |outer_key_len: usize| agg_max.min(record_max.saturating_sub(outer_key_len));
        let (pk, ehk, len) = (
            u.partition_key.as_bytes(),
            u.explicit_hash_key.as_deref(),
            u.data.len(),
        );
        let b = &mut self.buffers[idx];
        let outer_key_len = b
            .records
            .first()
            .map_or(pk.len(), |f| f.partition_key.len());
        if !b.builder.try_add(pk, ehk, len, limit(outer_key_len)) {
            if !b.records.is_empty() {
                self.flush_buffer(idx, now);
            }
            let b = &mut self.buffers[idx];
            if !b.builder.try_add(pk, ehk, len, limit(pk.len())) {
                // Too big to aggregate with anything: sent on its own.
                let k = single(b.shard_id.clone(), idx, self.map_gen, u);
                return self.admit(idx, k, now);
            }
        }
        let b = &mut self.buffers[idx];
        let deadline = u.deadline;
        b.records.push(u);
        if b.deadline.is_none_or(|d| deadline < d) {
            b.deadline = Some(deadline);
            self.timers.push(Reverse((deadline, idx, b.generation)));
        }
        if b.records.len() as u64 >= max_count {
            self.flush_buffer(idx, now);
        }
    }

    fn flush_buffer(&mut self, idx: usize, now: Instant) {
        let b = &mut self.buffers[idx];
        b.generation += 1;
        b.deadline = None;
        if b.records.is_empty() {
            return;
        }
        let cap = b.records.len();
        let records = std::mem::replace(&mut b.records, Vec::with_capacity(cap));
        let k = if records.len() == 1 {
            b.builder.clear();
            let u = records.into_iter().next().expect("one record");
            single(b.shard_id.clone(), idx, self.map_gen, u)
        } else {
            let data = b.builder.encode(records.iter().map(|u| u.data.as_ref()));
            b.builder.clear();
            let first = &records[0];
            // The first record's key (not the KPL's fixed "a", which
            // defeats Lambda's per-key parallelism) and its hash as the
            // explicit hash key, so the aggregate lands on the predicted shard.
            let entry = PutEntry {
                data: Bytes::from(data),
                partition_key: first.partition_key.to_string_lossless(),
                explicit_hash_key: Some(first.hash.to_string()),
            };
            KinesisRecord::new(b.shard_id.clone(), idx, self.map_gen, true, entry, records)
        };
        self.admit(idx, k, now);
    }

    /// Passes a Kinesis record through its shard's rate limit: on to the
    /// ready queue, or held (in order) until the buckets refill.
    fn admit(&mut self, idx: usize, k: KinesisRecord, now: Instant) {
        let b = &mut self.buffers[idx];
        if b.held.is_empty() {
            match b.limiter.try_take(k.request_bytes(), now) {
                Ok(()) => return self.push_ready(k, now),
                Err(wait) => {
                    let at = now + wait;
                    self.held_wake = Some(self.held_wake.map_or(at, |w| w.min(at)));
                }
            }
            self.held_shards.push(idx);
        }
        b.held.push_back(k);
    }

    /// Moves held records whose tokens are there to the ready queue; fails
    /// the expired ones (their TTL runs while they wait here too).
    fn release_held(&mut self, now: Instant) {
        self.held_wake = None;
        let shards = std::mem::take(&mut self.held_shards);
        let mut reroute = Vec::new();
        for idx in shards {
            loop {
                let b = &mut self.buffers[idx];
                let Some(front) = b.held.front() else { break };
                if front.expiry <= now {
                    let k = b.held.pop_front().expect("front exists");
                    let shard = k.shard_id.clone();
                    for u in k.records {
                        if u.expiry <= now {
                            let msg = format!(
                                "record_ttl_ms ({} ms) ran out while the record waited for shard {}'s rate limit (rate_limit = {}%)",
                                self.settings.record_ttl_ms, k.shard_id, self.settings.rate_limit
                            );
                            self.fail(u, Some(&shard), codes::EXPIRED, msg);
                        } else {
                            reroute.push(u);
                        }
                    }
                    continue;
                }
                match b.limiter.try_take(front.request_bytes(), now) {
                    Ok(()) => {
                        let k = b.held.pop_front().expect("front exists");
                        self.push_ready(k, now);
                    }
                    Err(wait) => {
                        let at = now + wait;
                        self.held_wake = Some(self.held_wake.map_or(at, |w| w.min(at)));
                        self.held_shards.push(idx);
                        break;
                    }
                }
            }
        }
        for u in reroute {
            self.route(u, now);
        }
    }

    fn flush_all(&mut self, now: Instant) {
        for idx in 0..self.buffers.len() {
            if !self.buffers[idx].records.is_empty() {
                self.flush_buffer(idx, now);
            }
        }
        if !self.ready.is_empty() {
            self.ready_due = Some(now);
        }
    }

    fn push_ready(&mut self, k: KinesisRecord, _now: Instant) {
        let due = k.deadline;
        self.ready_due = Some(self.ready_due.map_or(due, |d| d.min(due)));
        self.ready_bytes += k.request_bytes();
        self.ready.push_back(k);
    }

    /// Starts PutRecords calls: full batches at once, partial ones when the
    /// earliest deadline among them has come.
    fn send_ready(&mut self, now: Instant) {
        loop {
            if self.ready.is_empty() {
                self.ready_due = None;
                self.ready_bytes = 0;
                return;
            }
            let full = self.ready.len() >= self.limits.max_count
                || self.ready_bytes >= self.limits.max_bytes;
            let due = self.ready_due.is_some_and(|d| d <= now);
            if !full && !due {
                return;
            }
            let batch = take_batch(&mut self.ready, self.limits);
            let sent: usize = batch.iter().map(|k| k.request_bytes()).sum();
            self.ready_bytes -= sent;
            self.spawn_send(batch);
        }
    }

    fn spawn_send(&mut self, batch: Vec<KinesisRecord>) {
        self.in_flight += 1;
        let permits = self.inner.send_permits.clone();
        let api = self.api.clone();
        let abort = self.inner.abort.clone();
        let tx = self.tx.clone();
        let stream = self.name.clone();
        // A safety net over the SDK's own attempt timeout.
        let hard_timeout = self.inner.cfg.request_timeout() + Duration::from_secs(2);
        tokio::spawn(async move {
            let cancelled = || {
                ApiError {
                class: ErrorClass::Fatal,
                code: codes::SHUTTING_DOWN.into(),
                message: "kpld shut down while the record was waiting to be sent or in flight; it may or may not be in the stream".into(),
            }
            };
            let permit = tokio::select! {
                p = permits.acquire_owned() => p.expect("permits never close"),
                _ = abort.cancelled() => {
                    let now = Instant::now();
                    let _ = tx.send(StreamMsg::Sent { batch, outcome: Err(cancelled()), started: now, ended: now });
                    return;
                }
            };
            // No attempt may start after a record's TTL, however long the
            // wait for a free connection was.
            let now = Instant::now();
            let (batch, expired): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|k| k.expiry > now);
            if !expired.is_empty() {
                let _ = tx.send(StreamMsg::Unsent(expired));
            }
            let started = Instant::now();
            let outcome = if batch.is_empty() {
                Ok(Vec::new())
            } else {
                let entries = batch.iter().map(|k| k.entry.clone()).collect();
                let call = tokio::time::timeout(hard_timeout, api.put_records(&stream, entries));
                tokio::select! {
                    r = call => r.unwrap_or_else(|_| Err(ApiError {
                        class: ErrorClass::Retryable,
                        code: "RequestTimeout".into(),
                        message: "no answer within request_timeout_ms".into(),
                    })),
                    _ = abort.cancelled() => Err(cancelled()),
                }
            };
            drop(permit);
            let _ = tx.send(StreamMsg::Sent {
                batch,
                outcome,
                started,
                ended: Instant::now(),
            });
        });
    }

    /// Kinesis records that waited for a connection past a record's TTL:
    /// the expired records fail, the others are routed again.
    fn on_unsent(&mut self, batch: Vec<KinesisRecord>) {
        let now = Instant::now();
        for k in batch {
            for u in k.records {
                if u.expiry <= now {
                    let msg = format!(
                        "record_ttl_ms ({} ms) ran out while the record waited for a free connection (max_connections = {})",
                        self.settings.record_ttl_ms, self.inner.cfg.max_connections
                    );
                    self.fail(u, Some(&k.shard_id), codes::EXPIRED, msg);
                } else {
                    self.route(u, now);
                }
            }
        }
    }

    fn on_sent(
        &mut self,
        batch: Vec<KinesisRecord>,
        outcome: Result<Vec<EntryResult>, ApiError>,
        started: Instant,
        ended: Instant,
    ) {
        if batch.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let c = &inner.counters;
        Counters::add(&c.put_records_calls, 1);
        let user_records = batch.iter().map(|k| k.records.len()).sum();
        self.metrics.put_records_result(
            ended.saturating_duration_since(started).as_millis() as u64,
            batch.len(),
            user_records,
            outcome.as_ref().err().map(|e| e.code.as_str()),
        );
        match outcome {
            Ok(results) => {
                for (k, r) in batch.into_iter().zip(results) {
                    let entry = match &r {
                        EntryResult::Ok { .. } => EntryOutcome::Put,
                        EntryResult::Err { code, .. } => EntryOutcome::Failed(code),
                    };
                    self.metrics.kinesis_record(
                        &k.shard_id,
                        k.records.len(),
                        k.request_bytes(),
                        entry,
                    );
                    match r {
                        EntryResult::Ok { .. } => Counters::add(&c.kinesis_records_put, 1),
                        EntryResult::Err { ref code, .. } => {
                            Counters::add(&c.entries_failed, 1);
                            if crate::retry::classify_code(code) == ErrorClass::Throttled {
                                Counters::add(&c.entries_throttled, 1);
                                // The shard is full: slow down its limiter
                                // (unless the map changed since).
                                if k.map_gen == self.map_gen {
                                    if let Some(b) = self.buffers.get_mut(k.shard_idx) {
                                        b.limiter.throttled(ended);
                                    }
                                }
                            }
                        }
                    }
                    match r {
                        EntryResult::Ok {
                            shard_id,
                            sequence_number,
                        } => {
                            let seq = sequence_number;
                            if *shard_id == *k.shard_id {
                                let shard = k.shard_id.clone();
                                self.succeed(k, shard, seq, started, ended);
                            } else {
                                self.on_wrong_shard(k, shard_id.into(), seq, started, ended);
                            }
                        }
                        EntryResult::Err { code, message } => {
                            let class = crate::retry::classify_code(&code);
                            self.retry_or_fail(k, class, &code, &message, started, ended);
                        }
                    }
                }
            }
            Err(e) => {
                Counters::add(&c.requests_failed, 1);
                if e.code == "ResourceNotFoundException" {
                    // The stream may have been deleted: forget its map.
                    self.map = MapState::Failed {
                        code: e.code.clone(),
                        message: e.message.clone(),
                        at: Instant::now(),
                    };
                }
                for k in batch {
                    self.metrics.kinesis_record(
                        &k.shard_id,
                        k.records.len(),
                        k.request_bytes(),
                        EntryOutcome::NotSent,
                    );
                    self.retry_or_fail(k, e.class, &e.code, &e.message, started, ended);
                }
            }
        }
    }

    /// A Kinesis record landed on a shard other than the predicted one: the
    /// map that predicted it is stale. Refresh it once per event (only when
    /// the current map made the prediction) and judge the record against the
    /// refreshed map.
    fn on_wrong_shard(
        &mut self,
        k: KinesisRecord,
        shard: Arc<str>,
        seq: String,
        started: Instant,
        ended: Instant,
    ) {
        let current = k.map_gen == self.map_gen;
        if current {
            self.start_load();
        }
        if k.records.len() == 1 {
            // A single record is readable wherever it landed.
            return self.succeed(k, shard, seq, started, ended);
        }
        match &self.map {
            MapState::Ready(map) if !current => {
                let readable = k.records.iter().all(|u| *map.lookup(u.hash).id == *shard);
                self.judge_misrouted(k, shard, seq, readable, None);
            }
            _ => {
                self.misrouted.push((k, shard, seq));
                self.start_load();
            }
        }
    }

    /// Settles an aggregate that landed on `shard` instead of the predicted
    /// one: a success when every record in it hashes into `shard` (what the
    /// KCL checks), else its records are sent again.
    fn judge_misrouted(
        &mut self,
        k: KinesisRecord,
        shard: Arc<str>,
        seq: String,
        readable: bool,
        map_error: Option<&ApiError>,
    ) {
        let now = Instant::now();
        if readable {
            // The attempt's timing was not kept while it waited for the map.
            return self.succeed(k, shard, seq, now, now);
        }
        let msg = match map_error {
            None => format!(
                "the aggregate landed on {shard} (sequence number {seq}), not the predicted {}, and not all its records hash into {shard}; sent again after the shard map refresh",
                k.shard_id
            ),
            Some(e) => format!(
                "the aggregate landed on {shard} (sequence number {seq}), not the predicted {}; the shard map could not be refreshed ({e}), so it is sent again",
                k.shard_id
            ),
        };
        Counters::add(&self.inner.counters.wrong_shard, 1);
        // Never resend this aggregate as it is: its records are routed anew.
        let mut k = k;
        k.map_gen = u64::MAX;
        self.retry_or_fail(k, ErrorClass::Retryable, codes::WRONG_SHARD, &msg, now, now);
    }

    /// Delivers the successes of a Kinesis record that landed on `shard`:
    /// one [`Landing`] shared by its records, one delivery per connection
    /// (sink and tag) among them, and the budget back in one step.
    fn succeed(
        &mut self,
        k: KinesisRecord,
        shard: Arc<str>,
        seq: String,
        started: Instant,
        ended: Instant,
    ) {
        let landing = Arc::new(Landing {
            shard_id: shard,
            sequence_number: seq,
            duration_ms: ended.saturating_duration_since(started).as_millis() as u64,
        });
        let (n, aggregated) = (k.records.len(), k.aggregated);
        Counters::add(&self.inner.counters.user_records_put, n as u64);
        let mut cost = 0usize;
        // Records of many puts share an aggregate (with many shards, hardly
        // two in a row come from the same put), but few connections do:
        // group by sink and tag, so each connection gets one delivery.
        let mut groups: Vec<(Arc<Origin>, Vec<Landed>)> = Vec::new();
        let mut last = 0usize;
        for (i, u) in k.records.into_iter().enumerate() {
            let delay_ms = started.saturating_duration_since(u.ready_since).as_millis() as u64;
            self.metrics
                .user_record_landed(&landing.shard_id, u.data.len(), &u.attempts, delay_ms);
            cost += u.cost as usize;
            let landed = Landed {
                id: u.id,
                sub_sequence_number: if aggregated { i as u64 } else { 0 },
                delay_ms,
                earlier: u.attempts,
            };
            let same = |(o, _): &(Arc<Origin>, Vec<Landed>)| o.same_destination(&u.origin);
            let g = match groups.get(last).filter(|g| same(g)) {
                Some(_) => last,
                None => match groups.iter().position(same) {
                    Some(g) => g,
                    None => {
                        if groups.len() == MAX_RESULT_GROUPS {
                            for (o, v) in groups.drain(..) {
                                o.sink.landed(o.tag, &landing, v);
                            }
                        }
                        // Room for all when one connection has the
                        // aggregate (the usual case); later ones grow, so
                        // many connections do not each reserve it all.
                        let cap = if groups.is_empty() {
                            n
                        } else {
                            (n - i).min(32)
                        };
                        groups.push((u.origin, Vec::with_capacity(cap)));
                        groups.len() - 1
                    }
                },
            };
            groups[g].1.push(landed);
            last = g;
        }
        for (o, mut v) in groups {
            // Results may wait a while to be written: hold no spare room.
            if v.len() * 2 < v.capacity() {
                v.shrink_to_fit();
            }
            o.sink.landed(o.tag, &landing, v);
        }
        self.inner.release(n, cost);
    }

    /// Delivers a record's failure, recording its metrics first.
    /// `predicted`: the shard it was sent to, if any.
    fn fail(&mut self, u: UserRecord, predicted: Option<&Arc<str>>, code: &str, message: String) {
        self.metrics
            .user_record_failed(predicted, code, u.data.len(), &u.attempts);
        self.inner.fail(u, code, message);
    }

    /// After a failed attempt: fail the records (fatal error, throttled
    /// with `fail_if_throttled`, shutting down, or TTL reached before the
    /// next try) or schedule the Kinesis record again, whole, after one
    /// full-jitter backoff.
    fn retry_or_fail(
        &mut self,
        mut k: KinesisRecord,
        class: ErrorClass,
        code: &str,
        message: &str,
        started: Instant,
        ended: Instant,
    ) {
        let now = Instant::now();
        let shard = k.shard_id.clone();
        for u in &mut k.records {
            let a = attempt(u, false, code, message, started, ended);
            u.attempts.push(a);
            u.ready_since = ended;
        }
        if self.aborted
            || class == ErrorClass::Fatal
            || (class == ErrorClass::Throttled && self.settings.fail_if_throttled)
        {
            for u in k.records {
                self.fail(u, Some(&shard), code, message.to_string());
            }
            return;
        }
        let n = k
            .records
            .iter()
            .map(|u| u.attempts.len())
            .max()
            .unwrap_or(1) as u32;
        let at = now + self.inner.backoff.delay(n, rand::random::<f64>());
        if at < k.expiry {
            Counters::add(&self.inner.counters.retries, k.records.len() as u64);
            return self.schedule(at, Retry::Whole(k));
        }
        // Some records would expire before the next try: they fail now and
        // the others are aggregated anew.
        let (expired, rest): (Vec<_>, Vec<_>) = k.records.into_iter().partition(|u| at >= u.expiry);
        for u in expired {
            let msg = format!(
                "record_ttl_ms ({} ms) ran out after {} attempts; last error {code}: {message}",
                self.settings.record_ttl_ms,
                u.attempts.len()
            );
            self.fail(u, Some(&shard), codes::EXPIRED, msg);
        }
        if !rest.is_empty() {
            Counters::add(&self.inner.counters.retries, rest.len() as u64);
            self.schedule(at, Retry::Loose(rest));
        }
    }

    fn schedule(&mut self, at: Instant, r: Retry) {
        self.retry_seq += 1;
        self.retries.insert((at, self.retry_seq), r);
    }

    fn start_load(&mut self) {
        if self.loading || self.aborted {
            return;
        }
        self.loading = true;
        self.reload_at = None;
        Counters::add(&self.inner.counters.shard_map_loads, 1);
        let api = self.api.clone();
        let tx = self.tx.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let r = api.list_shards(&name).await.and_then(|shards| {
                ShardMap::new(shards).map_err(|e| ApiError {
                    class: ErrorClass::Retryable,
                    code: "IncompleteShardMap".into(),
                    message: format!("ListShards for stream {name}: {e}"),
                })
            });
            let _ = tx.send(StreamMsg::MapLoaded(r));
        });
    }

    fn on_map_loaded(&mut self, r: Result<ShardMap, ApiError>) {
        self.loading = false;
        let now = Instant::now();
        match r {
            Ok(map) => {
                self.load_failures = 0;
                let changed = match &self.map {
                    MapState::Ready(old) => old.shards() != map.shards(),
                    _ => true,
                };
                let mut reroute: Vec<UserRecord> = std::mem::take(&mut self.waiting);
                if changed {
                    // Everything not yet sent was aggregated for the old map:
                    // take it apart and route it again.
                    for b in self.buffers.drain(..) {
                        reroute.extend(b.records);
                        for k in b.held {
                            reroute.extend(k.records);
                        }
                    }
                    self.held_shards.clear();
                    self.held_wake = None;
                    for k in self.ready.drain(..) {
                        reroute.extend(k.records);
                    }
                    self.ready_bytes = 0;
                    self.ready_due = None;
                    self.timers.clear();
                    self.map_gen += 1;
                    self.buffers = map
                        .shards()
                        .iter()
                        .map(|s| ShardBuffer {
                            shard_id: s.id.clone(),
                            records: Vec::new(),
                            builder: AggregateBuilder::new(),
                            deadline: None,
                            generation: 0,
                            held: VecDeque::new(),
                            limiter: ShardLimiter::new(self.settings.rate_limit, now),
                        })
                        .collect();
                }
                for (k, shard, seq) in std::mem::take(&mut self.misrouted) {
                    let readable = k.records.iter().all(|u| *map.lookup(u.hash).id == *shard);
                    self.judge_misrouted(k, shard, seq, readable, None);
                }
                self.map = MapState::Ready(map);
                for u in reroute {
                    self.route(u, now);
                }
                if std::mem::take(&mut self.flush_after_load) {
                    self.flush_all(now);
                }
            }
            Err(e) => {
                for (k, shard, seq) in std::mem::take(&mut self.misrouted) {
                    self.judge_misrouted(k, shard, seq, false, Some(&e));
                }
                if e.class == ErrorClass::Fatal {
                    for u in std::mem::take(&mut self.waiting) {
                        self.fail(u, None, &e.code, e.message.clone());
                    }
                    if !matches!(self.map, MapState::Ready(_)) {
                        self.map = MapState::Failed {
                            code: e.code,
                            message: e.message,
                            at: now,
                        };
                    }
                } else {
                    // KPL: 1 s, x1.5, up to 30 s.
                    let delay = Duration::from_millis(1000)
                        .mul_f64(1.5f64.powi(self.load_failures.min(20) as i32))
                        .min(Duration::from_secs(30));
                    self.load_failures += 1;
                    tracing::warn!(stream = %self.name, error = %e, retry_in_ms = delay.as_millis() as u64, "shard map load failed");
                    self.reload_at = Some(now + delay);
                }
            }
        }
    }

    fn expire_waiting(&mut self, now: Instant) {
        let (expired, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|u| u.expiry <= now);
        self.waiting = keep;
        for u in expired {
            let msg = format!(
                "record_ttl_ms ({} ms) ran out while waiting for the shard map of stream {}",
                self.settings.record_ttl_ms, self.name
            );
            self.fail(u, None, codes::EXPIRED, msg);
        }
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

fn single(shard_id: Arc<str>, shard_idx: usize, map_gen: u64, u: UserRecord) -> KinesisRecord {
    let entry = PutEntry {
        data: u.data.clone(),
        partition_key: u.partition_key.to_string_lossless(),
        explicit_hash_key: u.explicit_hash_key.clone(),
    };
    KinesisRecord::new(shard_id, shard_idx, map_gen, false, entry, vec![u])
}

fn attempt(
    u: &UserRecord,
    success: bool,
    code: &str,
    message: &str,
    started: Instant,
    ended: Instant,
) -> Attempt {
    Attempt {
        success,
        error_code: code.to_string(),
        error_message: message.to_string(),
        delay_ms: started.saturating_duration_since(u.ready_since).as_millis() as u64,
        duration_ms: ended.saturating_duration_since(started).as_millis() as u64,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

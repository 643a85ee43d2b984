//! One stream's pipeline as a state machine ([`StreamCore`]): it is fed
//! [`Input`]s and the current time, and answers with [`Action`]s (calls to
//! make, results to deliver) and the time it next needs to be woken. It
//! owns the stream's [`Shards`] (map state), [`Router`] (shard buffers),
//! [`Pacer`] (rate limits), [`Collector`] (PutRecords calls) and
//! [`Retries`]; it does no I/O, so it runs in tests with no runtime, no
//! sockets and no sleeping. `producer::actor` is the thin task that drives
//! it.
//!
//! A record's path: `Input::Records` -> [`Router::route`] (its shard's
//! buffer; waits in [`Shards::waiting`] while there is no map) -> a
//! Kinesis record when the buffer is full or due -> [`Pacer::admit`] (held
//! while the shard is at its limit) -> [`Collector`] ->
//! [`StreamCore::next_send`] (a call, cut only when the driver holds a send
//! permit) -> `Input::Sent` -> `Action::Landed` (success), or [`Retries`]
//! (backoff, then the pacer again, whole, or the router, loose), or
//! `Action::Failed`.
//!
//! Send permits (`max_connections`, shared by every stream): the driver
//! asks [`StreamCore::wants_send`], takes a permit, and only then gets a
//! call from [`StreamCore::next_send`]. While no permit is free, nothing is
//! cut: Kinesis records wait in the collector (their TTL running) and, once
//! it holds a call's worth, due records wait in their shard buffers, where
//! their aggregates keep growing; so the calls made under overload are full
//! ones, and what waits is bounded by the budget, not by a queue of calls.

use super::collector::Collector;
use super::counters::Counters;
use super::lanes::{Lane, Lanes};
use super::pacer::Pacer;
use super::record::{KinesisRecord, Landed, Landing, Origin, UserRecord};
use super::retries::{Retries, Retry, Verdict};
use super::router::{RouteLimits, Router};
use super::shards::{Loaded, MapState, Misrouted, NoMap, Shards};
use crate::collect::{BatchLimits, RequestSize};
use crate::config::StreamSettings;
use crate::error_code::ErrorCode;
use crate::ipc::Attempt;
use crate::kinesis::{ApiError, EntryResult};
use crate::metrics::{EntryOutcome, StreamMetrics};
use crate::retry::ErrorClass;
use crate::shard_map::ShardMap;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;

/// Destinations (connections) whose results one Kinesis record's successes
/// are grouped for before delivery; more start a new round of groups.
const MAX_RESULT_GROUPS: usize = 64;

/// What the driver tells the core.
pub enum Input {
    /// Records accepted for this stream.
    Records(Vec<UserRecord>),
    /// Send everything buffered now.
    Flush,
    /// kpld is shutting down: send everything now, and from now on.
    Drain,
    /// The answer to a call from [`StreamCore::next_send`].
    Sent {
        batch: Vec<KinesisRecord>,
        outcome: Result<Vec<EntryResult>, ApiError>,
        started: Instant,
        ended: Instant,
    },
    /// The answer to an [`Action::LoadShards`].
    ShardsLoaded(Result<ShardMap, ApiError>),
    /// New settings from a reload.
    Settings(Arc<StreamSettings>),
}

/// What the core asks the driver to do.
// `Failed` carries its record by value: actions are moved once, from the
// core to the driver, and a box would cost an allocation per failure.
#[allow(clippy::large_enum_variant)]
pub enum Action {
    /// Load the stream's shard map; answer with [`Input::ShardsLoaded`].
    LoadShards,
    /// Successes to deliver, one `landed` per group; then `records`
    /// records holding `cost` budget bytes are final.
    Landed {
        landing: Arc<Landing>,
        groups: Vec<(Arc<Origin>, Vec<Landed>)>,
        records: usize,
        cost: usize,
        /// Spool sequence numbers of the records that had one: done now.
        spooled: Vec<u64>,
    },
    /// A record's final failure.
    Failed {
        record: UserRecord,
        code: ErrorCode,
        message: String,
    },
}

/// A whole-call failure caused by what the request holds (an entry's key,
/// hash key or size), not by the stream or the account: other entries of
/// the same call would be accepted on their own.
fn refuses_content(e: &ApiError) -> bool {
    e.class == ErrorClass::Fatal
        && matches!(e.code, ErrorCode::Validation | ErrorCode::InvalidArgument)
}

/// A failed call goes into the history of every user record of `k`, and
/// their wait for the next attempt starts at its end.
fn record_failed_attempt(k: &mut KinesisRecord, err: &ApiError, started: Instant, ended: Instant) {
    for u in &mut k.records {
        let a = attempt(u, err, started, ended);
        u.attempts.push(a);
        u.ready_since = ended;
    }
}

/// Settings of the whole daemon that a stream's core needs.
#[derive(Debug, Clone, Copy)]
pub struct CoreLimits {
    pub batch: BatchLimits,
    /// `max_connections`, named in the message of a record that expired
    /// waiting for one.
    pub max_connections: u64,
}

pub struct StreamCore {
    name: Arc<str>,
    settings: Arc<StreamSettings>,
    route_limits: RouteLimits,
    limits: CoreLimits,
    shards: Shards,
    router: Router,
    pacer: Pacer,
    collector: Collector,
    retries: Retries,
    /// Calls already cut that wait for a permit: the halves of a call
    /// refused for what one entry holds (see `split`), sent as they are.
    urgent: VecDeque<Vec<KinesisRecord>>,
    /// Calls handed out by `next_send` not yet answered with `Sent`.
    in_flight: usize,
    draining: bool,
    aborted: bool,
    /// This stream's metrics, committed to the registry about once a second.
    metrics: StreamMetrics,
    counters: Arc<Counters>,
    /// Failures since the last log summary.
    trouble: super::trouble::Trouble,
    actions: Vec<Action>,
    /// Kinesis records just built, on their way to the pacer.
    built: Vec<KinesisRecord>,
    /// `ordered`, read once: lanes hold records that a change of the
    /// setting could not let go of in order.
    ordered: bool,
    /// With `ordered`: what waits for its shard's entry in flight.
    lanes: Lanes,
}

impl StreamCore {
    /// A core whose first action is to load the shard map.
    pub fn new(
        name: Arc<str>,
        settings: Arc<StreamSettings>,
        limits: CoreLimits,
        retries: Retries,
        metrics: StreamMetrics,
        counters: Arc<Counters>,
        draining: bool,
    ) -> StreamCore {
        let ordered = settings.ordered;
        let mut core = StreamCore {
            route_limits: RouteLimits::new(&settings),
            name,
            settings,
            limits,
            shards: Shards::default(),
            router: Router::default(),
            pacer: Pacer::default(),
            collector: Collector::new(limits.batch),
            retries,
            urgent: VecDeque::new(),
            in_flight: 0,
            draining,
            aborted: false,
            metrics,
            counters,
            trouble: Default::default(),
            actions: Vec::new(),
            built: Vec::new(),
            ordered,
            lanes: Lanes::default(),
        };
        core.start_load();
        core
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// What failed since the last summary, once per
    /// [`SUMMARY_EVERY`](super::trouble::SUMMARY_EVERY) at most.
    pub fn take_trouble(&mut self, now: Instant) -> Option<super::trouble::Summary> {
        self.trouble.take_summary(now)
    }

    /// Calls handed out and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Commits the stream's metrics now, so that nothing is left to commit
    /// when the core is dropped (an evicted stream's stats are forgotten
    /// right after).
    pub fn retire_metrics(&mut self) {
        self.metrics.commit(Instant::now());
    }

    /// Shard `id`'s current rate limit (what throttles left of
    /// `rate_limit`), in percent of the shard limits.
    pub fn shard_rate_percent(&self, id: &str) -> Option<f64> {
        self.pacer.rate_percent(id)
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// The actions decided since the last call, in order.
    pub fn take_actions(&mut self, into: &mut Vec<Action>) {
        into.append(&mut self.actions);
    }

    /// Feeds one input at `now`. Calls start in [`next_send`](Self::next_send).
    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Records(recs) => {
                self.metrics.user_records_received(recs.len());
                for u in recs {
                    self.route(u, now);
                }
            }
            Input::Flush => {
                // Records waiting for the shard map go out as soon as it is there.
                self.shards.flush_after_load = !self.shards.waiting.is_empty();
                self.flush_all(now);
            }
            Input::Drain => {
                self.draining = true;
                self.flush_all(now);
            }
            Input::Sent {
                batch,
                outcome,
                started,
                ended,
            } => {
                self.in_flight -= 1;
                self.on_sent(batch, outcome, started, ended, now);
            }
            Input::ShardsLoaded(r) => self.on_map_loaded(r, now),
            Input::Settings(s) => {
                if s.rate_limit != self.settings.rate_limit {
                    self.pacer.set_rate(s.rate_limit, now);
                }
                self.route_limits = RouteLimits::new(&s);
                self.settings = s;
            }
        }
        // An answer or a map may have freed lanes: what waited in them goes.
        if self.ordered && !self.aborted {
            self.release_lanes(now);
        }
    }

    /// The earliest time after `now` that [`poll`](Self::poll) has timed
    /// work to do. A call already due is no timer: it waits for a permit
    /// (see [`wants_send`](Self::wants_send)), and so do due shard buffers
    /// while the collector holds a call's worth.
    pub fn next_wakeup(&mut self, now: Instant) -> Option<Instant> {
        let router = if self.collector.holds_full_call() {
            None
        } else {
            self.router.next_deadline()
        };
        [
            router,
            self.collector.next_due().filter(|&d| d > now),
            self.collector.next_expiry(),
            self.retries.next_at(),
            self.shards.next_wake(),
            self.pacer.next_wake(),
            self.metrics.next_commit(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Does the timed work due at `now` (retries, deadlines, held records,
    /// TTLs of records waiting for the map or a permit, reloads). Calls
    /// start in [`next_send`](Self::next_send).
    pub fn poll(&mut self, now: Instant) {
        self.metrics.maybe_commit(now);
        if self.aborted {
            return;
        }
        if self.shards.reload_due(now) {
            self.start_load();
        }
        while let Some(r) = self.retries.pop_due(now) {
            let (loose, lane) = match r {
                Retry::Whole(k)
                    if k.map_gen == self.shards.generation && self.shards.map().is_some() =>
                {
                    self.admit(k, now);
                    continue;
                }
                Retry::Whole(k) => (k.records, k.lane),
                Retry::Loose(v, lane) => (v, lane),
            };
            if self.ordered {
                self.requeue_front(loose, lane, now);
                continue;
            }
            for mut u in loose {
                u.deadline = now;
                self.route(u, now);
            }
        }
        self.flush_due(now);
        self.release_held(now);
        let mut expired = Vec::new();
        self.collector.take_expired(now, &mut expired);
        if !expired.is_empty() {
            self.on_unsent(expired, now);
        }
        if !self.shards.waiting.is_empty() {
            let why = match &self.shards.last_error {
                Some(e) => format!("the last ListShards failed: {e}"),
                None => "no ListShards answered yet".to_string(),
            };
            for u in self.shards.expire_waiting(now) {
                let msg = format!(
                    "record_ttl_ms ({} ms) ran out while waiting for the shard map of stream {} ({why})",
                    self.settings.record_ttl_ms, self.name
                );
                self.fail(u, None, ErrorCode::Expired, msg);
            }
        }
        if self.draining {
            self.flush_all(now);
        }
        if self.ordered {
            self.release_lanes(now);
        }
    }

    /// True when a permit would start a call at `now` (one is cut or due).
    pub fn wants_send(&self, now: Instant) -> bool {
        !self.aborted && (!self.urgent.is_empty() || self.collector.has_due(now))
    }

    /// The next PutRecords call to make, in order; answer with
    /// [`Input::Sent`]. Call it only holding a send permit: the call is cut
    /// now, so it holds everything that gathered while none was free (up to
    /// `collection_max_count` / `collection_max_size`). No attempt starts
    /// past a record's TTL: such records fail or go round again first.
    pub fn next_send(&mut self, now: Instant) -> Option<Vec<KinesisRecord>> {
        if self.aborted {
            return None;
        }
        loop {
            let mut batch = match self.urgent.pop_front() {
                Some(b) => b,
                None => {
                    // Due shard buffers join the collector whenever it has
                    // room (after this cut too), so none waits for a timer.
                    let b = match self.collector.next_batch(now) {
                        Some(b) => b,
                        None => {
                            self.flush_due(now);
                            self.collector.next_batch(now)?
                        }
                    };
                    self.flush_due(now);
                    b
                }
            };
            if batch.iter().any(|k| k.expiry <= now) {
                let (live, expired): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|k| k.expiry > now);
                self.on_unsent(expired, now);
                batch = live;
                if batch.is_empty() {
                    continue;
                }
            }
            self.in_flight += 1;
            return Some(batch);
        }
    }

    /// Fails everything this core holds with `ShuttingDown` (not what is in
    /// flight: those calls are cancelled and come back as `Sent`), and
    /// everything it is given from now on.
    pub fn abort(&mut self) {
        self.aborted = true;
        let mut all: Vec<UserRecord> = std::mem::take(&mut self.shards.waiting);
        all.append(&mut self.router.drain());
        all.extend(self.pacer.drain().into_iter().flat_map(|k| k.records));
        all.extend(self.lanes.drain().into_iter().flat_map(|k| k.records));
        all.extend(self.collector.drain().flat_map(|k| k.records));
        all.extend(self.urgent.drain(..).flatten().flat_map(|k| k.records));
        all.append(&mut self.retries.drain());
        all.extend(
            std::mem::take(&mut self.shards.misrouted)
                .into_iter()
                .flat_map(|m| m.k.records),
        );
        for u in all {
            let msg =
                "kpld shut down before the record could be delivered (shutdown_grace_ms ran out)";
            self.fail(u, None, ErrorCode::ShuttingDown, msg.to_string());
        }
    }

    // ---- routing, pacing, collection -----------------------------------

    /// Puts a record into the buffer of its shard (or the waiting list).
    fn route(&mut self, mut u: UserRecord, now: Instant) {
        let Some(map) = self.shards.map() else {
            if let NoMap::Fail(code, message) = self.shards.no_map(now) {
                // Fail fast on a stream that was just found unusable.
                return self.fail(u, None, code, message);
            }
            if matches!(self.shards.state, MapState::Failed { .. }) {
                self.start_load();
            }
            // It may wait long (a map that does not load): see `detach`.
            u.detach();
            self.shards.waiting.push(u);
            return;
        };
        let idx = map.index_of(u.hash);
        // Counted here, while the key is still in the cache from its
        // arrival: at its result it is cold memory (a cache miss per record
        // cost 12% of the daemon's CPU there).
        self.metrics.partition_key(
            self.router.shard_id(idx),
            u.partition_key.as_bytes(),
            u.hash,
            u.data.len() + u.partition_key.len(),
        );
        let mut built = std::mem::take(&mut self.built);
        self.router.route(idx, u, &self.route_limits, &mut built);
        self.built = built;
        self.admit_built(now);
    }

    /// Shard buffers whose deadline came become Kinesis records, unless the
    /// collector already holds a call's worth: then they wait for a permit
    /// in their buffers, where their aggregates keep growing.
    fn flush_due(&mut self, now: Instant) {
        if self.collector.holds_full_call() {
            return;
        }
        let mut built = std::mem::take(&mut self.built);
        self.router.flush_due(now, &mut built);
        self.built = built;
        self.admit_built(now);
    }

    fn admit_built(&mut self, now: Instant) {
        let mut built = std::mem::take(&mut self.built);
        if self.ordered {
            for k in built.drain(..) {
                self.lanes.push(k);
            }
            self.built = built;
            return self.release_lanes(now);
        }
        for k in built.drain(..) {
            self.admit(k, now);
        }
        self.built = built;
    }

    /// With `ordered`: each lane free to let a record out does.
    fn release_lanes(&mut self, now: Instant) {
        while let Some(k) = self.lanes.next_ready() {
            self.admit(k, now);
        }
    }

    /// With `ordered`: records of an entry that was out for `lane` and came
    /// back loose go to the head of the lanes they now hash to, each on
    /// its own (they are few: a part expired, or a reshard dissolved
    /// their aggregate), ahead of everything newer; then `lane` is free.
    fn requeue_front(&mut self, records: Vec<UserRecord>, lane: Option<Lane>, now: Instant) {
        let Some(map) = self.shards.map() else {
            // No map (the stream was reported missing): they wait for one,
            // ahead of the records that came since.
            let mut records = records;
            records.iter_mut().for_each(UserRecord::detach);
            self.shards.waiting.splice(0..0, records);
            self.lanes.give_back(lane);
            return self.release_lanes(now);
        };
        let gen = self.shards.generation;
        let mut groups: Vec<(usize, Vec<KinesisRecord>)> = Vec::new();
        for mut u in records {
            u.detach();
            u.deadline = now;
            let idx = map.index_of(u.hash);
            let k = KinesisRecord::single(self.router.shard_id(idx).clone(), idx, gen, u);
            match groups.iter_mut().find(|(i, _)| *i == idx) {
                Some((_, v)) => v.push(k),
                None => groups.push((idx, vec![k])),
            }
        }
        self.lanes.give_back(lane);
        for (idx, ks) in groups {
            self.lanes.push_front(idx, ks);
        }
        self.release_lanes(now);
    }

    /// Passes a Kinesis record through its shard's rate limit: on to the
    /// collector, or held until the buckets refill.
    fn admit(&mut self, k: KinesisRecord, now: Instant) {
        if let Some(k) = self.pacer.admit(k, now) {
            self.collector.push(k);
        }
    }

    /// Held records whose tokens are there go on; the expired ones fail,
    /// and the other records of their Kinesis record are routed again.
    fn release_held(&mut self, now: Instant) {
        let (mut ready, mut expired) = (Vec::new(), Vec::new());
        self.pacer.release(now, &mut ready, &mut expired);
        for k in ready {
            self.collector.push(k);
        }
        let why = format!(
            "waited for the shard's rate limit (rate_limit = {}%)",
            self.settings.rate_limit
        );
        self.expire_or_reroute(expired, &why, now);
    }

    /// The records of `batch` whose TTL ran out fail (`why` says what they
    /// waited for); the others are routed again, maybe to a new shard.
    fn expire_or_reroute(&mut self, batch: Vec<KinesisRecord>, why: &str, now: Instant) {
        let mut reroute = Vec::new();
        for k in batch {
            let shard = k.shard_id;
            let lane = k.lane;
            for u in k.records {
                if u.expiry <= now {
                    let msg = format!(
                        "record_ttl_ms ({} ms) ran out while the record on shard {shard} {why}",
                        self.settings.record_ttl_ms
                    );
                    self.fail(u, Some(&shard), ErrorCode::Expired, msg);
                } else {
                    reroute.push(u);
                }
            }
            if self.ordered {
                self.requeue_front(std::mem::take(&mut reroute), lane, now);
            }
        }
        for mut u in reroute {
            u.detach();
            self.route(u, now);
        }
    }

    fn flush_all(&mut self, now: Instant) {
        let mut built = std::mem::take(&mut self.built);
        self.router.flush_all(&mut built);
        self.built = built;
        self.admit_built(now);
        self.collector.flush(now);
    }

    // ---- answers of PutRecords -------------------------------------------

    /// Kinesis records that waited for a send permit past a record's TTL:
    /// the expired records fail, the others are routed again.
    fn on_unsent(&mut self, batch: Vec<KinesisRecord>, now: Instant) {
        let why = format!(
            "waited for a free connection (max_connections = {})",
            self.limits.max_connections
        );
        self.expire_or_reroute(batch, &why, now);
    }

    fn on_sent(
        &mut self,
        batch: Vec<KinesisRecord>,
        outcome: Result<Vec<EntryResult>, ApiError>,
        started: Instant,
        ended: Instant,
        now: Instant,
    ) {
        if batch.is_empty() {
            return;
        }
        let c = self.counters.clone();
        Counters::add(&c.put_records_calls, 1);
        let user_records = batch.iter().map(|k| k.records.len()).sum();
        self.metrics.put_records_result(
            ended.saturating_duration_since(started).as_millis() as u64,
            batch.len(),
            user_records,
            outcome.as_ref().err().map(|e| e.code.as_str()),
        );
        // Checked here, not only in the SDK seam: a `KinesisApi` answering
        // too few results would otherwise drop the records past the end of
        // the zip below without a result, and too many would hide a mix-up
        // of entries. Either is a failed attempt, retried within the TTL.
        let outcome = match outcome {
            Ok(results) if results.len() != batch.len() => Err(ApiError::new(
                ErrorCode::ResponseError,
                format!(
                    "PutRecords answered {} results for {} entries",
                    results.len(),
                    batch.len()
                ),
            )),
            o => o,
        };
        match outcome {
            Ok(results) => {
                for (k, r) in batch.into_iter().zip(results) {
                    let entry = match &r {
                        EntryResult::Ok { .. } => EntryOutcome::Put,
                        EntryResult::Err(e) => EntryOutcome::Failed(e.code.as_str()),
                    };
                    self.metrics.kinesis_record(
                        &k.shard_id,
                        k.records.len(),
                        k.request_bytes(),
                        entry,
                    );
                    match r {
                        EntryResult::Ok {
                            shard_id,
                            sequence_number,
                        } => {
                            Counters::add(&c.kinesis_records_put, 1);
                            if *shard_id == *k.shard_id {
                                let shard = k.shard_id.clone();
                                self.succeed(k, shard, sequence_number, started, ended);
                            } else {
                                let shard = shard_id.into();
                                self.on_wrong_shard(k, shard, sequence_number, started, ended, now);
                            }
                        }
                        EntryResult::Err(e) => {
                            Counters::add(&c.entries_failed, 1);
                            self.trouble.entry_failed(&e, now);
                            if e.class == ErrorClass::Throttled {
                                Counters::add(&c.entries_throttled, 1);
                                // The shard is full: slow down its limiter
                                // (unless the map changed since).
                                if k.map_gen == self.shards.generation {
                                    self.pacer.throttled(k.shard_idx, ended);
                                }
                            }
                            self.retry_or_fail(k, &e, started, ended, now);
                        }
                    }
                }
            }
            Err(e) if batch.len() > 1 && refuses_content(&e) && !self.aborted => {
                Counters::add(&c.requests_failed, 1);
                self.trouble.call_failed(&e, now);
                self.split(batch, &e, started, ended);
            }
            Err(e) => {
                Counters::add(&c.requests_failed, 1);
                if !self.aborted {
                    self.trouble.call_failed(&e, now);
                }
                if e.code == ErrorCode::ResourceNotFound {
                    // The stream may have been deleted: forget its map.
                    self.shards.forget(&e, now);
                }
                for k in batch {
                    self.metrics.kinesis_record(
                        &k.shard_id,
                        k.records.len(),
                        k.request_bytes(),
                        EntryOutcome::NotSent,
                    );
                    self.retry_or_fail(k, &e, started, ended, now);
                }
            }
        }
    }

    /// A call refused as a whole for what one of its entries holds (a
    /// ValidationException names one entry, but not by index): the halves
    /// are sent again as they are, before anything collected (as soon as
    /// permits are free), recursively, until the offending Kinesis
    /// records are alone and fail with the service's message, and every
    /// other record (other connections', other shards') lands.
    ///
    /// What a user expects of a good record caught in such a call: that it
    /// is delivered, late by a few calls, not failed. So a split is not a
    /// retry: no backoff, no `retries` count, and no budget is spent but
    /// the record's TTL, which bounds it like any attempt (at most about
    /// 2 log2(500) calls per offender). The refused call stays in each
    /// record's attempts, so its result says why it took more than one.
    /// The halves skip the pacer: the refused call used no throughput.
    fn split(
        &mut self,
        mut batch: Vec<KinesisRecord>,
        err: &ApiError,
        started: Instant,
        ended: Instant,
    ) {
        for k in &batch {
            self.metrics.kinesis_record(
                &k.shard_id,
                k.records.len(),
                k.request_bytes(),
                EntryOutcome::NotSent,
            );
        }
        for k in &mut batch {
            record_failed_attempt(k, err, started, ended);
        }
        let second = batch.split_off(batch.len() / 2);
        self.urgent.push_back(batch);
        self.urgent.push_back(second);
    }

    /// The successes of a Kinesis record that landed on `shard`: one
    /// [`Landing`] shared by its records, grouped per connection (sink and
    /// tag) so that each connection gets one delivery.
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
        self.lanes.give_back(k.lane);
        Counters::add(&self.counters.user_records_put, n as u64);
        let mut cost = 0usize;
        // Records of many puts share an aggregate (with many shards, hardly
        // two in a row come from the same put), but few connections do.
        let mut groups: Vec<(Arc<Origin>, Vec<Landed>)> = Vec::new();
        let mut spooled = Vec::new();
        let mut last = 0usize;
        for (i, u) in k.records.into_iter().enumerate() {
            let delay_ms = started.saturating_duration_since(u.ready_since).as_millis() as u64;
            self.metrics
                .user_record_landed(&landing.shard_id, u.data.len(), &u.attempts, delay_ms);
            cost += u.cost as usize;
            if let Some(seq) = u.spool_seq() {
                spooled.push(seq);
            }
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
                            self.actions.push(Action::Landed {
                                landing: landing.clone(),
                                groups: std::mem::take(&mut groups),
                                records: 0,
                                cost: 0,
                                spooled: Vec::new(),
                            });
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
        self.actions.push(Action::Landed {
            landing,
            groups,
            records: n,
            cost,
            spooled,
        });
    }

    /// A record's failure, its metrics recorded first. `predicted`: the
    /// shard it was sent to, if any.
    fn fail(
        &mut self,
        u: UserRecord,
        predicted: Option<&Arc<str>>,
        code: ErrorCode,
        message: String,
    ) {
        self.metrics
            .user_record_failed(predicted, code.as_str(), &u.attempts);
        self.actions.push(Action::Failed {
            record: u,
            code,
            message,
        });
    }

    /// After a failed attempt: the attempt goes into each record's history,
    /// then [`Retries::after_failure`] decides.
    fn retry_or_fail(
        &mut self,
        mut k: KinesisRecord,
        err: &ApiError,
        started: Instant,
        ended: Instant,
        now: Instant,
    ) {
        let (shard, lane) = (k.shard_id.clone(), k.lane);
        record_failed_attempt(&mut k, err, started, ended);
        let verdict =
            self.retries
                .after_failure(k, err, self.settings.fail_if_throttled, self.aborted, now);
        match verdict {
            Verdict::Fail(records) => {
                self.lanes.give_back(lane);
                for u in records {
                    self.fail(u, Some(&shard), err.code.clone(), err.message.clone());
                }
            }
            Verdict::Retry {
                retried,
                expired,
                lane,
            } => {
                self.lanes.give_back(lane);
                Counters::add(&self.counters.retries, retried as u64);
                for u in expired {
                    let msg = format!(
                        "record_ttl_ms ({} ms) ran out after {} attempts; last error {}: {}",
                        self.settings.record_ttl_ms,
                        u.attempts.len(),
                        err.code,
                        err.message
                    );
                    self.fail(u, Some(&shard), ErrorCode::Expired, msg);
                }
            }
        }
    }

    // ---- the shard map -----------------------------------------------------

    fn start_load(&mut self) {
        if self.aborted || !self.shards.start_load() {
            return;
        }
        Counters::add(&self.counters.shard_map_loads, 1);
        self.actions.push(Action::LoadShards);
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
        now: Instant,
    ) {
        let current = k.map_gen == self.shards.generation;
        if current {
            self.start_load();
        }
        if k.records.len() == 1 {
            // A single record is readable wherever it landed.
            return self.succeed(k, shard, seq, started, ended);
        }
        match self.shards.map() {
            Some(map) if !current => {
                let readable = k.records.iter().all(|u| *map.lookup(u.hash).id == *shard);
                self.judge_misrouted(Misrouted { k, shard, seq }, readable, None, now);
            }
            _ => {
                self.shards.misrouted.push(Misrouted { k, shard, seq });
                self.start_load();
            }
        }
    }

    /// Settles an aggregate that landed on another shard than predicted: a
    /// success when every record in it hashes into that shard (what the
    /// KCL checks), else its records are sent again.
    fn judge_misrouted(
        &mut self,
        m: Misrouted,
        readable: bool,
        map_error: Option<&ApiError>,
        now: Instant,
    ) {
        let Misrouted { mut k, shard, seq } = m;
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
        Counters::add(&self.counters.wrong_shard, 1);
        // Never resend this aggregate as it is: its records are routed anew.
        k.map_gen = u64::MAX;
        let err = ApiError::new(ErrorCode::WrongShard, msg);
        self.retry_or_fail(k, &err, now, now, now);
    }

    fn on_map_loaded(&mut self, r: Result<ShardMap, ApiError>, now: Instant) {
        match r {
            Ok(map) => {
                let waiting = std::mem::take(&mut self.shards.waiting);
                let mut reroute = Vec::new();
                if let Loaded::Changed = self.shards.loaded(map) {
                    // Everything not yet sent was aggregated for the old
                    // map: take it apart and route it again, oldest first
                    // per old shard (paced or collected, then in its lane,
                    // then buffered), which `ordered` relies on.
                    let map = self.shards.map().expect("just loaded");
                    let gen = self.shards.generation;
                    let held = self
                        .pacer
                        .reset(map.shards(), self.settings.rate_limit, now);
                    let collected: Vec<KinesisRecord> = self.collector.drain().collect();
                    let lanes = held.iter().chain(&collected).map(|k| k.lane);
                    let queued = self.lanes.reset(map.shards().len(), gen, lanes);
                    for k in held.into_iter().chain(collected).chain(queued) {
                        reroute.extend(k.records);
                    }
                    reroute.append(&mut self.router.reset(map.shards(), gen));
                }
                reroute.extend(waiting);
                for m in std::mem::take(&mut self.shards.misrouted) {
                    let map = self.shards.map().expect("just loaded");
                    let readable =
                        m.k.records
                            .iter()
                            .all(|u| *map.lookup(u.hash).id == *m.shard);
                    self.judge_misrouted(m, readable, None, now);
                }
                for mut u in reroute {
                    u.detach();
                    self.route(u, now);
                }
                if std::mem::take(&mut self.shards.flush_after_load) {
                    self.flush_all(now);
                }
            }
            Err(e) => {
                for m in std::mem::take(&mut self.shards.misrouted) {
                    self.judge_misrouted(m, false, Some(&e), now);
                }
                match self.shards.load_failed(&e, now) {
                    None => {
                        for u in std::mem::take(&mut self.shards.waiting) {
                            self.fail(u, None, e.code.clone(), e.message.clone());
                        }
                    }
                    Some(delay) => {
                        tracing::warn!(stream = %self.name, error = %e, retry_in_ms = delay.as_millis() as u64, "shard map load failed");
                    }
                }
            }
        }
    }
}

fn attempt(u: &UserRecord, err: &ApiError, started: Instant, ended: Instant) -> Attempt {
    Attempt {
        success: false,
        error_code: err.code.as_str().to_string(),
        error_message: err.message.clone(),
        delay_ms: started.saturating_duration_since(u.ready_since).as_millis() as u64,
        duration_ms: ended.saturating_duration_since(started).as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::limit::CUT_GAP;
    use crate::metrics::{MetricsConfig, MetricsHandle};
    use crate::pipeline::record::ResultSink;
    use crate::pipeline::testkit::{even_shards, record_to, records, Collect};
    use crate::retry::Backoff;
    use crate::shard_map::Shard;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::time::Duration;

    fn core() -> StreamCore {
        core_with(&[])
    }

    fn core_with(extra: &[(&str, &str)]) -> StreamCore {
        let env = [("KPLD_METRICS_LEVEL", "none")]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let cfg = Config::load(None, env).unwrap();
        let name: Arc<str> = "s".into();
        let limits = CoreLimits {
            batch: BatchLimits {
                max_count: cfg.collection_max_count as usize,
                max_bytes: cfg.collection_max_size as usize,
            },
            max_connections: cfg.max_connections,
        };
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        StreamCore::new(
            name.clone(),
            Arc::new(cfg.default_stream_settings()),
            limits,
            Retries::new(backoff, StdRng::seed_from_u64(7)),
            MetricsHandle::new(&MetricsConfig::from_config(&cfg)).stream(&name),
            Arc::default(),
            false,
        )
    }

    fn load(core: &mut StreamCore, shards: Vec<Shard>, now: Instant) {
        core.handle(Input::ShardsLoaded(Ok(ShardMap::new(shards).unwrap())), now);
    }

    /// Records on every shard at `at`, sent at once; Kinesis throttles the
    /// entries of the shards in `throttled` and takes the others.
    fn send_round(core: &mut StreamCore, throttled: &[&str], at: Instant) {
        let ids: Vec<u64> = (0..100).collect();
        core.handle(
            Input::Records(records(&ids, 10, at, Duration::from_secs(60))),
            at,
        );
        core.poll(at);
        while let Some(batch) = core.next_send(at) {
            let results = batch
                .iter()
                .map(|k| {
                    if throttled.contains(&&*k.shard_id) {
                        EntryResult::Err(ApiError::new(
                            ErrorCode::ProvisionedThroughputExceeded,
                            "slow down",
                        ))
                    } else {
                        EntryResult::Ok {
                            shard_id: k.shard_id.to_string(),
                            sequence_number: "1".into(),
                        }
                    }
                })
                .collect();
            core.handle(
                Input::Sent {
                    batch,
                    outcome: Ok(results),
                    started: at,
                    ended: at,
                },
                at,
            );
        }
    }

    fn rate(core: &StreamCore, id: &str) -> f64 {
        core.shard_rate_percent(id)
            .unwrap_or_else(|| panic!("no shard {id}"))
    }

    #[test]
    fn records_that_expire_waiting_for_the_map_name_why_it_did_not_load() {
        let mut core = core();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(5);
        core.handle(Input::Records(records(&[1, 2], 10, t0, ttl)), t0);
        core.poll(t0);
        core.handle(
            Input::ShardsLoaded(Err(ApiError::new(
                ErrorCode::ConnectionError,
                "dns error: failed to lookup address",
            ))),
            t0,
        );
        let later = t0 + ttl + Duration::from_millis(1);
        core.poll(later);
        let mut actions = Vec::new();
        core.take_actions(&mut actions);
        let failed: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Failed { code, message, .. } => Some((code.clone(), message.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 2, "{failed:?}");
        for (code, message) in failed {
            assert_eq!(code, ErrorCode::Expired);
            assert!(
                message.contains("waiting for the shard map")
                    && message.contains("the last ListShards failed: ConnectionError: dns error"),
                "{message}"
            );
        }
    }

    #[test]
    fn throttled_rates_survive_reloads_and_children_start_from_their_parents() {
        let t0 = Instant::now();
        let mut c = core();
        let two = even_shards(2);
        let (a, b) = ("shardId-000000000000", "shardId-000000000001");
        load(&mut c, two.clone(), t0);
        // Shard a throttled three times, b once.
        let mut at = t0;
        for i in 0..3 {
            at = t0 + CUT_GAP * i;
            let both = [a, b];
            send_round(&mut c, if i == 0 { &both } else { &both[..1] }, at);
        }
        let (ra, rb) = (rate(&c, a), rate(&c, b));
        assert!(ra < 100.0 && rb < 125.0, "throttled: {ra} {rb}");
        // Recovery is 2 points a second: allow for the time passing.
        let near = |got: f64, want: f64| (got - want).abs() < 1.0;

        // The same map again.
        load(&mut c, two.clone(), at);
        assert!(near(rate(&c, a), ra) && near(rate(&c, b), rb));

        // a splits: both children start from a's rate; b keeps its own.
        let mid = two[0].end / 2;
        let split = vec![
            Shard {
                id: "shardId-000000000002".into(),
                start: 0,
                end: mid,
            },
            Shard {
                id: "shardId-000000000003".into(),
                start: mid + 1,
                end: two[0].end,
            },
            two[1].clone(),
        ];
        load(&mut c, split.clone(), at);
        for child in ["shardId-000000000002", "shardId-000000000003"] {
            assert!(
                near(rate(&c, child), ra),
                "{child}: {} not {ra}",
                rate(&c, child)
            );
        }
        assert!(near(rate(&c, b), rb), "{} not {rb}", rate(&c, b));

        // A SIGHUP raising rate_limit keeps throttled rates where they are.
        let mut s = (*c.settings).clone();
        s.rate_limit = 200;
        c.handle(Input::Settings(Arc::new(s)), at);
        assert!(near(rate(&c, b), rb), "{} not {rb}", rate(&c, b));
        assert!(near(rate(&c, "shardId-000000000002"), ra));

        // The second child merges with b: the lower of the two rates.
        let merged = vec![
            split[0].clone(),
            Shard {
                id: "shardId-000000000004".into(),
                start: mid + 1,
                end: u128::MAX,
            },
        ];
        load(&mut c, merged, at);
        let m = rate(&c, "shardId-000000000004");
        assert!(near(m, ra.min(rb)), "{m} not {}", ra.min(rb));
    }

    fn ordered() -> StreamCore {
        core_with(&[("KPLD_ORDERED", "true")])
    }

    /// Records `ids` under the one key "k", put and flushed at `at`.
    fn put_same_key(core: &mut StreamCore, ids: &[u64], at: Instant) {
        let sink: Arc<dyn ResultSink> = Arc::new(Collect::default());
        let recs = ids
            .iter()
            .map(|&id| record_to(&sink, id, "k", 10, at, Duration::from_secs(60)))
            .collect();
        core.handle(Input::Records(recs), at);
        core.handle(Input::Flush, at);
    }

    /// The user record ids of each Kinesis record of the next call at `at`.
    fn next_ids(core: &mut StreamCore, at: Instant) -> Option<(Vec<KinesisRecord>, Vec<Vec<u64>>)> {
        let batch = core.next_send(at)?;
        let ids = batch
            .iter()
            .map(|k| k.records.iter().map(|u| u.id).collect())
            .collect();
        Some((batch, ids))
    }

    fn answer(
        core: &mut StreamCore,
        batch: Vec<KinesisRecord>,
        outcome: Result<Option<ErrorCode>, ErrorCode>,
        at: Instant,
    ) {
        let outcome = outcome
            .map_err(|c| ApiError::new(c, "no answer"))
            .map(|entry| {
                batch
                    .iter()
                    .map(|k| match &entry {
                        Some(c) => EntryResult::Err(ApiError::new(c.clone(), "failed")),
                        None => EntryResult::Ok {
                            shard_id: k.shard_id.to_string(),
                            sequence_number: "1".into(),
                        },
                    })
                    .collect()
            });
        core.handle(
            Input::Sent {
                batch,
                outcome,
                started: at,
                ended: at,
            },
            at,
        );
    }

    #[test]
    fn ordered_a_failed_or_unanswered_entry_goes_again_before_anything_newer_of_its_shard() {
        let failures = [
            Ok(Some(ErrorCode::ProvisionedThroughputExceeded)),
            Ok(Some(ErrorCode::InternalFailure)),
            Err(ErrorCode::RequestTimeout),
        ];
        for failure in failures {
            let t0 = Instant::now();
            let mut c = ordered();
            load(&mut c, even_shards(1), t0);
            put_same_key(&mut c, &[1], t0);
            let (first, ids) = next_ids(&mut c, t0).expect("record 1 goes");
            assert_eq!(ids, [[1]]);
            put_same_key(&mut c, &[2], t0);
            assert!(
                c.next_send(t0).is_none(),
                "one entry in flight per shard: 2 waits for 1's answer"
            );
            answer(&mut c, first, failure.clone(), t0);
            // The backoff is at most 1 s here.
            let later = t0 + Duration::from_secs(2);
            c.poll(later);
            let (again, ids) = next_ids(&mut c, later).expect("1 goes again");
            assert_eq!(ids, [[1]], "after {failure:?}, 1 goes again before 2");
            assert!(c.next_send(later).is_none());
            answer(&mut c, again, Ok(None), later);
            let (_, ids) = next_ids(&mut c, later).expect("then 2");
            assert_eq!(ids, [[2]]);
        }
        // Without `ordered`, 2 does not wait: what the rule prevents.
        let t0 = Instant::now();
        let mut c = core();
        load(&mut c, even_shards(1), t0);
        put_same_key(&mut c, &[1], t0);
        assert!(c.next_send(t0).is_some());
        put_same_key(&mut c, &[2], t0);
        assert_eq!(
            next_ids(&mut c, t0).map(|(_, ids)| ids),
            Some(vec![vec![2]])
        );
    }

    #[test]
    fn ordered_a_key_waits_across_a_split_until_its_parents_entry_is_final() {
        let t0 = Instant::now();
        let mut c = ordered();
        load(&mut c, even_shards(1), t0);
        put_same_key(&mut c, &[1], t0);
        let (first, _) = next_ids(&mut c, t0).expect("record 1 goes");
        // 3 waits in the parent's lane behind 1.
        put_same_key(&mut c, &[3], t0);
        assert!(c.next_send(t0).is_none());
        // The parent splits while 1 is out.
        let mut kids = even_shards(2);
        for (i, s) in kids.iter_mut().enumerate() {
            s.id = format!("shardId-{:012}", i + 1).into();
        }
        load(&mut c, kids, t0);
        put_same_key(&mut c, &[2], t0);
        assert!(
            c.next_send(t0).is_none(),
            "nothing goes to a child while the parent's entry is out"
        );
        answer(
            &mut c,
            first,
            Ok(Some(ErrorCode::ProvisionedThroughputExceeded)),
            t0,
        );
        assert!(
            c.next_send(t0).is_none(),
            "1 waits out its backoff, and so do 3 and 2"
        );
        let later = t0 + Duration::from_secs(2);
        c.poll(later);
        let (again, ids) = next_ids(&mut c, later).expect("1 goes again, to its child");
        assert_eq!(ids, [[1]]);
        assert!(
            c.next_send(later).is_none(),
            "one entry in flight per child"
        );
        answer(&mut c, again, Ok(None), later);
        let (_, ids) = next_ids(&mut c, later).expect("then 3 and 2");
        assert_eq!(ids, [[3, 2]], "in the order they were accepted");
    }
}

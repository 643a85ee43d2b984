//! The stream actor: the task that drives one stream's [`StreamCore`]. It
//! owns the core (so the record path takes no locks), feeds it messages
//! and the time, sleeps until the core's next wake-up, and performs its
//! actions: PutRecords and ListShards calls on tasks of their own, and
//! results delivered to their sinks with the budget given back.
//!
//! Send permits: a PutRecords call is cut from the core only once the actor
//! holds one of the `max_connections` permits (shared by all streams), and
//! the permit goes with the call's task. While the core wants to send and
//! none is free, the actor waits for one (at most one waiting acquire per
//! stream): Tokio's semaphore serves waiters first come, first served, and
//! a stream queues again after each permit it gets, so streams take turns
//! and a busy one cannot starve the others.
//!
//! An actor that holds no record and got none for `stream_idle_timeout_ms`
//! evicts itself (see [`StreamActor::try_evict`]): a flood of stream names
//! must not keep an actor, a shard map and stats series each forever.

use super::Inner;
use crate::error_code::ErrorCode;
use crate::kinesis::{ApiError, KinesisApi};
use crate::pipeline::{Action, CoreLimits, Input, KinesisRecord, Retries, StreamCore};
use crate::shard_map::ShardMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

/// A send permit being waited for.
type Acquire = Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>;

/// What reaches a stream's actor: inputs for its core, from the producer
/// and from the calls the actor started.
pub(crate) type StreamMsg = Input;

pub(crate) struct StreamActor {
    inner: Arc<Inner>,
    core: StreamCore,
    api: Arc<dyn KinesisApi>,
    tx: mpsc::UnboundedSender<StreamMsg>,
    /// Reused between wake-ups.
    actions: Vec<Action>,
    /// Records handed to this actor and not yet final (the same count the
    /// budget is given back by); eviction waits for 0.
    held: usize,
    /// When the last records arrived (or the actor started).
    last_put: Instant,
    /// The send permit this actor waits for, if it wants one and none was free.
    acquiring: Option<Acquire>,
    /// A permit that came while the actor was asleep, used at the next
    /// [`start_sends`](Self::start_sends).
    granted: Option<OwnedSemaphorePermit>,
}

impl StreamActor {
    pub(crate) fn spawn(inner: Arc<Inner>, name: Arc<str>) -> mpsc::UnboundedSender<StreamMsg> {
        let (tx, rx) = mpsc::unbounded_channel();
        let limits = CoreLimits {
            batch: crate::collect::BatchLimits {
                max_count: inner.cfg.collection_max_count as usize,
                max_bytes: inner.cfg.collection_max_size as usize,
            },
            max_connections: inner.cfg.max_connections,
        };
        let draining = inner.draining.load(Ordering::Acquire);
        let settings = inner.live.load().settings_for(&name).clone();
        let api = inner.stream_apis.get(&*name).unwrap_or(&inner.api).clone();
        let core = StreamCore::new(
            name.clone(),
            settings,
            limits,
            Retries::from_os(inner.backoff),
            inner.metrics.stream(&name),
            inner.counters.clone(),
            draining,
        );
        let actor = StreamActor {
            inner,
            core,
            api,
            tx: tx.clone(),
            actions: Vec::new(),
            held: 0,
            last_put: Instant::now(),
            acquiring: None,
            granted: None,
        };
        tokio::spawn(actor.run(rx));
        tx
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<StreamMsg>) {
        self.perform();
        let abort = self.inner.abort.clone();
        let idle_after = Duration::from_millis(self.inner.cfg.stream_idle_timeout_ms);
        loop {
            let wake = self.core.next_wakeup(Instant::now());
            let idle = self.is_idle();
            let mut acquiring = self.acquiring.take();
            tokio::select! {
                biased;
                _ = abort.cancelled(), if !self.core.is_aborted() => {
                    acquiring = None;
                    self.core.abort();
                }
                // Before the messages: a permit handed to this actor must not
                // sit unused (and kept from other streams) while records
                // keep arriving.
                p = async { acquiring.as_mut().expect("enabled only when waiting").await },
                    if acquiring.is_some() => {
                    acquiring = None;
                    self.granted = Some(p);
                }
                msg = rx.recv() => match msg {
                    // One clock read per message, not per record (2% of the CPU).
                    Some(m) => self.handle(m, Instant::now()),
                    None => return,
                },
                _ = sleep_until_opt(wake), if wake.is_some() => {}
                _ = tokio::time::sleep_until(self.last_put + idle_after), if idle => {
                    if self.last_put + idle_after <= Instant::now() && self.try_evict(&mut rx) {
                        return;
                    }
                }
            }
            // Take whatever else is queued before doing timed work, so one
            // wake-up serves many messages.
            self.acquiring = acquiring;
            while let Ok(m) = rx.try_recv() {
                self.handle(m, Instant::now());
            }
            let now = Instant::now();
            self.core.poll(now);
            self.start_sends(now);
            self.perform();
            self.log_trouble(now);
            if self.core.is_aborted() && self.core.in_flight() == 0 {
                self.core.abort();
                self.perform();
                self.inner
                    .streams
                    .lock()
                    .expect("streams lock")
                    .remove(self.core.name());
                // Late senders see a closed channel and fail their records.
                rx.close();
                while let Some(m) = rx.recv().await {
                    self.handle(m, Instant::now());
                    self.core.abort();
                    self.perform();
                }
                return;
            }
        }
    }

    /// A summary line of what failed lately, at most every 10 s per stream
    /// (a line per failed call would flood the log in an outage; none at all
    /// leaves an operator blind).
    fn log_trouble(&mut self, now: Instant) {
        let Some(s) = self.core.take_trouble(now) else {
            return;
        };
        let ttl_ms = self
            .inner
            .live
            .load()
            .settings_for(self.core.name())
            .record_ttl_ms;
        let doing = format!(
            "retrying with backoff within each record's TTL (record_ttl_ms = {ttl_ms});              {} records held for this stream",
            self.held
        );
        let stream = self.core.name();
        let over_s = s.over.as_secs();
        if s.only_throttling() {
            tracing::info!(
                stream = %stream, entries_throttled = s.entries_throttled, over_s,
                last_error = %s.last_error, "Kinesis throttled entries (the shard limits); {doing}"
            );
        } else {
            tracing::warn!(
                stream = %stream, calls_failed = s.calls_failed, entries_failed = s.entries_failed,
                entries_throttled = s.entries_throttled, over_s, last_error = %s.last_error,
                "PutRecords failing; {doing}"
            );
        }
    }

    fn handle(&mut self, m: StreamMsg, now: Instant) {
        if let Input::Records(r) = &m {
            self.held += r.len();
            self.last_put = now;
        }
        self.core.handle(m, now);
    }

    /// Nothing held, nothing in flight, not shutting down: only the idle
    /// timer keeps this actor.
    fn is_idle(&self) -> bool {
        self.held == 0
            && self.core.in_flight() == 0
            && !self.core.is_aborted()
            && !self.inner.draining.load(Ordering::Acquire)
    }

    /// Leaves the streams map if nothing can still reach this actor: under
    /// the streams lock (which every record's send holds, see
    /// `Inner::dispatch`), with an empty queue and nothing held. Then no
    /// record is in the queue and none can enter it; the next record of the
    /// stream starts a new actor. The stats series go too, still under the
    /// lock so that a new actor of the same name cannot have started.
    /// Returns false (and the actor goes on) if anything arrived.
    fn try_evict(&mut self, rx: &mut mpsc::UnboundedReceiver<StreamMsg>) -> bool {
        let mut streams = self.inner.streams.lock().expect("streams lock");
        if !self.is_idle() || !rx.is_empty() {
            return false;
        }
        let name = self.core.name().clone();
        if streams
            .get(&name)
            .is_some_and(|tx| tx.same_channel(&self.tx))
        {
            streams.remove(&name);
        }
        rx.close();
        // Commits this stream's last metrics before they are forgotten.
        self.core.retire_metrics();
        self.inner.metrics.forget_stream(&name);
        drop(streams);
        self.inner.trim.evicted();
        tracing::debug!(stream = %name, "stream idle for stream_idle_timeout_ms: forgotten");
        true
    }

    /// Starts the calls the core wants, each on a permit: the one that came
    /// while asleep, then free ones; when none is free, waits for one.
    fn start_sends(&mut self, now: Instant) {
        if self.core.is_aborted() {
            self.acquiring = None;
            self.granted = None;
            return;
        }
        while self.core.wants_send(now) {
            let permit = match self.granted.take() {
                Some(p) => p,
                None if self.acquiring.is_some() => return,
                None => match self.inner.send_permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        let permits = self.inner.send_permits.clone();
                        self.acquiring = Some(Box::pin(async move {
                            permits.acquire_owned().await.expect("permits never close")
                        }));
                        return;
                    }
                },
            };
            match self.core.next_send(now) {
                Some(batch) => self.spawn_send(batch, permit),
                // What wanted it expired meanwhile: the permit goes back.
                None => return,
            }
        }
        // A permit that came for nothing goes back for other streams.
        self.granted = None;
    }

    /// Performs what the core decided.
    fn perform(&mut self) {
        let mut actions = std::mem::take(&mut self.actions);
        self.core.take_actions(&mut actions);
        // Spooled records that failed go to the dead-letter file together:
        // one fsync for all of them.
        let mut failed = Vec::new();
        for a in actions.drain(..) {
            match a {
                Action::LoadShards => self.spawn_load(),
                Action::Landed {
                    landing,
                    groups,
                    records,
                    cost,
                    spooled,
                } => {
                    self.inner.spool_done(&spooled);
                    for (o, mut v) in groups {
                        // Results may wait a while to be written: hold no spare room.
                        if v.len() * 2 < v.capacity() {
                            v.shrink_to_fit();
                        }
                        o.sink.landed(o.tag, &landing, v);
                    }
                    if records > 0 {
                        self.held = self.held.saturating_sub(records);
                        self.inner.release(records, cost);
                    }
                }
                Action::Failed {
                    record,
                    code,
                    message,
                } => {
                    self.held = self.held.saturating_sub(1);
                    if record.spool_seq().is_some() {
                        failed.push((record, code, message));
                    } else {
                        self.inner.fail(record, code, message)
                    }
                }
            }
        }
        if !failed.is_empty() {
            self.inner.fail_spooled(self.core.name(), failed);
        }
        self.actions = actions;
    }

    /// One PutRecords call on a task of its own, holding `permit` until
    /// the answer.
    fn spawn_send(&self, batch: Vec<KinesisRecord>, permit: OwnedSemaphorePermit) {
        let api = self.api.clone();
        let abort = self.inner.abort.clone();
        let tx = self.tx.clone();
        let stream = self.core.name().clone();
        // A safety net over the SDK's own attempt timeout.
        let hard_timeout = self.inner.cfg.request_timeout() + Duration::from_secs(2);
        tokio::spawn(async move {
            let cancelled = || {
                ApiError::new(
                    ErrorCode::ShuttingDown,
                    "kpld shut down while the record was in flight; it may or may not be in the stream",
                )
            };
            // Here, not on the actor: the actor is one task per stream, and
            // encoding aggregates is a fifth of the daemon's work.
            let entries = batch.iter().map(|k| k.entry_for_send()).collect();
            let started = Instant::now();
            let call = tokio::time::timeout(hard_timeout, api.put_records(&stream, entries));
            let outcome = tokio::select! {
                r = call => r.unwrap_or_else(|_| Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    "no answer within request_timeout_ms",
                ))),
                _ = abort.cancelled() => Err(cancelled()),
            };
            drop(permit);
            let _ = tx.send(Input::Sent {
                batch,
                outcome,
                started,
                ended: Instant::now(),
            });
        });
    }

    fn spawn_load(&self) {
        let api = self.api.clone();
        let tx = self.tx.clone();
        let name = self.core.name().clone();
        tokio::spawn(async move {
            let r = api.list_shards(&name).await.and_then(|shards| {
                ShardMap::new(shards).map_err(|e| {
                    ApiError::new(
                        ErrorCode::IncompleteShardMap,
                        format!("ListShards for stream {name}: {e}"),
                    )
                })
            });
            let _ = tx.send(Input::ShardsLoaded(r));
        });
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

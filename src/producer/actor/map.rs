//! The stream's shard map: loading it, re-routing when it changes, and
//! judging aggregates that landed on a shard other than the predicted one.

use super::{KinesisRecord, MapState, ShardBuffer, StreamActor, StreamMsg};
use crate::aggregate::AggregateBuilder;
use crate::limit::ShardLimiter;
use crate::producer::{codes, Counters, UserRecord};
use crate::retry::ErrorClass;
use crate::send::ApiError;
use crate::shard_map::ShardMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl StreamActor {
    /// A Kinesis record landed on a shard other than the predicted one: the
    /// map that predicted it is stale. Refresh it once per event (only when
    /// the current map made the prediction) and judge the record against the
    /// refreshed map.
    pub(super) fn on_wrong_shard(
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
    pub(super) fn judge_misrouted(
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

    pub(super) fn start_load(&mut self) {
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

    pub(super) fn on_map_loaded(&mut self, r: Result<ShardMap, ApiError>) {
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

    pub(super) fn expire_waiting(&mut self, now: Instant) {
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
}

//! PutRecords calls and what becomes of them: collection into calls,
//! successes (delivered per connection), failures, and retries.

use super::{KinesisRecord, MapState, Retry, StreamActor, StreamMsg, MAX_RESULT_GROUPS};
use crate::collect::{take_batch, RequestSize};
use crate::ipc::Attempt;
use crate::metrics::EntryOutcome;
use crate::producer::{codes, Counters, Landed, Landing, Origin, UserRecord};
use crate::retry::ErrorClass;
use crate::send::{ApiError, EntryResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl StreamActor {
    /// Starts PutRecords calls: full batches at once, partial ones when the
    /// earliest deadline among them has come.
    pub(super) fn send_ready(&mut self, now: Instant) {
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

    pub(super) fn spawn_send(&mut self, batch: Vec<KinesisRecord>) {
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
    pub(super) fn on_unsent(&mut self, batch: Vec<KinesisRecord>) {
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

    pub(super) fn on_sent(
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

    /// Delivers the successes of a Kinesis record that landed on `shard`:
    /// one [`Landing`] shared by its records, one delivery per connection
    /// (sink and tag) among them, and the budget back in one step.
    pub(super) fn succeed(
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
                            deliver_landed(&landing, groups.drain(..));
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
        deliver_landed(&landing, groups);
        self.inner.release(n, cost);
    }

    /// Delivers a record's failure, recording its metrics first.
    /// `predicted`: the shard it was sent to, if any.
    pub(super) fn fail(
        &mut self,
        u: UserRecord,
        predicted: Option<&Arc<str>>,
        code: &str,
        message: String,
    ) {
        self.metrics
            .user_record_failed(predicted, code, &u.attempts);
        self.inner.fail(u, code, message);
    }

    /// After a failed attempt: fail the records (fatal error, throttled
    /// with `fail_if_throttled`, shutting down, or TTL reached before the
    /// next try) or schedule the Kinesis record again, whole, after one
    /// full-jitter backoff.
    pub(super) fn retry_or_fail(
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

    pub(super) fn schedule(&mut self, at: Instant, r: Retry) {
        self.retry_seq += 1;
        self.retries.insert((at, self.retry_seq), r);
    }
}

/// Hands each connection its records' successes.
fn deliver_landed(
    landing: &Arc<Landing>,
    groups: impl IntoIterator<Item = (Arc<Origin>, Vec<Landed>)>,
) {
    for (o, mut v) in groups {
        // Results may wait a while to be written: hold no spare room.
        if v.len() * 2 < v.capacity() {
            v.shrink_to_fit();
        }
        o.sink.landed(o.tag, landing, v);
    }
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

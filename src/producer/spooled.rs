//! Records of `durability = "disk"` streams: written to the spool
//! (`crate::spool`) before they count as accepted, marked done there once
//! final, replayed by [`Producer::replay`] after a restart.
//!
//! Final, for the spool: a success; or a failure for good (the service
//! refused the record, its TTL ran out), once the record is in the spool's
//! dead-letter file with its reason. Not final: `ShuttingDown`. A record
//! that kpld stopped before delivering stays in the spool, and the next
//! start sends it again (its client, if still there, got `ShuttingDown`
//! and may resend it too: a duplicate, never a loss).

use super::validate::failure;
use super::{Inner, Producer, PutHow, RecordInput, SpoolUse};
use crate::error_code::ErrorCode;
use crate::files::dead_letter::{put_data, DeadLetters};
use crate::ipc::RecordResult;
use crate::pipeline::{Landed, Landing, ResultSink, UserRecord};
use crate::spool::{Entry, EntryRef, Replay, Spool, SpoolError, Ticket};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The spool and what goes with it, attached once at start.
pub(crate) struct Durable {
    pub(crate) spool: Spool,
    dead: DeadLetters,
    /// Spooled records that failed for good (replayed ones included).
    dead_lettered: AtomicU64,
    pub(crate) replay: Arc<ReplayCounts>,
}

/// Outcomes of the records replayed from the spool at start: their
/// clients may be gone, so these counts (in `kpld stats`, and a log line
/// when the last is final) are how an operator learns of them.
#[derive(Default)]
pub struct ReplayCounts {
    /// Found in the spool with no final result, and handed to the pipeline.
    pub replayed: AtomicU64,
    pub landed: AtomicU64,
    /// Failed for good: in the dead-letter file.
    pub dead_lettered: AtomicU64,
    /// Cut off by a shutdown again: still in the spool.
    pub left_in_spool: AtomicU64,
}

impl ReplayCounts {
    fn finished(&self) -> u64 {
        let g = |a: &AtomicU64| a.load(Ordering::Acquire);
        g(&self.landed) + g(&self.dead_lettered) + g(&self.left_in_spool)
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Acquire);
        serde_json::json!({
            "replayed": g(&self.replayed),
            "landed": g(&self.landed),
            "dead_lettered": g(&self.dead_lettered),
            "left_in_spool": g(&self.left_in_spool),
            "pending": g(&self.replayed).saturating_sub(self.finished()),
        })
    }
}

/// The dead-letter file of a spool in `dir`.
pub fn spool_dead_letter_path(dir: &std::path::Path) -> PathBuf {
    dir.join("dead-letter.jsonl")
}

impl Producer {
    /// Sends the records of `durability = "disk"` streams through `spool`
    /// from now on. Once, before any record arrives.
    pub fn attach_spool(&self, spool: Spool, dir: &std::path::Path) {
        let durable = Durable {
            spool,
            dead: DeadLetters::at(spool_dead_letter_path(dir)),
            dead_lettered: AtomicU64::new(0),
            replay: Arc::default(),
        };
        if self.inner.durable.set(durable).is_err() {
            panic!("attach_spool is called once");
        }
        // Weak: the metrics live inside the producer.
        let weak = Arc::downgrade(&self.inner);
        self.inner.metrics.set_spool_stats(Box::new(move || {
            weak.upgrade()
                .and_then(|inner| Producer { inner }.spool_stats())
                .unwrap_or(serde_json::Value::Null)
        }));
    }

    /// The spool's state for `kpld stats`: None without a spool.
    pub fn spool_stats(&self) -> Option<serde_json::Value> {
        let d = self.inner.durable.get()?;
        let s = d.spool.stats();
        let mut v = serde_json::json!({
            "bytes": s.bytes,
            "segments": s.segments,
            "entries_appended": s.entries_appended,
            "entries_pending": s.entries_pending,
            "durable_seq": s.durable_seq,
            "next_seq": s.next_seq,
            "fsyncs": s.fsyncs,
            "full_events": s.full_events,
            "disk_full": s.disk_full,
            "corrupt_segments": s.corrupt_segments,
            "torn_bytes_cut": s.torn_bytes_cut,
            "ledger_writes": s.ledger_writes,
            "segments_removed": s.segments_removed,
        });
        v["dead_lettered"] = d.dead_lettered.load(Ordering::Relaxed).into();
        v["dead_letter_file"] = d.dead.path().display().to_string().into();
        v["replay"] = d.replay.snapshot();
        Some(v)
    }

    /// The spool, if attached.
    pub fn spool(&self) -> Option<&Spool> {
        self.inner.durable.get().map(|d| &d.spool)
    }

    /// Hands every record that `replay` holds (spooled, no final result
    /// before the last stop) to the pipeline, alongside new records, with
    /// backpressure; returns once all are handed over (not yet final: see
    /// [`ReplayCounts`]). Their outcomes are counted and logged in summary.
    pub async fn replay(&self, mut replay: Replay) -> Result<u64, crate::spool::SpoolError> {
        let Some(durable) = self.inner.durable.get() else {
            return Ok(0);
        };
        let counts = durable.replay.clone();
        let replay_sink = Arc::new(ReplaySink {
            counts: counts.clone(),
            refused: Default::default(),
        });
        let sink: Arc<dyn ResultSink> = replay_sink.clone();
        let mut total = 0u64;
        loop {
            let batch = replay.next_batch(1000)?;
            if batch.is_empty() {
                break;
            }
            total += batch.len() as u64;
            counts
                .replayed
                .fetch_add(batch.len() as u64, Ordering::AcqRel);
            let records: Vec<RecordInput> = batch.into_iter().map(replayed_input).collect();
            // Cheap copies (shared bytes), for the records refused below.
            let kept = records.clone();
            let how = PutHow {
                busy_if_full: false,
                ttl: None,
                want_accepted: false,
                spool: SpoolUse::Replayed,
            };
            self.put_inner(records, 0, sink.clone(), how).await;
            // Refused before they reached the pipeline (the configuration
            // changed since they were accepted: a stream no longer allowed, a
            // lower max_record_size): final, so into the dead-letter file, or
            // they would hold their segment forever.
            let refused = std::mem::take(&mut *replay_sink.refused.lock().expect("refused lock"));
            for (seq, code, message) in refused {
                if let Some(r) = kept.iter().find(|r| r.id == seq) {
                    self.inner.dead_letter(durable, r, seq, &code, &message, 0);
                }
            }
        }
        Ok(total)
    }
}

/// A spooled entry as a put: its data is what was spooled (compressed
/// already if its put asked), so it goes as is.
fn replayed_input(e: Entry) -> RecordInput {
    RecordInput {
        id: e.seq,
        stream: e.stream.into_bytes().into(),
        partition_key: e.partition_key.into(),
        explicit_hash_key: e.explicit_hash_key.map(Into::into),
        data: e.data.into(),
        compression: Some(crate::config::Compression::None),
    }
}

/// Counts the outcomes of replayed records; logs once all are final.
struct ReplaySink {
    counts: Arc<ReplayCounts>,
    /// Refused at the put (sequence number, code, message): for `replay`
    /// to dead-letter.
    refused: std::sync::Mutex<Vec<(u64, String, String)>>,
}

impl ReplaySink {
    fn maybe_log_summary(&self) {
        let c = &self.counts;
        if c.finished() == c.replayed.load(Ordering::Acquire) {
            tracing::info!(
                replayed = c.replayed.load(Ordering::Acquire),
                landed = c.landed.load(Ordering::Acquire),
                dead_lettered = c.dead_lettered.load(Ordering::Acquire),
                left_in_spool = c.left_in_spool.load(Ordering::Acquire),
                "every record replayed from the spool is final"
            );
        }
    }
}

impl ResultSink for ReplaySink {
    fn deliver(&self, _tag: u64, r: RecordResult) {
        let c = &self.counts;
        if r.success {
            c.landed.fetch_add(1, Ordering::AcqRel);
        } else if r.error_code == ErrorCode::ShuttingDown.as_str() {
            c.left_in_spool.fetch_add(1, Ordering::AcqRel);
        } else if r.refused {
            c.dead_lettered.fetch_add(1, Ordering::AcqRel);
            self.refused
                .lock()
                .expect("refused lock")
                .push((r.id, r.error_code, r.error_message));
        } else {
            c.dead_lettered.fetch_add(1, Ordering::AcqRel);
        }
        self.maybe_log_summary();
    }

    fn landed(&self, _tag: u64, _landing: &Arc<Landing>, records: Vec<Landed>) {
        self.counts
            .landed
            .fetch_add(records.len() as u64, Ordering::AcqRel);
        self.maybe_log_summary();
    }
}

/// What a dead-letter line says of the record it names.
struct SpooledRecord<'a> {
    stream: &'a str,
    seq: u64,
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: &'a [u8],
}

/// One line of `spool_dir/dead-letter.jsonl` (docs/spool.md names its fields),
/// the same whether the record failed at the put or in its stream's actor.
fn dead_letter_line(
    r: SpooledRecord<'_>,
    code: &str,
    message: &str,
    attempts: usize,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "stream": r.stream,
        "spool_seq": r.seq,
        "partition_key": r.partition_key,
        "explicit_hash_key": r.explicit_hash_key,
        "error_code": code,
        "error_message": message,
        "attempts": attempts,
    });
    put_data(&mut v, r.data);
    v
}

impl Inner {
    /// A replayed record refused at the put, into the dead-letter file.
    fn dead_letter(
        &self,
        d: &Durable,
        r: &RecordInput,
        seq: u64,
        code: &str,
        message: &str,
        attempts: usize,
    ) {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        let stream = text(&r.stream);
        let v = dead_letter_line(
            SpooledRecord {
                stream: &stream,
                seq,
                partition_key: text(&r.partition_key),
                explicit_hash_key: r.explicit_hash_key.as_ref().map(text),
                data: &r.data,
            },
            code,
            message,
            attempts,
        );
        self.dead_letter_all(d, vec![v], &[seq], &stream);
    }

    /// Writes dead-letter lines (one fsync), then marks their records done;
    /// if the file cannot be written they stay in the spool (sent again at
    /// the next start rather than lost).
    fn dead_letter_all(
        &self,
        d: &Durable,
        lines: Vec<serde_json::Value>,
        seqs: &[u64],
        stream: &str,
    ) {
        if lines.is_empty() {
            return;
        }
        match d.dead.write_json_lines(lines) {
            Ok(()) => {
                for &s in seqs {
                    d.spool.done(s);
                }
                d.dead_lettered
                    .fetch_add(seqs.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(
                error = %e,
                path = %d.dead.path().display(),
                stream,
                records = seqs.len(),
                "cannot write spooled records that failed for good to the dead-letter \
                 file; they stay in the spool and are sent again at the next start"
            ),
        }
    }

    /// Records with these spool sequence numbers landed.
    pub(crate) fn spool_done(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        if let Some(d) = self.durable.get() {
            for &s in seqs {
                d.spool.done(s);
            }
        }
    }

    /// Final failures of spooled records from their stream's actor. Those
    /// that failed for good go to the dead-letter file first (one fsync for
    /// all), then count as done in the spool. Those cut off by a stop stay
    /// in the spool for the next start: `ShuttingDown`, and during the drain
    /// any failure that retrying could have cured (a shard map that did not
    /// load, throttling); only what the service refused is final then.
    pub(crate) fn fail_spooled(&self, stream: &str, failed: Vec<(UserRecord, ErrorCode, String)>) {
        let draining = self.draining.load(Ordering::Acquire);
        if let Some(d) = self.durable.get() {
            let mut lines = Vec::new();
            let mut seqs = Vec::new();
            for (u, code, message) in &failed {
                let Some(seq) = u.spool_seq() else { continue };
                let cut_off = *code == ErrorCode::ShuttingDown
                    || (draining && code.class() != crate::retry::ErrorClass::Fatal);
                if cut_off {
                    continue;
                }
                lines.push(dead_letter_line(
                    SpooledRecord {
                        stream,
                        seq,
                        partition_key: u.partition_key.to_string_lossless(),
                        explicit_hash_key: u.explicit_hash_key.clone(),
                        data: &u.data,
                    },
                    code.as_str(),
                    message,
                    u.attempts.len(),
                ));
                seqs.push(seq);
            }
            self.dead_letter_all(d, lines, &seqs, stream);
        }
        for (u, code, message) in failed {
            self.fail(u, code, message);
        }
    }
}

/// The spool a put of this kind writes to or names, if any.
pub(super) fn inner_durable(inner: &Inner, how: SpoolUse) -> Option<&Durable> {
    match how {
        SpoolUse::Skip => None,
        SpoolUse::Append | SpoolUse::Replayed => inner.durable.get(),
    }
}

impl Producer {
    /// Writes a chunk of a `disk` stream's records (their budget taken) to
    /// the spool and gives each its sequence number. None when they were
    /// refused instead: each got its result and gave its budget back.
    pub(super) async fn spool_chunk(
        &self,
        d: &Durable,
        stream: &str,
        chunk: &mut Vec<UserRecord>,
        busy_if_full: bool,
    ) -> Option<Ticket> {
        let inner = &self.inner;
        let arrival_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let entries: Vec<EntryRef<'_>> = chunk
            .iter()
            .map(|u| EntryRef {
                stream,
                partition_key: u.partition_key.as_bytes(),
                explicit_hash_key: u.explicit_hash_key.as_deref().map(str::as_bytes),
                data: &u.data,
                // Spooled as it is sent: compressed already if asked.
                compression: crate::ipc::Compression::None as u8,
                arrival_unix_ms,
            })
            .collect();
        let written = tokio::select! {
            r = d.spool.append(&entries, !busy_if_full) => Some(r),
            // A put waiting for room in the spool when the drain begins
            // stops waiting: its records were never accepted.
            _ = inner.drain_started.cancelled() => None,
        };
        drop(entries);
        let (code, message) = match written {
            Some(Ok(t)) => {
                for (i, u) in chunk.iter_mut().enumerate() {
                    u.set_spool_seq(t.first_seq + i as u64);
                }
                return Some(t);
            }
            Some(Err(e @ SpoolError::Full { .. })) => (
                ErrorCode::Busy,
                format!("kpld's spool is full ({e}; max_spool_bytes); retry later"),
            ),
            Some(Err(e)) => (
                ErrorCode::SpoolFailed,
                format!("kpld could not write the record to its spool: {e}"),
            ),
            None => {
                let bytes: usize = chunk.iter().map(|u| u.cost as usize).sum();
                inner.release(chunk.len(), bytes);
                for u in chunk.drain(..) {
                    inner.refused_at_shutdown.fetch_add(1, Ordering::AcqRel);
                    let mut r = failure(
                        u.id,
                        ErrorCode::ShuttingDown,
                        "kpld is shutting down and accepts no new records".into(),
                        Vec::new(),
                    );
                    r.refused = true;
                    u.origin.sink.deliver(u.origin.tag, r);
                }
                return None;
            }
        };
        if code == ErrorCode::SpoolFailed {
            tracing::error!(stream, records = chunk.len(), "{message}");
        }
        for u in chunk.drain(..) {
            inner.refuse(u, code.clone(), message.clone());
        }
        None
    }
}

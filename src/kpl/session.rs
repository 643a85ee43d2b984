//! One parent's session: the loop that reads the parent's messages and acts
//! on them, the [`ResultSink`] that turns kpld's results into
//! `PutRecordResult`s, and the writer of the answer pipe.
//!
//! - `PutRecord`s are handed to [`Producer::put`] in runs (the frames
//!   already read, up to [`MAX_RUN`]); `put` waits while kpld's budget is
//!   full, and so the loop stops reading the pipe: the parent's writes block
//!   (backpressure), nothing queues without bound.
//! - Every record gets exactly one `PutRecordResult` with `source_id` = its
//!   `PutRecord`'s `id`, every field the Java side requires set.
//! - `Flush` (all streams or one), `SetCredentials` (swapped live),
//!   `StreamMetadata` (noted) get no answer; `MetricsRequest` always does.
//! - Answers are queued to one writer task (bounded by the records
//!   outstanding) that writes what is queued in one call.

use super::metrics_answer::{self, Window};
use super::pipes::{self, FrameError};
use super::wire::{self, message::Body, Message};
use crate::ipc::RecordResult;
use crate::kinesis::SwappableCredentials;
use crate::producer::{Landed, Landing, Producer, RecordInput, ResultSink};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Most `PutRecord`s handed to one `put`.
pub const MAX_RUN: usize = 500;

/// What the writer is given: an answer, or the end (after the drain).
pub enum Out {
    Message(Message),
    End,
}

/// Where results go: the writer's queue. Reply ids are kpld's own counter
/// (the Java side only needs one present).
pub struct PipeSink {
    tx: mpsc::UnboundedSender<Out>,
    next_id: AtomicU64,
}

impl PipeSink {
    pub fn new(tx: mpsc::UnboundedSender<Out>) -> Arc<PipeSink> {
        Arc::new(PipeSink {
            tx,
            next_id: AtomicU64::new(1),
        })
    }

    /// Queues an answer to request `source_id`.
    pub fn reply(&self, source_id: u64, body: Body) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The writer outlives every record (it ends after the drain).
        let _ = self.tx.send(Out::Message(Message {
            id,
            source_id: Some(source_id),
            body: Some(body),
        }));
    }
}

impl ResultSink for PipeSink {
    fn deliver(&self, _tag: u64, r: RecordResult) {
        let id = r.id;
        self.reply(id, Body::PutRecordResult(put_record_result(r)));
    }

    fn landed(&self, _tag: u64, landing: &Arc<Landing>, records: Vec<Landed>) {
        for l in records {
            let r = l.into_result(landing);
            self.deliver(0, r);
        }
    }
}

fn ms(v: u64) -> u32 {
    v.min(u32::MAX as u64) as u32
}

/// kpld's result as the KPL carries it (pure). A failure before any
/// attempt (an invalid record, kpld shutting down) gets one failed attempt
/// carrying the error: the Java side shows a failure's code and message
/// only through its attempts.
pub fn put_record_result(r: RecordResult) -> wire::PutRecordResult {
    let mut attempts: Vec<wire::Attempt> = r
        .attempts
        .into_iter()
        .map(|a| wire::Attempt {
            delay: ms(a.delay_ms),
            duration: ms(a.duration_ms),
            success: a.success,
            error_code: (!a.success).then_some(a.error_code),
            error_message: (!a.success).then_some(a.error_message),
        })
        .collect();
    if !r.success && attempts.is_empty() {
        attempts.push(wire::Attempt {
            delay: 0,
            duration: 0,
            success: false,
            error_code: Some(r.error_code.clone()),
            error_message: Some(r.error_message.clone()),
        });
    }
    wire::PutRecordResult {
        attempts,
        success: r.success,
        shard_id: r.success.then_some(r.shard_id),
        sequence_number: r.success.then_some(r.sequence_number),
    }
}

/// Writes what is queued, in one call per round, until [`Out::End`]. A
/// parent that went away (EPIPE) is logged once; answers are then dropped.
pub async fn write_loop(
    mut out: tokio::net::unix::pipe::Sender,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut broken = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut end = false;
        while let Some(o) = next.take().or_else(|| rx.try_recv().ok()) {
            match o {
                Out::Message(m) => pipes::put_frame(&mut buf, &m),
                Out::End => {
                    end = true;
                    break;
                }
            }
            if buf.len() >= 256 * 1024 {
                break;
            }
        }
        if !broken && !buf.is_empty() {
            if let Err(e) = out.write_all(&buf).await {
                tracing::warn!(error = %e, "the parent stopped reading answers; the rest are dropped");
                broken = true;
            }
        }
        buf.clear();
        if buf.capacity() > 1024 * 1024 {
            buf = BytesMut::with_capacity(64 * 1024);
        }
        if end {
            break;
        }
    }
    let _ = out.flush().await;
}

/// What the session needs besides the pipe.
pub struct Session {
    pub producer: Producer,
    pub sink: Arc<PipeSink>,
    pub kinesis_credentials: SwappableCredentials,
    pub metrics_credentials: SwappableCredentials,
    pub window: Arc<Mutex<Window>>,
    pub started: Instant,
}

/// Why the loop ended.
#[derive(Debug)]
pub enum End {
    /// The parent closed its end (it exited, or it destroyed the child).
    Eof,
    /// A frame that is not a KPL message, or a read error.
    Bad(FrameError),
}

impl Session {
    /// Reads and handles messages until the parent closes the pipe or
    /// sends something that is not a frame.
    pub async fn read_loop<R: AsyncRead + Unpin>(&self, pipe: R) -> End {
        let mut r = BufReader::with_capacity(256 * 1024, pipe);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut run: Vec<RecordInput> = Vec::new();
        loop {
            // A full frame already buffered is read without waiting; the
            // run is handed over before the loop would wait for more.
            if !run.is_empty() && (run.len() >= MAX_RUN || !frame_buffered(r.buffer())) {
                self.put(std::mem::take(&mut run)).await;
            }
            let m = match pipes::read_frame(&mut r, &mut buf).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.put(run).await;
                    return End::Eof;
                }
                Err(e) => {
                    self.put(run).await;
                    return End::Bad(e);
                }
            };
            match m.body {
                Some(Body::PutRecord(p)) => run.push(RecordInput {
                    id: m.id,
                    stream: Bytes::from(p.stream_name),
                    partition_key: Bytes::from(p.partition_key),
                    explicit_hash_key: p.explicit_hash_key.map(Bytes::from),
                    data: p.data,
                    compression: None,
                }),
                other => {
                    // Records before a flush are in their buffers before it.
                    self.put(std::mem::take(&mut run)).await;
                    self.handle(m.id, other);
                }
            }
        }
    }

    async fn put(&self, run: Vec<RecordInput>) {
        if run.is_empty() {
            return;
        }
        self.producer.put(run, 0, self.sink.clone(), false).await;
    }

    fn handle(&self, id: u64, body: Option<Body>) {
        match body {
            Some(Body::Flush(f)) => match f.stream_name.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => self.producer.flush_stream(s),
                None => self.producer.flush(),
            },
            Some(Body::SetCredentials(c)) => {
                let target = if c.for_metrics == Some(true) {
                    &self.metrics_credentials
                } else {
                    &self.kinesis_credentials
                };
                let k = c.credentials;
                target.set(
                    &k.access_key_id,
                    &k.secret_access_key,
                    k.session_token.as_deref(),
                );
                tracing::debug!(
                    for_metrics = c.for_metrics == Some(true),
                    "credentials replaced"
                );
            }
            Some(Body::MetricsRequest(req)) => {
                let now = Instant::now();
                let before = metrics_answer::window_of(&req)
                    .zip(metrics_answer::wanted(&req))
                    .and_then(|(secs, metric)| {
                        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
                        w.want(metric, now);
                        w.at_least(now, secs, metric)
                    });
                let (totals, under_way) =
                    metrics_answer::snapshot(self.producer.metrics(), None, false);
                let before = before.map(|mut b| {
                    metrics_answer::merge_into(&mut b.extremes, &under_way);
                    b
                });
                let uptime = now.saturating_duration_since(self.started).as_secs();
                let resp = metrics_answer::answer(&req, &totals, before.as_ref(), uptime);
                self.sink.reply(id, Body::MetricsResponse(resp));
            }
            Some(Body::StreamMetadata(s)) => {
                tracing::debug!(stream = %s.stream_name, stream_id = ?s.stream_id, "stream metadata (not used)");
            }
            Some(Body::Configuration(_)) => {
                tracing::warn!(
                    "a Configuration message after the start is ignored (the -c one applies)"
                );
            }
            Some(Body::PutRecord(_)) => unreachable!("runs take the records"),
            Some(Body::PutRecordResult(_)) | Some(Body::MetricsResponse(_)) => {
                tracing::warn!(id, "the parent sent an answer message; ignored");
            }
            None => tracing::warn!(id, "a message with no known body; ignored"),
        }
    }
}

/// True when `buffered` starts with a whole frame (length and body), so
/// reading it will not wait.
fn frame_buffered(buffered: &[u8]) -> bool {
    if buffered.len() < 4 {
        return false;
    }
    let len = u32::from_be_bytes([buffered[0], buffered[1], buffered[2], buffered[3]]) as usize;
    buffered.len() >= 4 + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::Attempt;

    #[test]
    fn a_success_carries_shard_sequence_and_its_attempts() {
        let r = RecordResult {
            id: 7,
            success: true,
            shard_id: "shardId-000000000001".into(),
            sequence_number: "495".into(),
            attempts: vec![
                Attempt {
                    success: false,
                    error_code: "ProvisionedThroughputExceededException".into(),
                    error_message: "slow down".into(),
                    delay_ms: 100,
                    duration_ms: 5,
                },
                Attempt {
                    success: true,
                    delay_ms: 40,
                    duration_ms: 3,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let p = put_record_result(r);
        assert!(p.success);
        assert_eq!(p.shard_id.as_deref(), Some("shardId-000000000001"));
        assert_eq!(p.sequence_number.as_deref(), Some("495"));
        assert_eq!(p.attempts.len(), 2);
        assert_eq!(p.attempts[0].delay, 100);
        assert_eq!(
            p.attempts[0].error_code.as_deref(),
            Some("ProvisionedThroughputExceededException")
        );
        assert_eq!(p.attempts[1].error_code, None);
        assert_eq!(p.attempts[1].duration, 3);
    }

    #[test]
    fn a_failure_without_attempts_gets_one_with_the_error() {
        let r = RecordResult {
            id: 3,
            success: false,
            error_code: "InvalidPartitionKey".into(),
            error_message: "empty".into(),
            ..Default::default()
        };
        let p = put_record_result(r);
        assert!(!p.success);
        assert_eq!(p.shard_id, None);
        assert_eq!(p.attempts.len(), 1);
        assert_eq!(
            p.attempts[0].error_code.as_deref(),
            Some("InvalidPartitionKey")
        );
        assert!(!p.attempts[0].success);
    }

    #[test]
    fn long_delays_saturate() {
        assert_eq!(ms(u64::MAX), u32::MAX);
    }

    #[test]
    fn buffered_frames_are_recognised() {
        assert!(!frame_buffered(&[0, 0, 0]));
        assert!(!frame_buffered(&[0, 0, 0, 2, 1]));
        assert!(frame_buffered(&[0, 0, 0, 2, 1, 1]));
    }
}

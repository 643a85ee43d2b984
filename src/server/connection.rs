//! One connection: the reader loop (frames in, records into the [`Producer`]),
//! the events it and the producer send the writer, and what the writer keeps
//! for them (flush epochs, and the [`Backlog`]: what is owed to the client
//! and not yet written, which bounds what a client that does not read can
//! make the daemon hold).

use super::results::{error_frame, write_loop};
use super::PROTOCOL_VERSION;
use crate::intake::{Frame, FrameError, FrameReader, Intake};
use crate::ipc::{
    client_message, server_message, ClientMessage, HelloReply, RecordResult, ServerMessage,
    StatsReply,
};
use crate::producer::{IdRuns, Landed, Landing, Producer, RecordInput, ResultSink};
use crate::spool::Ticket;
use prost::Message;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// What the reader and the producer tell the writer.
pub(super) enum ConnEvent {
    /// `n` records entered the current flush epoch.
    Accepted(u64),
    /// A flush request: answer once every earlier record is final.
    Flush(u64),
    Result(u64, RecordResult),
    /// Successes of one put's records in one Kinesis record.
    Landed(u64, Arc<Landing>, Vec<Landed>),
    Send(ServerMessage),
}

/// What one connection owes its client and has not yet written: a result
/// for every record accepted from it (from the moment it is accepted, so in
/// flight too), and the replies (stats, flushes, errors) queued for it.
/// Counted in results; a reply counts as [`reply_weight`].
///
/// A client that sends but never reads would otherwise make the daemon hold
/// its results without bound: results are outside the producer's budget
/// (a record gives its budget back when its result is produced, not when it
/// is written), and one frame can carry hundreds of thousands of records.
/// So the reader takes a frame's records only as far as the cap allows
/// (`max_client_pending_results`), the rest once results are written, and
/// reads no next frame while the cap is reached: backpressure on that
/// connection alone; no result is ever dropped. Counting records from their
/// acceptance is what makes the cap hold within a frame: their results come
/// after the frame has been taken, when counting them would be too late.
pub(super) struct Backlog {
    owed: AtomicUsize,
    cap: usize,
    writer_gone: AtomicBool,
    changed: Notify,
}

/// What a reply counts for in the [`Backlog`]: about what it costs queued,
/// in results (about 64 bytes each). A stats reply is a few KiB, so a
/// client that asks for stats and never reads meets the cap as soon.
pub(super) fn reply_weight(m: &ServerMessage) -> usize {
    1 + m.encoded_len() / 64
}

impl Backlog {
    pub(super) fn new(cap: u64) -> Backlog {
        Backlog {
            owed: AtomicUsize::new(0),
            cap: usize::try_from(cap).unwrap_or(usize::MAX),
            writer_gone: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Waits until the connection owes less than the cap (or its writer is
    /// gone: a vanished client reads nothing, but what it sent is still
    /// taken, and every record still gets its result).
    async fn wait_for_room(&self) {
        loop {
            let notified = self.changed.notified();
            if self.owed.load(Ordering::Acquire) < self.cap
                || self.writer_gone.load(Ordering::Acquire)
            {
                return;
            }
            notified.await;
        }
    }

    /// How many more results may be owed now; with the writer gone, any.
    fn room(&self) -> usize {
        if self.writer_gone.load(Ordering::Acquire) {
            return usize::MAX;
        }
        self.cap.saturating_sub(self.owed.load(Ordering::Acquire))
    }

    /// `n` more results (or reply weights) are owed.
    fn owe(&self, n: usize) {
        self.owed.fetch_add(n, Ordering::AcqRel);
    }

    /// `n` results (or reply weights) were written.
    pub(super) fn written(&self, n: usize) {
        if n > 0 && self.owed.fetch_sub(n, Ordering::AcqRel) >= self.cap {
            self.changed.notify_waiters();
        }
    }

    pub(super) fn gone(&self) {
        self.writer_gone.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// Where the producer sends a connection's results. They are already owed
/// in the [`Backlog`] (counted when their records were accepted).
struct ConnSink {
    tx: mpsc::UnboundedSender<ConnEvent>,
}

impl ResultSink for ConnSink {
    fn deliver(&self, tag: u64, result: RecordResult) {
        // A vanished client no longer reads; its records still count as done.
        let _ = self.tx.send(ConnEvent::Result(tag, result));
    }

    fn landed(&self, tag: u64, landing: &Arc<Landing>, records: Vec<Landed>) {
        let _ = self
            .tx
            .send(ConnEvent::Landed(tag, landing.clone(), records));
    }
}

/// Tells the client of records of a `disk` stream once the spool has them
/// durable (`spool_fsync`), without holding up the reading of its next
/// frames. One task per connection, started with its first spooled frame:
/// durability is a watermark, so it waits for the newest ticket queued and
/// answers every frame queued by then in one `Accepted` (about one per
/// group commit instead of one per frame).
fn durable_waiter(
    spool: crate::spool::Spool,
    tx: mpsc::UnboundedSender<ConnEvent>,
    backlog: Arc<Backlog>,
) -> mpsc::UnboundedSender<(IdRuns, Ticket)> {
    let (queue, mut rx) = mpsc::unbounded_channel::<(IdRuns, Ticket)>();
    tokio::spawn(async move {
        while let Some((mut ids, mut newest)) = rx.recv().await {
            while let Ok((more, t)) = rx.try_recv() {
                ids.append(more);
                newest = t;
            }
            match spool.durable(&newest).await {
                Ok(()) => {
                    let m = accepted_frame(ids);
                    backlog.owe(reply_weight(&m));
                    let _ = tx.send(ConnEvent::Send(m));
                }
                // They are in the pipeline all the same; their results (a
                // success says they were accepted) still come.
                Err(e) => tracing::error!(
                    error = %e,
                    records = ids.len(),
                    "the spool could not sync records it had written; their clients get no \
                     Accepted for them, only their results"
                ),
            }
        }
    });
    queue
}

fn accepted_frame(ids: IdRuns) -> ServerMessage {
    ServerMessage {
        msg: Some(server_message::Msg::Accepted(ids.into_message())),
    }
}

fn unsupported_compression(id: u64, value: i32) -> RecordResult {
    RecordResult {
        id,
        success: false,
        refused: true,
        error_code: crate::error_code::ErrorCode::UnsupportedCompression
            .as_str()
            .into(),
        error_message: format!(
            "compression value {value} is not known to this kpld (1 none, 2 gzip, 3 zlib)"
        ),
        ..Default::default()
    }
}

pub async fn handle_connection(
    stream: UnixStream,
    producer: Producer,
    intake: Intake,
    stop_reading: CancellationToken,
) {
    let (rd, wr) = stream.into_split();
    let mut frames = FrameReader::new(rd, producer.config().max_frame_size);
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::new(producer.config().max_client_pending_results));
    let writer = tokio::spawn(write_loop(wr, rx, backlog.clone()));
    read_loop(
        &mut frames,
        &intake,
        &tx,
        &producer,
        &stop_reading,
        &backlog,
    )
    .await;
    drop(tx);
    let _ = writer.await;
}

async fn read_loop(
    frames: &mut FrameReader<tokio::net::unix::OwnedReadHalf>,
    intake: &Intake,
    tx: &mpsc::UnboundedSender<ConnEvent>,
    producer: &Producer,
    stop_reading: &CancellationToken,
    backlog: &Arc<Backlog>,
) {
    let sink: Arc<dyn ResultSink> = Arc::new(ConnSink { tx: tx.clone() });
    let reply = |m: ServerMessage| {
        backlog.owe(reply_weight(&m));
        let _ = tx.send(ConnEvent::Send(m));
    };
    let fatal = |code: &str, message: String| reply(error_frame(code, message, true));
    let mut hello_done = false;
    // The client asked for `Accepted` messages.
    let mut want_accepted = false;
    let mut epoch: u64 = 0;
    // Spooled frames waiting for their `Accepted`, once there is one.
    let mut waiter: Option<mpsc::UnboundedSender<(IdRuns, Ticket)>> = None;
    loop {
        let frame = tokio::select! {
            _ = stop_reading.cancelled() => {
                if hello_done {
                    reply(error_frame(
                        crate::error_code::ErrorCode::ShuttingDown.as_str(),
                        "kpld is shutting down and reads no more requests".into(),
                        true,
                    ));
                }
                return;
            }
            f = async {
                // A client that does not read its results is not read
                // either, before its next frame takes any of the intake.
                backlog.wait_for_room().await;
                frames.next(intake).await
            } => f,
        };
        // Held until the frame's records are in the producer's budget.
        let (bytes, mut charge) = match frame {
            Ok(None) => return,
            Ok(Some(Frame { body, charge })) => (body, Some(charge)),
            Err(e @ FrameError::TooLarge { .. }) => return fatal("FrameTooLarge", e.to_string()),
            Err(e @ FrameError::Stalled { .. }) => return fatal("FrameStalled", e.to_string()),
            Err(FrameError::Io(_)) => return,
        };
        let msg = match ClientMessage::decode(bytes) {
            Ok(ClientMessage { msg: Some(m) }) => m,
            Ok(ClientMessage { msg: None }) => {
                return fatal(
                    "MalformedFrame",
                    "the frame holds no message (empty ClientMessage)".into(),
                )
            }
            Err(e) => {
                return fatal(
                    "MalformedFrame",
                    format!("the frame is not a valid ClientMessage: {e}"),
                )
            }
        };
        if !hello_done {
            match msg {
                client_message::Msg::Hello(h) if h.protocol_version == PROTOCOL_VERSION => {
                    hello_done = true;
                    want_accepted = h.want_accepted;
                    tracing::debug!(client = %h.client_name, want_accepted, "client connected");
                    let cfg = producer.config();
                    reply(ServerMessage {
                        msg: Some(server_message::Msg::Hello(HelloReply {
                            protocol_version: PROTOCOL_VERSION,
                            server_version: format!("kpld {}", env!("CARGO_PKG_VERSION")),
                            max_frame_size: cfg.max_frame_size,
                            max_record_size: cfg.max_record_size,
                        })),
                    });
                    continue;
                }
                client_message::Msg::Hello(h) => {
                    return fatal(
                        "ProtocolVersion",
                        format!(
                            "protocol version {} is not supported; this kpld speaks version {PROTOCOL_VERSION}",
                            h.protocol_version
                        ),
                    )
                }
                _ => {
                    return fatal(
                        "UnexpectedMessage",
                        "the first frame must be a Hello with protocol_version 1".into(),
                    )
                }
            }
        }
        match msg {
            client_message::Msg::Put(req) => {
                let n = req.records.len();
                if n == 0 {
                    continue;
                }
                let _ = tx.send(ConnEvent::Accepted(n as u64));
                let mut records = req.records.into_iter();
                while records.len() > 0 {
                    // The frame is taken as far as the backlog allows: past
                    // it, the rest waits until the client reads (nearly
                    // always the whole frame goes at once). Once kpld shuts
                    // down, the rest is taken at once, to get its
                    // `ShuttingDown` results.
                    if !stop_reading.is_cancelled() && backlog.room() == 0 {
                        // The wait is this client's doing (it does not
                        // read): the rest of its frame no longer holds
                        // the intake pool the other clients' frames need.
                        // It stays bounded: one frame per connection.
                        drop(charge.take());
                        tokio::select! {
                            _ = stop_reading.cancelled() => {}
                            _ = backlog.wait_for_room() => {}
                        }
                    }
                    let take = if stop_reading.is_cancelled() {
                        records.len()
                    } else {
                        backlog.room().clamp(1, records.len())
                    };
                    backlog.owe(take);
                    let part: Vec<RecordInput> = records
                        .by_ref()
                        .take(take)
                        .filter_map(|r| record_input(r, &*sink, epoch))
                        .collect();
                    // Waits while the buffers are full: the socket stops being
                    // read and the client blocks (backpressure).
                    if !want_accepted {
                        producer
                            .put(part, epoch, sink.clone(), req.busy_if_full)
                            .await;
                        continue;
                    }
                    let acceptance = producer
                        .put_accepting(part, epoch, sink.clone(), req.busy_if_full)
                        .await;
                    if !acceptance.now.is_empty() {
                        reply(accepted_frame(acceptance.now));
                    }
                    for (ids, ticket) in acceptance.spooled {
                        let Some(spool) = producer.spool() else { break };
                        let waiter = waiter.get_or_insert_with(|| {
                            durable_waiter(spool.clone(), tx.clone(), backlog.clone())
                        });
                        let _ = waiter.send((ids, ticket));
                    }
                }
            }
            client_message::Msg::Flush(f) => {
                // Counted as one result until the writer takes it.
                backlog.owe(1);
                let _ = tx.send(ConnEvent::Flush(f.id));
                epoch += 1;
                producer.flush();
            }
            client_message::Msg::Stats(s) => {
                let json = producer.stats_json().to_string();
                reply(ServerMessage {
                    msg: Some(server_message::Msg::Stats(StatsReply { id: s.id, json })),
                });
            }
            client_message::Msg::Hello(_) => {
                reply(error_frame(
                    "UnexpectedMessage",
                    "Hello was already received on this connection; ignored".into(),
                    false,
                ));
            }
        }
    }
}

/// A record as the producer takes it; a compression value this kpld does
/// not know gets its error result here instead.
fn record_input(r: crate::ipc::Record, sink: &dyn ResultSink, epoch: u64) -> Option<RecordInput> {
    let compression = match crate::ipc::Compression::try_from(r.compression) {
        Ok(crate::ipc::Compression::Default) => None,
        Ok(crate::ipc::Compression::None) => Some(crate::config::Compression::None),
        Ok(crate::ipc::Compression::Gzip) => Some(crate::config::Compression::Gzip),
        Ok(crate::ipc::Compression::Zlib) => Some(crate::config::Compression::Zlib),
        Err(_) => {
            // Sending it uncompressed would leave its consumer guessing:
            // refuse it.
            sink.deliver(epoch, unsupported_compression(r.id, r.compression));
            return None;
        }
    };
    Some(RecordInput {
        id: r.id,
        stream: r.stream,
        partition_key: r.partition_key,
        explicit_hash_key: r.explicit_hash_key,
        data: r.data,
        compression,
    })
}

/// Tracks which flush requests can be answered: records are counted per
/// epoch (the span between two flushes) and a flush is answered when no
/// record of its epoch or an earlier one is outstanding.
#[derive(Default)]
pub(super) struct FlushTracker {
    epoch: u64,
    counts: VecDeque<(u64, u64)>,
    waiting: VecDeque<(u64, u64)>,
}

impl FlushTracker {
    pub(super) fn accepted(&mut self, n: u64) {
        match self.counts.back_mut() {
            Some((e, c)) if *e == self.epoch => *c += n,
            _ => self.counts.push_back((self.epoch, n)),
        }
    }

    pub(super) fn flush(&mut self, id: u64) {
        self.waiting.push_back((self.epoch, id));
        self.epoch += 1;
    }

    /// `n` records of `epoch` are final.
    pub(super) fn finished(&mut self, epoch: u64, n: u64) {
        if let Some((_, c)) = self.counts.iter_mut().find(|(e, _)| *e == epoch) {
            *c = c.saturating_sub(n);
        }
    }

    /// Flush ids that can be answered now.
    pub(super) fn answerable(&mut self) -> Vec<u64> {
        while self.counts.front().is_some_and(|(_, c)| *c == 0) {
            self.counts.pop_front();
        }
        let oldest_pending = self.counts.front().map(|(e, _)| *e);
        let mut out = Vec::new();
        while let Some(&(e, id)) = self.waiting.front() {
            if oldest_pending.is_some_and(|p| p <= e) {
                break;
            }
            self.waiting.pop_front();
            out.push(id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::FlushTracker;

    #[test]
    fn flush_waits_for_every_earlier_record() {
        let mut t = FlushTracker::default();
        t.accepted(2);
        t.flush(7);
        t.accepted(1);
        t.flush(8);
        assert!(t.answerable().is_empty());
        t.finished(1, 1); // the record after flush 7
        assert!(t.answerable().is_empty());
        t.finished(0, 1);
        assert!(t.answerable().is_empty());
        t.finished(0, 1);
        assert_eq!(t.answerable(), vec![7, 8]);
    }

    #[test]
    fn flush_with_nothing_outstanding_is_answered_at_once() {
        let mut t = FlushTracker::default();
        t.flush(1);
        assert_eq!(t.answerable(), vec![1]);
    }

    #[test]
    fn later_records_do_not_hold_an_earlier_flush() {
        let mut t = FlushTracker::default();
        t.accepted(1);
        t.flush(1);
        t.accepted(5);
        t.finished(0, 1);
        assert_eq!(t.answerable(), vec![1]);
    }
}

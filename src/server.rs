//! The Unix socket server: accept loop and one handler per connection.
//!
//! Each connection has a reader (frames in, records into the [`Producer`])
//! and a writer task (results, flush replies and errors out). Both meet in
//! one unbounded channel of [`ConnEvent`]s, whose memory is bounded by the
//! producer's record budget. A connection's faults (bad frame, oversized
//! length, vanished client) end that connection alone; records it already
//! handed over are still delivered, and their results are still written
//! while the client listens.
//!
//! Every accepted connection first passes the [`AccessPolicy`]
//! (`allowed_uids` / `allowed_gids`, SO_PEERCRED); a refused one gets a fatal
//! `AccessDenied` error frame naming its uid, and a warning is logged.

use crate::access::{AccessPolicy, Denied, SocketFile, SocketPerms};
use crate::intake::{Frame, FrameError, FrameReader, Intake};
use crate::ipc::{
    client_message, server_message, ClientMessage, Error as ErrorFrame, FlushReply, HelloReply,
    RecordResult, ServerMessage, StatsReply,
};
use crate::producer::{Landed, Landing, Producer, RecordInput, ResultSink};
use bytes::BytesMut;
use futures_util::StreamExt;
use prost::Message;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const PROTOCOL_VERSION: u32 = 1;
/// Results are packed into frames of about this size, and written as soon
/// as one is full. Small, because every connection keeps buffers of about
/// twice this: 256 KiB frames written up to 64 at a time cost about 100 MiB
/// of RSS over 256 busy connections.
const RESULTS_FRAME_TARGET: usize = 64 * 1024;

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another process is already accepting connections on {0}; stop it or choose another socket_path")]
    InUse(String),
    #[error("cannot create the socket directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} exists and is not a socket; remove it or choose another socket_path")]
    NotASocket(String),
    #[error(
        "cannot tell whether another process uses the socket {path} ({source}); remove the \
         file if no kpld runs, or fix its permissions"
    )]
    Probe {
        path: String,
        source: std::io::Error,
    },
}

/// Binds the socket with the configured mode and group, replacing a stale
/// socket file left by a crashed daemon but never one that another live
/// process answers on, nor a file that is not a socket, nor one whose state
/// cannot be told: only "connection refused" means stale.
pub async fn bind(
    path: &Path,
    perms: &SocketPerms,
) -> Result<(UnixListener, SocketFile), BindError> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display().to_string();
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| BindError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(shown));
        }
        match UnixStream::connect(path).await {
            Ok(_) => return Err(BindError::InUse(shown)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %shown, "replacing a stale socket file (nothing accepts on it)");
                let _ = std::fs::remove_file(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BindError::Probe {
                    path: shown,
                    source,
                })
            }
        }
    }
    let (listener, file) =
        crate::access::bind_with_perms(path, perms).map_err(|source| BindError::Bind {
            path: shown.clone(),
            source,
        })?;
    let listener = from_std(listener).map_err(|source| BindError::Bind {
        path: shown,
        source,
    })?;
    Ok((listener, file))
}

/// A listener from std (e.g. the socket systemd passed) for tokio.
pub fn from_std(listener: std::os::unix::net::UnixListener) -> std::io::Result<UnixListener> {
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Accepts connections until `stop` is cancelled. Connection tasks are
/// tracked by `tracker`; they end by themselves once `stop_reading` is
/// cancelled and their records have results.
pub async fn serve(
    listener: UnixListener,
    producer: Producer,
    policy: Arc<arc_swap::ArcSwap<AccessPolicy>>,
    stop: CancellationToken,
    stop_reading: CancellationToken,
    tracker: TaskTracker,
) {
    let intake = Intake::new(producer.config().max_frame_size);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let producer = producer.clone();
                let stop_reading = stop_reading.clone();
                let policy = policy.load_full();
                let intake = intake.clone();
                tracker.spawn(async move {
                    match policy.check_stream(&stream) {
                        Ok(_) => handle_connection(stream, producer, intake, stop_reading).await,
                        Err(denied) => refuse(stream, denied).await,
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// What the reader and the producer tell the writer.
enum ConnEvent {
    /// `n` records entered the current flush epoch.
    Accepted(u64),
    /// A flush request: answer once every earlier record is final.
    Flush(u64),
    Result(u64, RecordResult),
    /// Successes of one put's records in one Kinesis record.
    Landed(u64, Arc<Landing>, Vec<Landed>),
    Send(ServerMessage),
}

/// Results waiting to be written to one client. A client that sends but
/// never reads would otherwise make the daemon hold its results without
/// bound: past [`MAX_UNWRITTEN_RESULTS`] the reader stops taking its requests.
#[derive(Default)]
struct Backlog {
    unwritten: AtomicUsize,
    writer_gone: AtomicBool,
    changed: Notify,
}

const MAX_UNWRITTEN_RESULTS: usize = 16 * 1024;

impl Backlog {
    async fn wait_for_room(&self) {
        loop {
            let notified = self.changed.notified();
            if self.unwritten.load(Ordering::Acquire) < MAX_UNWRITTEN_RESULTS
                || self.writer_gone.load(Ordering::Acquire)
            {
                return;
            }
            notified.await;
        }
    }

    fn written(&self, n: usize) {
        if n > 0 && self.unwritten.fetch_sub(n, Ordering::AcqRel) >= MAX_UNWRITTEN_RESULTS {
            self.changed.notify_waiters();
        }
    }

    fn gone(&self) {
        self.writer_gone.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

struct ConnSink {
    tx: mpsc::UnboundedSender<ConnEvent>,
    backlog: Arc<Backlog>,
}

impl ResultSink for ConnSink {
    fn deliver(&self, tag: u64, result: RecordResult) {
        self.backlog.unwritten.fetch_add(1, Ordering::AcqRel);
        // A vanished client no longer reads; its records still count as done.
        let _ = self.tx.send(ConnEvent::Result(tag, result));
    }

    fn landed(&self, tag: u64, landing: &Arc<Landing>, records: Vec<Landed>) {
        self.backlog
            .unwritten
            .fetch_add(records.len(), Ordering::AcqRel);
        let _ = self
            .tx
            .send(ConnEvent::Landed(tag, landing.clone(), records));
    }
}

fn unsupported_compression(id: u64, value: i32) -> RecordResult {
    RecordResult {
        id,
        success: false,
        error_code: crate::error_code::ErrorCode::UnsupportedCompression
            .as_str()
            .into(),
        error_message: format!(
            "compression value {value} is not known to this kpld (1 none, 2 gzip, 3 zlib)"
        ),
        ..Default::default()
    }
}

fn error_frame(code: &str, message: String, fatal: bool) -> ServerMessage {
    ServerMessage {
        msg: Some(server_message::Msg::Error(ErrorFrame {
            code: code.into(),
            message,
            fatal,
        })),
    }
}

/// Answers a connection the access policy refused: reads the client's
/// first frame (its Hello, so the client is not cut off mid-write), sends a
/// fatal `AccessDenied` error naming the uid, and closes once the client has
/// closed too (so it reads the frame, not a reset). Bounded in time.
async fn refuse(stream: UnixStream, denied: Denied) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tracing::warn!(
        uid = denied.peer.uid,
        gid = denied.peer.gid,
        pid = denied.peer.pid,
        "connection refused: {denied}"
    );
    let bound = std::time::Duration::from_secs(5);
    let (rd, mut wr) = stream.into_split();
    let mut first = FramedRead::new(
        rd,
        LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_length(4)
            .max_frame_length(64 * 1024)
            .new_codec(),
    );
    let _ = tokio::time::timeout(bound, first.next()).await;
    let msg = error_frame("AccessDenied", denied.to_string(), true);
    let mut buf = Vec::with_capacity(4 + msg.encoded_len());
    buf.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
    msg.encode(&mut buf).expect("Vec grows");
    let _ = tokio::time::timeout(bound, async {
        wr.write_all(&buf).await?;
        wr.shutdown().await?;
        let mut rd = first.into_inner();
        let mut sink = [0u8; 4096];
        while rd.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
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
    let backlog = Arc::new(Backlog::default());
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
    let sink: Arc<dyn ResultSink> = Arc::new(ConnSink {
        tx: tx.clone(),
        backlog: backlog.clone(),
    });
    let fatal = |code: &str, message: String| {
        let _ = tx.send(ConnEvent::Send(error_frame(code, message, true)));
    };
    let mut hello_done = false;
    let mut epoch: u64 = 0;
    loop {
        let frame = tokio::select! {
            _ = stop_reading.cancelled() => {
                if hello_done {
                    let _ = tx.send(ConnEvent::Send(error_frame(
                        crate::error_code::ErrorCode::ShuttingDown.as_str(),
                        "kpld is shutting down and reads no more requests".into(),
                        true,
                    )));
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
        let (bytes, _charge) = match frame {
            Ok(None) => return,
            Ok(Some(Frame { body, charge })) => (body, charge),
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
                    tracing::debug!(client = %h.client_name, "client connected");
                    let cfg = producer.config();
                    let _ = tx.send(ConnEvent::Send(ServerMessage {
                        msg: Some(server_message::Msg::Hello(HelloReply {
                            protocol_version: PROTOCOL_VERSION,
                            server_version: format!("kpld {}", env!("CARGO_PKG_VERSION")),
                            max_frame_size: cfg.max_frame_size,
                            max_record_size: cfg.max_record_size,
                        })),
                    }));
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
                let n = req.records.len() as u64;
                if n == 0 {
                    continue;
                }
                let _ = tx.send(ConnEvent::Accepted(n));
                let records: Vec<RecordInput> = req
                    .records
                    .into_iter()
                    .filter_map(|r| {
                        let compression = match crate::ipc::Compression::try_from(r.compression) {
                            Ok(crate::ipc::Compression::Default) => None,
                            Ok(crate::ipc::Compression::None) => {
                                Some(crate::config::Compression::None)
                            }
                            Ok(crate::ipc::Compression::Gzip) => {
                                Some(crate::config::Compression::Gzip)
                            }
                            Ok(crate::ipc::Compression::Zlib) => {
                                Some(crate::config::Compression::Zlib)
                            }
                            Err(_) => {
                                // Sending it uncompressed would leave its
                                // consumer guessing: refuse it.
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
                    })
                    .collect();
                // Waits while the buffers are full: the socket stops being
                // read and the client blocks (backpressure).
                producer
                    .put(records, epoch, sink.clone(), req.busy_if_full)
                    .await;
            }
            client_message::Msg::Flush(f) => {
                let _ = tx.send(ConnEvent::Flush(f.id));
                epoch += 1;
                producer.flush();
            }
            client_message::Msg::Stats(s) => {
                let json = producer.stats_json().to_string();
                let _ = tx.send(ConnEvent::Send(ServerMessage {
                    msg: Some(server_message::Msg::Stats(StatsReply { id: s.id, json })),
                }));
            }
            client_message::Msg::Hello(_) => {
                let _ = tx.send(ConnEvent::Send(error_frame(
                    "UnexpectedMessage",
                    "Hello was already received on this connection; ignored".into(),
                    false,
                )));
            }
        }
    }
}

/// Tracks which flush requests can be answered: records are counted per
/// epoch (the span between two flushes) and a flush is answered when no
/// record of its epoch or an earlier one is outstanding.
#[derive(Default)]
struct FlushTracker {
    epoch: u64,
    counts: VecDeque<(u64, u64)>,
    waiting: VecDeque<(u64, u64)>,
}

impl FlushTracker {
    fn accepted(&mut self, n: u64) {
        match self.counts.back_mut() {
            Some((e, c)) if *e == self.epoch => *c += n,
            _ => self.counts.push_back((self.epoch, n)),
        }
    }

    fn flush(&mut self, id: u64) {
        self.waiting.push_back((self.epoch, id));
        self.epoch += 1;
    }

    /// `n` records of `epoch` are final.
    fn finished(&mut self, epoch: u64, n: u64) {
        if let Some((_, c)) = self.counts.iter_mut().find(|(e, _)| *e == epoch) {
            *c = c.saturating_sub(n);
        }
    }

    /// Flush ids that can be answered now.
    fn answerable(&mut self) -> Vec<u64> {
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

async fn write_loop(
    out: tokio::net::unix::OwnedWriteHalf,
    rx: mpsc::UnboundedReceiver<ConnEvent>,
    backlog: Arc<Backlog>,
) {
    write_frames(out, rx, &backlog).await;
    backlog.gone();
}

/// Encodes what is queued into one buffer (results straight into
/// `Results` frames, each result encoded once) and writes it in one call.
async fn write_frames(
    mut out: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<ConnEvent>,
    backlog: &Backlog,
) {
    use bytes::BufMut;
    use tokio::io::AsyncWriteExt;
    let mut flushes = FlushTracker::default();
    let mut buf = BytesMut::with_capacity(2 * RESULTS_FRAME_TARGET);
    let mut body = BytesMut::with_capacity(RESULTS_FRAME_TARGET);
    let mut n_body = 0usize;
    while let Some(first) = rx.recv().await {
        let mut ev = Some(first);
        let mut n_results = 0usize;
        while let Some(e) = ev.take().or_else(|| rx.try_recv().ok()) {
            match e {
                ConnEvent::Accepted(n) => flushes.accepted(n),
                ConnEvent::Flush(id) => flushes.flush(id),
                ConnEvent::Result(epoch, r) => {
                    flushes.finished(epoch, 1);
                    body.put_u8(0x0A);
                    r.encode_length_delimited(&mut body)
                        .expect("BytesMut grows");
                    n_body += 1;
                }
                ConnEvent::Landed(epoch, landing, records) => {
                    flushes.finished(epoch, records.len() as u64);
                    put_landed(&mut body, &landing, &records);
                    n_body += records.len();
                }
                ConnEvent::Send(m) => {
                    if n_body > 0 {
                        close_results(&mut buf, &mut body);
                        n_results += std::mem::take(&mut n_body);
                    }
                    put_frame(&mut buf, &m);
                }
            }
            if body.len() >= RESULTS_FRAME_TARGET {
                close_results(&mut buf, &mut body);
                n_results += std::mem::take(&mut n_body);
            }
            if buf.len() >= RESULTS_FRAME_TARGET {
                break;
            }
        }
        if n_body > 0 {
            close_results(&mut buf, &mut body);
            n_results += std::mem::take(&mut n_body);
        }
        for id in flushes.answerable() {
            put_frame(
                &mut buf,
                &ServerMessage {
                    msg: Some(server_message::Msg::Flushed(FlushReply { id })),
                },
            );
        }
        if out.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        // A large reply (stats, or many failures at once) grew a buffer:
        // give the room back rather than keep it for the connection's life.
        for b in [&mut buf, &mut body] {
            if b.capacity() > 4 * RESULTS_FRAME_TARGET {
                *b = BytesMut::with_capacity(RESULTS_FRAME_TARGET);
            }
        }
        backlog.written(n_results);
    }
    let _ = out.shutdown().await;
}

fn put_frame(buf: &mut BytesMut, m: &ServerMessage) {
    use bytes::BufMut;
    buf.put_u32(m.encoded_len() as u32);
    m.encode(buf).expect("BytesMut grows");
}

/// Appends the `results` entries of records that landed together, encoded
/// by hand exactly as prost encodes their [`RecordResult`]s (fields in
/// number order, zero values left out): the landing's fields are encoded
/// once and copied into each entry, and nothing is allocated per record.
fn put_landed(body: &mut BytesMut, landing: &Landing, records: &[Landed]) {
    use bytes::BufMut;
    use prost::encoding::{encode_varint, encoded_len_varint as vlen};
    let field_len = |v: u64| if v == 0 { 0 } else { 1 + vlen(v) };
    let put_field = |body: &mut BytesMut, tag: u8, v: u64| {
        if v != 0 {
            body.put_u8(tag);
            encode_varint(v, body);
        }
    };
    // success = true (2), shard_id (3), sequence_number (4).
    let mut common = Vec::with_capacity(8 + landing.shard_id.len() + landing.sequence_number.len());
    common.extend_from_slice(&[0x10, 0x01]);
    for (tag, s) in [
        (0x1A, landing.shard_id.as_bytes()),
        (0x22, landing.sequence_number.as_bytes()),
    ] {
        if !s.is_empty() {
            common.push(tag);
            encode_varint(s.len() as u64, &mut common);
            common.extend_from_slice(s);
        }
    }
    for r in records {
        // The successful attempt: success = true (1), delay_ms (4), duration_ms (5).
        let attempt = 2 + field_len(r.delay_ms) + field_len(landing.duration_ms);
        let earlier: usize = r
            .earlier
            .iter()
            .map(|a| {
                let n = a.encoded_len();
                1 + vlen(n as u64) + n
            })
            .sum();
        let len = field_len(r.id)
            + common.len()
            + field_len(r.sub_sequence_number)
            + earlier
            + 1
            + vlen(attempt as u64)
            + attempt;
        body.put_u8(0x0A);
        encode_varint(len as u64, body);
        put_field(body, 0x08, r.id);
        body.extend_from_slice(&common);
        put_field(body, 0x28, r.sub_sequence_number);
        for a in &r.earlier {
            body.put_u8(0x32);
            a.encode_length_delimited(body).expect("BytesMut grows");
        }
        body.put_u8(0x32);
        encode_varint(attempt as u64, body);
        body.extend_from_slice(&[0x08, 0x01]);
        put_field(body, 0x20, r.delay_ms);
        put_field(body, 0x28, landing.duration_ms);
    }
}

/// Appends a ServerMessage{results: Results{..}} frame around `body`, which
/// holds the already-encoded `results` fields.
fn close_results(buf: &mut BytesMut, body: &mut BytesMut) {
    use bytes::BufMut;
    let inner = body.len() as u64;
    let msg_len = 1 + prost::encoding::encoded_len_varint(inner) + body.len();
    buf.put_u32(msg_len as u32);
    buf.put_u8(0x12);
    prost::encoding::encode_varint(inner, buf);
    buf.extend_from_slice(body);
    body.clear();
}

#[cfg(test)]
mod tests {
    use super::{put_landed, FlushTracker};
    use crate::ipc::{Attempt, Results};
    use crate::producer::{Landed, Landing};
    use bytes::BytesMut;
    use proptest::prelude::*;
    use prost::Message;

    fn arb_attempt() -> impl Strategy<Value = Attempt> {
        (
            any::<bool>(),
            "[A-Za-z]{0,12}",
            ".{0,40}",
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(success, error_code, error_message, delay_ms, duration_ms)| Attempt {
                    success,
                    error_code,
                    error_message,
                    delay_ms,
                    duration_ms,
                },
            )
    }

    proptest! {
        #[test]
        fn hand_encoded_successes_are_what_prost_encodes(
            shard in "[a-zA-Z0-9-]{0,30}",
            seq in "[0-9]{0,60}",
            duration_ms in prop_oneof![Just(0u64), any::<u64>()],
            records in proptest::collection::vec(
                (
                    prop_oneof![Just(0u64), any::<u64>()],
                    prop_oneof![Just(0u64), any::<u64>()],
                    prop_oneof![Just(0u64), 0u64..300, any::<u64>()],
                    proptest::collection::vec(arb_attempt(), 0..3),
                ),
                0..20,
            ),
        ) {
            let landing = Landing { shard_id: shard.into(), sequence_number: seq, duration_ms };
            let records: Vec<Landed> = records
                .into_iter()
                .map(|(id, sub_sequence_number, delay_ms, earlier)| Landed {
                    id,
                    sub_sequence_number,
                    delay_ms,
                    earlier,
                })
                .collect();
            let mut body = BytesMut::new();
            put_landed(&mut body, &landing, &records);
            let expected = Results {
                results: records.iter().map(|r| r.clone().into_result(&landing)).collect(),
            }
            .encode_to_vec();
            prop_assert_eq!(&body[..], &expected[..]);
        }
    }

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

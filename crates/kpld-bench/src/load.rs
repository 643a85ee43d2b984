//! The load generator: one task per socket connection. Each task owns its
//! socket whole (no split halves, no channels): it writes pre-sized batches
//! of records when the socket is writable and the schedule allows, and reads
//! results whenever the socket is readable, so it never stops reading while
//! the daemon applies backpressure.
//!
//! Latency is measured from a batch's *scheduled* send time (paced mode) or
//! the moment it was encoded (unpaced), to the moment its result was read:
//! a daemon that stalls the sender is charged for the wait.

use crate::soak::{landing_key, Claim};
use crate::wire::{self, ServerEvent};
use hdrhistogram::Histogram;
use kpld::ipc::{client_message, FlushRequest, Hello};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// Width of one bucket of the acknowledgement timeline.
pub const TIMELINE_STEP: Duration = Duration::from_millis(100);
/// Writes are gathered up to about this many bytes per syscall.
const WRITE_CHUNK: usize = 256 * 1024;

/// What one connection sends.
#[derive(Clone)]
pub struct LoadSpec {
    pub stream: Arc<[u8]>,
    pub keys: Arc<Vec<Vec<u8>>>,
    /// The payload pool: record `id` carries `payloads[(key_offset + id) % len]`.
    pub payloads: Arc<Vec<Vec<u8>>>,
    /// Records per PutRequest frame.
    pub batch: u64,
    /// Records this connection sends; None: until `send_until`.
    pub records: Option<u64>,
    pub send_until: Instant,
    /// Records per second for this connection; None: as fast as the daemon takes them.
    pub rate: Option<f64>,
    /// Offsets this connection's walk through the keys.
    pub key_offset: u64,
    /// The common origin of the timelines.
    pub epoch: Instant,
    /// How long to wait for the remaining results once sending has ended.
    pub drain_timeout: Duration,
    /// Results received, summed over the connections (for soak samples).
    pub progress: Option<Arc<AtomicU64>>,
    /// Keep where each success landed ([`ConnReport::claims`]).
    pub check_landed: bool,
}

/// What one connection saw.
pub struct ConnReport {
    pub sent: u64,
    pub ok: u64,
    /// Data bytes of the records that succeeded (as put, before any compression).
    pub ok_bytes: u64,
    pub failed: u64,
    /// Results for ids never sent, or a second result for one id.
    pub unexpected: u64,
    pub errors: BTreeMap<String, u64>,
    /// Result latency in microseconds.
    pub latency: Histogram<u64>,
    pub last_send: Option<Instant>,
    pub last_result: Option<Instant>,
    /// Acknowledgements per [`TIMELINE_STEP`] since `epoch`.
    pub timeline: Vec<u64>,
    pub flush_answered: bool,
    /// Error frames the daemon sent, and why this connection ended early.
    pub problems: Vec<String>,
    /// Successes by the Kinesis record they name (with `check_landed`).
    pub claims: HashMap<Box<[u8]>, Claim>,
}

impl ConnReport {
    pub fn new() -> Self {
        ConnReport {
            sent: 0,
            ok: 0,
            ok_bytes: 0,
            failed: 0,
            unexpected: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            last_send: None,
            last_result: None,
            timeline: Vec::new(),
            flush_answered: false,
            problems: Vec::new(),
            claims: HashMap::new(),
        }
    }

    pub fn merge(&mut self, o: ConnReport) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.ok_bytes += o.ok_bytes;
        self.failed += o.failed;
        self.unexpected += o.unexpected;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latency.add(&o.latency).expect("same bounds");
        self.last_send = self.last_send.max(o.last_send);
        self.last_result = self.last_result.max(o.last_result);
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize(o.timeline.len(), 0);
        }
        for (a, b) in self.timeline.iter_mut().zip(o.timeline) {
            *a += b;
        }
        self.flush_answered &= o.flush_answered;
        self.problems.extend(o.problems);
        for (k, c) in o.claims {
            self.claims.entry(k).or_default().merge(c);
        }
    }

    pub fn acknowledged(&self) -> u64 {
        self.ok + self.failed
    }
}

/// Connects and exchanges Hello; returns the socket, ready for puts, and
/// the daemon's `max_frame_size`.
pub async fn connect(path: &Path) -> io::Result<(UnixStream, u64)> {
    let mut s = UnixStream::connect(path).await?;
    let mut out = Vec::new();
    wire::encode_message(
        &mut out,
        client_message::Msg::Hello(Hello {
            protocol_version: kpld::server::PROTOCOL_VERSION,
            client_name: "kpld-bench".into(),
            want_accepted: false,
        }),
    );
    s.write_all(&out).await?;
    let len = s.read_u32().await? as usize;
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    use prost::Message;
    match kpld::ipc::ServerMessage::decode(body.as_slice()).map(|m| m.msg) {
        Ok(Some(kpld::ipc::server_message::Msg::Hello(h))) => Ok((s, h.max_frame_size)),
        other => Err(io::Error::other(format!(
            "the daemon did not answer Hello with HelloReply: {other:?}"
        ))),
    }
}

/// Which ids were acknowledged, to catch duplicates and strays.
struct Acks {
    bits: Vec<u64>,
}

impl Acks {
    /// True the first time `id` is seen.
    fn insert(&mut self, id: u64) -> bool {
        let (w, b) = ((id / 64) as usize, id % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        let fresh = self.bits[w] & (1 << b) == 0;
        self.bits[w] |= 1 << b;
        fresh
    }
}

#[derive(PartialEq, Eq)]
enum Phase {
    Sending,
    /// The FlushRequest is queued or written: waiting for the last results.
    Draining,
}

/// Drives one connection to the end: sends its records, a FlushRequest, and
/// reads until every record has a result (or `drain_timeout` passes).
pub async fn drive(mut sock: UnixStream, spec: LoadSpec) -> ConnReport {
    let mut rep = ConnReport::new();
    if let Err(e) = drive_inner(&mut sock, &spec, &mut rep).await {
        rep.problems.push(format!("connection: {e}"));
    }
    rep
}

async fn drive_inner(
    sock: &mut UnixStream,
    spec: &LoadSpec,
    rep: &mut ConnReport,
) -> io::Result<()> {
    let nkeys = spec.keys.len() as u64;
    let key_of = |id: u64| spec.keys[((spec.key_offset + id) % nkeys) as usize].as_slice();
    let npayloads = spec.payloads.len() as u64;
    let data_of = |id: u64| spec.payloads[((spec.key_offset + id) % npayloads) as usize].as_slice();
    let mut wbuf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK * 2);
    let mut wpos = 0usize;
    let mut rbuf: Vec<u8> = vec![0; 1 << 20];
    let (mut rstart, mut rend) = (0usize, 0usize);
    // Send time of each batch, in ns since `epoch`; batch i holds ids i*batch..
    let mut batch_sent_ns: Vec<u64> = Vec::new();
    let mut acks = Acks { bits: Vec::new() };
    let interval = spec
        .rate
        .map(|r| Duration::from_secs_f64(spec.batch as f64 / r));
    let mut next_at = Instant::now();
    let mut phase = Phase::Sending;
    let mut drain_deadline: Option<Instant> = None;
    let mut fatal = false;
    loop {
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        // 1. Fill the write buffer when it is empty.
        if wpos == wbuf.len() && phase == Phase::Sending {
            wbuf.clear();
            wpos = 0;
            loop {
                let left = spec.records.map_or(u64::MAX, |n| n - rep.sent);
                if left == 0 || fatal || (spec.records.is_none() && now >= spec.send_until) {
                    wire::encode_message(
                        &mut wbuf,
                        client_message::Msg::Flush(FlushRequest { id: 1 }),
                    );
                    phase = Phase::Draining;
                    drain_deadline = Some(now + spec.drain_timeout);
                    break;
                }
                let sched = match interval {
                    None => now,
                    Some(iv) => {
                        if next_at > now {
                            wake = Some(next_at);
                            break;
                        }
                        let at = next_at;
                        next_at += iv;
                        at
                    }
                };
                let n = spec.batch.min(left);
                batch_sent_ns.push(sched.saturating_duration_since(spec.epoch).as_nanos() as u64);
                wire::encode_put(&mut wbuf, &spec.stream, rep.sent, n, key_of, data_of);
                rep.sent += n;
                rep.last_send = Some(now);
                if wbuf.len() >= WRITE_CHUNK {
                    break;
                }
            }
        }
        // 2. Done?
        if phase == Phase::Draining
            && wpos == wbuf.len()
            && (rep.flush_answered || fatal)
            && rep.acknowledged() >= rep.sent
        {
            return Ok(());
        }
        if let Some(d) = drain_deadline {
            if now >= d {
                rep.problems.push(format!(
                    "gave up waiting: {} of {} records have a result after {:?}",
                    rep.acknowledged(),
                    rep.sent,
                    spec.drain_timeout
                ));
                return Ok(());
            }
            wake = Some(wake.map_or(d, |w| w.min(d)));
        }
        // 3. Wait for the socket (or the schedule).
        let interest = if wpos < wbuf.len() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let ready = match wake {
            Some(w) => tokio::select! {
                r = sock.ready(interest) => r?,
                _ = tokio::time::sleep_until(w.into()) => continue,
            },
            None => sock.ready(interest).await?,
        };
        if ready.is_readable() {
            loop {
                if rend == rbuf.len() {
                    // Make room: move the partial frame to the front, grow if
                    // one frame is larger than the buffer.
                    rbuf.copy_within(rstart..rend, 0);
                    rend -= rstart;
                    rstart = 0;
                    if rend == rbuf.len() {
                        rbuf.resize(rbuf.len() * 2, 0);
                    }
                }
                match sock.try_read(&mut rbuf[rend..]) {
                    Ok(0) => {
                        if !(phase == Phase::Draining && rep.acknowledged() >= rep.sent) {
                            rep.problems.push(format!(
                                "the daemon closed the connection with {} of {} results",
                                rep.acknowledged(),
                                rep.sent
                            ));
                        }
                        return Ok(());
                    }
                    Ok(n) => rend += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
                // Parse the whole frames now in the buffer.
                let now_ns = spec.epoch.elapsed().as_nanos() as u64;
                let bucket = (now_ns / TIMELINE_STEP.as_nanos() as u64) as usize;
                while rend - rstart >= 4 {
                    let len =
                        u32::from_be_bytes(rbuf[rstart..rstart + 4].try_into().unwrap()) as usize;
                    if rend - rstart < 4 + len {
                        if 4 + len > rbuf.len() {
                            rbuf.resize((4 + len).next_power_of_two(), 0);
                        }
                        break;
                    }
                    let frame = &rbuf[rstart + 4..rstart + 4 + len];
                    rstart += 4 + len;
                    let mut acked = 0u64;
                    let ev = wire::scan_server_message(frame, |r| {
                        if r.id >= rep.sent || !acks.insert(r.id) {
                            rep.unexpected += 1;
                            return;
                        }
                        acked += 1;
                        if r.success {
                            rep.ok += 1;
                            rep.ok_bytes += data_of(r.id).len() as u64;
                            if spec.check_landed {
                                rep.claims
                                    .entry(landing_key(r.shard_id, r.sequence_number))
                                    .or_default()
                                    .add(r.sub_sequence_number);
                            }
                        } else {
                            rep.failed += 1;
                            *rep.errors
                                .entry(String::from_utf8_lossy(r.error_code).into_owned())
                                .or_default() += 1;
                        }
                        let sent = batch_sent_ns[(r.id / spec.batch) as usize];
                        let _ = rep
                            .latency
                            .record((now_ns.saturating_sub(sent) / 1000).max(1));
                    });
                    if acked > 0 {
                        if let Some(p) = &spec.progress {
                            p.fetch_add(acked, Ordering::Relaxed);
                        }
                        if rep.timeline.len() <= bucket {
                            rep.timeline.resize(bucket + 1, 0);
                        }
                        rep.timeline[bucket] += acked;
                        rep.last_result = Some(Instant::now());
                    }
                    match ev {
                        None => {
                            rep.problems
                                .push("the daemon sent a malformed frame".into());
                            return Ok(());
                        }
                        Some(ServerEvent::Flushed) => rep.flush_answered = true,
                        Some(ServerEvent::Error(code, message, f)) => {
                            rep.problems.push(format!("Error frame {code}: {message}"));
                            fatal |= f;
                        }
                        Some(ServerEvent::Results | ServerEvent::Other) => {}
                    }
                }
                if rstart == rend {
                    rstart = 0;
                    rend = 0;
                }
            }
        }
        if ready.is_writable() && wpos < wbuf.len() {
            match sock.try_write(&wbuf[wpos..]) {
                Ok(n) => wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

//! The disk spool (issue 15): records of `durability = "disk"` streams are appended
//! here before they are acknowledged, and replayed after a crash until each has a
//! final result (at least once). A storage engine only: it knows nothing of streams'
//! pipelines.
//!
//! # Files (all in `dir`, mode 0700)
//! - `seg-<20-digit seq>.spool`: segments, appended to in order; the number is the
//!   next sequence number when the file was created (names sort in seq order).
//! - `ledger`: done marks, rewritten atomically every `ledger_interval` and at close.
//! - `lock`: held with `flock` while the spool is open (one process per spool).
//! - `corrupt/`: originals of segments found corrupt, kept for inspection.
//!
//! # Segment format (little endian)
//! ```text
//! header, 24 bytes:
//!   0  8  magic "KPLDSPL" + format version 0x01
//!   8  8  sequence floor: every entry's seq is >= this (the name's seq, or more after
//!         a reset of the segment being written once all of it was done)
//!  16  4  crc32 of bytes 0..16
//!  20  4  zero
//! entries, one after another:
//!   0  4  crc32 (IEEE, crc32fast) of bytes 4..8+body_len
//!   4  4  body_len (28 + the four variable lengths)
//!   8  8  seq
//!  16  8  arrival_unix_ms
//!  24  1  compression (0 default, 1 none, 2 gzip, 3 zlib)
//!  25  1  flags: bit 0 = an explicit hash key is present (other bits 0)
//!  26  2  stream name length        (<= 256)
//!  28  2  partition key length      (<= 1024)
//!  30  2  explicit hash key length  (<= 64; 0 unless flag bit 0)
//!  32  4  data length               (<= 2 MiB)
//!  36  .  stream name (UTF-8), partition key, explicit hash key, data
//! ```
//! Sequence numbers rise strictly within a segment and across segments, and across
//! restarts (the ledger keeps the next one; a segment's name and floor bound it too).
//!
//! # Recovery (at [`Spool::open`])
//! Each segment is scanned entry by entry. An entry that fails its checks starts a bad
//! region; the scan resynchronises at the next offset where a whole entry with a valid
//! checksum and a higher seq starts. With nothing valid after it, the region is a torn
//! tail (an entry cut short, or zeros) and is cut off; otherwise the segment is corrupt:
//! the original is kept in `corrupt/` and the segment is rewritten with every intact
//! entry, before and after the bad regions. The ledger's done marks are applied; the
//! rest is handed to the [`Replay`]. The last segment becomes the one being written.
//!
//! # Durability
//! One `pwrite` per [`Spool::append`] call (entries encoded into a reused buffer, no
//! allocation per record). `durable` resolves when a watermark passes the ticket:
//! `never` at the write, `batch(d)` after the sync thread's next fdatasync (one every
//! `d`, covering every append before it), `always` after an fdatasync the sync thread
//! starts as soon as it is woken (concurrent appends share it). A failed fdatasync
//! fails the spool: after one, what the page cache holds is unknown.
//!
//! # Room
//! Live bytes (the segment files) stay under `max_bytes`; a disk that is full (ENOSPC,
//! EDQUOT) cuts the file back to its last good length. Both are [`SpoolError::Full`] at
//! once, or a wait for room: a segment is removed once it is sealed and all its entries
//! are done, and the one being written is reset when all of it is done; a full disk is
//! retried every [`FULL_RETRY`] too.

mod entry;
mod ledger;
mod recover;
mod replay;
mod segment;
mod sync;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Notify};

pub use entry::{
    MAX_DATA_BYTES, MAX_EXPLICIT_HASH_KEY_BYTES, MAX_KEY_BYTES, MAX_STREAM_BYTES, MIN_ENTRY_BYTES,
};
pub use replay::Replay;
pub use segment::HEADER_BYTES as SEGMENT_HEADER_BYTES;

use ledger::Seg;

/// The default size past which the spool starts a new segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// The default interval between ledger writes.
pub const DEFAULT_LEDGER_INTERVAL: Duration = Duration::from_secs(1);
/// How often appends waiting on a full disk try again without being told of room.
pub const FULL_RETRY: Duration = Duration::from_millis(200);
/// The sync thread's longest sleep: how soon it removes finished segments.
const TICK: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// One fdatasync per interval covers every append before it.
    Batch(Duration),
    /// An append is durable after an fdatasync that covers it (shared by concurrent ones).
    Always,
    /// Durable once written (page cache).
    Never,
}

#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub ledger_interval: Duration,
}

impl SpoolSettings {
    /// Defaults for everything but the directory and the bound.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            dir: dir.into(),
            max_bytes,
            fsync: FsyncPolicy::Batch(Duration::from_millis(10)),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            ledger_interval: DEFAULT_LEDGER_INTERVAL,
        }
    }

    fn validate(&self) -> Result<(), SpoolError> {
        let bad = |key: &'static str, reason: String| Err(SpoolError::Settings { key, reason });
        if self.dir.as_os_str().is_empty() {
            return bad("spool_dir", "is empty".into());
        }
        // segment_bytes and ledger_interval are kpld's choices, not config
        // keys: an error naming them is a bug in the caller.
        if self.segment_bytes < 4096 {
            return bad(
                "segment_bytes",
                format!("{} is below 4096", self.segment_bytes),
            );
        }
        if self.max_bytes < 2 * self.segment_bytes.min(1 << 20) {
            return bad(
                "max_spool_bytes",
                format!(
                    "{} is too small: at least two segments' worth (2 x min(segment_bytes, 1 MiB))",
                    self.max_bytes
                ),
            );
        }
        if let FsyncPolicy::Batch(d) = self.fsync {
            if d.is_zero() {
                return bad(
                    "spool_fsync_interval_ms",
                    "must be above zero (or use spool_fsync = \"always\")".into(),
                );
            }
        }
        if self.ledger_interval.is_zero() {
            return bad("ledger_interval", "must be above zero".into());
        }
        Ok(())
    }
}

/// One record to spool, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub stream: &'a str,
    pub partition_key: &'a [u8],
    pub explicit_hash_key: Option<&'a [u8]>,
    pub data: &'a [u8],
    /// 0 default, 1 none, 2 gzip, 3 zlib.
    pub compression: u8,
    pub arrival_unix_ms: u64,
}

/// One record read back at replay, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub stream: String,
    pub partition_key: Vec<u8>,
    pub explicit_hash_key: Option<Vec<u8>>,
    pub data: Vec<u8>,
    pub compression: u8,
    pub arrival_unix_ms: u64,
}

/// The entries of one append: seqs `first_seq .. first_seq + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub first_seq: u64,
    pub count: u32,
}

impl Ticket {
    pub fn seqs(&self) -> std::ops::Range<u64> {
        self.first_seq..self.first_seq + u64::from(self.count)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Intact entries found.
    pub entries: u64,
    /// Of those, already done per the ledger (not replayed).
    pub already_done: u64,
    pub torn_bytes_cut: u64,
    /// Originals kept aside (where they are now) and what was wrong (offsets).
    pub corrupt: Vec<(PathBuf, String)>,
    /// The ledger could not be read (everything found is replayed).
    pub ledger_problem: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of live segment files.
    pub bytes: u64,
    pub segments: usize,
    /// Appended since open.
    pub entries_appended: u64,
    /// Not done, replayed ones included.
    pub entries_pending: u64,
    /// Every seq below this is durable.
    pub durable_seq: u64,
    pub next_seq: u64,
    pub fsyncs: u64,
    pub full_events: u64,
    /// The last write met a full disk and no room has been seen since.
    pub disk_full: bool,
    pub corrupt_segments: u64,
    pub torn_bytes_cut: u64,
    pub ledger_writes: u64,
    pub segments_removed: u64,
}

/// Why there is no room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullReason {
    MaxBytes { live: u64, need: u64, max: u64 },
    Disk { path: PathBuf, error: String },
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullReason::MaxBytes { live, need, max } => write!(
                f,
                "{live} bytes spooled and {need} more asked for, max_spool_bytes is {max}"
            ),
            FullReason::Disk { path, error } => {
                write!(f, "the disk is full writing {}: {error}", path.display())
            }
        }
    }
}

#[derive(thiserror::Error, Debug)]
pub enum SpoolError {
    #[error("spool full: {reason}")]
    Full { reason: FullReason },
    #[error("spool I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool is closed")]
    Closed,
    #[error("spool failed and accepts nothing more: {reason}")]
    Failed { reason: String },
    #[error("spool setting {key} {reason}")]
    Settings { key: &'static str, reason: String },
    #[error("spool entry {index} of the batch: {field} is {len} bytes, at most {max}")]
    EntryTooLarge {
        index: usize,
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("spool batch of {bytes} bytes can never fit under max_spool_bytes = {max_bytes}")]
    BatchTooLarge { bytes: u64, max_bytes: u64 },
    #[error("spool directory {path} is in use by another process (lock held)")]
    Locked { path: PathBuf },
    #[error("spool segment {path} at offset {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

/// The durable watermark and the spool's state, published to `durable` waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    durable_end: u64,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Appends refused; the final sync is still to come, so `durable` keeps waiting.
    Closing,
    Failed,
    Closed,
}

/// Counters shared by every thread (relaxed: figures, not synchronisation).
#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    fsyncs: AtomicU64,
    full_events: AtomicU64,
    corrupt_segments: AtomicU64,
    torn_bytes_cut: AtomicU64,
    ledger_writes: AtomicU64,
    segments_removed: AtomicU64,
}

/// Wakes the sync thread.
#[derive(Default)]
struct Ctl {
    wake: bool,
    closing: bool,
}

struct Shared {
    settings: SpoolSettings,
    /// The segment being written and its file; appends hold it for their one write.
    writer: Mutex<writer::Writer>,
    /// Live segments in seq order, the one being written last. Read lock-free by
    /// `done`; changed only under `segs_lock`.
    segs: ArcSwap<Vec<Arc<Seg>>>,
    segs_lock: Mutex<()>,
    /// Every seq below this has been written to its file.
    written_end: AtomicU64,
    live_bytes: AtomicU64,
    /// Bumped on every removal or reset: a full disk may have room again.
    room_epoch: AtomicU64,
    room: Notify,
    mark: watch::Sender<Mark>,
    ctl: Mutex<Ctl>,
    ctl_cv: Condvar,
    ledger_dirty: AtomicBool,
    failed: Mutex<Option<String>>,
    counters: Counters,
    /// Held for the spool's life: a second process on the same directory is refused.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not turn every later append into a panic too.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn wake_sync(&self) {
        lock(&self.ctl).wake = true;
        self.ctl_cv.notify_one();
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "spool failed");
        lock(&self.failed).get_or_insert(reason);
        self.mark.send_modify(|m| m.state = State::Failed);
        self.room.notify_waiters();
    }

    fn check_open(&self) -> Result<(), SpoolError> {
        match self.mark.borrow().state {
            State::Open => Ok(()),
            State::Closing | State::Closed => Err(SpoolError::Closed),
            State::Failed => Err(SpoolError::Failed {
                reason: lock(&self.failed).clone().unwrap_or_default(),
            }),
        }
    }

    /// Removes every sealed segment whose entries are all done.
    fn remove_finished(&self) {
        let gone: Vec<Arc<Seg>> = {
            let _g = lock(&self.segs_lock);
            let segs = self.segs.load_full();
            if !segs.iter().any(|s| s.removable()) {
                return;
            }
            let (gone, keep): (Vec<_>, Vec<_>) = segs.iter().cloned().partition(|s| s.removable());
            // Counted with the list's change so that stats() never sees one without the other.
            let bytes: u64 = gone.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum();
            self.live_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.counters
                .segments_removed
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
            self.segs.store(Arc::new(keep));
            gone
        };
        for s in &gone {
            if let Err(e) = std::fs::remove_file(&s.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %s.path.display(), error = %e, "spool segment not removed");
                }
            }
        }
        // So that a removed segment does not come back (and replay) after a crash.
        let _ = segment::sync_dir(&self.settings.dir);
        self.ledger_dirty.store(true, Ordering::Relaxed);
        self.room_epoch.fetch_add(1, Ordering::SeqCst);
        self.room.notify_waiters();
    }
}

/// Owns the sync thread; the last [`Spool`] clone dropped closes the spool.
struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Inner {
    fn close(&self) -> Result<(), SpoolError> {
        let Some(t) = lock(&self.thread).take() else {
            return Ok(());
        };
        {
            // Under the writer lock: no append is between its check and its write.
            let _w = lock(&self.shared.writer);
            self.shared.mark.send_modify(|m| {
                if m.state == State::Open {
                    m.state = State::Closing;
                }
            });
        }
        self.shared.room.notify_waiters();
        lock(&self.shared.ctl).closing = true;
        self.shared.ctl_cv.notify_one();
        let _ = t.join();
        let failed = lock(&self.shared.failed).clone();
        self.shared.mark.send_modify(|m| {
            if m.state == State::Closing {
                m.state = State::Closed;
            }
        });
        self.shared.room.notify_waiters();
        match failed {
            Some(reason) => Err(SpoolError::Failed { reason }),
            None => Ok(()),
        }
    }
}

/// The spool. Cheap to clone; every method may be called from any thread or task.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl Spool {
    /// Opens (creates) the spool, recovers what is there (torn tails cut, corrupt
    /// segments moved aside with their intact entries kept), starts the sync thread.
    pub fn open(s: SpoolSettings) -> Result<(Spool, Replay, RecoveryReport), SpoolError> {
        s.validate()?;
        let (shared, replay, report) = recover::open(s)?;
        let shared = Arc::new(shared);
        let thread = sync::start(shared.clone()).map_err(segment::io_err(&shared.settings.dir))?;
        let spool = Spool {
            inner: Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((spool, replay, report))
    }

    /// Appends entries in order; they get consecutive sequence numbers. Waits for room
    /// if `wait_for_room`, else returns [`SpoolError::Full`] at once when over
    /// `max_bytes` or the disk is full.
    pub async fn append(
        &self,
        entries: &[EntryRef<'_>],
        wait_for_room: bool,
    ) -> Result<Ticket, SpoolError> {
        let sh = &self.inner.shared;
        let mut retry = false;
        loop {
            let notified = sh.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match sh.try_append(entries, retry) {
                Ok(t) => return Ok(t),
                Err(writer::Refused::Full(reason)) if wait_for_room => {
                    let _ = tokio::time::timeout(FULL_RETRY, notified).await;
                    retry = true;
                    let _ = reason;
                }
                Err(writer::Refused::Full(reason)) => return Err(SpoolError::Full { reason }),
                Err(writer::Refused::Error(e)) => return Err(e),
            }
        }
    }

    /// Resolves once every entry of the ticket is durable per the fsync policy.
    pub async fn durable(&self, t: &Ticket) -> Result<(), SpoolError> {
        let target = t.first_seq + u64::from(t.count);
        let sh = &self.inner.shared;
        let mut rx = sh.mark.subscribe();
        let m = *rx
            .wait_for(|m| {
                m.durable_end >= target || matches!(m.state, State::Failed | State::Closed)
            })
            .await
            .map_err(|_| SpoolError::Closed)?;
        if m.durable_end >= target {
            return Ok(());
        }
        sh.check_open()?;
        Err(SpoolError::Closed)
    }

    /// Every seq below this is durable.
    pub fn durable_seq(&self) -> u64 {
        self.inner.shared.mark.borrow().durable_end
    }

    /// Marks one entry final (success, or dead-lettered). Idempotent; a seq the spool
    /// does not hold (already removed, never appended) is ignored.
    pub fn done(&self, seq: u64) {
        let sh = &self.inner.shared;
        let segs = sh.segs.load();
        let i = segs.partition_point(|s| s.base <= seq);
        if i == 0 {
            return;
        }
        let s = &segs[i - 1];
        match s.mark_done(seq) {
            ledger::Marked::Nothing => return,
            ledger::Marked::Last if s.sealed.load(Ordering::SeqCst) => sh.wake_sync(),
            _ => {}
        }
        // Read first: a store on every call would bounce the cache line between cores.
        if !sh.ledger_dirty.load(Ordering::Relaxed) {
            sh.ledger_dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Final sync and ledger write; stops the sync thread. Idempotent.
    pub fn close(&self) -> Result<(), SpoolError> {
        self.inner.close()
    }

    pub fn stats(&self) -> SpoolStats {
        let sh = &self.inner.shared;
        let segs = sh.segs.load();
        let c = &sh.counters;
        let w = lock(&sh.writer);
        SpoolStats {
            bytes: sh.live_bytes.load(Ordering::Relaxed),
            segments: segs.len(),
            entries_appended: c.appended.load(Ordering::Relaxed),
            entries_pending: segs.iter().map(|s| s.pending.load(Ordering::Relaxed)).sum(),
            durable_seq: sh.mark.borrow().durable_end,
            next_seq: sh.written_end.load(Ordering::Acquire),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            full_events: c.full_events.load(Ordering::Relaxed),
            disk_full: w.disk_full(),
            corrupt_segments: c.corrupt_segments.load(Ordering::Relaxed),
            torn_bytes_cut: c.torn_bytes_cut.load(Ordering::Relaxed),
            ledger_writes: c.ledger_writes.load(Ordering::Relaxed),
            segments_removed: c.segments_removed.load(Ordering::Relaxed),
        }
    }
}

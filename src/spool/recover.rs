//! Opening a spool: the directory and its lock, every segment scanned (torn tails
//! cut, corrupt segments rewritten clean with the original kept aside), the ledger's
//! done marks applied, finished segments removed, the last one made the one written.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use arc_swap::ArcSwap;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::{watch, Notify};

use super::ledger::{self, Ledger, Seg};
use super::replay::Replay;
use super::segment::{self, io_err, HEADER_BYTES};
use super::writer::{default_capacity, Writer};
use super::{Counters, Ctl, Mark, RecoveryReport, Shared, SpoolError, SpoolSettings, State};

const LOCK_FILE: &str = "lock";

pub(super) fn open(s: SpoolSettings) -> Result<(Shared, Replay, RecoveryReport), SpoolError> {
    let dir = s.dir.clone();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err(&dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            SpoolError::Locked { path: dir.clone() }
        } else {
            SpoolError::Io {
                path: lock_path.clone(),
                source: io::Error::from(errno),
            }
        }
    })?;

    let mut report = RecoveryReport::default();
    let ledger = match ledger::load(&dir) {
        Ok(l) => l.unwrap_or_default(),
        Err(what) => {
            tracing::warn!(%what, "spool ledger unreadable: every spooled entry is replayed");
            report.ledger_problem = Some(what);
            Ledger::default()
        }
    };

    let mut files = Vec::new();
    for ent in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let ent = ent.map_err(io_err(&dir))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            // A rewrite or ledger write a crash interrupted: the original is intact.
            let _ = fs::remove_file(ent.path());
        } else if let Some(seq) = segment::parse_name(&name) {
            files.push((seq, ent.path()));
        }
    }
    files.sort();

    let default_cap = default_capacity(s.segment_bytes);
    let mut next_seq = ledger.next_seq;
    let mut segs: Vec<Arc<Seg>> = Vec::new();
    let count = files.len();
    for (k, (name_seq, path)) in files.into_iter().enumerate() {
        next_seq = next_seq.max(name_seq);
        let b = fs::read(&path).map_err(io_err(&path))?;
        let sc = segment::scan(&b, name_seq);
        next_seq = next_seq.max(sc.end_seq());
        let mut len = b.len() as u64;
        if let Some(t) = sc.torn_from {
            report.torn_bytes_cut += (b.len() - t) as u64;
        }
        if sc.is_corrupt() {
            let (aside, new_len) =
                segment::rewrite_clean(&dir, &path, &b, &sc).map_err(io_err(&path))?;
            let what = sc.describe(&path);
            tracing::warn!(moved_to = %aside.display(), %what, "corrupt spool segment rewritten with its intact entries");
            report.corrupt.push((aside, what));
            len = new_len;
        } else if let Some(t) = sc.torn_from {
            if t < HEADER_BYTES {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            segment::cut(&path, t).map_err(io_err(&path))?;
            len = t as u64;
        }
        report.segments += 1;
        report.entries += sc.entries.len() as u64;
        report.already_done += sc.stale;
        let not_done: Vec<u64> = sc
            .entries
            .iter()
            .map(|f| f.seq)
            .filter(|&q| !ledger.is_done(sc.floor, q))
            .collect();
        report.already_done += (sc.entries.len() - not_done.len()) as u64;
        let is_last = k + 1 == count;
        let (end, cap) = if is_last {
            (next_seq, next_seq - sc.floor + default_cap)
        } else {
            (sc.end_seq(), sc.end_seq() - sc.floor)
        };
        segs.push(Arc::new(Seg::recovered(
            path,
            sc.floor,
            end,
            cap,
            len,
            not_done.into_iter(),
        )));
    }

    let need_new = segs.is_empty();
    if need_new {
        let (f, path) = segment::create(&dir, next_seq, next_seq).map_err(|e| SpoolError::Io {
            path: dir.join(segment::name(next_seq)),
            source: e,
        })?;
        drop(f);
        segs.push(Arc::new(Seg::new(
            path,
            next_seq,
            default_cap,
            HEADER_BYTES as u64,
        )));
    }
    let active = segs.last().expect("one segment at least").clone();
    // Replay's list is taken before finished segments go.
    let replay_segs: Vec<Arc<Seg>> = segs
        .iter()
        .filter(|s| s.pending.load(Ordering::Relaxed) > 0)
        .cloned()
        .collect();
    let pending: u64 = replay_segs
        .iter()
        .map(|s| s.pending.load(Ordering::Relaxed))
        .sum();
    let mut removed = 0;
    segs.retain(|s| {
        if Arc::ptr_eq(s, &active) {
            return true;
        }
        s.sealed.store(true, Ordering::SeqCst);
        if s.removable() {
            let _ = fs::remove_file(&s.path);
            removed += 1;
            false
        } else {
            true
        }
    });
    if removed > 0 || need_new {
        segment::sync_dir(&dir).map_err(io_err(&dir))?;
    }
    let live: u64 = segs.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum();
    let file = segment::open_rw(&active.path).map_err(io_err(&active.path))?;
    let offset = active.bytes.load(Ordering::Relaxed);

    let counters = Counters::default();
    counters
        .corrupt_segments
        .store(report.corrupt.len() as u64, Ordering::Relaxed);
    counters
        .torn_bytes_cut
        .store(report.torn_bytes_cut, Ordering::Relaxed);
    counters.segments_removed.store(removed, Ordering::Relaxed);
    let shared = Shared {
        writer: Mutex::new(Writer::new(file, active, offset, next_seq)),
        segs: ArcSwap::from_pointee(segs),
        segs_lock: Mutex::new(()),
        written_end: AtomicU64::new(next_seq),
        live_bytes: AtomicU64::new(live),
        room_epoch: AtomicU64::new(0),
        room: Notify::new(),
        mark: watch::Sender::new(Mark {
            durable_end: next_seq,
            state: State::Open,
        }),
        ctl: Mutex::new(Ctl::default()),
        ctl_cv: Condvar::new(),
        ledger_dirty: AtomicBool::new(true),
        failed: Mutex::new(None),
        counters,
        _lock: lock,
        settings: s,
    };
    Ok((shared, Replay::new(replay_segs, next_seq, pending), report))
}

//! The append path: entries encoded into one reused buffer and written with one
//! `pwrite`, rolls to a new segment, the bound (`max_bytes`) and a full disk turned
//! into refusals the caller may wait on, and the reset of the segment being written
//! once all of it is done.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::entry::{self, MIN_ENTRY_BYTES};
use super::ledger::Seg;
use super::segment::{self, HEADER_BYTES};
use super::{
    lock, EntryRef, FsyncPolicy, FullReason, Shared, SpoolError, State, Ticket, FULL_RETRY,
};

const HEADER: u64 = HEADER_BYTES as u64;
/// A buffer grown past this by one huge batch is given back afterwards.
const KEEP_BUF_BYTES: usize = 8 << 20;

pub(super) struct Writer {
    pub file: Arc<File>,
    pub seg: Arc<Seg>,
    /// The file's length: where the next append goes.
    pub offset: u64,
    pub next_seq: u64,
    buf: Vec<u8>,
    /// Files rolled away from whose last writes still need an fdatasync.
    pub unsynced: Vec<Arc<File>>,
    /// A segment was created: the directory needs an fsync before it counts.
    pub dir_dirty: bool,
    /// When a write met a full disk, and the room epoch then.
    full: Option<(Instant, u64)>,
}

/// Why an append did not happen: no room (the caller may wait), or an error.
pub(super) enum Refused {
    Full(FullReason),
    Error(SpoolError),
}

impl From<SpoolError> for Refused {
    fn from(e: SpoolError) -> Refused {
        Refused::Error(e)
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

pub(super) fn default_capacity(segment_bytes: u64) -> u64 {
    segment_bytes / MIN_ENTRY_BYTES as u64 + 1
}

impl Writer {
    pub fn new(file: File, seg: Arc<Seg>, offset: u64, next_seq: u64) -> Writer {
        Writer {
            file: Arc::new(file),
            seg,
            offset,
            next_seq,
            buf: Vec::new(),
            unsynced: Vec::new(),
            dir_dirty: false,
            full: None,
        }
    }

    pub fn disk_full(&self) -> bool {
        self.full.is_some()
    }
}

impl Shared {
    fn disk_full(&self, w: &mut Writer, e: &io::Error) -> Refused {
        w.full = Some((Instant::now(), self.room_epoch.load(Ordering::SeqCst)));
        self.counters.full_events.fetch_add(1, Ordering::Relaxed);
        Refused::Full(FullReason::Disk {
            path: w.seg.path.clone(),
            error: e.to_string(),
        })
    }

    /// One append attempt. `retry`: the caller waited, so try the disk even if it was
    /// full a moment ago.
    pub(super) fn try_append(
        &self,
        entries: &[EntryRef<'_>],
        retry: bool,
    ) -> Result<Ticket, Refused> {
        self.check_open()?;
        let mut need = 0u64;
        for (index, e) in entries.iter().enumerate() {
            let n = entry::encoded_len(e).map_err(|f| SpoolError::EntryTooLarge {
                index,
                field: f.field,
                len: f.len,
                max: f.max,
            })?;
            need += n as u64;
        }
        let n = entries.len() as u64;
        let max = self.settings.max_bytes;
        if need + 2 * HEADER > max || n > u64::from(u32::MAX) {
            return Err(SpoolError::BatchTooLarge {
                bytes: need,
                max_bytes: max,
            }
            .into());
        }
        let mut w = lock(&self.writer);
        // Under the lock: close waits for it, so nothing is written after the final sync.
        if self.mark.borrow().state != State::Open {
            drop(w);
            self.check_open()?;
            return Err(SpoolError::Closed.into());
        }
        if n == 0 {
            return Ok(Ticket {
                first_seq: w.next_seq,
                count: 0,
            });
        }
        if let Some((since, epoch)) = w.full {
            // A full disk may have room once the segment being written is reset.
            self.reclaim(&mut w)?;
            let room_seen = epoch != self.room_epoch.load(Ordering::SeqCst);
            if !retry && !room_seen && since.elapsed() < FULL_RETRY {
                return Err(Refused::Full(FullReason::Disk {
                    path: w.seg.path.clone(),
                    error: "no room since the last write met a full disk".into(),
                }));
            }
        }
        if self.live_bytes.load(Ordering::Relaxed) + need > max {
            self.reclaim(&mut w)?;
            let live = self.live_bytes.load(Ordering::Relaxed);
            if live + need > max {
                return Err(Refused::Full(FullReason::MaxBytes { live, need, max }));
            }
        }
        let idx_end = w.next_seq + n - w.seg.base;
        let past_size = w.offset + need > self.settings.segment_bytes && w.offset > HEADER;
        if past_size || idx_end > w.seg.capacity() {
            self.roll(&mut w, n)?;
        }

        let first = w.next_seq;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        buf.reserve(need as usize);
        for (i, e) in entries.iter().enumerate() {
            entry::encode(&mut buf, first + i as u64, e);
        }
        let written = w.file.write_all_at(&buf, w.offset);
        if buf.capacity() > KEEP_BUF_BYTES {
            buf = Vec::new();
        }
        w.buf = buf;
        if let Err(e) = written {
            // Cut back to the last good length so that no partial entry stays behind.
            if let Err(cut) = w.file.set_len(w.offset) {
                let reason = format!(
                    "{}: cutting a failed write back failed: {cut}",
                    w.seg.path.display()
                );
                drop(w);
                self.fail(reason);
                return Err(SpoolError::Io {
                    path: self.settings.dir.clone(),
                    source: e,
                }
                .into());
            }
            if is_disk_full(&e) {
                return Err(self.disk_full(&mut w, &e));
            }
            return Err(SpoolError::Io {
                path: w.seg.path.clone(),
                source: e,
            }
            .into());
        }
        let end = first + n;
        // pending before end: a done for these seqs must find them counted.
        w.seg.pending.fetch_add(n, Ordering::SeqCst);
        w.seg.end.store(end, Ordering::Release);
        w.seg.bytes.fetch_add(need, Ordering::Relaxed);
        self.live_bytes.fetch_add(need, Ordering::Relaxed);
        w.offset += need;
        w.next_seq = end;
        w.full = None;
        self.written_end.store(end, Ordering::Release);
        self.counters.appended.fetch_add(n, Ordering::Relaxed);
        match self.settings.fsync {
            FsyncPolicy::Never => {
                self.mark.send_if_modified(|m| {
                    let newer = m.durable_end < end;
                    if newer {
                        m.durable_end = end;
                    }
                    newer
                });
            }
            FsyncPolicy::Always => {
                drop(w);
                self.wake_sync();
            }
            FsyncPolicy::Batch(_) => {}
        }
        Ok(Ticket {
            first_seq: first,
            count: n as u32,
        })
    }

    /// Starts a new segment; the old one is sealed (and goes once all of it is done).
    fn roll(&self, w: &mut Writer, n: u64) -> Result<(), Refused> {
        let (file, path) = match segment::create(&self.settings.dir, w.next_seq, w.next_seq) {
            Ok(f) => f,
            Err(e) if is_disk_full(&e) => return Err(self.disk_full(w, &e)),
            Err(e) => {
                let path = self.settings.dir.join(segment::name(w.next_seq));
                return Err(SpoolError::Io { path, source: e }.into());
            }
        };
        let cap = default_capacity(self.settings.segment_bytes).max(n);
        let seg = Arc::new(Seg::new(path, w.next_seq, cap, HEADER));
        let old = std::mem::replace(&mut w.seg, seg.clone());
        let old_file = std::mem::replace(&mut w.file, Arc::new(file));
        w.unsynced.push(old_file);
        w.offset = HEADER;
        w.dir_dirty = true;
        self.live_bytes.fetch_add(HEADER, Ordering::Relaxed);
        {
            let _g = lock(&self.segs_lock);
            let mut v = (**self.segs.load()).clone();
            v.push(seg);
            self.segs.store(Arc::new(v));
        }
        // SeqCst pairs with `mark_done`'s decrement: one of the two sees the other.
        old.sealed.store(true, Ordering::SeqCst);
        if old.pending.load(Ordering::SeqCst) == 0 {
            self.wake_sync();
        }
        Ok(())
    }

    /// Makes room now: removes finished segments, and resets the segment being
    /// written if all of it is done (its header's floor raised to the next seq first,
    /// so that a crash between the two steps leaves only stale entries below the floor).
    fn reclaim(&self, w: &mut Writer) -> Result<(), Refused> {
        self.remove_finished();
        if w.seg.pending.load(Ordering::SeqCst) != 0 || w.offset <= HEADER {
            return Ok(());
        }
        let floor = w.next_seq;
        let path: PathBuf = w.seg.path.clone();
        let reset = w
            .file
            .write_all_at(&segment::header(floor), 0)
            .and_then(|()| w.file.set_len(HEADER));
        if let Err(e) = reset {
            let reason = format!(
                "{}: resetting a finished segment failed: {e}",
                path.display()
            );
            self.fail(reason);
            return Err(SpoolError::Io { path, source: e }.into());
        }
        let cap = default_capacity(self.settings.segment_bytes);
        let seg = Arc::new(Seg::new(path, floor, cap, HEADER));
        {
            let _g = lock(&self.segs_lock);
            let mut v = (**self.segs.load()).clone();
            if let Some(last) = v.last_mut() {
                if Arc::ptr_eq(last, &w.seg) {
                    *last = seg.clone();
                }
            }
            self.segs.store(Arc::new(v));
        }
        self.live_bytes
            .fetch_sub(w.offset - HEADER, Ordering::Relaxed);
        w.offset = HEADER;
        w.seg = seg;
        self.counters
            .segments_removed
            .fetch_add(1, Ordering::Relaxed);
        self.ledger_dirty.store(true, Ordering::Relaxed);
        self.room_epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

//! Done marks: one bitmap and a pending counter per live segment ([`Seg`], lock-free,
//! so `done` costs a few atomic operations), and the ledger file that persists them
//! (runs of done sequence numbers per segment, written atomically: temp file, fsync,
//! rename, fsync of the directory). The ledger's encoding is pure.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const FILE: &str = "ledger";
const TMP: &str = "ledger.tmp";
const MAGIC: [u8; 8] = *b"KPLDLGR\x01";

/// One live segment's done marks. Bit `i` stands for sequence number `base + i`; seqs
/// missing from the file (lost to corruption, or before a reset) count as done.
pub struct Seg {
    pub path: PathBuf,
    pub base: u64,
    words: Box<[AtomicU64]>,
    /// Sequence numbers below this have been appended (or are gaps).
    pub end: AtomicU64,
    /// Entries appended and not yet done.
    pub pending: AtomicU64,
    /// No longer the segment being written: it can go once `pending` is zero.
    pub sealed: AtomicBool,
    /// The file's length as the spool knows it.
    pub bytes: AtomicU64,
}

/// What `mark_done` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Marked {
    /// The entry was already done, or is not this segment's.
    Nothing,
    Newly,
    /// Newly, and it was the last pending one.
    Last,
}

impl Seg {
    /// A segment being written, with room for `capacity` entries.
    pub fn new(path: PathBuf, base: u64, capacity: u64, bytes: u64) -> Seg {
        let words = (0..capacity.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Seg {
            path,
            base,
            words,
            end: AtomicU64::new(base),
            pending: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
            bytes: AtomicU64::new(bytes),
        }
    }

    /// A recovered segment: every seq in `[base, end)` is done except `not_done`.
    pub fn recovered(
        path: PathBuf,
        base: u64,
        end: u64,
        capacity: u64,
        bytes: u64,
        not_done: impl Iterator<Item = u64>,
    ) -> Seg {
        let s = Seg::new(path, base, capacity.max(end - base), bytes);
        for i in 0..end - base {
            s.words[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Relaxed);
        }
        let mut pending = 0;
        for seq in not_done {
            let i = seq - base;
            s.words[(i / 64) as usize].fetch_and(!(1 << (i % 64)), Ordering::Relaxed);
            pending += 1;
        }
        s.pending.store(pending, Ordering::Relaxed);
        s.end.store(end, Ordering::Release);
        s
    }

    /// How many entries the bitmap has room for.
    pub fn capacity(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    pub fn mark_done(&self, seq: u64) -> Marked {
        if seq < self.base || seq >= self.end.load(Ordering::Acquire) {
            return Marked::Nothing;
        }
        let i = seq - self.base;
        let bit = 1u64 << (i % 64);
        let prev = self.words[(i / 64) as usize].fetch_or(bit, Ordering::AcqRel);
        if prev & bit != 0 {
            return Marked::Nothing;
        }
        // SeqCst pairs with the roll's store of `sealed`: one of the two sees the other.
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            Marked::Last
        } else {
            Marked::Newly
        }
    }

    pub fn is_done(&self, seq: u64) -> bool {
        if seq < self.base || seq >= self.end.load(Ordering::Acquire) {
            return true;
        }
        let i = seq - self.base;
        self.words[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    pub fn removable(&self) -> bool {
        self.sealed.load(Ordering::SeqCst) && self.pending.load(Ordering::SeqCst) == 0
    }

    /// Runs of done entries `(offset from base, length)` within `[base, end)`.
    pub fn done_runs(&self) -> Vec<(u32, u32)> {
        let n = self.end.load(Ordering::Acquire) - self.base;
        let mut runs: Vec<(u32, u32)> = Vec::new();
        let mut run_start: Option<u64> = None;
        let mut i = 0;
        while i < n {
            let w = self.words[(i / 64) as usize].load(Ordering::Relaxed);
            let whole = i % 64 == 0 && i + 64 <= n;
            if whole && (w == 0 || w == u64::MAX) {
                match (w == u64::MAX, run_start) {
                    (true, None) => run_start = Some(i),
                    (false, Some(s)) => {
                        runs.push((s as u32, (i - s) as u32));
                        run_start = None;
                    }
                    _ => {}
                }
                i += 64;
                continue;
            }
            let done = w & (1 << (i % 64)) != 0;
            match (done, run_start) {
                (true, None) => run_start = Some(i),
                (false, Some(s)) => {
                    runs.push((s as u32, (i - s) as u32));
                    run_start = None;
                }
                _ => {}
            }
            i += 1;
        }
        if let Some(s) = run_start {
            runs.push((s as u32, (n - s) as u32));
        }
        runs
    }
}

/// The persisted done marks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The next sequence number when it was written: seqs never go back past it.
    pub next_seq: u64,
    /// Per segment base, sorted runs of done entries (offset from base, length).
    pub segments: Vec<(u64, Vec<(u32, u32)>)>,
}

impl Ledger {
    /// Whether `seq` of the segment starting at `base` was done when the ledger was written.
    pub fn is_done(&self, base: u64, seq: u64) -> bool {
        let Ok(k) = self.segments.binary_search_by_key(&base, |(b, _)| *b) else {
            return false;
        };
        let runs = &self.segments[k].1;
        let off = seq - base;
        let i = runs.partition_point(|(s, _)| u64::from(*s) <= off);
        i > 0 && {
            let (s, l) = runs[i - 1];
            off < u64::from(s) + u64::from(l)
        }
    }
}

/// Layout (little endian): magic (8), next_seq (8), segment count (4), per segment:
/// base (8), run count (4), runs (offset 4, length 4 each); then crc32 of all before (4).
pub fn encode(l: &Ledger) -> Vec<u8> {
    let runs: usize = l.segments.iter().map(|(_, r)| r.len()).sum();
    let mut b = Vec::with_capacity(24 + l.segments.len() * 12 + runs * 8);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&l.next_seq.to_le_bytes());
    b.extend_from_slice(&(l.segments.len() as u32).to_le_bytes());
    for (base, runs) in &l.segments {
        b.extend_from_slice(&base.to_le_bytes());
        b.extend_from_slice(&(runs.len() as u32).to_le_bytes());
        for (s, n) in runs {
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&n.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

pub fn decode(b: &[u8]) -> Result<Ledger, String> {
    if b.len() < 24 {
        return Err(format!("{} bytes, shorter than a ledger", b.len()));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    if body[..8] != MAGIC {
        return Err("bad magic".into());
    }
    let mut at = 8;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = body
            .get(at..at + n)
            .ok_or_else(|| format!("ends early at offset {at}"))?;
        at += n;
        Ok(s)
    };
    let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().expect("4 bytes"));
    let next_seq = u64_of(take(8)?);
    let count = u32_of(take(4)?);
    let mut segments = Vec::new();
    for _ in 0..count {
        let base = u64_of(take(8)?);
        let n = u32_of(take(4)?);
        let mut runs = Vec::new();
        for _ in 0..n {
            runs.push((u32_of(take(4)?), u32_of(take(4)?)));
        }
        segments.push((base, runs));
    }
    segments.sort_by_key(|(b, _)| *b);
    Ok(Ledger { next_seq, segments })
}

/// Reads the ledger; `Ok(None)` when there is none, `Err(what)` when it is unreadable.
pub fn load(dir: &Path) -> Result<Option<Ledger>, String> {
    let path = dir.join(FILE);
    match fs::read(&path) {
        Ok(b) => decode(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn store(dir: &Path, l: &Ledger) -> io::Result<()> {
    let tmp = dir.join(TMP);
    let mut f: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&encode(l))?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn done_is_idempotent_and_the_last_one_is_told() {
        let s = Seg::new(PathBuf::new(), 100, 10, 0);
        s.pending.store(3, Ordering::SeqCst);
        s.end.store(103, Ordering::SeqCst);
        assert_eq!(s.mark_done(101), Marked::Newly);
        assert_eq!(s.mark_done(101), Marked::Nothing);
        assert_eq!(s.mark_done(103), Marked::Nothing, "not appended yet");
        assert_eq!(s.mark_done(99), Marked::Nothing);
        assert_eq!(s.mark_done(100), Marked::Newly);
        assert_eq!(s.mark_done(102), Marked::Last);
        assert_eq!(s.pending.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn recovered_segment_counts_gaps_as_done() {
        let s = Seg::recovered(PathBuf::new(), 10, 20, 0, 0, [12, 15].into_iter());
        assert_eq!(s.pending.load(Ordering::SeqCst), 2);
        assert!(s.is_done(11));
        assert!(!s.is_done(12));
        assert_eq!(s.done_runs(), vec![(0, 2), (3, 2), (6, 4)]);
    }

    #[test]
    fn corrupt_ledger_is_an_error_naming_what() {
        let mut b = encode(&Ledger {
            next_seq: 5,
            segments: vec![(0, vec![(0, 5)])],
        });
        b[10] ^= 1;
        assert_eq!(decode(&b).unwrap_err(), "checksum mismatch");
    }

    proptest! {
        #[test]
        fn done_runs_match_the_bits_and_survive_the_ledger(
            done in proptest::collection::vec(any::<bool>(), 0..400),
        ) {
            let n = done.len() as u64;
            let s = Seg::new(PathBuf::new(), 1000, n, 0);
            s.end.store(1000 + n, Ordering::SeqCst);
            s.pending.store(n, Ordering::SeqCst);
            for (i, d) in done.iter().enumerate() {
                if *d {
                    s.mark_done(1000 + i as u64);
                }
            }
            let l = Ledger { next_seq: 1000 + n, segments: vec![(1000, s.done_runs())] };
            let l = decode(&encode(&l)).unwrap();
            for (i, d) in done.iter().enumerate() {
                prop_assert_eq!(l.is_done(1000, 1000 + i as u64), *d);
            }
        }
    }
}

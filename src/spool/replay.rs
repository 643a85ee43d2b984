//! Replay: the entries that had no final result at open, read lazily in seq order,
//! one segment in memory at a time. Entries done since open are skipped too.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::entry;
use super::ledger::Seg;
use super::segment::HEADER_BYTES;
use super::{Entry, SpoolError};

pub struct Replay {
    segs: VecDeque<Arc<Seg>>,
    /// Seqs at or above this were appended after open: not replay's.
    end: u64,
    cur: Option<(Arc<Seg>, Vec<u8>, usize)>,
    pending: u64,
}

impl Replay {
    pub(super) fn new(segs: Vec<Arc<Seg>>, end: u64, pending: u64) -> Replay {
        Replay {
            segs: segs.into(),
            end,
            cur: None,
            pending,
        }
    }

    /// Entries not done at open (nor since), at most `max`; empty once all are read.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((seg, bytes, at)) = &mut self.cur else {
                let Some(seg) = self.segs.pop_front() else {
                    break;
                };
                if seg.pending.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                match fs::read(&seg.path) {
                    Ok(b) => self.cur = Some((seg, b, HEADER_BYTES)),
                    // Removed since open: every entry in it was done.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(SpoolError::Io {
                            path: seg.path.clone(),
                            source: e,
                        })
                    }
                }
                continue;
            };
            if *at >= bytes.len() {
                self.cur = None;
                continue;
            }
            match entry::decode(&bytes[*at..]) {
                Ok(d) => {
                    *at += d.len;
                    if d.seq >= self.end {
                        self.cur = None;
                        continue;
                    }
                    if seg.is_done(d.seq) {
                        continue;
                    }
                    let e = d.to_owned_entry().ok_or_else(|| SpoolError::Corrupt {
                        path: seg.path.clone(),
                        offset: (*at - d.len) as u64,
                        what: "stream name is not UTF-8".into(),
                    })?;
                    out.push(e);
                    self.pending = self.pending.saturating_sub(1);
                }
                // A segment reset after all of it was done (the one being written).
                Err(_) if seg.pending.load(Ordering::Relaxed) == 0 => self.cur = None,
                Err(bad) => {
                    return Err(SpoolError::Corrupt {
                        path: seg.path.clone(),
                        offset: *at as u64,
                        what: format!("{bad:?} entry after recovery"),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Entries still to replay (an estimate: some may be done meanwhile).
    pub fn pending(&self) -> u64 {
        self.pending
    }
}

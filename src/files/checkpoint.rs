//! The checkpoint of a file: the offset before which every record has a
//! final result ([`Tracker`], pure), and the checkpoint file ([`Store`]).
//!
//! Invariant: the committed offset never moves past a record that has not
//! succeeded or been written to the dead-letter file. Records finish in any
//! order (shards, retries); the offset moves only over the longest run of
//! finished records from the oldest one, so a lost record holds it back
//! instead of being skipped (the Kinesis Agent accepts any higher buffer id).
//!
//! The file (`state_dir/file-checkpoints.json`) is written whole: to a
//! temporary file, fsynced, renamed over the old one, then the directory
//! fsynced, so a crash leaves the old or the new version, never a torn one.

use super::identity::Saved;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Records of one file in the order they were read, until they are final.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Id of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
    committed: u64,
}

#[derive(Debug)]
struct Entry {
    start: u64,
    end: u64,
    done: bool,
    /// A line the processing chain holds (a CRI partial line): not a record of its own; its
    /// bytes go into a record that the chain emits later.
    hold: bool,
    /// Set when the chain no longer holds the line: the id of the last entry pushed then.
    /// The line's bytes are in one of the records pushed between it and that entry, and
    /// which one is the chain's business (CRI joins stdout and stderr apart), so it is
    /// final once every one of those records is.
    released_upto: Option<u64>,
    /// Kept for the dead-letter file until the record is final.
    data: Option<Bytes>,
}

/// A record's place and data, for the dead-letter file.
#[derive(Debug, Clone)]
pub struct Pending {
    pub start: u64,
    pub end: u64,
    pub data: Option<Bytes>,
}

impl Tracker {
    /// Nothing before `offset` is pending.
    pub fn new(offset: u64) -> Tracker {
        Tracker {
            base: 0,
            entries: VecDeque::new(),
            committed: offset,
        }
    }

    /// A record read from `start` to `end`; returns its id.
    pub fn push(&mut self, start: u64, end: u64, data: Option<Bytes>) -> u64 {
        let id = self.base + self.entries.len() as u64;
        self.entries.push_back(Entry {
            start,
            end,
            done: false,
            hold: false,
            released_upto: None,
            data,
        });
        id
    }

    /// A line the processing chain holds for a later record; returns its id.
    pub fn push_hold(&mut self, start: u64, end: u64) -> u64 {
        let id = self.push(start, end, None);
        self.entries.back_mut().expect("just pushed").hold = true;
        id
    }

    /// The chain no longer holds these lines: each is final once every record pushed
    /// after it, up to now, is.
    pub fn release(&mut self, holds: &[u64]) {
        let Some(last) = (self.base + self.entries.len() as u64).checked_sub(1) else {
            return;
        };
        for &h in holds {
            if let Some(e) = h
                .checked_sub(self.base)
                .and_then(|i| self.entries.get_mut(i as usize))
            {
                e.released_upto = Some(last);
            }
        }
        self.pop_final();
    }

    fn front_final(&self) -> bool {
        let Some(e) = self.entries.front() else {
            return false;
        };
        if e.done {
            return true;
        }
        match e.released_upto {
            Some(upto) if e.hold => self
                .entries
                .iter()
                .take((upto + 1).saturating_sub(self.base) as usize)
                .skip(1)
                .all(|x| x.hold || x.done),
            _ => false,
        }
    }

    fn pop_final(&mut self) {
        while self.front_final() {
            let e = self.entries.pop_front().expect("front exists");
            self.committed = e.end;
            self.base += 1;
        }
    }

    /// The record's place, while it is not final.
    pub fn pending(&self, id: u64) -> Option<Pending> {
        let e = self.entries.get(id.checked_sub(self.base)? as usize)?;
        (!e.done).then(|| Pending {
            start: e.start,
            end: e.end,
            data: e.data.clone(),
        })
    }

    /// The record is final (succeeded, or dead-lettered). Unknown or
    /// repeated ids are ignored.
    pub fn done(&mut self, id: u64) {
        let Some(i) = id.checked_sub(self.base) else {
            return;
        };
        if let Some(e) = self.entries.get_mut(i as usize) {
            if !e.hold {
                e.done = true;
                e.data = None;
            }
        }
        self.pop_final();
    }

    /// Every record before this offset is final.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Records read and not final (held lines are not records).
    pub fn in_flight(&self) -> usize {
        self.entries.iter().filter(|e| !e.done && !e.hold).count()
    }

    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file was truncated (copytruncate): reading starts again at
    /// `offset`. Records still in flight (the wait for them was bounded)
    /// keep their ids, which are not given again, so their results are
    /// ignored.
    pub fn restart_at(&mut self, offset: u64) {
        self.base += self.entries.len() as u64;
        self.entries.clear();
        self.committed = offset;
    }
}

/// When the checkpoints of files that are gone are dropped, so that the
/// checkpoint file does not grow with every file that ever matched.
///
/// A checkpoint is *seen* while its file is open or any table's discovery
/// matches a file of its identity; one loaded at start counts as seen then.
/// One not seen for `retention` is dropped: its file was deleted while kpld
/// was down, rotated to a name no table matches, or its table was removed.
/// Dropping one early costs at most a re-read from the start (duplicates,
/// never a loss), since the identity check already refuses a stranger.
#[derive(Debug, Default)]
pub struct Retention<K> {
    seen: HashMap<K, Instant>,
}

impl<K: Eq + Hash + Clone> Retention<K> {
    pub fn seen(&mut self, key: K, now: Instant) {
        self.seen.insert(key, now);
    }

    /// Removes from `saved` the checkpoints not seen for `retention` and
    /// returns them; forgets what it knew of keys no longer saved.
    pub fn expire<V>(
        &mut self,
        saved: &mut HashMap<K, V>,
        now: Instant,
        retention: Duration,
    ) -> Vec<V> {
        let seen = &mut self.seen;
        let old: Vec<K> = saved
            .keys()
            .filter(|k| {
                let at = *seen.entry((*k).clone()).or_insert(now);
                now.saturating_duration_since(at) >= retention
            })
            .cloned()
            .collect();
        let gone = old.iter().filter_map(|k| saved.remove(k)).collect();
        seen.retain(|k, _| saved.contains_key(k));
        gone
    }
}

/// The checkpoint file.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OnDisk {
    version: u32,
    files: Vec<Saved>,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            path: state_dir.join("file-checkpoints.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved checkpoints; none when there is no file yet.
    pub fn load(&self) -> std::io::Result<Vec<Saved>> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                let d: OnDisk = serde_json::from_slice(&b).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a kpld checkpoint file: {e}", self.path.display()),
                    )
                })?;
                Ok(d.files)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the file atomically: temporary file, fsync, rename, fsync of
    /// the directory.
    pub fn save(&self, files: &[Saved]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&OnDisk {
            version: 1,
            files: files.to_vec(),
        })
        .expect("checkpoints serialise");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_not_open_nor_matched_for_the_retention_is_dropped_and_only_that_one() {
        let t0 = Instant::now();
        let keep = Duration::from_secs(60);
        let mut saved: HashMap<&str, u64> = [("open", 1), ("matched", 2), ("gone", 3)].into();
        let mut r = Retention::default();
        // Loaded at start: all count as seen at the first write.
        assert!(r.expire(&mut saved, t0, keep).is_empty());
        let later = t0 + Duration::from_secs(59);
        r.seen("open", later);
        r.seen("matched", later);
        assert!(
            r.expire(&mut saved, later, keep).is_empty(),
            "none is 60 s old yet"
        );
        let gone = r.expire(&mut saved, t0 + keep, keep);
        assert_eq!(gone, vec![3]);
        assert_eq!(saved.len(), 2);
        assert!(
            !r.seen.contains_key("gone"),
            "what it knew of a dropped key goes too"
        );
        assert!(r
            .expire(&mut saved, later + keep - Duration::from_secs(1), keep)
            .is_empty());
    }

    /// CRI joins stdout's and stderr's partial lines apart: stdout P (0..10), stderr P
    /// (10..20), stderr F (20..30) emits stderr's record while stdout's partial is still
    /// held, then stdout F (30..40) emits stdout's. A held line must not be passed before
    /// the record its bytes went into is final, whichever that is.
    #[test]
    fn a_held_line_is_final_only_with_every_record_that_may_hold_its_bytes() {
        let mut t = Tracker::new(0);
        let out_p = t.push_hold(0, 10);
        let err_p = t.push_hold(10, 20);
        let err_rec = t.push(20, 30, None);
        // The chain still holds stdout's line (offset 0): nothing is released yet.
        t.done(err_rec);
        assert_eq!(t.committed(), 0, "stdout's partial line is still held");
        let out_rec = t.push(30, 40, None);
        t.release(&[out_p, err_p]);
        assert_eq!(
            t.committed(),
            0,
            "stdout's record holds its partial line's bytes"
        );
        assert_eq!(t.in_flight(), 1, "held lines are not records");
        t.done(out_rec);
        assert_eq!(t.committed(), 40);
        assert!(t.is_idle());

        // The other order: stderr's record is the one still in flight.
        let mut t = Tracker::new(0);
        let out_p = t.push_hold(0, 10);
        let err_p = t.push_hold(10, 20);
        let err_rec = t.push(20, 30, None);
        let out_rec = t.push(30, 40, None);
        t.release(&[out_p, err_p]);
        t.done(out_rec);
        assert_eq!(
            t.committed(),
            0,
            "stderr's partial line's record is not final"
        );
        t.done(out_p); // results never name a held line; ignored if they do
        assert_eq!(t.committed(), 0);
        t.done(err_rec);
        assert_eq!(t.committed(), 40);
    }

    #[test]
    fn the_offset_never_moves_past_a_record_not_final() {
        let mut t = Tracker::new(0);
        let a = t.push(0, 10, None);
        let b = t.push(10, 20, None);
        let c = t.push(20, 30, None);
        t.done(c);
        t.done(b);
        assert_eq!(t.committed(), 0, "a is not final: nothing moves");
        assert_eq!(t.in_flight(), 1);
        t.done(a);
        assert_eq!(t.committed(), 30);
        assert!(t.is_idle());
        t.done(a);
        t.done(99);
        assert_eq!(t.committed(), 30, "repeated and unknown ids are ignored");
        let d = t.push(30, 35, Some(Bytes::from_static(b"x")));
        assert_eq!(t.pending(d).unwrap().data.as_deref(), Some(&b"x"[..]));
        t.done(d);
        assert!(t.pending(d).is_none());
        assert_eq!(t.committed(), 35);
        let old = t.push(35, 40, None);
        t.restart_at(0);
        let new = t.push(0, 7, None);
        assert_ne!(old, new, "ids are never given twice");
        t.done(old);
        assert_eq!(
            t.committed(),
            0,
            "a result from before the truncation is ignored"
        );
        t.done(new);
        assert_eq!(t.committed(), 7);
    }

    proptest::proptest! {
        #[test]
        fn committed_is_the_end_of_the_longest_finished_prefix(
            order in proptest::collection::vec(0usize..50, 0..50)
        ) {
            let mut t = Tracker::new(0);
            let ids: Vec<u64> = (0..50).map(|i| t.push(i * 10, i * 10 + 10, None)).collect();
            let mut finished = [false; 50];
            for i in order {
                t.done(ids[i]);
                finished[i] = true;
                let prefix = finished.iter().take_while(|f| **f).count() as u64;
                proptest::prop_assert_eq!(t.committed(), prefix * 10);
            }
        }
    }

    #[test]
    fn the_store_round_trips_and_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        assert!(s.load().unwrap().is_empty());
        let one = Saved {
            stream: "s".into(),
            path: "/a".into(),
            dev: 1,
            ino: 2,
            fp_len: 3,
            fp_crc: 4,
            offset: 5,
            tail_crc: 6,
        };
        s.save(std::slice::from_ref(&one)).unwrap();
        s.save(&[
            one.clone(),
            Saved {
                ino: 9,
                ..one.clone()
            },
        ])
        .unwrap();
        assert_eq!(s.load().unwrap().len(), 2);
        assert!(!dir.path().join("file-checkpoints.json.tmp").exists());
        std::fs::write(s.path(), b"{").unwrap();
        assert!(s
            .load()
            .unwrap_err()
            .to_string()
            .contains("not a kpld checkpoint file"));
    }
}

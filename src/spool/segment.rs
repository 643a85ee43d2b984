//! Segment files: their names and header, the recovery scan of one file's bytes
//! (pure: torn tail and bad regions found, every intact entry kept), and the file
//! operations recovery needs (cut a torn tail, rewrite a corrupt segment clean after
//! keeping the original in `corrupt/`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::entry::{self, Bad};

/// Segment header: magic and format version (8), the sequence floor (u64 LE), crc32
/// of those 16 bytes (4), zero (4). The checksum keeps a damaged floor from hiding
/// entries as stale.
pub const HEADER_BYTES: usize = 24;
pub const MAGIC: [u8; 8] = *b"KPLDSPL\x01";
pub const CORRUPT_DIR: &str = "corrupt";
const PREFIX: &str = "seg-";
const SUFFIX: &str = ".spool";

pub fn name(name_seq: u64) -> String {
    format!("{PREFIX}{name_seq:020}{SUFFIX}")
}

/// The sequence number in a segment file's name, `None` if the name is not a segment's.
pub fn parse_name(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn header(floor: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&floor.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// One intact entry found by the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub seq: u64,
    pub at: usize,
    pub len: usize,
}

/// What the scan of one segment's bytes found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Every entry may have a sequence number at or above this (header), or the name's.
    pub floor: u64,
    pub entries: Vec<Found>,
    /// Bad regions (start, end, what): bytes that are not entries, with intact ones after.
    pub bad: Vec<(usize, usize, &'static str)>,
    /// Where a torn tail starts (a last entry cut short, or zeros), if there is one.
    pub torn_from: Option<usize>,
    /// Entries below the floor: left by a reset of the segment that a crash interrupted
    /// (every one of them was done before the reset).
    pub stale: u64,
}

impl Scan {
    pub fn is_corrupt(&self) -> bool {
        !self.bad.is_empty()
    }

    /// The highest sequence number in the segment plus one, at least the floor.
    pub fn end_seq(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.floor, |f| f.seq + 1)
            .max(self.floor)
    }

    pub fn describe(&self, file: &Path) -> String {
        let regions: Vec<String> = self
            .bad
            .iter()
            .map(|(s, e, what)| format!("bytes {s}..{e}: {what}"))
            .collect();
        format!(
            "{}: {}; {} intact entries kept",
            file.display(),
            regions.join(", "),
            self.entries.len()
        )
    }
}

/// Scans a segment file's bytes. `name_seq` is the number in its name, the floor when
/// the header is unreadable. Never fails: what is not an entry is reported.
pub fn scan(b: &[u8], name_seq: u64) -> Scan {
    let mut s = Scan {
        floor: name_seq,
        ..Scan::default()
    };
    if b.len() < HEADER_BYTES {
        // A segment created just before a crash: nothing in it can be an entry.
        s.torn_from = Some(0);
        return s;
    }
    let floor = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"));
    if b[..8] != MAGIC {
        s.bad.push((0, HEADER_BYTES, "bad segment header magic"));
    } else if crc32fast::hash(&b[..16]) != crc || b[20..24] != [0; 4] {
        s.bad
            .push((0, HEADER_BYTES, "segment header checksum mismatch"));
    } else if floor < name_seq {
        s.bad.push((
            0,
            HEADER_BYTES,
            "header sequence floor below the file name's",
        ));
    } else {
        s.floor = floor;
    }
    let mut at = HEADER_BYTES;
    let mut next_min = s.floor;
    while at < b.len() {
        let failure = match entry::decode(&b[at..]) {
            Ok(d) if d.seq >= next_min => {
                s.entries.push(Found {
                    seq: d.seq,
                    at,
                    len: d.len,
                });
                next_min = d.seq + 1;
                at += d.len;
                continue;
            }
            Ok(d) if d.seq < s.floor && s.entries.is_empty() => {
                s.stale += 1;
                at += d.len;
                continue;
            }
            Ok(_) => Bad::Invalid("sequence number out of order"),
            Err(bad) => bad,
        };
        match entry::resync(b, at + 1, next_min) {
            Some(next) => {
                let what = match failure {
                    Bad::Truncated => "entry length runs past the next entry",
                    Bad::Invalid(w) => w,
                };
                s.bad.push((at, next, what));
                at = next;
            }
            None => {
                let rest = &b[at..];
                if failure == Bad::Truncated || rest.iter().all(|&x| x == 0) {
                    s.torn_from = Some(at);
                } else {
                    let what = match failure {
                        Bad::Invalid(w) => w,
                        Bad::Truncated => "truncated",
                    };
                    s.bad.push((at, b.len(), what));
                }
                break;
            }
        }
    }
    s
}

pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> super::SpoolError + '_ {
    move |source| super::SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a new segment file holding only its header (not synced: the sync thread
/// syncs it and the directory before anything in it counts as durable).
pub fn create(dir: &Path, name_seq: u64, floor: u64) -> io::Result<(File, PathBuf)> {
    let path = dir.join(name(name_seq));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    if let Err(e) = f.write_all_at(&header(floor), 0) {
        drop(f);
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok((f, path))
}

pub fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Cuts a torn tail: the file ends after its last intact entry.
pub fn cut(path: &Path, len: usize) -> io::Result<()> {
    let f = open_rw(path)?;
    f.set_len(len as u64)?;
    f.sync_all()
}

/// Keeps the corrupt original as `dir/corrupt/NAME[.N]` (a hard link, so that no crash
/// loses it) and replaces the segment by a clean copy of its intact entries. Returns
/// where the original now is and the clean file's length.
pub fn rewrite_clean(dir: &Path, path: &Path, b: &[u8], s: &Scan) -> io::Result<(PathBuf, u64)> {
    let corrupt = dir.join(CORRUPT_DIR);
    fs::create_dir_all(&corrupt)?;
    let file_name = path
        .file_name()
        .expect("segment path has a name")
        .to_string_lossy()
        .into_owned();
    let mut aside = corrupt.join(&file_name);
    let mut n = 1;
    while aside.exists() {
        aside = corrupt.join(format!("{file_name}.{n}"));
        n += 1;
    }
    let tmp = dir.join(format!("{file_name}.tmp"));
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&header(s.floor));
    for f in &s.entries {
        out.extend_from_slice(&b[f.at..f.at + f.len]);
    }
    {
        let mut t = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        t.write_all(&out)?;
        t.sync_all()?;
    }
    fs::hard_link(path, &aside)?;
    sync_dir(&corrupt)?;
    fs::rename(&tmp, path)?;
    sync_dir(dir)?;
    Ok((aside, out.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::EntryRef;

    fn segment(seqs: &[u64]) -> (Vec<u8>, Vec<Found>) {
        let mut b = header(seqs.first().copied().unwrap_or(0)).to_vec();
        let mut found = Vec::new();
        for &seq in seqs {
            let at = b.len();
            let data = vec![seq as u8; 20 + seq as usize % 7];
            entry::encode(
                &mut b,
                seq,
                &EntryRef {
                    stream: "s",
                    partition_key: b"k",
                    explicit_hash_key: None,
                    data: &data,
                    compression: 0,
                    arrival_unix_ms: seq,
                },
            );
            found.push(Found {
                seq,
                at,
                len: b.len() - at,
            });
        }
        (b, found)
    }

    #[test]
    fn names_round_trip_and_others_are_not_segments() {
        assert_eq!(parse_name(&name(12345)), Some(12345));
        assert_eq!(parse_name("seg-123.spool"), None);
        assert_eq!(parse_name("ledger"), None);
        assert_eq!(parse_name(&format!("{}.tmp", name(1))), None);
    }

    #[test]
    fn clean_segment_scans_to_all_its_entries() {
        let (b, found) = segment(&[10, 11, 12]);
        let s = scan(&b, 10);
        assert_eq!(s.entries, found);
        assert!(!s.is_corrupt());
        assert_eq!(s.torn_from, None);
        assert_eq!(s.end_seq(), 13);
    }

    #[test]
    fn torn_tail_is_found_where_the_last_whole_entry_ends() {
        let (b, found) = segment(&[10, 11, 12]);
        for cut in found[2].at + 1..b.len() {
            let s = scan(&b[..cut], 10);
            assert_eq!(s.entries, found[..2]);
            assert_eq!(s.torn_from, Some(found[2].at));
            assert!(!s.is_corrupt(), "cut at {cut}");
        }
    }

    #[test]
    fn zeros_after_the_last_entry_are_a_torn_tail() {
        let (mut b, found) = segment(&[1, 2]);
        let end = b.len();
        b.resize(end + 4096, 0);
        let s = scan(&b, 1);
        assert_eq!(s.entries, found);
        assert_eq!(s.torn_from, Some(end));
    }

    #[test]
    fn flipped_byte_in_the_middle_keeps_the_entries_on_both_sides() {
        let (mut b, found) = segment(&[5, 6, 7, 8]);
        b[found[1].at + 12] ^= 0x40;
        let s = scan(&b, 5);
        assert_eq!(s.entries, vec![found[0], found[2], found[3]]);
        assert_eq!(s.bad, vec![(found[1].at, found[2].at, "checksum mismatch")]);
    }

    #[test]
    fn damaged_floor_is_a_bad_header_not_stale_entries() {
        let (mut b, found) = segment(&[5, 6]);
        b[8 + 7] ^= 1;
        let s = scan(&b, 5);
        assert_eq!(s.entries, found);
        assert_eq!(s.stale, 0);
        assert_eq!(
            s.bad,
            vec![(0, HEADER_BYTES, "segment header checksum mismatch")]
        );
    }

    #[test]
    fn bad_header_is_reported_and_entries_after_it_kept() {
        let (mut b, found) = segment(&[5, 6]);
        b[0] = b'X';
        let s = scan(&b, 5);
        assert_eq!(s.entries, found);
        assert_eq!(s.bad.len(), 1);
        assert_eq!(s.floor, 5);
    }

    #[test]
    fn entries_below_a_reset_floor_are_stale_and_skipped() {
        let (mut b, found) = segment(&[5, 6]);
        b[..HEADER_BYTES].copy_from_slice(&header(100));
        let s = scan(&b, 5);
        assert_eq!(s.stale, 2);
        assert!(s.entries.is_empty());
        assert!(!s.is_corrupt());
        assert_eq!(s.end_seq(), 100);
        let _ = found;
    }
}

//! Which file is which: device and inode, a fingerprint of the first bytes
//! (CRC32 of up to [`FINGERPRINT_BYTES`], with the length it covers, so a
//! file shorter than the window is still read and its fingerprint grows
//! with it), and a CRC32 of the bytes just before a saved offset. A saved
//! checkpoint applies to a file only if all three agree ([`decide`], pure):
//! a new file that reuses an old inode is read from its start, not resumed
//! at the old offset.

use serde::{Deserialize, Serialize};

pub const FINGERPRINT_BYTES: usize = 256;
/// Bytes before the offset that must be unchanged to resume there.
pub const TAIL_BYTES: u64 = 64;

/// One file's checkpoint as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub stream: String,
    /// Where it was last seen (for people; identity is dev + inode).
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// Bytes the fingerprint covers: min(file size, FINGERPRINT_BYTES).
    pub fp_len: u32,
    pub fp_crc: u32,
    /// Every record before this offset is final.
    pub offset: u64,
    /// CRC32 of the `min(offset, TAIL_BYTES)` bytes before `offset`.
    pub tail_crc: u32,
}

/// What to do with a file that has a saved checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    At(u64),
    /// Not the file that was saved (or truncated since): read from 0.
    FromStart(&'static str),
}

/// The fingerprint of a file's first bytes (`head`: up to FINGERPRINT_BYTES).
pub fn fingerprint(head: &[u8]) -> (u32, u32) {
    let h = &head[..head.len().min(FINGERPRINT_BYTES)];
    (h.len() as u32, crc32fast::hash(h))
}

/// Where the check bytes before `offset` start.
pub fn tail_start(offset: u64) -> u64 {
    offset - offset.min(TAIL_BYTES)
}

/// Whether `saved` applies to the file with this `head` (its first
/// bytes), `size`, and `tail` (the bytes from `tail_start(saved.offset)`,
/// as many as there are up to the offset).
pub fn decide(saved: &Saved, head: &[u8], size: u64, tail: &[u8]) -> Resume {
    let fp_len = saved.fp_len as usize;
    if head.len() < fp_len || crc32fast::hash(&head[..fp_len]) != saved.fp_crc {
        return Resume::FromStart("its first bytes differ from the saved fingerprint (a new file on a reused inode, or rewritten)");
    }
    if size < saved.offset {
        return Resume::FromStart("it is shorter than the saved offset (truncated)");
    }
    if tail.len() as u64 != saved.offset - tail_start(saved.offset)
        || crc32fast::hash(tail) != saved.tail_crc
    {
        return Resume::FromStart("the bytes before the saved offset differ");
    }
    Resume::At(saved.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(content: &[u8], offset: u64) -> Saved {
        let (fp_len, fp_crc) = fingerprint(content);
        Saved {
            stream: "s".into(),
            path: "/x".into(),
            dev: 1,
            ino: 2,
            fp_len,
            fp_crc,
            offset,
            tail_crc: crc32fast::hash(&content[tail_start(offset) as usize..offset as usize]),
        }
    }

    fn check(s: &Saved, content: &[u8]) -> Resume {
        let head = &content[..content.len().min(FINGERPRINT_BYTES)];
        let from = tail_start(s.offset) as usize;
        let to = (s.offset as usize).min(content.len());
        decide(s, head, content.len() as u64, &content[from.min(to)..to])
    }

    #[test]
    fn the_same_file_grown_resumes_at_the_offset() {
        let old = b"line one\nline two\n".to_vec();
        let s = saved(&old, 9);
        let mut grown = old.clone();
        grown.extend_from_slice(&b"more\n".repeat(100));
        assert_eq!(check(&s, &grown), Resume::At(9));
    }

    #[test]
    fn a_file_shorter_than_the_window_is_fingerprinted_on_what_it_has() {
        let s = saved(b"hi\n", 3);
        assert_eq!(s.fp_len, 3);
        assert_eq!(check(&s, b"hi\nthere\n"), Resume::At(3));
        assert_eq!(check(&s, b"ho\n"), Resume::FromStart("its first bytes differ from the saved fingerprint (a new file on a reused inode, or rewritten)"));
    }

    #[test]
    fn a_reused_inode_or_a_truncated_file_is_read_from_the_start() {
        let long: Vec<u8> = (0..1000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let s = saved(&long, 900);
        assert!(matches!(check(&s, b"new file\n"), Resume::FromStart(_)));
        // Same first bytes (a common header), different content later.
        let mut other = long[..FINGERPRINT_BYTES].to_vec();
        other.extend(std::iter::repeat_n(b'z', 2000));
        assert!(
            matches!(check(&s, &other), Resume::FromStart(m) if m.contains("before the saved offset"))
        );
        // Same start, cut below the offset.
        assert!(matches!(check(&s, &long[..800]), Resume::FromStart(m) if m.contains("truncated")));
    }
}

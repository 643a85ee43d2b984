//! Bytes of a file to lines, and lines to records (pure).
//!
//! - A line ends at `\n`; a `\r` just before it is dropped too.
//! - A line longer than `max_line_bytes` is **split** into pieces of
//!   `max_line_bytes` (the last one shorter): nothing is lost, each piece is
//!   a record, and the line is counted in `long_lines` (the reader logs it).
//!   A piece is cut as soon as `max_line_bytes` are buffered, so memory per
//!   file stays bounded by that size whatever the line's length.
//! - Offsets: `start` is a piece's first byte in the file, `end` the byte
//!   after it (after its terminator for the last piece of a line): the
//!   checkpoint after a record is its `end`.
//! - A piece's bytes are a slice of the buffer the file was read into
//!   ([`Bytes`]): no allocation or copy per line. The buffer lives as long as
//!   one of its records is held somewhere (the pipeline, the tracker).

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;

/// A line, a piece of a long one, or a multi-line record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
    pub data: Bytes,
    /// Only the terminator of a long line whose pieces were all cut
    /// before it came: no record, but its offsets count as done.
    pub terminator_only: bool,
}

/// Splits a file's bytes into lines.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    /// Bytes read and not yet returned as a line.
    buf: BytesMut,
    /// `buf` ranges of the pieces `feed` is making, filled in once the
    /// bytes before the last line's end are split off.
    ranges: Vec<(usize, usize)>,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// Bytes of `buf` already searched for `\n`.
    scanned: usize,
    /// Part of the current line already returned as pieces.
    in_long_line: bool,
    /// Lines longer than `max` (each counted once).
    pub long_lines: u64,
}

impl LineSplitter {
    /// Reading starts at `offset`.
    pub fn new(max_line_bytes: usize, offset: u64) -> LineSplitter {
        LineSplitter {
            max: max_line_bytes.max(1),
            buf: BytesMut::new(),
            ranges: Vec::new(),
            buf_start: offset,
            scanned: 0,
            in_long_line: false,
            long_lines: 0,
        }
    }

    /// The offset up to which bytes were fed.
    pub fn fed_to(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Bytes fed that are not part of a returned line yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Feeds the next bytes of the file; complete lines go to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        self.buf.extend_from_slice(bytes);
        let first = out.len();
        let mut line_start = 0usize;
        loop {
            let from = self.scanned.max(line_start);
            match memchr::memchr(b'\n', &self.buf[from..]) {
                Some(i) => {
                    let nl = from + i;
                    let mut text_end = nl;
                    if text_end > line_start && self.buf[text_end - 1] == b'\r' {
                        text_end -= 1;
                    }
                    self.emit_line(line_start, text_end, nl + 1, out);
                    line_start = nl + 1;
                    self.scanned = line_start;
                }
                None => {
                    self.scanned = self.buf.len();
                    // No terminator yet: cut full pieces of a long line now.
                    while self.buf.len() - line_start > self.max {
                        if !self.in_long_line {
                            self.in_long_line = true;
                            self.long_lines += 1;
                        }
                        let end = line_start + self.max;
                        out.push(self.piece(line_start, end, end));
                        line_start = end;
                    }
                    break;
                }
            }
        }
        self.fill(first, line_start, out);
        self.buf_start += line_start as u64;
        self.scanned -= line_start;
    }

    /// Gives the pieces from `out[first..]` their bytes: slices of the first
    /// `upto` bytes of `buf`, split off (one reference count each, no copy).
    fn fill(&mut self, first: usize, upto: usize, out: &mut [Piece]) {
        let head = self.buf.split_to(upto).freeze();
        for (p, (from, to)) in out[first..].iter_mut().zip(self.ranges.drain(..)) {
            p.data = head.slice(from..to);
        }
    }

    /// The last line when it has no terminator (the file will not grow:
    /// rotated or deleted).
    pub fn finish(&mut self) -> Option<Piece> {
        if self.buf.is_empty() {
            return None;
        }
        let mut out = Vec::new();
        let n = self.buf.len();
        self.emit_line(0, n, n, &mut out);
        self.fill(0, n, &mut out);
        self.buf_start += n as u64;
        self.scanned = 0;
        out.pop()
    }

    fn emit_line(
        &mut self,
        mut from: usize,
        text_end: usize,
        line_end: usize,
        out: &mut Vec<Piece>,
    ) {
        if text_end - from > self.max && !self.in_long_line {
            self.long_lines += 1;
        }
        while text_end - from > self.max {
            out.push(self.piece(from, from + self.max, from + self.max));
            from += self.max;
        }
        let mut last = self.piece(from, text_end, line_end);
        last.terminator_only = self.in_long_line && from == text_end;
        out.push(last);
        self.in_long_line = false;
    }

    /// A piece whose bytes `fill` gives.
    fn piece(&mut self, from: usize, to: usize, end: usize) -> Piece {
        self.ranges.push((from, to));
        Piece {
            start: self.buf_start + from as u64,
            end: self.buf_start + end as u64,
            data: Bytes::new(),
            terminator_only: false,
        }
    }
}

/// Joins lines into multi-line records: a line that matches the start
/// pattern begins a record, any other continues the current one (joined
/// with `\n`). A record that would pass `max` bytes is sent as it is and
/// the line begins the next one.
#[derive(Debug)]
pub struct Multiline {
    start: Regex,
    max: usize,
    current: Option<Piece>,
    /// Records cut at `max`.
    pub cut: u64,
}

impl Multiline {
    pub fn new(start: Regex, max: usize) -> Multiline {
        Multiline {
            start,
            max,
            current: None,
            cut: 0,
        }
    }

    /// The record that `line` completes, if any.
    pub fn push(&mut self, line: Piece) -> Option<Piece> {
        match &mut self.current {
            Some(cur) if !self.start.is_match(&line.data) => {
                if cur.data.len() + 1 + line.data.len() <= self.max {
                    // A record joined before is the only owner of its bytes:
                    // they are taken back without a copy.
                    let mut joined = Vec::from(std::mem::take(&mut cur.data));
                    joined.push(b'\n');
                    joined.extend_from_slice(&line.data);
                    cur.data = joined.into();
                    cur.end = line.end;
                    None
                } else {
                    self.cut += 1;
                    self.current.replace(line)
                }
            }
            _ => self.current.replace(line),
        }
    }

    /// The record being built, if any (no more lines came for a while, or
    /// the file will not grow).
    pub fn flush(&mut self) -> Option<Piece> {
        self.current.take()
    }

    pub fn holds(&self) -> bool {
        self.current.is_some()
    }
}

/// Where `start_at = "end"` begins a file that has no checkpoint: just after
/// its last complete line, so that a line still being written when kpld
/// starts is sent whole once its end comes, not as the fragment after `size`.
/// `read(at, len)` gives the file's bytes (fewer at its end). Looks back at
/// most `max_line_bytes`: a line in progress longer than that would be split
/// into pieces anyway, so there it starts at `size`. A file with no line end
/// at all is one line in progress: it starts at 0.
pub fn start_after_last_line(
    size: u64,
    max_line_bytes: u64,
    mut read: impl FnMut(u64, usize) -> Vec<u8>,
) -> u64 {
    const STEP: u64 = 64 * 1024;
    let floor = size.saturating_sub(max_line_bytes);
    let mut end = size;
    while end > floor {
        let from = end.saturating_sub(STEP).max(floor);
        let bytes = read(from, (end - from) as usize);
        if let Some(i) = bytes.iter().rposition(|&b| b == b'\n') {
            return from + i as u64 + 1;
        }
        end = from;
    }
    if floor == 0 {
        0
    } else {
        size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_of(file: &[u8], max: u64) -> u64 {
        start_after_last_line(file.len() as u64, max, |at, len| {
            let at = at as usize;
            file[at..(at + len).min(file.len())].to_vec()
        })
    }

    #[test]
    fn start_at_end_begins_after_the_last_complete_line_not_inside_the_one_being_written() {
        assert_eq!(
            start_of(b"one\ntwo\n", 100),
            8,
            "ends with a line end: at the end"
        );
        assert_eq!(
            start_of(b"one\ntwo\npar", 100),
            8,
            "a line in progress is sent whole"
        );
        assert_eq!(
            start_of(b"partial", 100),
            0,
            "no line end at all: one line in progress"
        );
        assert_eq!(start_of(b"", 100), 0);
        // A line in progress longer than max_line_bytes would be split anyway.
        assert_eq!(start_of(b"a\nbbbbbbbbbb", 4), 12);
        // Looked for across read steps (64 KiB each).
        let mut big = b"head\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 200_000));
        assert_eq!(start_of(&big, 1 << 20), 5);
    }

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<(u64, u64, String)>, u64) {
        let mut s = LineSplitter::new(max, 0);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        let v = out
            .into_iter()
            .map(|p| {
                let d = String::from_utf8(p.data.to_vec()).unwrap();
                (
                    p.start,
                    p.end,
                    if p.terminator_only { "<end>".into() } else { d },
                )
            })
            .collect();
        (v, s.long_lines)
    }

    #[test]
    fn lines_end_at_lf_or_crlf_and_offsets_cover_the_terminators() {
        let (v, long) = split(100, &[b"ab\r\ncd", b"\n\nef"]);
        assert_eq!(
            v,
            vec![(0, 4, "ab".into()), (4, 7, "cd".into()), (7, 8, "".into())]
        );
        assert_eq!(long, 0);
        let mut s = LineSplitter::new(100, 10);
        let mut out = Vec::new();
        s.feed(b"x\ny", &mut out);
        let last = s.finish().unwrap();
        assert_eq!((last.start, last.end, &last.data[..]), (12, 13, &b"y"[..]));
        assert_eq!(s.fed_to(), 13);
    }

    #[test]
    fn a_long_line_is_split_into_pieces_counted_once_and_nothing_is_lost() {
        let (v, long) = split(4, &[b"abcdefghij\nxy\n"]);
        assert_eq!(
            v,
            vec![
                (0, 4, "abcd".into()),
                (4, 8, "efgh".into()),
                (8, 11, "ij".into()),
                (11, 14, "xy".into())
            ]
        );
        assert_eq!(long, 1);
        // Fed a byte at a time: pieces are cut before the terminator comes,
        // so memory stays bounded.
        let bytes = b"abcdefgh\nz\n";
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let (v, long) = split(4, &chunks);
        assert_eq!(
            v,
            vec![
                (0, 4, "abcd".into()),
                (4, 9, "efgh".into()),
                (9, 11, "z".into())
            ]
        );
        assert_eq!(long, 1);
        // Cut before its `\r\n` came: the terminator alone is left.
        let (v, _) = split(2, &[b"ab\r", b"\n"]);
        assert_eq!(v, vec![(0, 2, "ab".into()), (2, 4, "<end>".into())]);
    }

    proptest::proptest! {
        #[test]
        fn pieces_rebuild_the_file_whatever_the_chunking(
            text in proptest::collection::vec(proptest::sample::select(vec![b'a', b'b', b'\n']), 0..200),
            max in 1usize..20,
            cut in 1usize..50,
        ) {
            let mut s = LineSplitter::new(max, 0);
            let mut out = Vec::new();
            for c in text.chunks(cut) {
                s.feed(c, &mut out);
            }
            out.extend(s.finish());
            let mut at = 0;
            let mut rebuilt = Vec::new();
            for p in &out {
                proptest::prop_assert_eq!(p.start, at);
                proptest::prop_assert!(p.data.len() <= max);
                proptest::prop_assert!(p.end > at);
                rebuilt.extend_from_slice(&p.data);
                let term = &text[(p.start as usize + p.data.len())..p.end as usize];
                rebuilt.extend_from_slice(term);
                at = p.end;
            }
            proptest::prop_assert_eq!(at as usize, text.len());
            proptest::prop_assert_eq!(rebuilt, text);
        }
    }

    #[test]
    fn multiline_joins_continuations_until_the_next_start() {
        let re = Regex::new(r"^\d{4}-").unwrap();
        let mut m = Multiline::new(re, 100);
        let p = |s: u64, e: u64, d: &str| Piece {
            start: s,
            end: e,
            data: Bytes::copy_from_slice(d.as_bytes()),
            terminator_only: false,
        };
        assert_eq!(m.push(p(0, 11, "2026-01 boom")), None);
        assert_eq!(m.push(p(11, 20, "  at x()")), None);
        assert_eq!(
            m.push(p(20, 30, "2026-02 ok")),
            Some(p(0, 20, "2026-01 boom\n  at x()"))
        );
        assert_eq!(m.flush(), Some(p(20, 30, "2026-02 ok")));
        assert!(!m.holds());
        // A leading continuation with nothing before it is a record of its own.
        assert_eq!(m.push(p(0, 4, "  x")), None);
        assert_eq!(m.flush(), Some(p(0, 4, "  x")));
        let mut small = Multiline::new(Regex::new("^S").unwrap(), 5);
        assert_eq!(small.push(p(0, 3, "S1")), None);
        assert_eq!(small.push(p(3, 7, "abc")), Some(p(0, 3, "S1")));
        assert_eq!(small.cut, 1);
    }
}

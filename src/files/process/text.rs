//! Hand parsers' shared pieces: a cursor over one line, the RFC 3339 check
//! (CRI, RFC 5424, syslog files) and the UTC timestamp add_metadata writes.

use std::time::{SystemTime, UNIX_EPOCH};

/// A position in one line. Every delimiter it looks for is ASCII, so every
/// slice it hands out of a `&str` is on a character boundary.
pub(crate) struct Cursor<'a> {
    pub(crate) s: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Consumes `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn expect(&mut self, b: u8, what: &str) -> Result<(), String> {
        self.expect_with(b, || what.to_string())
    }

    /// [`Cursor::expect`] with a message built only when it is needed.
    pub(crate) fn expect_with(
        &mut self,
        b: u8,
        what: impl FnOnce() -> String,
    ) -> Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(format!("expected {} at byte {}", what(), self.pos))
        }
    }

    /// The text up to the next space (or the end), not empty; the space
    /// stays.
    pub(crate) fn token(&mut self, what: &str) -> Result<&'a str, String> {
        let rest = self.rest();
        let n = rest.find(' ').unwrap_or(rest.len());
        if n == 0 {
            return Err(format!("missing {what} at byte {}", self.pos));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    /// The text up to `end` (consumed, not returned).
    pub(crate) fn until(&mut self, end: u8, what: &str) -> Result<&'a str, String> {
        let rest = self.rest();
        match rest.bytes().position(|b| b == end) {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => Err(format!(
                "{what} at byte {} has no closing {:?}",
                self.pos, end as char
            )),
        }
    }

    /// A `"`-quoted string with backslash escapes (Apache's `\"` and `\\`),
    /// the opening quote already consumed; returned as written (escapes
    /// kept) with whether it holds any.
    pub(crate) fn quoted(&mut self, what: &str) -> Result<(&'a str, bool), String> {
        let start = self.pos;
        let bytes = self.s.as_bytes();
        let mut escaped = false;
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                b'"' => {
                    self.pos = i + 1;
                    return Ok((&self.s[start..i], escaped));
                }
                _ => i += 1,
            }
        }
        Err(format!(
            "{what} opened at byte {} has no closing quote",
            start.saturating_sub(1)
        ))
    }
}

/// `\"` -> `"` and `\\` -> `\`; other backslashes are kept as written
/// (Apache writes `\xhh` for bytes it will not print: they stay readable).
pub(crate) fn unescape_backslashes(s: &str, keep_other: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n.is_ascii() && keep_other.contains(&(n as u8)) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let d = b.get(at..at + n)?;
    if !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0, |v, c| v * 10 + u32::from(c - b'0')))
}

/// Whether `s` is an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`
/// (`T` and `Z` in either case, as RFC 3339 allows).
pub(crate) fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = (|| {
        let month = digits(b, 5, 2)?;
        let day = digits(b, 8, 2)?;
        let hour = digits(b, 11, 2)?;
        let min = digits(b, 14, 2)?;
        let sec = digits(b, 17, 2)?;
        digits(b, 0, 4)?;
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 {
            return None;
        }
        if sec > 60 {
            return None;
        }
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            i += 1 + n;
        }
        match b.get(i)? {
            b'Z' | b'z' => (i + 1 == b.len()).then_some(()),
            b'+' | b'-' => {
                let h = digits(b, i + 1, 2)?;
                let m = digits(b, i + 4, 2)?;
                (b[i + 3] == b':' && h < 24 && m < 60 && i + 6 == b.len()).then_some(())
            }
            _ => None,
        }
    })();
    ok.is_some()
}

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds), into `out`.
pub(crate) fn write_utc_millis(out: &mut Vec<u8>, t: SystemTime) {
    // A clock before 1970 is written as the epoch: there is no sensible
    // record time before it, and a panic would stop the file.
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    let ms = d.subsec_millis();
    let mut buf = [0u8; 24];
    let y = y.clamp(0, 9999) as u32;
    put(&mut buf[0..4], y);
    buf[4] = b'-';
    put(&mut buf[5..7], m);
    buf[7] = b'-';
    put(&mut buf[8..10], day);
    buf[10] = b'T';
    put(&mut buf[11..13], h as u32);
    buf[13] = b':';
    put(&mut buf[14..16], mi as u32);
    buf[16] = b':';
    put(&mut buf[17..19], s as u32);
    buf[19] = b'.';
    put(&mut buf[20..23], ms);
    buf[23] = b'Z';
    out.extend_from_slice(&buf);
}

fn put(dst: &mut [u8], mut v: u32) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The input as text, or why it is not.
pub(crate) fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn utc(t: SystemTime) -> String {
        let mut out = Vec::new();
        write_utc_millis(&mut out, t);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn utc_timestamps_match_known_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(utc(t), "2000-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(utc(t), "2026-12-31T23:59:59.000Z");
    }

    #[test]
    fn rfc3339_accepts_the_specs_examples_and_refuses_near_misses() {
        for ok in [
            "1985-04-12T23:20:50.52Z",
            "1996-12-19T16:39:57-08:00",
            "1990-12-31T23:59:60Z",
            "2016-10-06T00:17:09.669794202Z",
            "2003-08-24T05:14:15.000003-07:00",
            "1937-01-01t12:00:27.87+00:20",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "1985-04-12 23:20:50Z",
            "1985-04-12T23:20:50",
            "1985-13-12T23:20:50Z",
            "1985-04-12T24:20:50Z",
            "1985-04-12T23:20:50.Z",
            "1985-04-12T23:20:50+0800",
            "1985-04-12T23:20:50Zx",
            "2003-10-11T22:14:15.003Z ",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn quoted_strings_honour_backslash_escapes() {
        let mut c = Cursor::new(r#"GET /a\"b HTTP/1.0" rest"#);
        let (s, esc) = c.quoted("request").unwrap();
        assert_eq!((s, esc), (r#"GET /a\"b HTTP/1.0"#, true));
        assert_eq!(c.rest(), " rest");
        assert_eq!(unescape_backslashes(s, b"\"\\"), r#"GET /a"b HTTP/1.0"#);
        let mut c = Cursor::new("\"no end");
        c.expect(b'"', "a quote").unwrap();
        assert_eq!(
            c.quoted("request").unwrap_err(),
            "request opened at byte 0 has no closing quote"
        );
    }
}

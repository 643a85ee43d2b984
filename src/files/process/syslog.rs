//! `log_to_json` with `format = "syslog"`: BSD syslog lines (RFC 3164) as
//! syslog daemons write them to files: `[<PRI>]TIMESTAMP HOSTNAME
//! TAG[PID]: MESSAGE`. The `<PRI>` is optional (rsyslog and syslog-ng leave
//! it out of files); the timestamp is RFC 3164's `Mmm dd hh:mm:ss` or an
//! RFC 3339 one (rsyslog's `RSYSLOG_FileFormat`), kept as written: 3164's
//! has no year and no zone, and guessing them would be worse.

use super::json::Obj;
use super::text::{is_rfc3339, Cursor};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `<PRI>` at the start, if there: (facility, severity).
pub(crate) fn pri(c: &mut Cursor<'_>) -> Result<Option<(u64, u64)>, String> {
    if !c.eat(b'<') {
        return Ok(None);
    }
    let v = c.until(b'>', "the priority <PRI>")?;
    if v.is_empty()
        || v.len() > 3
        || !v.bytes().all(|b| b.is_ascii_digit())
        || (v.len() > 1 && v.starts_with('0'))
    {
        return Err(format!("priority <{v}> is not a number of 1 to 3 digits"));
    }
    let p: u64 = v.parse().expect("checked digits");
    if p > 191 {
        return Err(format!(
            "priority <{p}> is above 191 (facility 23, severity 7)"
        ));
    }
    Ok(Some((p / 8, p % 8)))
}

/// `Mmm dd hh:mm:ss`, the day space-padded (`Oct  1`) or not.
fn bsd_timestamp<'a>(c: &mut Cursor<'a>) -> Option<&'a str> {
    let r = c.rest().as_bytes();
    let month = c.rest().get(..3)?;
    if !MONTHS.contains(&month) || r.get(3) != Some(&b' ') {
        return None;
    }
    let day_at = if r.get(4) == Some(&b' ') { 5 } else { 4 };
    let day_len = r[day_at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if !(1..=2).contains(&day_len) || (day_at == 5 && day_len != 1) {
        return None;
    }
    let t = day_at + day_len + 1;
    let time = r.get(t..t + 8)?;
    let ok = r[day_at + day_len] == b' '
        && time[2] == b':'
        && time[5] == b':'
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| time[i].is_ascii_digit());
    if !ok {
        return None;
    }
    let s = &c.rest()[..t + 8];
    c.pos += t + 8;
    Some(s)
}

pub(crate) fn apply(line: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut c = Cursor::new(line);
    let pri = pri(&mut c)?;
    let at = c.pos;
    let timestamp = match bsd_timestamp(&mut c) {
        Some(t) => t,
        None => {
            let t = c.token("the timestamp").unwrap_or("");
            if !is_rfc3339(t) {
                return Err(format!(
                    "no timestamp at byte {at} (expected \"Mmm dd hh:mm:ss\" or RFC 3339)"
                ));
            }
            t
        }
    };
    c.expect(b' ', "a space after the timestamp")?;
    let hostname = c.token("the hostname")?;
    let rest = c.rest().strip_prefix(' ').unwrap_or("");
    // TAG: up to 32 characters of [A-Za-z0-9_./-], then `[PID]` and/or `:`.
    // Without them the line has no tag and the rest is all message.
    let tag_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-'))
        .count();
    let (mut program, mut pid, mut message) = (None, None, rest);
    let after = &rest[tag_len..];
    if tag_len > 0 {
        if let Some(p) = after.strip_prefix('[') {
            if let Some((pid_s, m)) = p.split_once(']') {
                if let Some(m) = m.strip_prefix(':') {
                    program = Some(&rest[..tag_len]);
                    pid = Some(pid_s);
                    message = m.strip_prefix(' ').unwrap_or(m);
                }
            }
        } else if let Some(m) = after.strip_prefix(':') {
            program = Some(&rest[..tag_len]);
            message = m.strip_prefix(' ').unwrap_or(m);
        }
    }
    let mut o = Obj::new(out);
    o.opt_num("facility", pri.map(|p| p.0));
    o.opt_num("severity", pri.map(|p| p.1));
    o.str("timestamp", timestamp);
    o.str("hostname", hostname);
    o.opt_str("program", program);
    o.opt_str("processid", pid);
    o.str("message", message);
    o.end();
    Ok(())
}

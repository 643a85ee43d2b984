//! `log_to_json` for Apache httpd logs: the access log in the Common and
//! Combined formats (mod_log_config: `%h %l %u %t "%r" %>s %b` and
//! `... "%{Referer}i" "%{User-agent}i"`) and the error log (2.2's
//! `[time] [level] ...` and 2.4's `[time] [module:level] [pid P:tid T] ...`).
//! Field names are the Kinesis Agent's, so its users' consumers keep working.

use super::json::Obj;
use super::text::{unescape_backslashes, Cursor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Apache {
    Common,
    Combined,
    Error,
}

impl Apache {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Apache::Common => "log_to_json(common_apache)",
            Apache::Combined => "log_to_json(combined_apache)",
            Apache::Error => "log_to_json(apache_error)",
        }
    }

    pub(crate) fn apply(self, line: &str, out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Apache::Common => access(line, false, out),
            Apache::Combined => access(line, true, out),
            Apache::Error => error(line, out),
        }
    }
}

/// `-` is how mod_log_config writes "no value".
fn dash(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

fn quoted_field(o: &mut Obj<'_>, name: &str, c: &mut Cursor<'_>) -> Result<(), String> {
    c.expect_with(b' ', || format!("a space before the {name}"))?;
    c.expect_with(b'"', || format!("the opening quote of the {name}"))?;
    let (v, escaped) = c.quoted(name)?;
    match dash(v) {
        None => o.null(name),
        Some(v) if escaped => o.str(name, &unescape_backslashes(v, b"\"\\")),
        Some(v) => o.str(name, v),
    }
    Ok(())
}

fn access(line: &str, combined: bool, out: &mut Vec<u8>) -> Result<(), String> {
    let mut c = Cursor::new(line);
    let host = c.token("host (%h)")?;
    c.expect(b' ', "a space after the host")?;
    let ident = c.token("ident (%l)")?;
    c.expect(b' ', "a space after the ident")?;
    let user = c.token("authuser (%u)")?;
    c.expect(b' ', "a space after the authuser")?;
    c.expect(b'[', "'[' opening the time (%t)")?;
    let datetime = c.until(b']', "the time (%t)")?;
    let mut o = Obj::new(out);
    o.opt_str("host", dash(host));
    o.opt_str("ident", dash(ident));
    o.opt_str("authuser", dash(user));
    o.str("datetime", datetime);
    quoted_field(&mut o, "request", &mut c)?;
    c.expect(b' ', "a space after the request")?;
    let status = c.token("the status (%>s)")?;
    match dash(status) {
        None => o.null("response"),
        Some(s) => o.num("response", number(s, "status (%>s)")?),
    }
    c.expect(b' ', "a space after the status")?;
    let bytes = c.token("the size (%b)")?;
    // %b writes `-` for no bytes sent: that is 0, not unknown.
    let bytes = if bytes == "-" {
        0
    } else {
        number(bytes, "size (%b)")?
    };
    o.num("bytes", bytes);
    if combined {
        quoted_field(&mut o, "referrer", &mut c)?;
        quoted_field(&mut o, "agent", &mut c)?;
    }
    if !c.rest().trim_end().is_empty() {
        return Err(format!(
            "unexpected text after the last field at byte {}",
            c.pos
        ));
    }
    o.end();
    Ok(())
}

fn number(s: &str, what: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a number"));
    }
    s.parse().map_err(|_| format!("{what} {s:?} is too large"))
}

fn error(line: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut c = Cursor::new(line);
    c.expect(b'[', "'[' opening the time")?;
    let time = c.until(b']', "the time")?;
    c.expect(b' ', "a space after the time")?;
    c.expect(b'[', "'[' opening the level")?;
    let level = c.until(b']', "the level")?;
    let (module, severity) = match level.split_once(':') {
        Some((m, l)) => (Some(m), l),
        None => (None, level),
    };
    if severity.is_empty() || module == Some("") {
        return Err(format!("empty module or level in [{level}]"));
    }
    let (mut pid, mut tid, mut client) = (None, None, None);
    // Optional groups in this order; anything else starts the message.
    loop {
        let r = c.rest();
        if let Some(g) = r.strip_prefix(" [pid ") {
            let end = g
                .find(']')
                .ok_or_else(|| format!("[pid at byte {} has no closing ']'", c.pos + 1))?;
            let (p, t) = match g[..end].split_once(":tid ") {
                Some((p, t)) => (p, Some(t)),
                None => (&g[..end], None),
            };
            pid = Some(number(p, "pid")?);
            tid = t.map(|t| number(t, "tid")).transpose()?;
            c.pos += " [pid ".len() + end + 1;
        } else if let Some(g) = r.strip_prefix(" [client ") {
            let end = g
                .find(']')
                .ok_or_else(|| format!("[client at byte {} has no closing ']'", c.pos + 1))?;
            client = Some(&g[..end]);
            c.pos += " [client ".len() + end + 1;
        } else {
            break;
        }
    }
    let message = c.rest().strip_prefix(' ').unwrap_or(c.rest());
    let mut o = Obj::new(out);
    o.str("timestamp", time);
    o.opt_str("module", module);
    o.str("severity", severity);
    o.opt_num("processid", pid);
    o.opt_num("threadid", tid);
    o.opt_str("client", client);
    o.str("message", message);
    o.end();
    Ok(())
}

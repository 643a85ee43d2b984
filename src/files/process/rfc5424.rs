//! `log_to_json` with `format = "rfc5424"`: `<PRI>VERSION SP TIMESTAMP SP
//! HOSTNAME SP APP-NAME SP PROCID SP MSGID SP STRUCTURED-DATA [SP MSG]`.
//! The NILVALUE `-` becomes `null`; a UTF-8 BOM opening MSG is dropped.
//! STRUCTURED-DATA becomes `{SD-ID: {PARAM-NAME: value}}`, a repeated
//! PARAM-NAME an array of its values in order.

use super::json::{write_str, Obj};
use super::syslog::pri;
use super::text::{is_rfc3339, unescape_backslashes, Cursor};

fn nil(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

/// A header field: 1..=max printable US-ASCII characters.
fn field<'a>(c: &mut Cursor<'a>, what: &str, max: usize) -> Result<&'a str, String> {
    c.expect_with(b' ', || format!("a space before {what}"))?;
    let at = c.pos;
    let v = c.token(what)?;
    if v.len() > max || !v.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(format!(
            "{what} at byte {at} is not 1 to {max} printable ASCII characters"
        ));
    }
    Ok(v)
}

struct Element<'a> {
    id: &'a str,
    /// (name, value as written, whether it holds escapes)
    params: Vec<(&'a str, &'a str, bool)>,
}

fn sd_name<'a>(c: &mut Cursor<'a>, what: &str) -> Result<&'a str, String> {
    let r = c.rest();
    let n = r
        .bytes()
        .take_while(|&b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'))
        .count();
    if n == 0 || n > 32 {
        return Err(format!(
            "{what} at byte {} is not 1 to 32 characters",
            c.pos
        ));
    }
    c.pos += n;
    Ok(&r[..n])
}

fn structured_data<'a>(c: &mut Cursor<'a>) -> Result<Option<Vec<Element<'a>>>, String> {
    c.expect(b' ', "a space before STRUCTURED-DATA")?;
    if c.eat(b'-') {
        return Ok(None);
    }
    let mut elements: Vec<Element<'a>> = Vec::new();
    while c.peek() == Some(b'[') {
        c.pos += 1;
        let at = c.pos;
        let id = sd_name(c, "SD-ID")?;
        if elements.iter().any(|e| e.id == id) {
            return Err(format!("SD-ID {id:?} at byte {at} appears twice"));
        }
        let mut params = Vec::new();
        while c.eat(b' ') {
            let name = sd_name(c, "PARAM-NAME")?;
            c.expect(b'=', "'=' after PARAM-NAME")?;
            c.expect(b'"', "'\"' opening PARAM-VALUE")?;
            let (v, escaped) = c.quoted("PARAM-VALUE")?;
            params.push((name, v, escaped));
        }
        c.expect(b']', "']' closing SD-ELEMENT")?;
        elements.push(Element { id, params });
    }
    if elements.is_empty() {
        return Err(format!(
            "STRUCTURED-DATA at byte {} is neither '-' nor '[...]'",
            c.pos
        ));
    }
    Ok(Some(elements))
}

fn write_value(out: &mut Vec<u8>, v: &str, escaped: bool) {
    if escaped {
        // RFC 5424 6.3.3: `\"`, `\\` and `\]` are escapes; any other
        // backslash is kept.
        write_str(out, &unescape_backslashes(v, b"\"\\]"));
    } else {
        write_str(out, v);
    }
}

fn write_sd(out: &mut Vec<u8>, elements: &[Element<'_>]) {
    let mut o = Obj::new(out);
    for e in elements {
        let mut p = Obj::new(o.key(e.id));
        for (i, (name, _, _)) in e.params.iter().enumerate() {
            if e.params[..i].iter().any(|q| q.0 == *name) {
                continue;
            }
            let mut same = e.params[i..].iter().filter(|q| q.0 == *name);
            let buf = p.key(name);
            if e.params[i + 1..].iter().all(|q| q.0 != *name) {
                let (_, v, esc) = same.next().expect("the param itself");
                write_value(buf, v, *esc);
            } else {
                buf.push(b'[');
                for (k, (_, v, esc)) in same.enumerate() {
                    if k > 0 {
                        buf.push(b',');
                    }
                    write_value(buf, v, *esc);
                }
                buf.push(b']');
            }
        }
        p.end();
    }
    o.end();
}

pub(crate) fn apply(line: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut c = Cursor::new(line);
    let (facility, severity) =
        pri(&mut c)?.ok_or("no <PRI> at the start (RFC 5424 requires it)")?;
    let at = c.pos;
    let version = c.token("VERSION")?;
    if version.len() > 3 || version.starts_with('0') || !version.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "VERSION {version:?} at byte {at} is not a number 1 to 999"
        ));
    }
    let version: u64 = version.parse().expect("checked digits");
    let ts_at = c.pos + 1;
    let timestamp = nil(field(&mut c, "TIMESTAMP", 64)?);
    if let Some(t) = timestamp {
        if !is_rfc3339(t) {
            return Err(format!("TIMESTAMP {t:?} at byte {ts_at} is not RFC 3339"));
        }
    }
    let hostname = nil(field(&mut c, "HOSTNAME", 255)?);
    let app = nil(field(&mut c, "APP-NAME", 48)?);
    let procid = nil(field(&mut c, "PROCID", 128)?);
    let msgid = nil(field(&mut c, "MSGID", 32)?);
    let sd = structured_data(&mut c)?;
    let message = if c.at_end() {
        None
    } else {
        c.expect(b' ', "a space before MSG")?;
        let m = c.rest();
        Some(m.strip_prefix('\u{feff}').unwrap_or(m))
    };
    let mut o = Obj::new(out);
    o.num("facility", facility);
    o.num("severity", severity);
    o.num("version", version);
    o.opt_str("timestamp", timestamp);
    o.opt_str("hostname", hostname);
    o.opt_str("app_name", app);
    o.opt_str("procid", procid);
    o.opt_str("msgid", msgid);
    match &sd {
        Some(e) => write_sd(o.key("structured_data"), e),
        None => o.null("structured_data"),
    }
    o.opt_str("message", message);
    o.end();
    Ok(())
}

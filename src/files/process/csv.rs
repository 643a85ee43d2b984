//! `csv_to_json`: one CSV record (RFC 4180) -> a JSON object of strings.
//!
//! Fields are named by `fields`, in order. A field is either plain (no `"`
//! in it) or quoted (`"..."`, with `""` for a quote, and the delimiter and
//! line breaks allowed inside); spaces belong to the field. Fewer values than
//! names: the missing names are `null`. More: the extra values are kept, in
//! order, in an array under `_extra`, so nothing is lost.

use super::json::{write_str, Obj};

/// The key of the values beyond `fields`; a field may not be named so.
pub(crate) const EXTRA: &str = "_extra";

pub(crate) struct Csv {
    pub(crate) fields: Vec<String>,
    pub(crate) delimiter: char,
    /// A quoted value with `""` in it, unescaped (reused).
    scratch: String,
}

impl Csv {
    pub(crate) fn new(fields: Vec<String>, delimiter: char) -> Csv {
        Csv {
            fields,
            delimiter,
            scratch: String::new(),
        }
    }

    pub(crate) fn apply(&mut self, line: &str, out: &mut Vec<u8>) -> Result<(), String> {
        let mut o = Obj::new(out);
        let mut rest = line;
        let mut pos = 0usize;
        let mut i = 0usize;
        let mut extra = false;
        loop {
            let (value, quoted, used, more) = next_field(rest, self.delimiter, pos)?;
            let value_str: &str = if quoted && value.contains("\"\"") {
                self.scratch.clear();
                for (k, part) in value.split("\"\"").enumerate() {
                    if k > 0 {
                        self.scratch.push('"');
                    }
                    self.scratch.push_str(part);
                }
                &self.scratch
            } else {
                value
            };
            if let Some(name) = self.fields.get(i) {
                o.str(name, value_str);
            } else {
                let buf = if extra {
                    let b = o.buf();
                    b.push(b',');
                    b
                } else {
                    extra = true;
                    let b = o.key(EXTRA);
                    b.push(b'[');
                    b
                };
                write_str(buf, value_str);
            }
            i += 1;
            if !more {
                break;
            }
            rest = &rest[used..];
            pos += used;
        }
        if extra {
            o.buf().push(b']');
        }
        for name in self.fields.iter().skip(i) {
            o.null(name);
        }
        o.end();
        if self.scratch.capacity() > 64 * 1024 {
            // Kept for the next line only while it is small.
            self.scratch = String::new();
        }
        Ok(())
    }
}

/// The field at the start of `s`: (its text without quotes, whether it was
/// quoted, the bytes consumed including the delimiter, whether another
/// field follows). `pos` is `s`'s offset in the line, for messages.
fn next_field(s: &str, delim: char, pos: usize) -> Result<(&str, bool, usize, bool), String> {
    if let Some(body) = s.strip_prefix('"') {
        let b = body.as_bytes();
        let mut i = 0;
        loop {
            match b[i..].iter().position(|&c| c == b'"') {
                None => {
                    return Err(format!(
                        "quoted field opened at byte {pos} has no closing quote"
                    ))
                }
                Some(n) => {
                    i += n;
                    if b.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    let value = &body[..i];
                    let after = &body[i + 1..];
                    let at = pos + 1 + i + 1;
                    if after.is_empty() {
                        return Ok((value, true, s.len(), false));
                    }
                    if after.starts_with(delim) {
                        return Ok((value, true, 1 + i + 1 + delim.len_utf8(), true));
                    }
                    return Err(format!("text after the closing quote at byte {at} (expected the delimiter {delim:?})"));
                }
            }
        }
    }
    let end = s.find(delim).unwrap_or(s.len());
    let value = &s[..end];
    if let Some(q) = value.find('"') {
        return Err(format!(
            "quote inside an unquoted field at byte {}",
            pos + q
        ));
    }
    if end == s.len() {
        Ok((value, false, end, false))
    } else {
        Ok((value, false, end + delim.len_utf8(), true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(fields: &[&str], delim: char, line: &str) -> Result<serde_json::Value, String> {
        let mut c = Csv::new(fields.iter().map(|s| s.to_string()).collect(), delim);
        let mut out = Vec::new();
        c.apply(line, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("valid JSON"))
    }

    #[test]
    fn quoted_fields_keep_delimiters_quotes_and_line_breaks() {
        let v = csv(
            &["a", "b", "c"],
            ',',
            r#""x,y","say ""hi""","l1
l2""#,
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": "x,y", "b": "say \"hi\"", "c": "l1\nl2"})
        );
    }

    #[test]
    fn fewer_values_give_nulls_and_more_values_go_to_extra() {
        let v = csv(&["a", "b", "c"], ',', "1,2").unwrap();
        assert_eq!(v, serde_json::json!({"a": "1", "b": "2", "c": null}));
        let v = csv(&["a"], ',', "1,2,\"3\"").unwrap();
        assert_eq!(v, serde_json::json!({"a": "1", "_extra": ["2", "3"]}));
        let v = csv(&["a", "b"], ';', "").unwrap();
        assert_eq!(v, serde_json::json!({"a": "", "b": null}));
        let v = csv(&["a", "b"], '\t', " x \t").unwrap();
        assert_eq!(v, serde_json::json!({"a": " x ", "b": ""}));
    }

    #[test]
    fn malformed_quoting_is_a_parse_error_naming_the_byte() {
        assert_eq!(
            csv(&["a", "b"], ',', r#"1,"open"#).unwrap_err(),
            "quoted field opened at byte 2 has no closing quote"
        );
        assert_eq!(
            csv(&["a", "b"], ',', r#"1,"x"y"#).unwrap_err(),
            "text after the closing quote at byte 5 (expected the delimiter ',')"
        );
        assert_eq!(
            csv(&["a", "b"], ',', r#"1,x"y"#).unwrap_err(),
            "quote inside an unquoted field at byte 3"
        );
    }
}

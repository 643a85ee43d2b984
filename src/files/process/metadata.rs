//! `add_metadata`: one object under `key` (default `meta`) with the static
//! `fields`, the file's `path`, the `host` name, the `timestamp` at which
//! kpld read the record (UTC, milliseconds) and a `record_id`,
//! `<file id>:<offset of the record's first line>`: the same for a line
//! sent again after a restart, so a consumer can drop duplicates exactly.
//!
//! A JSON object from an earlier processor gets the object as one more
//! field; a text record becomes `{"message": <text>, <key>: {...}}`.

use super::json::{itoa_buf, write_str};
use super::text::{utf8, write_utc_millis};
use super::Rec;
use std::time::SystemTime;

pub(crate) struct Metadata {
    /// Whether the input is a JSON object (known from the chain's order).
    pub(crate) input_json: bool,
    /// `"<key>":{` with the static fields and the host already written,
    /// each followed by a comma when more come: built once.
    prefix: Vec<u8>,
    path: bool,
    timestamp: bool,
    record_id: bool,
    pub(crate) clock: fn() -> SystemTime,
}

pub(crate) struct Options<'a> {
    pub(crate) key: &'a str,
    pub(crate) fields: &'a serde_json::Map<String, serde_json::Value>,
    pub(crate) host: Option<&'a str>,
    pub(crate) path: bool,
    pub(crate) timestamp: bool,
    pub(crate) record_id: bool,
}

impl Metadata {
    pub(crate) fn new(o: &Options<'_>, input_json: bool) -> Metadata {
        let mut prefix = Vec::new();
        write_str(&mut prefix, o.key);
        prefix.extend_from_slice(b":{");
        let mut first = true;
        let mut sep = |p: &mut Vec<u8>| {
            if !first {
                p.push(b',');
            }
            first = false;
        };
        for (k, v) in o.fields {
            sep(&mut prefix);
            write_str(&mut prefix, k);
            prefix.push(b':');
            serde_json::to_writer(&mut prefix, v).expect("writing JSON to a Vec");
        }
        if let Some(h) = o.host {
            sep(&mut prefix);
            prefix.extend_from_slice(b"\"host\":");
            write_str(&mut prefix, h);
        }
        Metadata {
            input_json,
            prefix,
            path: o.path,
            timestamp: o.timestamp,
            record_id: o.record_id,
            clock: SystemTime::now,
        }
    }

    pub(crate) fn apply(
        &self,
        input: &[u8],
        rec: &Rec<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if self.input_json {
            // Our own processors' objects: `{...}` with no space at the end.
            debug_assert!(input.first() == Some(&b'{') && input.last() == Some(&b'}'));
            out.extend_from_slice(&input[..input.len() - 1]);
            if input.len() > 2 {
                out.push(b',');
            }
        } else {
            out.extend_from_slice(b"{\"message\":");
            write_str(out, utf8(input)?);
            out.push(b',');
        }
        out.extend_from_slice(&self.prefix);
        let mut first = self.prefix.last() == Some(&b'{');
        let mut sep = |out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
        };
        if self.path {
            sep(out);
            out.extend_from_slice(b"\"path\":");
            write_str(out, rec.path);
        }
        if self.timestamp {
            sep(out);
            out.extend_from_slice(b"\"timestamp\":\"");
            write_utc_millis(out, (self.clock)());
            out.push(b'"');
        }
        if self.record_id {
            sep(out);
            out.extend_from_slice(b"\"record_id\":");
            // One JSON string: the escaped file id, its closing quote taken
            // back, then `:offset"`.
            write_str(out, rec.file_id);
            out.pop();
            out.push(b':');
            out.extend_from_slice(itoa_buf(rec.offset).as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }
}

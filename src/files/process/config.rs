//! The `processing` array of a `[[files]]` table -> the chain's steps, with
//! an error naming the entry and the key for anything unknown or ill-typed.

use super::apache::Apache;
use super::cri::{Cri, Output};
use super::csv::{Csv, EXTRA};
use super::metadata::{Metadata, Options};
use super::Step;
use toml::Value;

const KINDS: &str = "single_line, csv_to_json, log_to_json, cri, add_metadata";
const FORMATS: &str = "common_apache, combined_apache, apache_error, syslog, rfc5424";
/// The CRI join's default bound: the default `max_line_bytes`.
const CRI_MAX_BYTES: usize = 1024 * 1024;

pub(super) fn steps(processing: Option<&Value>, host: &str) -> Result<Vec<Step>, String> {
    let Some(v) = processing else {
        return Ok(Vec::new());
    };
    let entries = v.as_array().ok_or_else(|| {
        format!(
            "processing must be an array of tables, not {}",
            v.type_str()
        )
    })?;
    let mut steps = Vec::with_capacity(entries.len());
    // Whether the record is a JSON object by now, and which entry made it so.
    let mut json_from: Option<(usize, &str)> = None;
    let mut meta_keys: Vec<String> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let t = e.as_table().ok_or_else(|| {
            format!(
                "processing[{i}] must be a table like {{ kind = \"single_line\" }}, not {}",
                e.type_str()
            )
        })?;
        let kind = match t.get("kind") {
            Some(Value::String(k)) => k.as_str(),
            Some(other) => {
                return Err(format!(
                    "processing[{i}].kind must be a string, not {}",
                    other.type_str()
                ))
            }
            None => return Err(format!("processing[{i}] has no kind (one of {KINDS})")),
        };
        let at = Entry { i, kind, t };
        let (step, makes_json) = match kind {
            "single_line" => {
                at.keys(&[])?;
                (Step::SingleLine, false)
            }
            "csv_to_json" => {
                at.keys(&["fields", "delimiter"])?;
                (Step::Csv(csv(&at)?), true)
            }
            "log_to_json" => {
                at.keys(&["format"])?;
                let format = at
                    .string("format")?
                    .ok_or_else(|| at.err(&format!("needs format (one of {FORMATS})")))?;
                let step = match format {
                    "common_apache" => Step::Apache(Apache::Common),
                    "combined_apache" => Step::Apache(Apache::Combined),
                    "apache_error" => Step::Apache(Apache::Error),
                    "syslog" => Step::Syslog,
                    "rfc5424" => Step::Rfc5424,
                    other => {
                        return Err(at.err(&format!(
                            "unknown format {other:?}; expected one of {FORMATS}"
                        )))
                    }
                };
                (step, true)
            }
            "cri" => {
                at.keys(&["output", "max_bytes"])?;
                if steps.iter().any(|s| matches!(s, Step::Cri(_))) {
                    return Err(at.err("cri may appear once"));
                }
                let output = match at.string("output")? {
                    None | Some("message") => Output::Message,
                    Some("json") => Output::Json,
                    Some(o) => {
                        return Err(
                            at.err(&format!("unknown output {o:?}; expected message or json"))
                        )
                    }
                };
                let max_bytes = match t.get("max_bytes") {
                    None => CRI_MAX_BYTES,
                    Some(Value::Integer(n)) if *n > 0 => usize::try_from(*n).unwrap_or(usize::MAX),
                    Some(v) => {
                        return Err(
                            at.err(&format!("max_bytes must be a positive integer, not {v}"))
                        )
                    }
                };
                (
                    Step::Cri(Cri::new(output, max_bytes)),
                    output == Output::Json,
                )
            }
            "add_metadata" => {
                at.keys(&["key", "fields", "path", "host", "timestamp", "record_id"])?;
                let m = metadata(&at, host, json_from.is_some(), &mut meta_keys)?;
                (Step::Metadata(m), true)
            }
            other => {
                return Err(format!(
                    "processing[{i}]: unknown kind {other:?}; expected one of {KINDS}"
                ))
            }
        };
        if let (Some((j, by)), false) = (json_from, matches!(step, Step::Metadata(_))) {
            return Err(at.err(&format!(
                "reads text, but processing[{j}] ({by}) has already made the record JSON; put {kind} before it"
            )));
        }
        if makes_json && json_from.is_none() {
            json_from = Some((i, kind));
        }
        steps.push(step);
    }
    Ok(steps)
}

struct Entry<'a> {
    i: usize,
    kind: &'a str,
    t: &'a toml::Table,
}

impl Entry<'_> {
    fn err(&self, what: &str) -> String {
        format!("processing[{}] ({}): {what}", self.i, self.kind)
    }

    fn keys(&self, allowed: &[&str]) -> Result<(), String> {
        for k in self.t.keys() {
            if k != "kind" && !allowed.contains(&k.as_str()) {
                let expected = if allowed.is_empty() {
                    "it takes no other key".to_string()
                } else {
                    format!("expected {}", allowed.join(", "))
                };
                return Err(self.err(&format!("unknown key {k:?}; {expected}")));
            }
        }
        Ok(())
    }

    fn string(&self, key: &str) -> Result<Option<&str>, String> {
        match self.t.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(&format!("{key} must be a string, not {}", v.type_str()))),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        match self.t.get(key) {
            None => Ok(true),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(self.err(&format!(
                "{key} must be true or false, not {}",
                v.type_str()
            ))),
        }
    }
}

fn csv(at: &Entry<'_>) -> Result<Csv, String> {
    let fields = match at.t.get("fields") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(at.err("fields is empty; name each column")),
        Some(v) => {
            return Err(at.err(&format!(
                "fields must be an array of names, not {}",
                v.type_str()
            )))
        }
        None => return Err(at.err("needs fields, the column names in order")),
    };
    let mut names: Vec<String> = Vec::with_capacity(fields.len());
    for (k, f) in fields.iter().enumerate() {
        let name = f.as_str().ok_or_else(|| {
            at.err(&format!(
                "fields[{k}] must be a string, not {}",
                f.type_str()
            ))
        })?;
        if name.is_empty() || name == EXTRA {
            return Err(at.err(&format!(
                "fields[{k}] may not be {name:?} (empty, or the key of extra values)"
            )));
        }
        if names.iter().any(|n| n == name) {
            return Err(at.err(&format!("fields[{k}] {name:?} is named twice")));
        }
        names.push(name.to_string());
    }
    let delimiter = match at.string("delimiter")? {
        None => ',',
        Some(d) => {
            let mut c = d.chars();
            match (c.next(), c.next()) {
                (Some(ch), None) if !matches!(ch, '"' | '\r' | '\n') => ch,
                _ => {
                    return Err(at.err(&format!(
                        "delimiter {d:?} must be one character other than a quote or a line break"
                    )))
                }
            }
        }
    };
    Ok(Csv::new(names, delimiter))
}

fn metadata(
    at: &Entry<'_>,
    host: &str,
    input_json: bool,
    keys: &mut Vec<String>,
) -> Result<Metadata, String> {
    let key = at.string("key")?.unwrap_or("meta");
    if key.is_empty() {
        return Err(at.err("key may not be empty"));
    }
    if keys.iter().any(|k| k == key) {
        return Err(at.err(&format!(
            "key {key:?} is already added by an earlier add_metadata"
        )));
    }
    if !input_json && key == "message" {
        return Err(at.err("key may not be \"message\": that holds the line here"));
    }
    keys.push(key.to_string());
    let path = at.bool("path")?;
    let with_host = at.bool("host")?;
    let timestamp = at.bool("timestamp")?;
    let record_id = at.bool("record_id")?;
    let fields = match at.t.get("fields") {
        None => serde_json::Map::new(),
        Some(Value::Table(t)) => {
            if let Some(k) = datetime_in(t) {
                return Err(at.err(&format!(
                    "fields.{k} is a TOML date-time; write it as a string"
                )));
            }
            let v = serde_json::to_value(t).map_err(|e| at.err(&format!("fields: {e}")))?;
            match v {
                serde_json::Value::Object(m) => m,
                _ => unreachable!("a TOML table is a JSON object"),
            }
        }
        Some(v) => {
            return Err(at.err(&format!(
                "fields must be a table like {{ env = \"prod\" }}, not {}",
                v.type_str()
            )))
        }
    };
    for (name, on) in [
        ("path", path),
        ("host", with_host),
        ("timestamp", timestamp),
        ("record_id", record_id),
    ] {
        if on && fields.contains_key(name) {
            return Err(at.err(&format!("fields.{name} clashes with the {name} add_metadata adds; set {name} = false to use your own")));
        }
    }
    let opts = Options {
        key,
        fields: &fields,
        host: with_host.then_some(host),
        path,
        timestamp,
        record_id,
    };
    Ok(Metadata::new(&opts, input_json))
}

/// The dotted name of a date-time value in `t`, if any: JSON has none, and
/// the toml crate would serialize one as a private-looking table.
fn datetime_in(t: &toml::Table) -> Option<String> {
    fn walk(v: &Value, name: String) -> Option<String> {
        match v {
            Value::Datetime(_) => Some(name),
            Value::Table(t) => t.iter().find_map(|(k, v)| walk(v, format!("{name}.{k}"))),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, format!("{name}[{i}]"))),
            _ => None,
        }
    }
    t.iter().find_map(|(k, v)| walk(v, k.clone()))
}

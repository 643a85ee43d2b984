//! Records that failed for good (a non-retryable error), one JSON object a
//! line in `state_dir/dead-letter.jsonl`, fsynced before the record counts
//! as done: the stream, the file, the offsets, the error and the data.

use base64::Engine;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct DeadLetters {
    path: PathBuf,
    lock: Mutex<()>,
}

/// One dead record.
pub struct Dead<'a> {
    pub stream: &'a str,
    pub path: &'a str,
    pub start: u64,
    pub end: u64,
    pub error_code: &'a str,
    pub error_message: &'a str,
    pub data: Option<&'a [u8]>,
}

impl DeadLetters {
    pub fn new(state_dir: &Path) -> DeadLetters {
        DeadLetters {
            path: state_dir.join("dead-letter.jsonl"),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A dead-letter file at `path` (the spool's, for one).
    pub fn at(path: PathBuf) -> DeadLetters {
        DeadLetters {
            path,
            lock: Mutex::new(()),
        }
    }

    /// Appends one record and fsyncs.
    pub fn write(&self, d: &Dead<'_>) -> std::io::Result<()> {
        let mut v = serde_json::json!({
            "stream": d.stream,
            "path": d.path,
            "offset": d.start,
            "end_offset": d.end,
            "error_code": d.error_code,
            "error_message": d.error_message,
        });
        if let Some(data) = d.data {
            put_data(&mut v, data);
        }
        self.write_json(v)
    }

    /// Appends one JSON object as a line, with its `time`, and fsyncs.
    pub fn write_json(&self, v: serde_json::Value) -> std::io::Result<()> {
        self.write_json_lines(vec![v])
    }

    /// Appends JSON objects, a line each with its `time`, and fsyncs once.
    pub fn write_json_lines(&self, values: Vec<serde_json::Value>) -> std::io::Result<()> {
        let time = humantime_now();
        let mut line = String::new();
        for mut v in values {
            v["time"] = time.into();
            line.push_str(&v.to_string());
            line.push('\n');
        }
        let _g = self.lock.lock().expect("dead-letter lock");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }
}

/// `data` as text when it is UTF-8, else `data_base64`.
pub fn put_data(v: &mut serde_json::Value, data: &[u8]) {
    match std::str::from_utf8(data) {
        Ok(s) => v["data"] = s.into(),
        Err(_) => {
            v["data_base64"] = base64::engine::general_purpose::STANDARD
                .encode(data)
                .into()
        }
    }
}

/// Seconds since the epoch with milliseconds (no date crate for one field).
fn humantime_now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

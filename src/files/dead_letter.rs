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

    /// Appends one record and fsyncs.
    pub fn write(&self, d: &Dead<'_>) -> std::io::Result<()> {
        let mut v = serde_json::json!({
            "time": humantime_now(),
            "stream": d.stream,
            "path": d.path,
            "offset": d.start,
            "end_offset": d.end,
            "error_code": d.error_code,
            "error_message": d.error_message,
        });
        match d.data.map(std::str::from_utf8) {
            Some(Ok(s)) => v["data"] = s.into(),
            Some(Err(_)) => {
                v["data_base64"] = base64::engine::general_purpose::STANDARD
                    .encode(d.data.unwrap_or_default())
                    .into()
            }
            None => {}
        }
        let mut line = v.to_string();
        line.push('\n');
        let _g = self.lock.lock().expect("dead-letter lock");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }
}

/// Seconds since the epoch with milliseconds (no date crate for one field).
fn humantime_now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

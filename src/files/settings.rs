//! A `[[files]]` table: what the user wrote ([`FilesTable`], serde, unknown
//! keys refused, defaults filled in so `--check` shows them) and the
//! checked, ready-to-use form ([`FileSpec`]: compiled globs and regex, the
//! partition key rule, the processing checked by `Chain::from_toml`).

use super::key::PartitionKeyRule;
use super::process::{Chain, OnParseError};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest `max_line_bytes`: Kinesis' largest record.
pub const MAX_LINE_BYTES_LIMIT: u64 = 10 * 1024 * 1024;

/// One `[[files]]` table as written, with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesTable {
    /// Absolute globs (`*`, `?`, `[..]`, `{a,b}`, `**` for any depth).
    pub paths: Vec<String>,
    /// Globs; one without a `/` is matched against the file name only.
    #[serde(default)]
    pub exclude: Vec<String>,
    pub stream: String,
    #[serde(default)]
    pub start_at: StartAt,
    /// "random" | "line_hash" | "path" | { json_field = "a.b" }.
    #[serde(default = "default_partition_key")]
    pub partition_key: toml::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline_start: Option<String>,
    /// A multi-line record with no new line for this long is sent.
    #[serde(default = "default_multiline_timeout_ms")]
    pub multiline_timeout_ms: u64,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<toml::Value>,
    #[serde(default)]
    pub on_parse_error: ParseErrorSetting,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    #[serde(default = "default_rotated_max_open_ms")]
    pub rotated_max_open_ms: u64,
    #[serde(default = "default_checkpoint_retention_ms")]
    pub checkpoint_retention_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    End,
    Beginning,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseErrorSetting {
    #[default]
    SendRaw,
    Skip,
}

fn default_partition_key() -> toml::Value {
    "random".into()
}
fn default_multiline_timeout_ms() -> u64 {
    1000
}
/// 1 MiB less room for a 256-byte key: a full-length line still fits in
/// one Kinesis record of the default `max_record_size`.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 1024 * 1024 - 256;
fn default_max_line_bytes() -> u64 {
    DEFAULT_MAX_LINE_BYTES
}
fn default_poll_interval_ms() -> u64 {
    250
}
fn default_checkpoint_interval_ms() -> u64 {
    1000
}
fn default_rotated_max_open_ms() -> u64 {
    300_000
}
/// A day: a file that is gone for longer is not coming back, and a table
/// removed by SIGHUP and added again within it still resumes.
fn default_checkpoint_retention_ms() -> u64 {
    86_400_000
}

/// A checked `[[files]]` table.
pub struct FileSpec {
    pub table: FilesTable,
    pub paths: GlobSet,
    /// Globs with a `/`, matched against the whole path.
    pub exclude_paths: GlobSet,
    /// Globs without one, matched against the file name.
    pub exclude_names: GlobSet,
    pub multiline_start: Option<regex::bytes::Regex>,
    pub partition_key: PartitionKeyRule,
    pub on_parse_error: OnParseError,
}

impl FilesTable {
    /// Checks every value; the message names the key and what is wrong.
    pub fn compile(&self, host: &str) -> Result<FileSpec, String> {
        if self.paths.is_empty() {
            return Err("paths: must name at least one absolute path or glob".into());
        }
        let mut paths = GlobSetBuilder::new();
        for (i, p) in self.paths.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(format!("paths[{i}] {p:?}: must be absolute (start with /)"));
            }
            paths.add(glob(p).map_err(|e| format!("paths[{i}] {p:?}: {e}"))?);
        }
        let (mut ex_paths, mut ex_names) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for (i, p) in self.exclude.iter().enumerate() {
            let g = glob(p).map_err(|e| format!("exclude[{i}] {p:?}: {e}"))?;
            if p.contains('/') {
                ex_paths.add(g);
            } else {
                ex_names.add(g);
            }
        }
        if !valid_stream_name(&self.stream) {
            return Err(format!(
                "stream {:?}: a stream name has 1 to 128 characters of a-z, A-Z, 0-9, _ . -",
                self.stream
            ));
        }
        let multiline_start = match &self.multiline_start {
            None => None,
            Some(r) => Some(
                regex::bytes::Regex::new(r)
                    .map_err(|e| format!("multiline_start {r:?} is not a valid regex: {e}"))?,
            ),
        };
        if !(1..=MAX_LINE_BYTES_LIMIT).contains(&self.max_line_bytes) {
            return Err(format!(
                "max_line_bytes {} is outside the allowed range 1..={MAX_LINE_BYTES_LIMIT}",
                self.max_line_bytes
            ));
        }
        for (name, v, lo, hi) in [
            ("poll_interval_ms", self.poll_interval_ms, 10, 60_000),
            (
                "checkpoint_interval_ms",
                self.checkpoint_interval_ms,
                10,
                3_600_000,
            ),
            (
                "rotated_max_open_ms",
                self.rotated_max_open_ms,
                0,
                7 * 86_400_000,
            ),
            (
                "checkpoint_retention_ms",
                self.checkpoint_retention_ms,
                1000,
                366 * 86_400_000,
            ),
            (
                "multiline_timeout_ms",
                self.multiline_timeout_ms,
                1,
                3_600_000,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!(
                    "{name} {v} is outside the allowed range {lo}..={hi}"
                ));
            }
        }
        let partition_key = PartitionKeyRule::from_toml(Some(&self.partition_key))?;
        let on_parse_error = match self.on_parse_error {
            ParseErrorSetting::SendRaw => OnParseError::SendRaw,
            ParseErrorSetting::Skip => OnParseError::Skip,
        };
        Chain::from_toml(self.processing.as_ref(), on_parse_error, host)
            .map_err(|e| format!("processing: {e}"))?;
        let build = |b: GlobSetBuilder| b.build().map_err(|e| e.to_string());
        Ok(FileSpec {
            table: self.clone(),
            paths: build(paths)?,
            exclude_paths: build(ex_paths)?,
            exclude_names: build(ex_names)?,
            multiline_start,
            partition_key,
            on_parse_error,
        })
    }
}

impl FileSpec {
    /// A new chain for one file (chains hold per-file state).
    pub fn chain(&self, host: &str) -> Chain {
        Chain::from_toml(self.table.processing.as_ref(), self.on_parse_error, host)
            .expect("checked when the table was compiled")
    }

    pub fn excluded(&self, path: &std::path::Path) -> bool {
        self.exclude_paths.is_match(path)
            || path
                .file_name()
                .is_some_and(|n| self.exclude_names.is_match(n))
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.table.poll_interval_ms)
    }
}

/// `*` and `?` stop at `/`; `**` crosses directories.
fn glob(p: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(p)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("not a valid glob: {}", e.kind()))
}

fn valid_stream_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(extra: &str) -> Result<FileSpec, String> {
        let t: FilesTable = toml::from_str(&format!("stream = \"s\"\n{extra}"))
            .map_err(|e| e.message().to_string())?;
        t.compile("host")
    }

    #[test]
    fn defaults_are_filled_and_globs_match_across_directories_only_with_double_star() {
        let s = table("paths = [\"/var/log/*.log\", \"/srv/**/access.log\"]\nexclude = [\"*.gz\", \"/var/log/skip/**\"]").unwrap();
        assert_eq!(s.table.start_at, StartAt::End);
        assert_eq!(s.table.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert!(s.paths.is_match("/var/log/a.log"));
        assert!(!s.paths.is_match("/var/log/sub/a.log"));
        assert!(s.paths.is_match("/srv/a/b/c/access.log"));
        assert!(s.paths.is_match("/srv/access.log"));
        assert!(s.excluded(std::path::Path::new("/var/log/x.log.gz")));
        assert!(s.excluded(std::path::Path::new("/var/log/skip/a/b.log")));
        assert!(!s.excluded(std::path::Path::new("/var/log/a.log")));
    }

    #[test]
    fn bad_values_are_named() {
        for (extra, want) in [
            ("paths = []", "paths: must name"),
            (
                "paths = [\"var/log/*.log\"]",
                "paths[0] \"var/log/*.log\": must be absolute",
            ),
            (
                "paths = [\"/a/[b.log\"]",
                "paths[0] \"/a/[b.log\": not a valid glob",
            ),
            ("paths = [\"/a\"]\nexclude = [\"{x\"]", "exclude[0] \"{x\""),
            (
                "paths = [\"/a\"]\nmultiline_start = \"(\"",
                "multiline_start \"(\" is not a valid regex",
            ),
            (
                "paths = [\"/a\"]\nmax_line_bytes = 0",
                "max_line_bytes 0 is outside",
            ),
            (
                "paths = [\"/a\"]\npartition_key = \"sometimes\"",
                "partition_key \"sometimes\"",
            ),
            (
                "paths = [\"/a\"]\nstart_at = \"middle\"",
                "unknown variant `middle`",
            ),
            (
                "paths = [\"/a\"]\npoll_interval_ms = 1",
                "poll_interval_ms 1 is outside",
            ),
            (
                "paths = [\"/a\"]\nprocesing = []",
                "unknown field `procesing`",
            ),
            (
                "paths = [\"/a\"]\nprocessing = [{ kind = \"no_such_kind\" }]",
                "processing",
            ),
        ] {
            let e = table(extra)
                .err()
                .unwrap_or_else(|| panic!("{extra}: accepted"));
            assert!(e.contains(want), "{extra}: {e}");
        }
        let t: FilesTable = toml::from_str("paths = [\"/a\"]\nstream = \"bad stream\"").unwrap();
        assert!(t
            .compile("h")
            .err()
            .unwrap()
            .contains("stream \"bad stream\""));
    }
}

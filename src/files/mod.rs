//! Log files shipped to streams (`[[files]]` tables), at least once and
//! nothing skipped.
//!
//! # Layout
//! - [`settings`]: a `[[files]]` table as written and checked.
//! - [`process`]: the processors of `processing` (pure).
//! - [`key`]: the partition key rules (pure).
//! - [`discover`]: the files the globs match now.
//! - [`identity`]: device, inode and fingerprint; whether a checkpoint
//!   applies to the file found (pure).
//! - [`lines`]: bytes to lines and records: `\n` / `\r\n`, `max_line_bytes`,
//!   `multiline_start` (pure).
//! - [`checkpoint`]: the offset before which every record is final (pure),
//!   and the checkpoint file (written atomically).
//! - [`dead_letter`]: records that failed for good, with their reason.
//! - [`rate`]: lines per second over the last seconds, from samples of a
//!   counter (pure).
//! - [`reader`]: one file's task: read, rotate, hand records to the
//!   [`Producer`](crate::Producer), take their results.
//! - [`source`]: the tables' tasks: discovery, readers, the checkpoint
//!   writer, SIGHUP and shutdown; per-file stats.

pub mod checkpoint;
pub mod dead_letter;
pub mod discover;
pub mod identity;
pub mod key;
pub mod lines;
pub mod process;
pub mod rate;
pub mod reader;
pub mod settings;
pub mod source;

pub use settings::{FileSpec, FilesTable, StartAt};
pub use source::FileSources;

/// The host name processors add (`add_metadata`); "localhost" if unknown.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

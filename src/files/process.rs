//! What a `[[files]]` table's `processing` makes of each record read: a
//! chain of processors applied in order, built once per file from the TOML.
//!
//! Invariants: a line that a processor cannot parse is never dropped
//! silently (it is sent raw or skipped, and a [`ParseError`] is returned
//! either way); a record's `record_id` depends only on the file's identity
//! and the offset of the record's first line, so a line sent again after a
//! restart carries the same id. Pure: no I/O, and the clock is a field.
//!
//! Text processors (`single_line`, `cri`, `csv_to_json`, `log_to_json`)
//! read text; `csv_to_json`, `log_to_json` and `cri` with `output = "json"`
//! make a JSON object, after which only `add_metadata` may come (checked
//! by [`Chain::from_toml`]). docs/files.md ("Processing") documents the JSON.

mod apache;
mod config;
mod cri;
mod csv;
mod json;
mod metadata;
mod rfc5424;
mod single_line;
mod syslog;
mod text;

use std::time::SystemTime;

/// Where a record comes from, for `add_metadata`.
pub struct LineContext<'a> {
    /// The file's path as matched.
    pub path: &'a str,
    /// The file's identity (the file source's device, inode and
    /// fingerprint), stable across restarts.
    pub file_id: &'a str,
    /// The first byte of the record's first line.
    pub offset: u64,
}

/// What to do with a record that a processor cannot parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnParseError {
    /// Send the record as the failing processor received it (for the first
    /// processor: the line as read).
    SendRaw,
    /// Send nothing for it.
    Skip,
}

/// What became of one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Processed {
    /// A record to send.
    Record(Vec<u8>),
    /// The line is kept for a later record (a CRI partial line, `P`).
    Held,
    /// Done, nothing sent (a parse error with `on_parse_error = "skip"`).
    Skipped,
}

/// A record that a processor could not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The processor's name, e.g. `log_to_json(syslog)`.
    pub processor: &'static str,
    /// What is wrong, with the byte position where it helps.
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.processor, self.reason)
    }
}

/// Scratch buffers larger than this are freed after the record that grew
/// them, not kept for the next line.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

/// The processors of one file, in order, with their state (CRI's partial
/// lines) and two scratch buffers reused from line to line.
pub struct Chain {
    steps: Vec<Step>,
    on_parse_error: OnParseError,
    a: Vec<u8>,
    b: Vec<u8>,
}

/// One processor. Each reads its input and writes its output into `out`.
enum Step {
    SingleLine,
    Csv(csv::Csv),
    Apache(apache::Apache),
    Syslog,
    Rfc5424,
    Cri(cri::Cri),
    Metadata(metadata::Metadata),
}

/// What a step made of its input.
enum StepOut {
    /// `out` holds the record.
    Done,
    /// The input is kept inside the step for a later record.
    Held,
}

/// Why a step failed; `raw` replaces the step's input as what `send_raw`
/// sends when the input alone is not the record (a CRI join).
pub(crate) struct StepError {
    pub(crate) reason: String,
    pub(crate) raw: Option<Vec<u8>>,
}

impl From<String> for StepError {
    fn from(reason: String) -> StepError {
        StepError { reason, raw: None }
    }
}

impl From<&str> for StepError {
    fn from(reason: &str) -> StepError {
        StepError::from(reason.to_string())
    }
}

/// The record's context as it moves along the chain: a CRI join moves the
/// offset back to its first partial line.
pub(crate) struct Rec<'a> {
    pub(crate) path: &'a str,
    pub(crate) file_id: &'a str,
    pub(crate) offset: u64,
}

impl Step {
    fn name(&self) -> &'static str {
        match self {
            Step::SingleLine => "single_line",
            Step::Csv(_) => "csv_to_json",
            Step::Apache(a) => a.name(),
            Step::Syslog => "log_to_json(syslog)",
            Step::Rfc5424 => "log_to_json(rfc5424)",
            Step::Cri(_) => "cri",
            Step::Metadata(_) => "add_metadata",
        }
    }

    fn apply(
        &mut self,
        input: &[u8],
        rec: &mut Rec<'_>,
        out: &mut Vec<u8>,
    ) -> Result<StepOut, StepError> {
        let r = match self {
            Step::SingleLine => single_line::apply(input, out),
            Step::Csv(c) => c.apply(text::utf8(input)?, out),
            Step::Apache(a) => a.apply(text::utf8(input)?, out),
            Step::Syslog => syslog::apply(text::utf8(input)?, out),
            Step::Rfc5424 => rfc5424::apply(text::utf8(input)?, out),
            Step::Cri(c) => return c.apply(input, rec, out),
            Step::Metadata(m) => m.apply(input, rec, out),
        };
        r.map(|()| StepOut::Done).map_err(StepError::from)
    }
}

/// How a step failed: its error and the record as it received it.
struct Failed {
    error: ParseError,
    raw: Vec<u8>,
}

impl Chain {
    /// `processing`: the `processing` array of a [[files]] table, if any.
    /// Err: a message naming the bad entry.
    pub fn from_toml(
        processing: Option<&toml::Value>,
        on_parse_error: OnParseError,
        host: &str,
    ) -> Result<Chain, String> {
        let steps = config::steps(processing, host)?;
        Ok(Chain {
            steps,
            on_parse_error,
            a: Vec::new(),
            b: Vec::new(),
        })
    }

    /// Replaces the clock `add_metadata` reads its `timestamp` from (tests
    /// fix it; the default is [`SystemTime::now`]).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> Chain {
        for s in &mut self.steps {
            if let Step::Metadata(m) = s {
                m.clock = clock;
            }
        }
        self
    }

    /// Whether the chain changes nothing (no processors).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// One line (without its terminator) or one multi-line event.
    pub fn apply(&mut self, line: &[u8], ctx: &LineContext<'_>) -> (Processed, Option<ParseError>) {
        if self.steps.is_empty() {
            return (Processed::Record(line.to_vec()), None);
        }
        let mut rec = Rec {
            path: ctx.path,
            file_id: ctx.file_id,
            offset: ctx.offset,
        };
        match self.run(0, line, &mut rec) {
            Ok(p) => (p, None),
            Err(f) => self.failed(f),
        }
    }

    /// A record still held (CRI partial with no final line) to send as is,
    /// e.g. at rotation or shutdown. The held text goes through the
    /// processors after the one that held it; if one of them cannot parse
    /// it, the held text itself is returned (never dropped). Call until
    /// `None`: CRI holds stdout and stderr apart.
    pub fn take_held(&mut self) -> Option<Vec<u8>> {
        self.take_held_checked().map(|(record, _)| record)
    }

    /// [`Chain::take_held`] with the parse error, if any, for counting; a
    /// parse error gives the held text (`on_parse_error` is not applied: a
    /// held record is never skipped).
    pub fn take_held_checked(&mut self) -> Option<(Vec<u8>, Option<ParseError>)> {
        let (i, held) = self
            .steps
            .iter_mut()
            .enumerate()
            .find_map(|(i, s)| match s {
                Step::Cri(c) => c.take_held().map(|h| (i, h)),
                _ => None,
            })?;
        let mut out = Vec::new();
        if let Step::Cri(c) = &self.steps[i] {
            if let Err(reason) = c.write_record(&held, &mut out) {
                let error = ParseError {
                    processor: "cri",
                    reason,
                };
                return Some((held.message, Some(error)));
            }
        }
        let mut rec = Rec {
            path: &held.path,
            file_id: &held.file_id,
            offset: held.offset,
        };
        Some(match self.run(i + 1, &out, &mut rec) {
            Ok(Processed::Record(v)) => (v, None),
            // Only a Cri step holds, and a chain has one at most.
            Ok(_) => unreachable!("no step after the cri step holds"),
            Err(f) => (f.raw, Some(f.error)),
        })
    }

    /// The offset of the oldest line held (a CRI partial), if any: the file
    /// source must not checkpoint past it.
    pub fn held_offset(&self) -> Option<u64> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Cri(c) => c.held_offset(),
                _ => None,
            })
            .min()
    }

    /// The bytes the chain keeps between lines in its scratch buffers.
    pub fn scratch_capacity(&self) -> usize {
        self.a.capacity() + self.b.capacity()
    }

    fn failed(&self, f: Failed) -> (Processed, Option<ParseError>) {
        match self.on_parse_error {
            OnParseError::SendRaw => (Processed::Record(f.raw), Some(f.error)),
            OnParseError::Skip => (Processed::Skipped, Some(f.error)),
        }
    }

    /// Runs steps `start..` on `input`; the result is copied out of the
    /// scratch buffers, which stay warm for the next line.
    fn run(&mut self, start: usize, input: &[u8], rec: &mut Rec<'_>) -> Result<Processed, Failed> {
        let mut cur = std::mem::take(&mut self.a);
        let mut next = std::mem::take(&mut self.b);
        let mut from_input = true;
        let mut result = Ok(Processed::Held);
        let mut done = true;
        for step in &mut self.steps[start..] {
            next.clear();
            let data: &[u8] = if from_input { input } else { &cur };
            match step.apply(data, rec, &mut next) {
                Ok(StepOut::Done) => {
                    std::mem::swap(&mut cur, &mut next);
                    from_input = false;
                }
                Ok(StepOut::Held) => {
                    done = false;
                    break;
                }
                Err(e) => {
                    result = Err(Failed {
                        error: ParseError {
                            processor: step.name(),
                            reason: e.reason,
                        },
                        raw: e.raw.unwrap_or_else(|| data.to_vec()),
                    });
                    done = false;
                    break;
                }
            }
        }
        if done {
            let data: &[u8] = if from_input { input } else { &cur };
            result = Ok(Processed::Record(data.to_vec()));
        }
        // A huge record (a multi-MiB line) must not leave each of many
        // files' chains holding buffers that size for good.
        for buf in [&mut cur, &mut next] {
            if buf.capacity() > SCRATCH_KEEP_BYTES {
                *buf = Vec::new();
            }
        }
        self.a = cur;
        self.b = next;
        result
    }
}

#[cfg(test)]
mod tests;

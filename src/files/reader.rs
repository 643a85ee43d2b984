//! One file's task: where to start (its checkpoint, if the identity
//! checks agree), reading lines and handing records to the producer (the
//! `put` waits when the buffers are full: backpressure reaches the file,
//! not memory), their results ([`FileSink`]: success, or the dead-letter
//! file, then done), rotation, copytruncate and deletion.
//!
//! File I/O here is blocking `pread` on the runtime's threads: local log
//! files are read from the page cache in chunks of [`CHUNK`], which costs
//! less than a thread hop per read.

use super::checkpoint::Tracker;
use super::dead_letter::{Dead, DeadLetters};
use super::identity::{self, Resume, Saved, FINGERPRINT_BYTES};
use super::key::{PartitionKeyRule, RandomKeys};
use super::lines::{self, LineSplitter, Multiline, Piece};
use super::process::{LineContext, Processed};
use super::rate::LineRate;
use super::settings::{FileSpec, StartAt};
use crate::error_code::ErrorCode;
use crate::ipc::RecordResult;
use crate::metrics::files::FileSample;
use crate::pipeline::{Landed, Landing, ResultSink};
use crate::producer::RecordInput;
use crate::Producer;
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes read at a time. Records are slices of the buffer they were read
/// into, so one record not yet final keeps its buffer: at this size a
/// throttled shard's records pin about what a socket client's frames of
/// 500-1000 records would.
pub const CHUNK: usize = 64 * 1024;
/// A rotated or deleted file is closed once it has not grown for this long
/// (and its records are acknowledged): a writer that opened it before the
/// rename may still be writing to it.
pub const ROTATED_QUIET: Duration = Duration::from_secs(1);
/// Records handed to one `put`.
const BATCH: usize = 500;
/// Records from files wait out any outage: the file is their buffer.
pub const NO_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);

/// One open file: shared by its reader, its results and the checkpoint writer.
pub struct FileState {
    pub stream: String,
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub file: File,
    pub tracker: Mutex<Tracker>,
    /// Woken when records become final.
    pub progress: Notify,
    pub dead: Arc<DeadLetters>,
    pub offset_read: AtomicU64,
    pub size: AtomicU64,
    pub lines: AtomicU64,
    /// Samples of `lines` for `lines_per_s` (taken by the reader as it passes
    /// and by `stats`).
    pub lines_rate: Mutex<LineRate>,
    pub records: AtomicU64,
    pub parse_errors: AtomicU64,
    pub long_lines: AtomicU64,
    pub rotations: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Closed while records were still unacknowledged (rotated_max_open_ms).
    pub closed_early: AtomicU64,
    /// The file is gone (deleted and read): its checkpoint is dropped.
    pub forget: AtomicBool,
    /// Lines, records, parse errors, long lines and rotations as the last
    /// [`FileState::take_sample`] saw them (the file metrics get differences).
    reported: Mutex<[u64; 5]>,
}

impl FileState {
    pub fn open(stream: &str, path: &str, dead: Arc<DeadLetters>) -> std::io::Result<FileState> {
        let file = File::open(path)?;
        let m = file.metadata()?;
        Ok(FileState {
            stream: stream.into(),
            path: path.into(),
            dev: m.dev(),
            ino: m.ino(),
            file,
            tracker: Mutex::new(Tracker::new(0)),
            progress: Notify::new(),
            dead,
            offset_read: AtomicU64::new(0),
            size: AtomicU64::new(m.len()),
            lines: AtomicU64::new(0),
            lines_rate: Mutex::new(LineRate::new(Instant::now(), 0)),
            records: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            long_lines: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            closed_early: AtomicU64::new(0),
            forget: AtomicBool::new(false),
            reported: Mutex::new([0; 5]),
        })
    }

    pub fn key(&self) -> (String, u64, u64) {
        (self.stream.clone(), self.dev, self.ino)
    }

    fn pread(&self, at: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match self.file.read_at(&mut buf[got..], at + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        buf.truncate(got);
        buf
    }

    /// The checkpoint as it would be saved now.
    pub fn saved(&self) -> Saved {
        let offset = self.tracker.lock().expect("tracker lock").committed();
        let (fp_len, fp_crc) = identity::fingerprint(&self.pread(0, FINGERPRINT_BYTES));
        let from = identity::tail_start(offset);
        let tail = self.pread(from, (offset - from) as usize);
        Saved {
            stream: self.stream.clone(),
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            fp_len,
            fp_crc,
            offset,
            tail_crc: crc32fast::hash(&tail),
        }
    }

    /// Samples the lines counter for the rate (at most once a second is kept).
    pub fn observe_lines(&self) -> f64 {
        let now = Instant::now();
        let lines = self.lines.load(Ordering::Relaxed);
        let mut r = self.lines_rate.lock().expect("rate lock");
        r.observe(now, lines);
        r.per_second(now, lines)
    }

    /// The counts since the previous sample and the bytes behind now, for the
    /// file metrics.
    pub fn take_sample(&self) -> FileSample {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let now = [
            g(&self.lines),
            g(&self.records),
            g(&self.parse_errors),
            g(&self.long_lines),
            g(&self.rotations),
        ];
        let before = std::mem::replace(&mut *self.reported.lock().expect("reported lock"), now);
        let d = |i: usize| now[i].saturating_sub(before[i]);
        let acked = self.tracker.lock().expect("tracker lock").committed();
        let bytes_behind = g(&self.size).saturating_sub(acked);
        FileSample {
            stream: self.stream.clone(),
            path: self.path.clone(),
            lines: d(0),
            records: d(1),
            parse_errors: d(2),
            long_lines: d(3),
            rotations: d(4),
            bytes_behind,
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        let lines_per_s = self.observe_lines();
        let (acked, in_flight) = {
            let t = self.tracker.lock().expect("tracker lock");
            (t.committed(), t.in_flight())
        };
        let size = self.size.load(Ordering::Relaxed);
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "path": self.path,
            "stream": self.stream,
            "dev": self.dev,
            "inode": self.ino,
            "size": size,
            "offset_read": g(&self.offset_read),
            "offset_acked": acked,
            "bytes_behind": size.saturating_sub(acked),
            "in_flight": in_flight,
            "lines": g(&self.lines),
            "lines_per_s": lines_per_s,
            "records": g(&self.records),
            "parse_errors": g(&self.parse_errors),
            "long_lines": g(&self.long_lines),
            "rotations": g(&self.rotations),
            "dead_letters": g(&self.dead_letters),
            "closed_unacked": g(&self.closed_early),
        })
    }
}

/// Results of one file's records.
pub struct FileSink(pub Arc<FileState>);

impl ResultSink for FileSink {
    fn deliver(&self, _tag: u64, r: RecordResult) {
        let s = &self.0;
        if r.success {
            s.tracker.lock().expect("tracker lock").done(r.id);
        } else if r.error_code == ErrorCode::ShuttingDown.as_str()
            || r.error_code == ErrorCode::Busy.as_str()
        {
            // Not final: the checkpoint stays before it and the next start
            // reads it again.
            return;
        } else {
            let pending = s.tracker.lock().expect("tracker lock").pending(r.id);
            let Some(p) = pending else { return };
            let written = s.dead.write(&Dead {
                stream: &s.stream,
                path: &s.path,
                start: p.start,
                end: p.end,
                error_code: &r.error_code,
                error_message: &r.error_message,
                data: p.data.as_deref(),
            });
            match written {
                Ok(()) => {
                    s.dead_letters.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %s.path, offset = p.start, error_code = %r.error_code,
                        error = %r.error_message, dead_letters = %s.dead.path().display(),
                        "a record from a file failed for good; written to the dead-letter file");
                    s.tracker.lock().expect("tracker lock").done(r.id);
                }
                Err(e) => {
                    // Not done: the checkpoint stays before it, so it is sent
                    // again after a restart rather than lost.
                    tracing::error!(path = %s.path, offset = p.start, error = %e,
                        "cannot write the dead-letter file; the record stays unacknowledged");
                    return;
                }
            }
        }
        s.progress.notify_waiters();
    }

    fn landed(&self, _tag: u64, _landing: &Arc<Landing>, records: Vec<Landed>) {
        {
            let mut t = self.0.tracker.lock().expect("tracker lock");
            for l in &records {
                t.done(l.id);
            }
        }
        self.0.progress.notify_waiters();
    }
}

/// What a reader needs.
pub struct Reader {
    pub producer: Producer,
    pub spec: Arc<FileSpec>,
    pub host: String,
    pub state: Arc<FileState>,
    /// The file's saved checkpoint, if any.
    pub saved: Option<Saved>,
    /// Found by the table's first scan (`start_at` applies); a file that
    /// appears later is read from its start.
    pub first_scan: bool,
    pub cancel: CancellationToken,
    /// Woken by inotify when something changed in the table's directories.
    pub wake: Arc<Notify>,
}

struct Emit<'a> {
    r: &'a Reader,
    sink: Arc<dyn ResultSink>,
    stream: Bytes,
    file_id: String,
    chain: super::process::Chain,
    multiline: Option<Multiline>,
    /// Tracker ids and offsets of the lines the chain holds (CRI partial lines), until
    /// it lets them go (`Tracker::release`).
    holds: Vec<(u64, u64)>,
    batch: Vec<RecordInput>,
    /// The `random` rule's keys (None for the other rules).
    random_keys: Option<RandomKeys>,
}

impl Reader {
    pub async fn run(self) {
        let st = self.state.clone();
        let size = st.file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = match &self.saved {
            Some(saved) => {
                let head = st.pread(0, FINGERPRINT_BYTES);
                let from = identity::tail_start(saved.offset);
                let tail = st.pread(from, (saved.offset - from) as usize);
                match identity::decide(saved, &head, size, &tail) {
                    Resume::At(o) => o,
                    Resume::FromStart(why) => {
                        tracing::info!(path = %st.path, saved_offset = saved.offset,
                            "the saved checkpoint does not apply ({why}); reading from the start");
                        0
                    }
                }
            }
            None if self.first_scan && self.spec.table.start_at == StartAt::End => {
                lines::start_after_last_line(size, self.spec.table.max_line_bytes, |at, len| {
                    st.pread(at, len)
                })
            }
            None => 0,
        };
        tracing::info!(path = %st.path, stream = %st.stream, offset = start, "reading file");
        *st.tracker.lock().expect("tracker lock") = Tracker::new(start);
        let max = self.spec.table.max_line_bytes as usize;
        let mut split = LineSplitter::new(max, start);
        let mut emit = Emit {
            r: &self,
            sink: Arc::new(FileSink(st.clone())),
            stream: Bytes::from(st.stream.clone().into_bytes()),
            file_id: format!("{:x}.{:x}", st.dev, st.ino),
            chain: self.spec.chain(&self.host),
            multiline: self
                .spec
                .multiline_start
                .clone()
                .map(|re| Multiline::new(re, max)),
            holds: Vec::new(),
            batch: Vec::new(),
            random_keys: (self.spec.partition_key == PartitionKeyRule::Random)
                .then(RandomKeys::default),
        };
        let poll = self.spec.poll_interval();
        let multiline_timeout = Duration::from_millis(self.spec.table.multiline_timeout_ms);
        let rotated_max = Duration::from_millis(self.spec.table.rotated_max_open_ms);
        let mut buf = vec![0u8; CHUNK];
        let mut pieces = Vec::new();
        let mut last_data = Instant::now();
        let mut rotated_at: Option<Instant> = None;
        let mut long_seen = 0;
        // The first bytes as last seen: a change means the file was
        // truncated and written again, even if it is already longer than
        // the offset read by the time it is looked at.
        let mut head = identity::fingerprint(&st.pread(0, FINGERPRINT_BYTES));
        while !self.cancel.is_cancelled() {
            let now_head = st.pread(0, FINGERPRINT_BYTES);
            let rewritten = (now_head.len() as u32) < head.0
                || crc32fast::hash(&now_head[..head.0 as usize]) != head.1;
            head = identity::fingerprint(&now_head);
            let at = split.fed_to();
            if rewritten || st.file.metadata().is_ok_and(|m| m.len() < at) {
                // copytruncate: the writer keeps its descriptor and the file
                // starts again at 0. What was read is in flight: let it
                // finish, then read the new content from the start.
                st.rotations.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %st.path, offset = at,
                    "file truncated (copytruncate?); reading it again from the start");
                // What the reader and the chain still hold goes out first: it was read.
                if let Some(rec) = emit.multiline.as_mut().and_then(Multiline::flush) {
                    emit.record(rec).await;
                }
                emit.take_held(at);
                emit.send().await;
                self.wait_acked(rotated_max).await;
                st.tracker.lock().expect("tracker lock").restart_at(0);
                split = LineSplitter::new(max, 0);
                long_seen = 0;
                emit.holds.clear();
                continue;
            }
            let n = st.file.read_at(&mut buf, at).unwrap_or(0);
            if n > 0 {
                split.feed(&buf[..n], &mut pieces);
                st.offset_read.store(split.fed_to(), Ordering::Relaxed);
                if split.long_lines > long_seen {
                    tracing::warn!(path = %st.path, max_line_bytes = max, long_lines = split.long_lines,
                        "a line longer than max_line_bytes was split into several records");
                    st.long_lines.store(split.long_lines, Ordering::Relaxed);
                    long_seen = split.long_lines;
                }
                for p in pieces.drain(..) {
                    emit.piece(p).await;
                }
                emit.send().await;
                last_data = Instant::now();
                st.observe_lines();
                continue;
            }
            let m = match st.file.metadata() {
                Ok(m) => m,
                Err(_) => break,
            };
            st.size.store(m.len(), Ordering::Relaxed);
            st.observe_lines();
            if emit.multiline.as_ref().is_some_and(|m| m.holds())
                && last_data.elapsed() >= multiline_timeout
            {
                if let Some(rec) = emit.multiline.as_mut().and_then(Multiline::flush) {
                    emit.record(rec).await;
                    emit.send().await;
                }
            }
            let moved = m.nlink() == 0
                || std::fs::metadata(&st.path)
                    .map_or(true, |p| p.dev() != st.dev || p.ino() != st.ino);
            if moved {
                match rotated_at {
                    None => {
                        // Keep reading: a writer that opened the file before
                        // the rename writes to it until it reopens.
                        rotated_at = Some(Instant::now());
                        last_data = Instant::now();
                        st.rotations.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(path = %st.path, deleted = m.nlink() == 0,
                            "file rotated or deleted; reading it to its end");
                        continue;
                    }
                    Some(t) if last_data.elapsed() < ROTATED_QUIET && t.elapsed() < rotated_max => {
                    }
                    Some(t) => {
                        if let Some(last) = split.finish() {
                            emit.piece(last).await;
                        }
                        if let Some(rec) = emit.multiline.as_mut().and_then(Multiline::flush) {
                            emit.record(rec).await;
                        }
                        emit.take_held(split.fed_to());
                        emit.send().await;
                        let left = rotated_max.saturating_sub(t.elapsed());
                        if !self.wait_acked(left).await && !self.cancel.is_cancelled() {
                            st.closed_early.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(path = %st.path, rotated_max_open_ms = self.spec.table.rotated_max_open_ms,
                                "a rotated file's records were not all acknowledged within rotated_max_open_ms; closing it anyway");
                        }
                        if m.nlink() == 0 {
                            st.forget.store(true, Ordering::Relaxed);
                        }
                        break;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = self.wake.notified() => {}
                _ = self.cancel.cancelled() => {}
            }
        }
        emit.send().await;
        tracing::debug!(path = %st.path, "file reader ends");
    }

    /// Waits until every record read is final, at most `bound`; true if so.
    async fn wait_acked(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            let notified = self.state.progress.notified();
            if self.state.tracker.lock().expect("tracker lock").in_flight() == 0 {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = self.cancel.cancelled() => return false,
            }
        }
    }
}

impl Emit<'_> {
    async fn piece(&mut self, p: Piece) {
        let st = &self.r.state;
        if p.terminator_only {
            let mut t = st.tracker.lock().expect("tracker lock");
            let id = t.push(p.start, p.end, None);
            t.done(id);
            return;
        }
        st.lines.fetch_add(1, Ordering::Relaxed);
        let rec = match &mut self.multiline {
            Some(m) => m.push(p),
            None => Some(p),
        };
        if let Some(rec) = rec {
            self.record(rec).await;
        }
    }

    async fn record(&mut self, rec: Piece) {
        let st = self.r.state.clone();
        if self.chain.is_empty() {
            // Nothing to parse or hold: the line's bytes are the record's.
            self.push(rec.start, rec.end, rec.data);
            if self.batch.len() >= BATCH {
                self.send().await;
            }
            return;
        }
        let ctx = LineContext {
            path: &st.path,
            file_id: &self.file_id,
            offset: rec.start,
        };
        let (out, err) = self.chain.apply(&rec.data, &ctx);
        if let Some(e) = err {
            let n = st.parse_errors.fetch_add(1, Ordering::Relaxed);
            if n < 10 || n.is_power_of_two() {
                tracing::warn!(path = %st.path, offset = rec.start, processor = e.processor,
                    reason = %e.reason, parse_errors = n + 1, "a line did not parse");
            }
        }
        match out {
            Processed::Record(data) => {
                self.push(rec.start, rec.end, data.into());
                self.release_holds();
                if self.batch.len() >= BATCH {
                    self.send().await;
                }
            }
            Processed::Held => {
                let id = st
                    .tracker
                    .lock()
                    .expect("tracker lock")
                    .push_hold(rec.start, rec.end);
                self.holds.push((id, rec.start));
            }
            Processed::Skipped => {
                // Done at once; a line the chain holds before it still keeps the
                // checkpoint back (the tracker's entries are in file order).
                let mut t = st.tracker.lock().expect("tracker lock");
                let id = t.push(rec.start, rec.end, None);
                t.done(id);
                drop(t);
                self.release_holds();
            }
        }
    }

    /// Lines the chain no longer holds are released to the records pushed since.
    fn release_holds(&mut self) {
        if self.holds.is_empty() {
            return;
        }
        let floor = self.chain.held_offset().unwrap_or(u64::MAX);
        let released: Vec<u64> = self
            .holds
            .iter()
            .filter(|(_, start)| *start < floor)
            .map(|(id, _)| *id)
            .collect();
        if released.is_empty() {
            return;
        }
        self.holds.retain(|(_, start)| *start >= floor);
        self.r
            .state
            .tracker
            .lock()
            .expect("tracker lock")
            .release(&released);
    }

    /// Sends what the chain still holds as it is (rotation, truncation): every held
    /// record, each counted if it did not parse.
    fn take_held(&mut self, at: u64) {
        while let Some((held, err)) = self.chain.take_held_checked() {
            if err.is_some() {
                self.r.state.parse_errors.fetch_add(1, Ordering::Relaxed);
            }
            self.push(at, at, held.into());
        }
        self.release_holds();
    }

    fn push(&mut self, start: u64, end: u64, data: Bytes) {
        let st = &self.r.state;
        let key = match &mut self.random_keys {
            Some(keys) => keys.next_key(),
            None => Bytes::from(self.r.spec.partition_key.key(&data, &st.path)),
        };
        let id = st
            .tracker
            .lock()
            .expect("tracker lock")
            .push(start, end, Some(data.clone()));
        st.records.fetch_add(1, Ordering::Relaxed);
        self.batch.push(RecordInput {
            id,
            stream: self.stream.clone(),
            partition_key: key,
            explicit_hash_key: None,
            data,
            compression: None,
        });
    }

    async fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.r
            .producer
            .put_with_ttl(batch, 0, self.sink.clone(), false, Some(NO_TTL))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir, text: &str) -> FileState {
        let path = dir.path().join("app.log");
        std::fs::write(&path, text).unwrap();
        let dead = Arc::new(DeadLetters::new(dir.path()));
        FileState::open("logs", path.to_str().unwrap(), dead).unwrap()
    }

    #[test]
    fn a_sample_has_the_counts_since_the_previous_one_and_the_bytes_behind() {
        let dir = tempfile::tempdir().unwrap();
        let st = open(&dir, "one\ntwo\nthree\n");
        st.lines.fetch_add(3, Ordering::Relaxed);
        st.records.fetch_add(3, Ordering::Relaxed);
        st.parse_errors.fetch_add(1, Ordering::Relaxed);
        let first = st.take_sample();
        assert_eq!(
            (
                first.lines,
                first.records,
                first.parse_errors,
                first.rotations
            ),
            (3, 3, 1, 0)
        );
        assert_eq!(first.bytes_behind, 14, "nothing acknowledged yet");
        assert!(first.path.ends_with("app.log") && first.stream == "logs");
        st.lines.fetch_add(2, Ordering::Relaxed);
        st.rotations.fetch_add(1, Ordering::Relaxed);
        st.tracker.lock().unwrap().restart_at(10);
        let second = st.take_sample();
        assert_eq!(
            (
                second.lines,
                second.records,
                second.parse_errors,
                second.rotations
            ),
            (2, 0, 0, 1)
        );
        assert_eq!(second.bytes_behind, 4);
        assert_eq!(st.take_sample().lines, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stats_give_lines_per_second_while_lines_flow_and_zero_once_they_stop() {
        let dir = tempfile::tempdir().unwrap();
        let st = open(&dir, "");
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            st.lines.fetch_add(200, Ordering::Relaxed);
            st.observe_lines();
        }
        let v = st.stats();
        assert_eq!(v["lines"], 1000);
        let rate = v["lines_per_s"].as_f64().unwrap();
        assert!((rate - 200.0).abs() < 1e-6, "{rate}");
        tokio::time::advance(Duration::from_secs(11)).await;
        st.observe_lines();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(st.stats()["lines_per_s"], 0.0);
    }
}

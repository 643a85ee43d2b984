//! The running `[[files]]` tables ([`FileSources`]): one task per table
//! (discovery every `poll_interval_ms` and at once when inotify sees a file
//! created, renamed or removed; one reader task per file found, so every
//! matching file is read at once, woken by inotify on appends), the
//! checkpoint writer, SIGHUP and shutdown. Polling stays the fallback for
//! file systems without inotify.
//!
//! Shutdown, in order: 1. [`FileSources::stop`]: readers stop reading (a
//! `put` under way finishes, or is refused once the producer's drain
//! begins); 2. the producer drains; 3. [`FileSources::finish`]: the last
//! checkpoints are written, with every result the drain brought.

use super::checkpoint::{Retention, Store};
use super::dead_letter::DeadLetters;
use super::identity::Saved;
use super::reader::{FileState, Reader};
use super::settings::{FileSpec, FilesTable};
use crate::metrics::files::FileSample;
use crate::Producer;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type Key = (String, u64, u64);

/// Shared by the tables' tasks.
struct Hub {
    producer: Producer,
    state_dir: PathBuf,
    store: Store,
    dead: Arc<DeadLetters>,
    host: String,
    /// Checkpoints of files not open now, and the last saved ones.
    saved: Mutex<HashMap<Key, Saved>>,
    /// Files open now.
    live: Mutex<Vec<Arc<FileState>>>,
    /// The last counts of files closed since the file metrics' last sample.
    retired: Mutex<Vec<FileSample>>,
    /// What the last write saved (nothing is written when nothing moved).
    written: Mutex<Vec<Saved>>,
    /// When each checkpoint's file was last open or matched.
    retention: Mutex<Retention<Key>>,
    /// `checkpoint_retention_ms`: the largest of the running tables'.
    keep_for: Mutex<Duration>,
    readers: TaskTracker,
}

struct Running {
    table: FilesTable,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The `[[files]]` tables at work.
pub struct FileSources {
    hub: Arc<Hub>,
    tables: Mutex<Vec<Running>>,
    stop: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl FileSources {
    /// Creates `state_dir` and reads the checkpoints when there are tables;
    /// the error names the directory or file.
    pub fn start(
        producer: Producer,
        state_dir: PathBuf,
        tables: &[FilesTable],
    ) -> Result<FileSources, String> {
        let hub = Arc::new(Hub {
            producer,
            store: Store::new(&state_dir),
            dead: Arc::new(DeadLetters::new(&state_dir)),
            state_dir,
            host: super::host_name(),
            saved: Mutex::new(HashMap::new()),
            live: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            written: Mutex::new(Vec::new()),
            retention: Mutex::new(Retention::default()),
            keep_for: Mutex::new(Duration::from_millis(
                tables
                    .iter()
                    .map(|t| t.checkpoint_retention_ms)
                    .max()
                    .unwrap_or(86_400_000),
            )),
            readers: TaskTracker::new(),
        });
        if !tables.is_empty() {
            hub.prepare()?;
        }
        let me = FileSources {
            hub,
            tables: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            writer: Mutex::new(None),
        };
        me.reconfigure(tables);
        let (hub, stop) = (me.hub.clone(), me.stop.clone());
        let interval = tables
            .iter()
            .map(|t| t.checkpoint_interval_ms)
            .min()
            .unwrap_or(1000);
        *me.writer.lock().expect("writer lock") = Some(tokio::spawn(async move {
            let every = Duration::from_millis(interval);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.cancelled() => return,
                }
                let h = hub.clone();
                let _ = tokio::task::spawn_blocking(move || h.write_checkpoints()).await;
            }
        }));
        Ok(me)
    }

    /// Applies the tables of a re-read config: removed or changed ones
    /// stop (their checkpoints stay), new or changed ones start.
    pub fn reconfigure(&self, tables: &[FilesTable]) {
        if let Some(ms) = tables.iter().map(|t| t.checkpoint_retention_ms).max() {
            *self.hub.keep_for.lock().expect("keep_for lock") = Duration::from_millis(ms);
        }
        let mut running = self.tables.lock().expect("tables lock");
        running.retain(|r| {
            let keep = tables.contains(&r.table);
            if !keep {
                tracing::info!(stream = %r.table.stream, paths = ?r.table.paths, "files table removed or changed: stopping it");
                r.cancel.cancel();
            }
            keep
        });
        for t in tables {
            if running.iter().any(|r| &r.table == t) {
                continue;
            }
            if let Err(e) = self.hub.prepare() {
                tracing::error!("files table for stream {}: {e}", t.stream);
                continue;
            }
            let spec = match t.compile(&self.hub.host) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::error!("files table for stream {}: {e}", t.stream);
                    continue;
                }
            };
            let cancel = self.stop.child_token();
            tracing::info!(stream = %t.stream, paths = ?t.paths, "files table started");
            let task = tokio::spawn(table_task(self.hub.clone(), spec, cancel.clone()));
            running.push(Running {
                table: t.clone(),
                cancel,
                task,
            });
        }
    }

    /// Step 1 of the shutdown: readers stop, waiting at most `bound` for
    /// `put`s under way.
    pub async fn stop(&self, bound: Duration) {
        self.stop.cancel();
        let tasks: Vec<JoinHandle<()>> = self
            .tables
            .lock()
            .expect("tables lock")
            .drain(..)
            .map(|r| r.task)
            .collect();
        let _ = tokio::time::timeout(bound, async {
            for t in tasks {
                let _ = t.await;
            }
            self.hub.readers.close();
            self.hub.readers.wait().await;
        })
        .await;
    }

    /// Step 3: the last checkpoints.
    pub async fn finish(&self) {
        if let Some(w) = self.writer.lock().expect("writer lock").take() {
            w.abort();
        }
        let h = self.hub.clone();
        let _ = tokio::task::spawn_blocking(move || h.write_checkpoints()).await;
    }

    /// Per open file: path, offsets, bytes behind, counts.
    pub fn stats(&self) -> serde_json::Value {
        let live = self.hub.live.lock().expect("live lock");
        serde_json::Value::Array(live.iter().map(|s| s.stats()).collect())
    }

    /// For the file metrics: per file open now, and per file closed since the
    /// previous call, what it counted since then.
    pub fn take_samples(&self) -> Vec<FileSample> {
        let mut out = std::mem::take(&mut *self.hub.retired.lock().expect("retired lock"));
        let live = self.hub.live.lock().expect("live lock");
        out.extend(live.iter().map(|s| s.take_sample()));
        out
    }
}

impl Hub {
    /// `state_dir` exists and the checkpoints are loaded (once).
    fn prepare(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.state_dir).map_err(|e| {
            format!(
                "cannot create state_dir {}: {e} (set state_dir to a writable directory, not a tmpfs)",
                self.state_dir.display()
            )
        })?;
        let mut saved = self.saved.lock().expect("saved lock");
        if saved.is_empty() {
            let loaded = self
                .store
                .load()
                .map_err(|e| format!("cannot read {}: {e}", self.store.path().display()))?;
            for s in loaded {
                saved.insert((s.stream.clone(), s.dev, s.ino), s);
            }
        }
        Ok(())
    }

    fn write_checkpoints(&self) {
        let live: Vec<Arc<FileState>> = self.live.lock().expect("live lock").clone();
        let now: Vec<Saved> = live.iter().map(|s| s.saved()).collect();
        let keep_for = *self.keep_for.lock().expect("keep_for lock");
        let all: Vec<Saved> = {
            let mut saved = self.saved.lock().expect("saved lock");
            let mut retention = self.retention.lock().expect("retention lock");
            let at = std::time::Instant::now();
            for s in now {
                let key = (s.stream.clone(), s.dev, s.ino);
                retention.seen(key.clone(), at);
                saved.insert(key, s);
            }
            for gone in retention.expire(&mut saved, at, keep_for) {
                tracing::info!(path = %gone.path, stream = %gone.stream, inode = gone.ino,
                    checkpoint_retention_ms = keep_for.as_millis() as u64,
                    "dropped the checkpoint of a file no table has matched for checkpoint_retention_ms");
            }
            let mut v: Vec<Saved> = saved.values().cloned().collect();
            v.sort_by(|a, b| (&a.stream, a.dev, a.ino).cmp(&(&b.stream, b.dev, b.ino)));
            v
        };
        let mut written = self.written.lock().expect("written lock");
        if *written == all {
            return;
        }
        match self.store.save(&all) {
            Ok(()) => *written = all,
            Err(e) => {
                tracing::error!(path = %self.store.path().display(), error = %e, "cannot write the checkpoints")
            }
        }
    }
}

/// Watches the tables' directories with inotify, waking discovery and the
/// readers at once; without it (a file system or a limit that refuses it)
/// everything still happens at the next poll.
struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    watched: std::collections::HashSet<PathBuf>,
}

impl Watch {
    /// `readers`: woken by any change; `discovery`: by files created,
    /// renamed or removed only (a walk per write would cost a busy file).
    fn new(
        readers: Arc<tokio::sync::Notify>,
        discovery: Arc<tokio::sync::Notify>,
        spec: &FileSpec,
    ) -> Watch {
        use notify::event::{EventKind, ModifyKind};
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            readers.notify_waiters();
            if matches!(
                ev.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Name(_))
            ) {
                discovery.notify_waiters();
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::info!(stream = %spec.table.stream, error = %e,
                    "inotify is not available; files are polled every poll_interval_ms");
                None
            }
        };
        Watch {
            watcher,
            watched: Default::default(),
        }
    }

    /// Watches each pattern's directory once it exists.
    fn update(&mut self, spec: &FileSpec) {
        use notify::{RecursiveMode, Watcher};
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for p in &spec.table.paths {
            let (root, depth) = super::discover::walk_root(p);
            let (dir, mode) = match depth {
                Some(0) => match root.parent() {
                    Some(d) => (d.to_path_buf(), RecursiveMode::NonRecursive),
                    None => continue,
                },
                Some(1) => (root, RecursiveMode::NonRecursive),
                _ => (root, RecursiveMode::Recursive),
            };
            if self.watched.contains(&dir) || !dir.is_dir() {
                continue;
            }
            match w.watch(&dir, mode) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e,
                    "cannot watch; polling it"),
            }
        }
    }
}

async fn table_task(hub: Arc<Hub>, spec: Arc<FileSpec>, cancel: CancellationToken) {
    let mut open: HashMap<(u64, u64), JoinHandle<()>> = HashMap::new();
    let mut first_scan = true;
    let wake = Arc::new(tokio::sync::Notify::new());
    let rediscover = Arc::new(tokio::sync::Notify::new());
    let mut watch = Watch::new(wake.clone(), rediscover.clone(), &spec);
    while !cancel.is_cancelled() {
        watch.update(&spec);
        open.retain(|_, h| !h.is_finished());
        let s = spec.clone();
        let found = tokio::task::spawn_blocking(move || super::discover::matching(&s))
            .await
            .unwrap_or_default();
        let at = std::time::Instant::now();
        let metas: Vec<_> = found
            .into_iter()
            .filter_map(|p| p.metadata().ok().map(|m| (p, m)))
            .collect();
        {
            let mut retention = hub.retention.lock().expect("retention lock");
            for (_, m) in &metas {
                retention.seen((spec.table.stream.clone(), m.dev(), m.ino()), at);
            }
        }
        for (path, m) in metas {
            if open.contains_key(&(m.dev(), m.ino())) {
                continue;
            }
            let path_s = path.to_string_lossy().into_owned();
            let state = match FileState::open(&spec.table.stream, &path_s, hub.dead.clone()) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::warn!(path = %path_s, error = %e, "cannot open a matching file; trying again at the next poll");
                    continue;
                }
            };
            let key = state.key();
            let saved = hub.saved.lock().expect("saved lock").get(&key).cloned();
            hub.live.lock().expect("live lock").push(state.clone());
            let reader = Reader {
                producer: hub.producer.clone(),
                spec: spec.clone(),
                host: hub.host.clone(),
                state: state.clone(),
                saved,
                first_scan,
                cancel: cancel.child_token(),
                wake: wake.clone(),
            };
            let h = hub.clone();
            let task = hub.readers.spawn(async move {
                reader.run().await;
                let last = state.saved();
                h.live
                    .lock()
                    .expect("live lock")
                    .retain(|s| !Arc::ptr_eq(s, &state));
                // After it left `live`: a sample taken meanwhile counted up to
                // then, and this one the rest.
                let rest = state.take_sample();
                h.retired.lock().expect("retired lock").push(rest);
                let mut saved = h.saved.lock().expect("saved lock");
                if state.forget.load(std::sync::atomic::Ordering::Relaxed) {
                    saved.remove(&key);
                } else {
                    saved.insert(key, last);
                }
            });
            open.insert((m.dev(), m.ino()), task);
        }
        first_scan = false;
        tokio::select! {
            _ = tokio::time::sleep(spec.poll_interval()) => {}
            _ = rediscover.notified() => {}
            _ = cancel.cancelled() => {}
        }
    }
    for (_, h) in open {
        let _ = h.await;
    }
}

//! The sync thread: fdatasync per the policy (never on a caller's thread), the
//! durable watermark published after it, finished segments removed, the ledger
//! written every `ledger_interval`, and the final sync and ledger at close.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ledger::{self, Ledger};
use super::{lock, segment, FsyncPolicy, Shared, State, TICK};

pub(super) fn start(sh: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kpld-spool-sync".into())
        .spawn(move || run(&sh))
}

fn run(sh: &Shared) {
    let policy = sh.settings.fsync;
    let interval = match policy {
        FsyncPolicy::Batch(d) => d,
        _ => Duration::MAX,
    };
    let mut next_sync = Instant::now() + interval.min(Duration::from_secs(3600));
    let mut next_ledger = Instant::now() + sh.settings.ledger_interval;
    loop {
        let closing = {
            let mut c = lock(&sh.ctl);
            loop {
                if c.closing || c.wake {
                    break;
                }
                let now = Instant::now();
                let batch_due = matches!(policy, FsyncPolicy::Batch(_)) && now >= next_sync;
                if batch_due || now >= next_ledger {
                    break;
                }
                let mut until = next_ledger.min(now + TICK);
                if matches!(policy, FsyncPolicy::Batch(_)) {
                    until = until.min(next_sync);
                }
                let (g, t) = sh
                    .ctl_cv
                    .wait_timeout(c, until.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner());
                c = g;
                if t.timed_out() {
                    // A tick: remove finished segments even when nothing woke us.
                    break;
                }
            }
            c.wake = false;
            c.closing
        };
        let now = Instant::now();
        match policy {
            FsyncPolicy::Always => sync_once(sh),
            FsyncPolicy::Batch(d) => {
                if closing || now >= next_sync {
                    sync_once(sh);
                    next_sync = now + d;
                }
            }
            FsyncPolicy::Never => {
                if closing {
                    sync_once(sh);
                } else {
                    lock(&sh.writer).unsynced.clear();
                }
            }
        }
        sh.remove_finished();
        if closing || now >= next_ledger {
            write_ledger(sh, closing);
            next_ledger = now + sh.settings.ledger_interval;
        }
        if closing {
            return;
        }
    }
}

/// One group commit: every write made before it is durable after it.
fn sync_once(sh: &Shared) {
    if sh.mark.borrow().state == State::Failed {
        return;
    }
    let (files, active, end, dir_dirty) = {
        let mut w = lock(&sh.writer);
        (
            std::mem::take(&mut w.unsynced),
            w.file.clone(),
            sh.written_end.load(Ordering::Acquire),
            std::mem::take(&mut w.dir_dirty),
        )
    };
    if files.is_empty() && !dir_dirty && end <= sh.mark.borrow().durable_end {
        return;
    }
    for f in files.iter().chain(std::iter::once(&active)) {
        if let Err(e) = f.sync_data() {
            sh.fail(format!(
                "fdatasync of a segment in {} failed: {e}",
                sh.settings.dir.display()
            ));
            return;
        }
        sh.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
    }
    if dir_dirty {
        if let Err(e) = segment::sync_dir(&sh.settings.dir) {
            sh.fail(format!(
                "fsync of {} failed: {e}",
                sh.settings.dir.display()
            ));
            return;
        }
    }
    sh.mark.send_if_modified(|m| {
        let newer = m.durable_end < end;
        if newer {
            m.durable_end = end;
        }
        newer
    });
}

fn write_ledger(sh: &Shared, closing: bool) {
    if !sh.ledger_dirty.swap(false, Ordering::Relaxed) && !closing {
        return;
    }
    let segs = sh.segs.load_full();
    let l = Ledger {
        next_seq: sh.written_end.load(Ordering::Acquire),
        segments: segs.iter().map(|s| (s.base, s.done_runs())).collect(),
    };
    match ledger::store(&sh.settings.dir, &l) {
        Ok(()) => {
            sh.counters.ledger_writes.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(dir = %sh.settings.dir.display(), error = %e, "spool ledger not written; retried next interval");
            sh.ledger_dirty.store(true, Ordering::Relaxed);
        }
    }
}

//! The disk spool against real files: reopen after close and after SIGKILL, torn
//! tails and flipped bytes at seeded random offsets, segment removal, max_bytes and a
//! real full disk (a small tmpfs), the fsync policies, and a micro-benchmark.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kpld::spool::{
    Entry, EntryRef, FsyncPolicy, FullReason, Spool, SpoolError, SpoolSettings,
    SEGMENT_HEADER_BYTES,
};
use rand::{Rng, SeedableRng};

/// One record's owned parts; everything derives from its index so any process can
/// tell what a seq should hold.
struct Rec {
    stream: String,
    key: Vec<u8>,
    ehk: Option<Vec<u8>>,
    data: Vec<u8>,
    arrival: u64,
}

fn rec(i: u64) -> Rec {
    Rec {
        stream: format!("stream-{}", i % 3),
        key: format!("key-{i}").into_bytes(),
        ehk: (i % 5 == 0).then(|| format!("{}", i * 7).into_bytes()),
        data: (0..(60 + i % 80))
            .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
            .collect(),
        arrival: 1_700_000_000_000 + i,
    }
}

fn as_ref(r: &Rec) -> EntryRef<'_> {
    EntryRef {
        stream: &r.stream,
        partition_key: &r.key,
        explicit_hash_key: r.ehk.as_deref(),
        data: &r.data,
        compression: (r.arrival % 4) as u8,
        arrival_unix_ms: r.arrival,
    }
}

fn expected(seq: u64, i: u64) -> Entry {
    let r = rec(i);
    Entry {
        seq,
        compression: (r.arrival % 4) as u8,
        stream: r.stream,
        partition_key: r.key,
        explicit_hash_key: r.ehk,
        data: r.data,
        arrival_unix_ms: r.arrival,
    }
}

fn encoded_len(i: u64) -> usize {
    let r = rec(i);
    36 + r.stream.len() + r.key.len() + r.ehk.map_or(0, |e| e.len()) + r.data.len()
}

fn settings(dir: &Path) -> SpoolSettings {
    SpoolSettings {
        fsync: FsyncPolicy::Batch(Duration::from_millis(2)),
        ..SpoolSettings::new(dir, 256 << 20)
    }
}

/// A spool of 4 KiB segments bounded at two of them: full after a few appends.
fn two_segments_at_most(dir: &Path) -> Spool {
    let s = SpoolSettings {
        segment_bytes: 4096,
        max_bytes: 8192,
        ..settings(dir)
    };
    Spool::open(s).unwrap().0
}

/// Ten records appended on `rt`, waiting for room.
fn append_waiting_for_room(
    rt: &tokio::runtime::Runtime,
    spool: &Spool,
) -> tokio::task::JoinHandle<Result<kpld::spool::Ticket, SpoolError>> {
    let spool = spool.clone();
    rt.spawn(async move {
        let recs: Vec<Rec> = (0..10).map(rec).collect();
        let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
        spool.append(&refs, true).await
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Appends records `from..to` in batches of `batch`, waiting for each to be durable.
async fn append_range(spool: &Spool, from: u64, to: u64, batch: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut i = from;
    while i < to {
        let n = batch.min(to - i);
        let recs: Vec<Rec> = (i..i + n).map(rec).collect();
        let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
        let t = spool.append(&refs, false).await.unwrap();
        spool.durable(&t).await.unwrap();
        seqs.extend(t.seqs());
        i += n;
    }
    seqs
}

fn replay_all(r: &mut kpld::spool::Replay) -> Vec<Entry> {
    let mut all = Vec::new();
    loop {
        let b = r.next_batch(37).unwrap();
        if b.is_empty() {
            return all;
        }
        all.extend(b);
    }
}

/// Waits for a condition the spool's own thread brings about (no timing asserted:
/// the cap only keeps a bug from hanging the suite).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn reopen_after_close_replays_exactly_the_entries_not_done_in_order_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let rt = rt();
    let s = SpoolSettings {
        segment_bytes: 8192,
        ..settings(&dir)
    };
    let (spool, mut replay, report) = Spool::open(s.clone()).unwrap();
    assert!(replay_all(&mut replay).is_empty());
    assert_eq!(report.entries, 0);
    let seqs = rt.block_on(append_range(&spool, 0, 300, 25));
    assert_eq!(seqs, (0..300).collect::<Vec<_>>());
    for &q in seqs.iter().filter(|q| *q % 3 == 0) {
        spool.done(q);
        spool.done(q); // idempotent
    }
    assert_eq!(spool.stats().entries_pending, 200);
    spool.close().unwrap();
    drop(spool);

    let (spool, mut replay, report) = Spool::open(s.clone()).unwrap();
    assert_eq!(report.already_done + replay.pending(), report.entries);
    assert_eq!(replay.pending(), 200);
    let got = replay_all(&mut replay);
    let want: Vec<Entry> = (0..300)
        .filter(|q| q % 3 != 0)
        .map(|q| expected(q, q))
        .collect();
    assert_eq!(got, want);
    for e in &got {
        spool.done(e.seq);
    }
    let t = rt
        .block_on(spool.append(&[as_ref(&rec(1000))], false))
        .unwrap();
    assert_eq!(t.first_seq, 300, "seqs continue after the highest seen");
    spool.done(t.first_seq);
    spool.close().unwrap();
    drop(spool);

    let (spool, mut replay, _) = Spool::open(s).unwrap();
    assert!(
        replay_all(&mut replay).is_empty(),
        "after a clean close nothing done comes back"
    );
    let t = rt
        .block_on(spool.append(&[as_ref(&rec(1001))], false))
        .unwrap();
    assert_eq!(
        t.first_seq, 301,
        "seqs never go back, even with every segment gone"
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, _, _) = Spool::open(settings(tmp.path())).unwrap();
    match Spool::open(settings(tmp.path())) {
        Err(SpoolError::Locked { path }) => assert_eq!(path, tmp.path()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, got a second spool"),
    }
}

#[test]
fn bad_settings_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let s = SpoolSettings {
        max_bytes: 10,
        ..settings(tmp.path())
    };
    let err = Spool::open(s).err().unwrap().to_string();
    assert!(err.contains("max_spool_bytes"), "{err}");
    let s = SpoolSettings {
        fsync: FsyncPolicy::Batch(Duration::ZERO),
        ..settings(tmp.path())
    };
    let err = Spool::open(s).err().unwrap().to_string();
    assert!(err.contains("spool_fsync_interval"), "{err}");
}

const CHILD_DIR: &str = "KPLD_SPOOL_TEST_CHILD_DIR";

/// Not a test on its own: the child process of the SIGKILL test. It appends until
/// killed, printing each batch once durable and each seq marked done.
#[test]
fn child_appends_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let s = SpoolSettings {
        segment_bytes: 64 << 10,
        ledger_interval: Duration::from_millis(20),
        ..settings(Path::new(&dir))
    };
    let (spool, _, _) = Spool::open(s).unwrap();
    let rt = rt();
    let mut out = std::io::stdout();
    rt.block_on(async {
        let mut i = 0u64;
        loop {
            let recs: Vec<Rec> = (i..i + 50).map(rec).collect();
            let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
            let t = spool.append(&refs, true).await.unwrap();
            spool.durable(&t).await.unwrap();
            writeln!(out, "durable {} {}", t.first_seq, t.count).unwrap();
            for q in t.seqs().filter(|q| q % 2 == 0) {
                spool.done(q);
                writeln!(out, "done {q}").unwrap();
            }
            out.flush().unwrap();
            i += 50;
        }
    });
}

#[test]
fn sigkill_mid_append_loses_no_durable_entry_that_was_not_done() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_appends_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut durable = Vec::new();
    let mut done = std::collections::HashSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while durable.len() < 4000 {
        let line = lines.next().expect("child ended early").unwrap();
        let mut w = line.split_whitespace();
        match w.next() {
            Some("durable") => {
                let first: u64 = w.next().unwrap().parse().unwrap();
                let n: u64 = w.next().unwrap().parse().unwrap();
                durable.extend(first..first + n);
            }
            Some("done") => {
                done.insert(w.next().unwrap().parse::<u64>().unwrap());
            }
            _ => {}
        }
    }
    // std's Child::kill is SIGKILL on Unix: no destructor, no close, no final sync.
    child.kill().unwrap();
    child.wait().unwrap();

    let (spool, mut replay, report) = Spool::open(settings(&dir)).unwrap();
    let got = replay_all(&mut replay);
    let by_seq: std::collections::HashMap<u64, &Entry> = got.iter().map(|e| (e.seq, e)).collect();
    for &q in &durable {
        if !done.contains(&q) {
            let e = by_seq
                .get(&q)
                .unwrap_or_else(|| panic!("durable seq {q} not replayed"));
            assert_eq!(**e, expected(q, q));
        }
    }
    for e in &got {
        assert_eq!(
            *e,
            expected(e.seq, e.seq),
            "replayed entries are byte-identical"
        );
    }
    let done_back = got.iter().filter(|e| done.contains(&e.seq)).count();
    println!(
        "SIGKILL: {} durable, {} done, replayed {} (of which {} done ones again: at least once), torn bytes cut {}, corrupt {}",
        durable.len(),
        done.len(),
        got.len(),
        done_back,
        report.torn_bytes_cut,
        report.corrupt.len()
    );
    let t = rt()
        .block_on(spool.append(&[as_ref(&rec(0))], false))
        .unwrap();
    assert!(t.first_seq > *durable.last().unwrap());
}

/// Writes `n` records with a clean close and returns the segment's path and bytes
/// and each record's byte range in it.
fn written_segment(dir: &Path, n: u64) -> (PathBuf, Vec<u8>, Vec<(usize, usize)>) {
    let s = SpoolSettings {
        fsync: FsyncPolicy::Never,
        ..settings(dir)
    };
    let (spool, _, _) = Spool::open(s).unwrap();
    rt().block_on(append_range(&spool, 0, n, 10));
    spool.close().unwrap();
    let seg: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    assert_eq!(seg.len(), 1);
    let bytes = std::fs::read(&seg[0]).unwrap();
    let mut ranges = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    for i in 0..n {
        let len = encoded_len(i);
        ranges.push((at, at + len));
        at += len;
    }
    assert_eq!(at, bytes.len());
    (seg[0].clone(), bytes, ranges)
}

/// A copy of the segment (no ledger) in a fresh directory.
fn fresh_copy(root: &Path, case: usize, name: &Path, bytes: &[u8]) -> PathBuf {
    let d = root.join(format!("case-{case}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name.file_name().unwrap()), bytes).unwrap();
    d
}

#[test]
fn torn_tail_at_random_offsets_keeps_every_whole_entry_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, bytes, ranges) = written_segment(&tmp.path().join("orig"), 200);
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let rt = rt();
    for case in 0..50 {
        let cut = rng.random_range(0..bytes.len());
        let d = fresh_copy(tmp.path(), case, &path, &bytes[..cut]);
        let (spool, mut replay, report) = Spool::open(settings(&d)).unwrap();
        let kept = ranges.iter().take_while(|(_, end)| *end <= cut).count() as u64;
        let got = replay_all(&mut replay);
        let want: Vec<Entry> = (0..kept).map(|q| expected(q, q)).collect();
        assert_eq!(got, want, "cut at {cut}");
        let good_end = if kept == 0 {
            SEGMENT_HEADER_BYTES.min(cut)
        } else {
            ranges[kept as usize - 1].1
        };
        let good_end = if cut < SEGMENT_HEADER_BYTES {
            0
        } else {
            good_end
        };
        assert_eq!(
            report.torn_bytes_cut,
            (cut - good_end) as u64,
            "cut at {cut}"
        );
        assert!(
            report.corrupt.is_empty(),
            "cut at {cut}: {:?}",
            report.corrupt
        );
        let t = rt
            .block_on(spool.append(&[as_ref(&rec(kept))], false))
            .unwrap();
        assert_eq!(
            t.first_seq, kept,
            "cut at {cut}: appends continue after the last kept"
        );
        spool.close().unwrap();
        drop(spool);
        let (_spool, mut replay, report) = Spool::open(settings(&d)).unwrap();
        assert_eq!(report.torn_bytes_cut, 0);
        assert_eq!(replay_all(&mut replay).len() as u64, kept + 1);
    }
}

#[test]
fn flipped_bytes_anywhere_keep_every_untouched_entry_and_move_the_segment_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, bytes, ranges) = written_segment(&tmp.path().join("orig"), 200);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1515);
    let last_start = ranges.last().unwrap().0;
    for case in 0..80 {
        let mut b = bytes.clone();
        let at = rng.random_range(0..b.len());
        b[at] ^= rng.random_range(1..=255u8);
        let d = fresh_copy(tmp.path(), case, &path, &b);
        let (_spool, mut replay, report) = Spool::open(settings(&d)).unwrap();
        let got = replay_all(&mut replay);
        let hit = ranges.iter().position(|(s, e)| (*s..*e).contains(&at));
        let want: Vec<Entry> = (0..200u64)
            .filter(|q| Some(*q as usize) != hit)
            .map(|q| expected(q, q))
            .collect();
        assert_eq!(got, want, "flip at {at} (entry {hit:?})");
        if at < last_start {
            assert_eq!(report.corrupt.len(), 1, "flip at {at}: {report:?}");
            let (aside, what) = &report.corrupt[0];
            assert!(aside.starts_with(d.join("corrupt")), "{}", aside.display());
            assert_eq!(
                std::fs::read(aside).unwrap(),
                b,
                "the original is kept as it was"
            );
            assert!(what.contains("bytes "), "{what}");
        } else {
            // The last entry: a flip in its length looks like a torn tail; either is fine.
            assert!(report.corrupt.len() + (report.torn_bytes_cut > 0) as usize >= 1);
        }
        drop(_spool);
        let (_spool, _, again) = Spool::open(settings(&d)).unwrap();
        assert!(again.corrupt.is_empty(), "the rewritten segment is clean");
    }
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "spool")
        })
        .count()
}

#[test]
fn segments_are_removed_once_all_their_entries_are_done() {
    let tmp = tempfile::tempdir().unwrap();
    let s = SpoolSettings {
        segment_bytes: 4096,
        ..settings(tmp.path())
    };
    let (spool, _, _) = Spool::open(s).unwrap();
    let seqs = rt().block_on(append_range(&spool, 0, 400, 10));
    let before = spool.stats();
    assert!(before.segments >= 8, "{before:?}");
    assert_eq!(segment_files(tmp.path()), before.segments);
    // Everything but the last 10: every sealed segment can go.
    for &q in &seqs[..390] {
        spool.done(q);
    }
    eventually("finished segments removed", || spool.stats().segments <= 2);
    eventually("their files unlinked", || {
        segment_files(tmp.path()) == spool.stats().segments
    });
    let after = spool.stats();
    assert!(after.bytes < before.bytes / 4, "{before:?} -> {after:?}");
    assert_eq!(after.entries_pending, 10);
    println!(
        "segments {} -> {}, bytes {} -> {}",
        before.segments, after.segments, before.bytes, after.bytes
    );
}

#[test]
fn max_bytes_refuses_at_once_or_waits_until_done_frees_a_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = two_segments_at_most(tmp.path());
    let rt = rt();
    let recs: Vec<Rec> = (0..10).map(rec).collect();
    let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
    let mut seqs = Vec::new();
    let full = loop {
        match rt.block_on(spool.append(&refs, false)) {
            Ok(t) => seqs.extend(t.seqs()),
            Err(e) => break e,
        }
        assert!(seqs.len() < 1000, "never refused");
    };
    match &full {
        SpoolError::Full {
            reason: FullReason::MaxBytes { max, .. },
        } => assert_eq!(*max, 8192),
        e => panic!("expected Full(MaxBytes), got {e}"),
    }
    assert!(full.to_string().contains("max_spool_bytes"), "{full}");
    assert!(spool.stats().bytes <= 8192);

    let waiting = append_waiting_for_room(&rt, &spool);
    // It cannot finish however long it is given: nothing is done yet.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "an append past max_bytes went through"
    );
    for &q in &seqs {
        spool.done(q);
    }
    let t = rt.block_on(waiting).unwrap().unwrap();
    assert_eq!(t.first_seq, seqs.len() as u64);
    assert!(spool.stats().bytes <= 8192);
}

/// A small tmpfs inside the test's temp dir, unmounted on drop (also on failure).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(at)),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true and a tmpfs could not be mounted at {}: {why}",
                    at.display()
                );
                eprintln!(
                    "SKIP full-disk test: cannot mount a tmpfs at {}: {why}",
                    at.display()
                );
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_backpressure_and_every_durable_entry_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mnt) = Tmpfs::mount(tmp.path().join("mnt"), "512k") else {
        return;
    };
    let dir = mnt.0.join("spool");
    let s = SpoolSettings {
        segment_bytes: 64 << 10,
        max_bytes: 64 << 20,
        ..settings(&dir)
    };
    let rt = rt();
    let (spool, _, _) = Spool::open(s.clone()).unwrap();
    let mut durable = Vec::new();
    let mut i = 0u64;
    let err = loop {
        let recs: Vec<Rec> = (i..i + 50).map(rec).collect();
        let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
        match rt.block_on(spool.append(&refs, false)) {
            Ok(t) => {
                rt.block_on(spool.durable(&t)).unwrap();
                durable.extend(t.seqs().map(|q| (q, i + q - t.first_seq)));
                i += 50;
            }
            Err(e) => break e,
        }
        assert!(i < 100_000, "the disk never filled");
    };
    match &err {
        SpoolError::Full {
            reason: FullReason::Disk { .. },
        } => {}
        e => panic!("expected Full(Disk), got {e}"),
    }
    let st = spool.stats();
    assert!(st.disk_full && st.full_events >= 1, "{st:?}");
    // Asked again at once: still full, still no panic.
    let recs: Vec<Rec> = (i..i + 50).map(rec).collect();
    let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
    assert!(matches!(
        rt.block_on(spool.append(&refs, false)),
        Err(SpoolError::Full { .. })
    ));
    let _ = spool.close();
    drop(spool);

    let (spool, mut replay, report) = Spool::open(s).unwrap();
    assert!(report.corrupt.is_empty(), "{report:?}");
    let got = replay_all(&mut replay);
    let want: Vec<Entry> = durable.iter().map(|&(q, i)| expected(q, i)).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every durable entry comes back intact");
    println!(
        "full disk: {} entries durable before ENOSPC, all replayed",
        got.len()
    );

    // Room comes back once they are done: a waiting append goes through.
    let waiting = {
        let spool = spool.clone();
        rt.spawn(async move {
            let recs: Vec<Rec> = (0..50).map(rec).collect();
            let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
            let t = spool.append(&refs, true).await?;
            spool.durable(&t).await.map(|()| t)
        })
    };
    for e in &got {
        spool.done(e.seq);
    }
    let t = rt.block_on(waiting).unwrap().unwrap();
    assert!(t.first_seq > durable.last().unwrap().0);
    spool.close().unwrap();
}

#[test]
fn every_fsync_policy_resolves_durable_and_counts_its_fsyncs() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Batch(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let s = SpoolSettings {
            fsync: policy,
            segment_bytes: 8192,
            ..settings(tmp.path())
        };
        let (spool, _, _) = Spool::open(s).unwrap();
        let rt = rt();
        let tasks: Vec<_> = (0..8u64)
            .map(|k| {
                let spool = spool.clone();
                rt.spawn(async move {
                    let mut seqs = Vec::new();
                    for b in 0..10 {
                        let recs: Vec<Rec> = (0..20).map(|j| rec(k * 1000 + b * 20 + j)).collect();
                        let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
                        let t = spool.append(&refs, true).await.unwrap();
                        spool.durable(&t).await.unwrap();
                        seqs.extend(t.seqs());
                    }
                    seqs
                })
            })
            .collect();
        let mut all: Vec<u64> = tasks
            .into_iter()
            .flat_map(|t| rt.block_on(t).unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (0..1600).collect::<Vec<_>>(), "{policy:?}");
        let st = spool.stats();
        assert_eq!(st.durable_seq, 1600, "{policy:?}");
        match policy {
            FsyncPolicy::Never => assert_eq!(st.fsyncs, 0),
            _ => assert!(st.fsyncs >= 1, "{policy:?}: {st:?}"),
        }
        println!(
            "{policy:?}: 80 appends of 20 from 8 tasks, {} fdatasyncs",
            st.fsyncs
        );
        spool.close().unwrap();
        assert!(matches!(
            rt.block_on(spool.append(&[as_ref(&rec(0))], false)),
            Err(SpoolError::Closed)
        ));
    }
}

fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
#[ignore]
fn bench_appends_of_1000_records_of_100_bytes_in_batch_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let s = SpoolSettings {
        fsync: FsyncPolicy::Batch(Duration::from_millis(10)),
        max_bytes: 1 << 30,
        ..settings(tmp.path())
    };
    let (spool, _, _) = Spool::open(s).unwrap();
    let data = vec![b'x'; 100];
    let keys: Vec<String> = (0..1000).map(|i| format!("partition-key-{i}")).collect();
    let refs: Vec<EntryRef<'_>> = keys
        .iter()
        .map(|k| EntryRef {
            stream: "bench",
            partition_key: k.as_bytes(),
            explicit_hash_key: None,
            data: &data,
            compression: 0,
            arrival_unix_ms: 1,
        })
        .collect();
    let rt = rt();
    let batches = 2000u64;
    let n = batches * 1000;
    let (t0, c0) = (Instant::now(), cpu_time());
    let tickets = rt.block_on(async {
        let mut tickets = Vec::new();
        for _ in 0..batches {
            tickets.push(spool.append(&refs, true).await.unwrap());
            // Keep the disk use bounded, as the pipeline would: done as they go.
            if tickets.len() > 50 {
                let t = tickets.remove(0);
                spool.durable(&t).await.unwrap();
                for q in t.seqs() {
                    spool.done(q);
                }
            }
        }
        tickets
    });
    let appended = t0.elapsed();
    let last = *tickets.last().unwrap();
    rt.block_on(spool.durable(&last)).unwrap();
    let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
    let (d0, dn) = (Instant::now(), tickets.len() as u64 * 1000);
    for t in &tickets {
        for q in t.seqs() {
            spool.done(q);
        }
    }
    let done_ns = d0.elapsed().as_nanos() as f64 / dn as f64;
    let st = spool.stats();
    println!(
        "batch(10ms): {n} records in {batches} appends of 1000 x 100 B: {:.0} records/s appended ({:.0} ns/record), \
         {:.0} records/s durable; process CPU {:.0} ns/record (all threads, incl. done); done() {done_ns:.1} ns; \
         fdatasyncs {}, segments removed {}",
        n as f64 / appended.as_secs_f64(),
        appended.as_nanos() as f64 / n as f64,
        n as f64 / wall.as_secs_f64(),
        cpu.as_nanos() as f64 / n as f64,
        st.fsyncs,
        st.segments_removed,
    );
}

#[test]
fn an_oversized_field_is_refused_naming_the_entry_and_the_field_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _, _) = Spool::open(settings(tmp.path())).unwrap();
    let big = vec![0u8; kpld::spool::MAX_DATA_BYTES + 1];
    let ok = rec(0);
    let bad = EntryRef {
        data: &big,
        ..as_ref(&ok)
    };
    let err = rt()
        .block_on(spool.append(&[as_ref(&ok), bad], false))
        .unwrap_err();
    match &err {
        SpoolError::EntryTooLarge {
            index: 1,
            field: "data",
            ..
        } => {}
        e => panic!("expected EntryTooLarge for entry 1's data, got {e}"),
    }
    assert!(
        err.to_string().contains("entry 1") && err.to_string().contains("data"),
        "{err}"
    );
    assert_eq!(spool.stats().entries_appended, 0);
}

#[test]
fn entries_done_after_open_are_not_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let (spool, _, _) = Spool::open(settings(tmp.path())).unwrap();
    rt.block_on(append_range(&spool, 0, 50, 10));
    spool.close().unwrap();
    drop(spool);
    let (spool, mut replay, _) = Spool::open(settings(tmp.path())).unwrap();
    assert_eq!(replay.pending(), 50);
    for q in 10..40 {
        spool.done(q);
    }
    let got: Vec<u64> = replay_all(&mut replay).iter().map(|e| e.seq).collect();
    assert_eq!(got, (0..10).chain(40..50).collect::<Vec<_>>());
}

#[test]
fn an_append_waiting_for_room_gets_closed_when_the_spool_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = two_segments_at_most(tmp.path());
    let rt = rt();
    let recs: Vec<Rec> = (0..10).map(rec).collect();
    let refs: Vec<EntryRef<'_>> = recs.iter().map(as_ref).collect();
    while rt.block_on(spool.append(&refs, false)).is_ok() {}
    let waiting = append_waiting_for_room(&rt, &spool);
    std::thread::sleep(Duration::from_millis(50));
    spool.close().unwrap();
    let got = rt.block_on(waiting).unwrap().map_err(|e| e.to_string());
    assert_eq!(got, Err(SpoolError::Closed.to_string()));
}

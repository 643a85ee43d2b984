//! Memory bounds under hostile load, measured on the real binary: the
//! daemon's resident memory (VmRSS from /proc) against what
//! `max_buffered_bytes` promises, and what clients that never read can make
//! it hold.

mod common;

use common::{collect_results, Daemon};
use kpld::client::record;
use kpld_kinesis_double::{FakeKinesis, FakeOptions, FaultPlan};
use std::time::{Duration, Instant};

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn vm_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The largest VmRSS seen over `span`, sampled every 50 ms.
async fn max_rss_over(pid: u32, span: Duration) -> u64 {
    let end = Instant::now() + span;
    let mut max = 0;
    while Instant::now() < end {
        max = max.max(vm_rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_throttled_for_long_do_not_keep_their_request_frames_alive() {
    // One record of each ~1 MiB frame has a key Kinesis throttles until the
    // test says otherwise; everything else in the frame is answered at
    // once. The throttled record is charged 5 x its ~100 bytes + 2 KiB;
    // when its data and key were slices of the frame, each one kept its
    // whole 1 MiB frame alive: 192 frames, 192 MiB, against a 16 MiB budget.
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 4).count_only().faults(
        FaultPlan {
            throttle_key_prefix: Some("slow-".into()),
            ..FaultPlan::default()
        },
    ))
    .await;
    let budget_mib = 16u64;
    let d = Daemon::start(
        &fake.endpoint(),
        &format!(
            "max_buffered_bytes = {}\naggregation_enabled = false\n\
             record_max_buffered_time_ms = 10\nretry_backoff_max_ms = 200\n\
             record_ttl_ms = 600000",
            budget_mib << 20
        ),
    )
    .await;
    let pid = d.child.id();
    let (clients, frames, fast) = (12u64, 16u64, 50u64);
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(d.connect().await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_kib = vm_rss_kib(pid);
    // Each client sends its frames one after another, each once the last
    // one's answers are in: few frames are ever in flight at once, so what
    // stays resident is what the throttled records keep.
    let tasks = conns.into_iter().enumerate().map(|(c, (mut tx, mut rx))| {
        tokio::spawn(async move {
            for f in 0..frames {
                let base = ((c as u64) << 32) | (f << 16);
                let mut recs = vec![record(base, "s", &format!("slow-{base}"), vec![b's'; 100])];
                for i in 1..=fast {
                    recs.push(record(
                        base + i,
                        "s",
                        &format!("k{}", base + i),
                        vec![b'f'; 100],
                    ));
                }
                // Padding: one record over max_record_size (1 MiB), refused
                // at once with RecordTooLarge.
                recs.push(record(base + fast + 1, "s", "pad", vec![b'p'; 1 << 20]));
                tx.put(recs, false).await.unwrap();
                let got =
                    collect_results(&mut rx, fast as usize + 1, Duration::from_secs(60)).await;
                assert!(
                    !got.contains_key(&base),
                    "the throttled record has no result yet"
                );
                assert!(
                    got[&(base + fast + 1)].error_code == "RecordTooLarge",
                    "{got:?}"
                );
                assert!((1..=fast).all(|i| got[&(base + i)].success), "{got:?}");
            }
            (tx, rx)
        })
    });
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    // Every throttled record is in its retries now.
    let throttled_before = fake.counters().entries_throttled;
    let held_kib = max_rss_over(pid, Duration::from_secs(2)).await;
    let throttled = fake.counters().entries_throttled;
    assert!(
        throttled > throttled_before,
        "the throttled records were retried while memory was sampled"
    );
    let bound_kib = idle_kib + ((budget_mib + 48) << 10);
    eprintln!(
        "{} frames of ~1 MiB, one record each throttled ({throttled} throttled attempts): \
         kpld VmRSS {} MiB while they retry (idle {} MiB, budget {budget_mib} MiB, bound {} MiB)",
        clients * frames,
        held_kib / 1024,
        idle_kib / 1024,
        bound_kib / 1024
    );
    // Kinesis lets them through: every throttled record lands.
    fake.set_faults(FaultPlan::default());
    for (c, (_, rx)) in conns.iter_mut().enumerate() {
        let got = collect_results(rx, frames as usize, Duration::from_secs(60)).await;
        for f in 0..frames {
            let id = ((c as u64) << 32) | (f << 16);
            assert!(got[&id].success, "{:?}", got[&id]);
            assert!(got[&id].attempts.len() > 1, "{:?}", got[&id]);
        }
    }
    assert!(
        held_kib < bound_kib,
        "resident memory {held_kib} KiB while throttled records retry, beyond idle + budget \
         + 48 MiB ({bound_kib} KiB): the records keep their request frames alive"
    );
    drop(conns);
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

/// `counters.user_records_received` from a stats reply on a connection of
/// its own (which also shows that other clients are served).
async fn records_received(d: &Daemon) -> u64 {
    let (mut tx, mut rx) = d.connect().await;
    tx.stats(1).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.next())
            .await
            .expect("stats answered")
            .unwrap();
        if let Some(kpld::ipc::server_message::Msg::Stats(s)) = m.msg {
            let v: serde_json::Value = serde_json::from_str(&s.json).unwrap();
            return v["counters"]["user_records_received"].as_u64().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_not_read_past_its_pending_results_and_gets_them_all_later() {
    // Frames of 50,000 records from a client that does not read: before,
    // the cap on its unwritten results (16,384) was checked only between
    // frames and counted results once produced, so the whole first frame
    // was taken (and any frame, up to the hundreds of thousands of records
    // max_frame_size holds), its results outside the budget. Now a frame is
    // taken only as far as max_client_pending_results allows.
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 4).count_only()).await;
    let cap = 5_000u64;
    let d = Daemon::start(
        &fake.endpoint(),
        &format!("max_client_pending_results = {cap}\nrecord_max_buffered_time_ms = 10"),
    )
    .await;
    let (frames, per_frame) = (4u64, 50_000u64);
    let (mut tx, mut rx) = d.connect().await;
    let sender = tokio::spawn(async move {
        for f in 0..frames {
            let recs = (0..per_frame)
                .map(|i| {
                    let id = f * per_frame + i;
                    record(id, "s", &format!("k{}", id % 1000), format!("{id}"))
                })
                .collect();
            tx.put(recs, false).await.unwrap();
        }
        tx
    });
    // Until kpld has taken some of its records and takes no more.
    let mut taken = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = records_received(&d).await;
        if (now > 0 && now == taken) || Instant::now() > deadline {
            break;
        }
        taken = now;
    }
    // A client that reads is served meanwhile.
    let (mut tx2, mut rx2) = d.connect().await;
    tx2.put(
        (0..100)
            .map(|i| record((1 << 40) | i, "s", "other", "x"))
            .collect(),
        false,
    )
    .await
    .unwrap();
    let other = collect_results(&mut rx2, 100, Duration::from_secs(30)).await;
    assert!(other.values().all(|r| r.success), "{other:?}");
    let stalled = records_received(&d).await - 100;
    // What kpld took: the cap, plus the results that fit in the socket's
    // buffers (written, so no longer owed): about 200 KiB, ~100 bytes each.
    let bound = cap + 16_384;
    eprintln!(
        "a client that does not read, {frames} frames of {per_frame} records: kpld took \
         {stalled} of its records and stopped (max_client_pending_results {cap}, bound {bound})"
    );
    assert!(!sender.is_finished(), "its writes block");
    // It reads at last, and gets every result.
    let results = collect_results(
        &mut rx,
        (frames * per_frame) as usize,
        Duration::from_secs(180),
    )
    .await;
    assert!(results.values().all(|r| r.success));
    drop(sender.await.unwrap());
    assert!(
        stalled <= bound,
        "kpld took {stalled} records from a client that does not read; bound {bound}"
    );
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_for_stats_and_never_reads_does_not_grow_kpld() {
    // Each stats reply is a few KiB for a request of a few bytes; before,
    // replies were not counted in what a connection owes, so this grew
    // without bound.
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 1).count_only()).await;
    let d = Daemon::start(&fake.endpoint(), "max_client_pending_results = 5000").await;
    let pid = d.child.id();
    let (mut tx, rx) = d.connect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_kib = vm_rss_kib(pid);
    let asks = 50_000u64;
    let sender = tokio::spawn(async move {
        for i in 0..asks {
            tx.stats(i).await.unwrap();
        }
        tx
    });
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while !sender.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let finished = sender.is_finished();
    let grown_kib = max_rss_over(pid, Duration::from_secs(1))
        .await
        .saturating_sub(before_kib);
    // Others are served.
    records_received(&d).await;
    eprintln!(
        "{asks} stats requests never read (all written by the client: {finished}): kpld grew {} MiB",
        grown_kib / 1024
    );
    assert!(
        grown_kib < 16 << 10,
        "kpld grew {grown_kib} KiB for stats replies a client does not read"
    );
    drop(rx);
    sender.abort();
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

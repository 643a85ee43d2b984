//! Nothing lost under faults: many connections and streams against a Kinesis
//! double that throttles, fails entries and whole requests, resets
//! connections, drops answers and answers too late, while shards are split
//! and merged. Every record gets exactly one result, every success is in
//! the stream where its result says, and every duplicate has its cause in
//! its own record's attempts (an answer lost, a record on the wrong shard).
//!
//! Size: KPLD_ZERO_LOSS_RECORDS (default 200000).

mod common;

use bytes::Bytes;
use common::verify::{user_records, verify, Sent};
use common::{collect_results, Daemon};
use kpld::client::record;
use kpld_kinesis_double::{FakeKinesis, FakeOptions, FaultPlan};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STREAMS: [(&str, usize); 3] = [("orders", 4), ("clicks", 2), ("logs", 8)];

fn records_wanted() -> u64 {
    std::env::var("KPLD_ZERO_LOSS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_has_one_result_and_every_success_is_in_the_stream_under_faults() {
    let n = records_wanted();
    let mut opts = FakeOptions::default().seed(7);
    for (s, shards) in STREAMS {
        opts = opts.stream(s, shards);
    }
    let fake = FakeKinesis::start(opts).await;
    fake.set_faults(FaultPlan {
        throttle: 0.30,
        internal_failure: 0.05,
        http_500: 0.02,
        reset: 0.005,
        drop_response: 0.005,
        slow: 0.003,
        slow_delay: Duration::from_millis(1500),
        ..FaultPlan::default()
    });
    let daemon = Daemon::start(
        &fake.endpoint(),
        // Small aggregates and calls: many requests, so every fault shows up.
        // A TTL far above the run's length: on a loaded machine the run took
        // 37 s, and records expiring is not what this test is about.
        "request_timeout_ms = 700\nretry_backoff_base_ms = 20\nretry_backoff_max_ms = 1000\n\
         record_max_buffered_time_ms = 50\naggregation_max_size = 4096\ncollection_max_count = 5\n\
         record_ttl_ms = 600000",
    )
    .await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let sent: HashMap<u64, Sent> = (0..n)
        .map(|id| {
            let (stream, _) = STREAMS[(id % 3) as usize];
            let len = rng.random_range(10..200);
            let mut data = format!("{id}|").into_bytes();
            data.extend((0..len).map(|_| rng.random::<u8>()));
            (
                id,
                Sent {
                    stream: stream.to_string(),
                    partition_key: format!("key-{}", rng.random_range(0..1000)),
                    data: Bytes::from(data),
                },
            )
        })
        .collect();
    let sent = Arc::new(sent);

    // Reshard while records flow: split a shard of "orders" a third of the
    // way in, merge two shards of "logs" two thirds in.
    let progress = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let conns = 8;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let ids: Vec<u64> = (0..n).filter(|id| id % conns == c).collect();
        let sent = sent.clone();
        let progress = progress.clone();
        let socket = daemon.socket.clone();
        tasks.push(tokio::spawn(async move {
            let d = DaemonRef(socket);
            producer_on(&d, ids, &sent, progress).await
        }));
    }
    let mut split_done = false;
    let mut merge_done = false;
    while !(split_done && merge_done) {
        let p = progress.load(Ordering::Relaxed);
        if !split_done && p >= n / 3 {
            let kids = fake
                .split_shard_evenly("orders", "shardId-000000000001")
                .unwrap();
            eprintln!("split shardId-000000000001 of orders into {kids:?}");
            split_done = true;
        }
        if !merge_done && p >= 2 * n / 3 {
            let merged = fake
                .merge_shards("logs", "shardId-000000000002", "shardId-000000000003")
                .unwrap();
            eprintln!("merged shards 2 and 3 of logs into {merged}");
            merge_done = true;
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut results = HashMap::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();

    let log = fake.log();
    let (found, mixed) = user_records(&fake, &log);
    let report = verify(&sent, &results, &found);
    let c = fake.counters();
    eprintln!(
        "zero-loss: {n} records over {conns} connections and {} streams in {:.1}s: {} succeeded, failed {:?}, \
         {} retries; double: {} put requests, {} entries accepted, {} throttled, {} internal failures, \
         {} HTTP 5xx, {} resets, {} dropped answers, {} slow; {} records duplicated in the stream, \
         {mixed} Kinesis records landed across a reshard and were sent again",
        STREAMS.len(),
        elapsed.as_secs_f64(),
        report.succeeded,
        report.failed,
        report.retries,
        c.put_requests,
        c.entries_accepted,
        c.entries_throttled,
        c.internal_failures,
        c.http_5xx,
        c.resets,
        c.dropped_responses,
        c.slow_responses,
        report.duplicated,
    );
    assert!(
        report.failed.is_empty(),
        "no record may fail here: {:?}",
        report.failed
    );
    assert!(split_done && merge_done, "the reshards happened mid-run");
    assert!(c.entries_throttled > 0 && c.internal_failures > 0 && c.http_5xx > 0);
    // A duplicate needs a cause in its own record's attempts: an answer
    // that never arrived, or a Kinesis record that landed across a reshard.
    assert!(
        report.unexplained_duplicates.is_empty(),
        "{} duplicates without a cause in their attempts, e.g. {:?}",
        report.unexplained_duplicates.len(),
        &report.unexplained_duplicates[..report.unexplained_duplicates.len().min(5)]
    );
    let (status, log) = daemon.stop().await;
    assert!(status.success(), "kpld exit: {status:?}\n{log}");
    fake.shutdown().await;
}

/// Puts `ids` from one connection in batches, reading results as they come.
struct DaemonRef(std::path::PathBuf);

async fn producer_on(
    d: &DaemonRef,
    ids: Vec<u64>,
    sent: &HashMap<u64, Sent>,
    progress: Arc<AtomicU64>,
) -> HashMap<u64, kpld::ipc::RecordResult> {
    let (mut tx, mut rx, _) = kpld::client::connect(&d.0, "zero-loss").await.unwrap();
    let n = ids.len();
    let reader =
        tokio::spawn(async move { collect_results(&mut rx, n, Duration::from_secs(300)).await });
    for chunk in ids.chunks(250) {
        let recs = chunk
            .iter()
            .map(|id| {
                let s = &sent[id];
                record(*id, &s.stream, &s.partition_key, s.data.clone())
            })
            .collect();
        tx.put(recs, false).await.unwrap();
        progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    tx.flush(1).await.unwrap();
    reader.await.unwrap()
}

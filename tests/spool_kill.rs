//! Nothing accepted is lost when kpld dies (`durability = "disk"`): kpld is
//! killed with SIGKILL at random moments while a client streams records and
//! the limits-enforcing double throttles (so that records wait in kpld);
//! it is started again on the same spool each time. Afterwards every record
//! the daemon had accepted (named by an `Accepted` message, or a success)
//! is in the double's log. Duplicates are allowed and counted.
//!
//! Size: KPLD_SPOOL_KILL_RUNS (default 20).

mod common;

use common::verify::user_records;
use common::Daemon;
use kpld::client::record;
use kpld::ipc::server_message;
use kpld_kinesis_double::{FakeKinesis, FakeOptions, FaultPlan};
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn runs() -> usize {
    std::env::var("KPLD_SPOOL_KILL_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn config(spool: &std::path::Path) -> String {
    format!(
        "durability = \"disk\"\nspool_dir = {spool:?}\nrecord_ttl_ms = 600000\n\
         record_max_buffered_time_ms = 20\nretry_backoff_base_ms = 20\nretry_backoff_max_ms = 200\n\
         spool_fsync_interval_ms = 5\n"
    )
}

/// Streams records on a connection until the daemon dies; returns the ids
/// it accepted and how many were sent.
async fn stream_until_killed(
    (mut tx, mut rx): (kpld::client::Sender, kpld::client::Receiver),
    next_id: &mut u64,
) -> (BTreeSet<u64>, u64) {
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let acc = accepted.clone();
    let reader = tokio::spawn(async move {
        while let Ok(m) = rx.next().await {
            match m.msg {
                Some(server_message::Msg::Accepted(a)) => {
                    let mut acc = acc.lock().unwrap();
                    for (first, count) in a.first_ids.iter().zip(&a.counts) {
                        acc.extend(*first..first + count);
                    }
                }
                Some(server_message::Msg::Results(r)) => {
                    let mut acc = acc.lock().unwrap();
                    acc.extend(r.results.iter().filter(|r| r.success).map(|r| r.id));
                }
                _ => {}
            }
        }
    });
    let mut sent = 0;
    loop {
        let recs: Vec<_> = (*next_id..*next_id + 100)
            .map(|id| {
                record(
                    id,
                    "d",
                    &format!("key-{}", id % 97),
                    format!("{id}|spooled"),
                )
            })
            .collect();
        if tx.put(recs, false).await.is_err() {
            break;
        }
        *next_id += 100;
        sent += 100;
        tokio::time::sleep(Duration::from_millis(2)).await;
        if reader.is_finished() {
            break;
        }
    }
    let _ = reader.await;
    let a = accepted.lock().unwrap().clone();
    (a, sent)
}

async fn spool_stats(d: &Daemon) -> Option<serde_json::Value> {
    let (mut tx, mut rx) = d.connect().await;
    tx.stats(1).await.ok()?;
    loop {
        if let Some(server_message::Msg::Stats(s)) = rx.next().await.ok()?.msg {
            let v: serde_json::Value = serde_json::from_str(&s.json).ok()?;
            return Some(v["spool"].clone());
        }
    }
}

async fn spool_pending(d: &Daemon) -> Option<u64> {
    spool_stats(d).await?["entries_pending"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_record_survives_sigkill_at_random_moments() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("d", 2).enforce_limits()).await;
    fake.set_faults(FaultPlan {
        throttle: 0.30,
        ..FaultPlan::default()
    });
    let spool = tempfile::tempdir().unwrap();
    let cfg = config(spool.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let mut accepted = BTreeSet::new();
    let mut next_id = 1u64;
    let mut sent_total = 0;
    for run in 0..runs() {
        let mut d = Daemon::start(&fake.endpoint(), &cfg).await;
        let kill_after = Duration::from_millis(rng.random_range(50..700));
        let mut id = next_id;
        // Connected first: the kill comes while records stream.
        let conn = d.connect_accepting().await;
        let (got, sent) = {
            let streaming = stream_until_killed(conn, &mut id);
            tokio::pin!(streaming);
            tokio::select! {
                _ = tokio::time::sleep(kill_after) => {}
                _ = &mut streaming => panic!("the connection ended before the kill (run {run}):\n{}", d.log_text()),
            }
            d.signal("KILL");
            streaming.await
        };
        d.child.wait().unwrap();
        next_id = id;
        sent_total += sent;
        eprintln!(
            "run {run}: killed after {kill_after:?}, {} of {sent} accepted",
            got.len()
        );
        accepted.extend(got);
    }
    // Every record still in the spool is sent by the last start.
    fake.set_faults(FaultPlan::none());
    let d = Daemon::start(&fake.endpoint(), &cfg).await;
    let deadline = Instant::now() + Duration::from_secs(if runs() < 5 { 20 } else { 180 });
    loop {
        let pending = spool_pending(&d).await;
        if pending == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the spool still holds {pending:?} records after 180 s: {:?}\n{}",
            spool_stats(&d).await,
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = fake.log();
    let (found, _) = user_records(&fake, &log);
    let lost: Vec<u64> = accepted
        .iter()
        .copied()
        .filter(|id| !found.contains_key(id))
        .collect();
    let duplicates: usize = found.values().map(|v| v.len() - 1).sum();
    eprintln!(
        "spool kill test: {} runs, {sent_total} records sent, {} accepted, {} in the stream, \
         {duplicates} duplicates, {} lost",
        runs(),
        accepted.len(),
        found.len(),
        lost.len()
    );
    assert!(
        accepted.len() > 1000,
        "too few records accepted to prove anything"
    );
    assert!(
        lost.is_empty(),
        "{} accepted records are not in the stream, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let (status, log) = d.stop().await;
    assert!(status.success(), "kpld exit: {status:?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_kpld_on_the_same_spool_refuses_to_start_naming_it() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("d", 1)).await;
    let spool = tempfile::tempdir().unwrap();
    let first = Daemon::start(&fake.endpoint(), &config(spool.path())).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kpld.toml");
    std::fs::write(
        &cfg,
        format!(
            "socket_path = {:?}\nregion = \"us-east-1\"\nkinesis_endpoint = \"{}\"\nmetrics_level = \"none\"\n{}",
            dir.path().join("second.sock"),
            fake.endpoint(),
            config(spool.path())
        ),
    )
    .unwrap();
    // Bounded by timeout(1): it must exit at once, not wait for the lock.
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_kpld"))
        .arg("--config")
        .arg(&cfg)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("spool_dir") && err.contains("in use by another process"),
        "the error names the setting and the cause: {err}"
    );
    assert!(
        !dir.path().join("second.sock").exists(),
        "its socket file is removed"
    );
    let (status, log) = first.stop().await;
    assert!(status.success(), "{log}");
}

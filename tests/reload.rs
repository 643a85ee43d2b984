//! SIGHUP re-reads the config: live settings change at once and are
//! logged; the others are logged as needing a restart.

mod common;

use common::{collect_results, Daemon};
use kpld::client::record;
use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_live_settings_and_names_what_needs_a_restart() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("a", 1).stream("b", 1)).await;
    let d = Daemon::start(&fake.endpoint(), "streams_allowed = [\"a\"]").await;
    let (mut tx, mut rx) = d.connect().await;
    tx.put(vec![record(1, "b", "k", "1|x")], false)
        .await
        .unwrap();
    let r = collect_results(&mut rx, 1, Duration::from_secs(10)).await;
    assert_eq!(r[&1].error_code, "StreamNotAllowed");

    let cfg = d.dir.path().join("kpld.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "streams_allowed = [\"a\"]",
        "streams_allowed = [\"a\", \"b*\"]\nmax_connections = 3\n[streams.b]\naggregation_enabled = false",
    );
    std::fs::write(&cfg, text).unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("takes effect after a restart") {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = d.log_text();
    assert!(log.contains("streams_allowed"), "{log}");
    assert!(log.contains("streams.b"), "{log}");
    assert!(log.contains("max_connections: 24 -> 3"), "{log}");

    // Now allowed, and sent without aggregation: three Kinesis records.
    let recs = (2..5)
        .map(|i| record(i, "b", &format!("k{i}"), format!("{i}|y")))
        .collect();
    tx.put(recs, false).await.unwrap();
    tx.flush(1).await.unwrap();
    let r = collect_results(&mut rx, 3, Duration::from_secs(10)).await;
    assert!(r.values().all(|r| r.success), "{r:?}");
    let on_b: Vec<_> = fake.log().into_iter().filter(|e| e.stream == "b").collect();
    assert_eq!(on_b.len(), 3, "aggregation is off for b");

    // A bad file is refused and the running config kept.
    std::fs::write(&cfg, "record_ttl_ms = \"soon\"").unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("keeping the running one") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What only the kept config does: the default one would allow "c" (and
    // fail it as not found) and aggregate b's two records into one.
    let recs = vec![
        record(9, "b", "k9", "9|z"),
        record(10, "b", "k10", "10|z"),
        record(11, "c", "k", "11|z"),
    ];
    tx.put(recs, false).await.unwrap();
    tx.flush(1).await.unwrap();
    let r = collect_results(&mut rx, 3, Duration::from_secs(10)).await;
    assert!(r[&9].success && r[&10].success, "{r:?}");
    assert_eq!(r[&11].error_code, "StreamNotAllowed", "{:?}", r[&11]);
    let on_b = fake.log().into_iter().filter(|e| e.stream == "b").count();
    assert_eq!(on_b, 5, "aggregation is still off for b");
    drop(tx);
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

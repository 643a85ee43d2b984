//! Records of several streams in one request each reach their own stream.

mod common;

use bytes::Bytes;
use common::verify::{user_records, verify, Sent};
use common::{collect_results, Daemon};
use kpld::client::record;
use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_streams_that_alternate_in_one_request_each_reach_their_stream() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("a", 2).stream("b", 3)).await;
    let d = Daemon::start(&fake.endpoint(), "record_max_buffered_time_ms = 50").await;
    let (mut tx, mut rx) = d.connect().await;
    let mut sent = HashMap::new();
    let recs: Vec<_> = (0..300u64)
        .map(|i| {
            // a, b, a, b, ... then runs of three: a, a, a, b, b, b, ...
            let stream = if (i < 100 && i % 2 == 0) || (i >= 100 && (i / 3) % 2 == 0) {
                "a"
            } else {
                "b"
            };
            let (key, data) = (format!("k{}", i % 17), format!("{i}|{stream}"));
            sent.insert(
                i,
                Sent {
                    stream: stream.into(),
                    partition_key: key.clone(),
                    data: Bytes::from(data.clone()),
                },
            );
            record(i, stream, &key, data)
        })
        .collect();
    tx.put(recs, false).await.unwrap();
    let results = collect_results(&mut rx, 300, Duration::from_secs(30)).await;
    let (found, _) = user_records(&fake, &fake.log());
    let report = verify(&sent, &results, &found);
    assert_eq!(report.succeeded, 300, "{report:?}");
    drop(tx);
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

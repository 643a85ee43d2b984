//! The shard map comes from ListShards with paging: a stream of more than
//! 1000 shards (where the KPL broke) routes every record to its shard.

mod common;

use common::verify::{user_records, verify, Sent};
use common::{collect_results, Daemon};
use kpld::client::record;
use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_1100_shards_is_mapped_across_listshards_pages() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("wide", 1100)).await;
    let d = Daemon::start(&fake.endpoint(), "record_max_buffered_time_ms = 20").await;
    let (mut tx, mut rx) = d.connect().await;
    let n = 5000u64;
    let sent: HashMap<u64, Sent> = (0..n)
        .map(|i| {
            (
                i,
                Sent {
                    stream: "wide".into(),
                    partition_key: format!("key-{i}"),
                    data: format!("{i}|w").into_bytes().into(),
                },
            )
        })
        .collect();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let recs = chunk
            .iter()
            .map(|i| record(*i, "wide", &sent[i].partition_key, sent[i].data.clone()))
            .collect();
        tx.put(recs, false).await.unwrap();
    }
    tx.flush(1).await.unwrap();
    let results = collect_results(&mut rx, n as usize, Duration::from_secs(120)).await;
    let (found, mixed) = user_records(&fake, &fake.log());
    let r = verify(&sent, &results, &found);
    assert_eq!(r.succeeded, n as usize, "{:?}", r.failed);
    assert_eq!(mixed, 0);
    // Every record was predicted right the first time: one attempt each.
    assert_eq!(r.retries, 0, "a wrong prediction would show as a retry");
    let shards_used: std::collections::HashSet<_> =
        results.values().map(|r| r.shard_id.clone()).collect();
    assert!(
        shards_used.len() > 1000,
        "records spread over the shards: {}",
        shards_used.len()
    );
    drop(tx);
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

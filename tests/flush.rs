//! Flush: sends what is buffered at once, and is answered only after every
//! record put before it on that connection has its result.

mod common;

use common::Daemon;
use kpld::client::record;
use kpld::ipc::server_message::Msg;
use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_sends_at_once_even_while_the_shard_map_is_loading_and_answers_after_the_results() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 3)).await;
    // Without the flush, records would wait ten minutes.
    let d = Daemon::start(&fake.endpoint(), "record_max_buffered_time_ms = 600000").await;
    let (mut tx, mut rx) = d.connect().await;
    // Put and flush at once: the stream's shard map is not loaded yet.
    let recs = (0..50)
        .map(|i| record(i, "s", &format!("k{i}"), format!("{i}|x")))
        .collect();
    tx.put(recs, false).await.unwrap();
    tx.flush(77).await.unwrap();
    let mut results = 0;
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.next().await.unwrap().msg {
                Some(Msg::Results(r)) => {
                    assert!(r.results.iter().all(|r| r.success));
                    results += r.results.len();
                }
                Some(Msg::Flushed(f)) => {
                    assert_eq!(f.id, 77);
                    return results;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    let before_reply = outcome.expect("the flush was answered promptly");
    assert_eq!(
        before_reply, 50,
        "every result comes before the flush reply"
    );
    drop(tx);
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

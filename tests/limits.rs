//! Limits on what clients can make the daemon hold: connections
//! (`max_clients`). Each limit refuses with a clear error naming its key,
//! and the daemon goes on serving within it.

mod common;

use common::{collect_results, Daemon};
use kpld::client::{self, record, ClientError, Receiver, Sender};
use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use std::time::{Duration, Instant};

/// Connects, retrying while the daemon still counts a connection that was
/// closed a moment ago (the start-up probe, or one this test dropped):
/// releasing its slot takes the daemon a few steps after the close.
async fn connect_served(d: &Daemon) -> (Sender, Receiver) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client::connect(&d.socket, "limits").await {
            Ok((tx, rx, _)) => return (tx, rx),
            Err(ClientError::Refused { code, .. })
                if code == "TooManyClients" && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connect failed: {e}\n{}", d.log_text()),
        }
    }
}

async fn put_one(tx: &mut Sender, rx: &mut Receiver, id: u64) {
    tx.put(vec![record(id, "s", &format!("k{id}"), "x")], false)
        .await
        .unwrap();
    tx.flush(id).await.unwrap();
    let r = collect_results(rx, 1, Duration::from_secs(30)).await;
    assert!(r[&id].success, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_max_clients_is_refused_and_a_freed_slot_serves_again() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 1)).await;
    let d = Daemon::start(&fake.endpoint(), "max_clients = 2").await;
    let (mut tx1, mut rx1) = connect_served(&d).await;
    let (tx2, rx2) = connect_served(&d).await;
    put_one(&mut tx1, &mut rx1, 1).await;

    // Both slots are held by open connections: the third is refused, every time.
    for _ in 0..3 {
        match client::connect(&d.socket, "third").await {
            Err(ClientError::Refused { code, message }) => {
                assert_eq!(code, "TooManyClients", "{message}");
                assert!(message.contains("max_clients"), "{message}");
                assert!(message.contains('2'), "{message}");
            }
            Ok(_) => panic!("a third client was served with max_clients = 2"),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    // The refused ones cost nothing to those being served.
    put_one(&mut tx1, &mut rx1, 2).await;

    drop((tx2, rx2));
    let (mut tx3, mut rx3) = connect_served(&d).await;
    put_one(&mut tx3, &mut rx3, 3).await;

    drop((tx1, rx1, tx3, rx3));
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("connection refused: already serving max_clients"),
        "{log}"
    );
    fake.shutdown().await;
}

//! Acceptance (`Hello.want_accepted`): every record of a put is named by an
//! `Accepted` message or has `refused` set in its failure, never both, and
//! a client that did not ask gets no `Accepted` message.

mod common;

use common::Daemon;
use kpld::client::{record, Receiver};
use kpld::ipc::{server_message, RecordResult};
use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// Reads until `want` results and the flush reply `flush_id` came; returns
/// the results and the ids every `Accepted` named (a duplicate fails).
async fn results_and_accepted(
    rx: &mut Receiver,
    want: usize,
    flush_id: u64,
) -> (HashMap<u64, RecordResult>, BTreeSet<u64>, usize) {
    let mut results = HashMap::new();
    let mut accepted = BTreeSet::new();
    let mut accepted_messages = 0;
    let mut flushed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while results.len() < want || !flushed {
        let m = tokio::time::timeout_at(deadline, rx.next())
            .await
            .expect("every result and the flush reply within 30 s")
            .expect("connection open");
        match m.msg {
            Some(server_message::Msg::Results(r)) => {
                for r in r.results {
                    assert!(results.insert(r.id, r).is_none(), "two results for one id");
                }
            }
            Some(server_message::Msg::Accepted(a)) => {
                accepted_messages += 1;
                assert_eq!(a.first_ids.len(), a.counts.len(), "runs: {a:?}");
                for (first, count) in a.first_ids.iter().zip(&a.counts) {
                    for id in *first..first + count {
                        assert!(accepted.insert(id), "record {id} accepted twice");
                    }
                }
            }
            Some(server_message::Msg::Flushed(f)) if f.id == flush_id => flushed = true,
            other => panic!("unexpected message {other:?}"),
        }
    }
    (results, accepted, accepted_messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_names_exactly_the_records_not_refused() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let d = Daemon::start(&fake.endpoint(), "").await;
    let (mut tx, mut rx) = d.connect_accepting().await;
    let mut recs: Vec<_> = (10..20)
        .map(|i| record(i, "s", &format!("k{i}"), format!("data {i}")))
        .collect();
    // Refused: a stream name Kinesis does not allow, an empty partition key,
    // a compression value this kpld does not know.
    recs[2].stream = "not a stream!".into();
    recs[5].partition_key = "".into();
    recs[7].compression = 9;
    tx.put(recs, false).await.unwrap();
    tx.flush(1).await.unwrap();
    let (results, accepted, _) = results_and_accepted(&mut rx, 10, 1).await;
    let refused: BTreeSet<u64> = [12, 15, 17].into();
    for (id, r) in &results {
        if refused.contains(id) {
            assert!(
                !r.success && r.refused,
                "record {id} should be refused: {r:?}"
            );
        } else {
            assert!(r.success && !r.refused, "record {id} should land: {r:?}");
        }
    }
    let want: BTreeSet<u64> = (10..20).filter(|i| !refused.contains(i)).collect();
    assert_eq!(
        accepted, want,
        "Accepted names every record not refused, and no other"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_did_not_ask_gets_no_accepted_message() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let d = Daemon::start(&fake.endpoint(), "").await;
    let (mut tx, mut rx) = d.connect().await;
    let recs = (1..=50)
        .map(|i| record(i, "s", &format!("k{i}"), "x"))
        .collect();
    tx.put(recs, false).await.unwrap();
    tx.flush(1).await.unwrap();
    let (results, accepted, messages) = results_and_accepted(&mut rx, 50, 1).await;
    assert!(results.values().all(|r| r.success && !r.refused));
    assert_eq!((messages, accepted.len()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_frames_are_each_accepted_once_after_the_spool_has_them() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("d", 2).stream("m", 2)).await;
    let spool = tempfile::tempdir().unwrap();
    let cfg = format!(
        "spool_dir = {:?}\n[streams.d]\ndurability = \"disk\"\n",
        spool.path().join("s")
    );
    let d = Daemon::start(&fake.endpoint(), &cfg).await;
    let (mut tx, mut rx) = d.connect_accepting().await;
    // Frames of a disk stream, of a memory stream, and of both, back to
    // back: one connection's Accepted for spooled frames come from one
    // waiter that answers several frames at once.
    let (frames, per_frame) = (60u64, 50u64);
    for f in 0..frames {
        let recs = (0..per_frame)
            .map(|i| {
                let id = f * per_frame + i + 1;
                let stream = match f % 3 {
                    0 => "d",
                    1 => "m",
                    _ if i % 2 == 0 => "d",
                    _ => "m",
                };
                record(id, stream, &format!("k{id}"), format!("data {id}"))
            })
            .collect();
        tx.put(recs, false).await.unwrap();
    }
    tx.flush(1).await.unwrap();
    let n = (frames * per_frame) as usize;
    let (results, accepted, _) = results_and_accepted(&mut rx, n, 1).await;
    assert!(results.values().all(|r| r.success && !r.refused));
    // The flush reply can come before the last Accepted: wait for the rest.
    let mut accepted = accepted;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while accepted.len() < n {
        let m = tokio::time::timeout_at(deadline, rx.next())
            .await
            .expect("every Accepted within 30 s")
            .expect("connection open");
        if let Some(server_message::Msg::Accepted(a)) = m.msg {
            for (first, count) in a.first_ids.iter().zip(&a.counts) {
                for id in *first..first + count {
                    assert!(accepted.insert(id), "record {id} accepted twice");
                }
            }
        }
    }
    assert_eq!(accepted, (1..=n as u64).collect::<BTreeSet<_>>());
    // The spool holds the disk stream's records (and they are done there).
    let appended = std::fs::read_dir(spool.path().join("s"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("seg-"));
    assert!(appended, "the disk stream's records went through the spool");
}

//! Bad input costs its sender alone: malformed frames, huge length
//! prefixes, invalid protobuf, invalid records, clients that close mid-frame
//! or never read. Each gets a clear error; the daemon keeps serving others.

mod common;

use bytes::Bytes;
use common::{collect_results, Daemon};
use kpld::client::record;
use kpld::ipc::{client_message, server_message, ClientMessage, Hello, Record, ServerMessage};
use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use prost::Message;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn hello_frame() -> Vec<u8> {
    frame(
        &ClientMessage {
            msg: Some(client_message::Msg::Hello(Hello {
                protocol_version: 1,
                client_name: "raw".into(),
                ..Default::default()
            })),
        }
        .encode_to_vec(),
    )
}

/// Reads server frames until the connection closes (bounded); returns them.
async fn read_until_closed(s: &mut UnixStream) -> Vec<ServerMessage> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    read_frames(&buf)
}

fn read_frames(buf: &[u8]) -> Vec<ServerMessage> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let n = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        if at + 4 + n > buf.len() {
            break;
        }
        out.push(ServerMessage::decode(&buf[at + 4..at + 4 + n]).unwrap());
        at += 4 + n;
    }
    out
}

fn error_code(msgs: &[ServerMessage]) -> Option<(String, bool)> {
    msgs.iter().find_map(|m| match &m.msg {
        Some(server_message::Msg::Error(e)) => Some((e.code.clone(), e.fatal)),
        _ => None,
    })
}

/// A healthy client puts `n` records and gets every one acknowledged.
async fn healthy_round(d: &Daemon, base: u64, n: u64) {
    let (mut tx, mut rx) = d.connect().await;
    let recs = (base..base + n)
        .map(|i| record(i, "s", &format!("k{i}"), format!("{i}|ok")))
        .collect();
    tx.put(recs, false).await.unwrap();
    tx.flush(1).await.unwrap();
    let r = collect_results(&mut rx, n as usize, Duration::from_secs(30)).await;
    assert!(
        r.values().all(|r| r.success),
        "healthy client failed: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_a_clear_error_and_cost_only_their_connection() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let d = Daemon::start(&fake.endpoint(), "max_frame_size = 2000000").await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "put before hello",
            frame(
                &ClientMessage {
                    msg: Some(client_message::Msg::Flush(Default::default())),
                }
                .encode_to_vec(),
            ),
            "UnexpectedMessage",
        ),
        (
            "wrong protocol version",
            frame(
                &ClientMessage {
                    msg: Some(client_message::Msg::Hello(Hello {
                        protocol_version: 9,
                        client_name: String::new(),
                        ..Default::default()
                    })),
                }
                .encode_to_vec(),
            ),
            "ProtocolVersion",
        ),
        (
            "huge length prefix",
            [hello_frame(), vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]].concat(),
            "FrameTooLarge",
        ),
        (
            "invalid protobuf",
            [hello_frame(), frame(&[0x12, 0xff, 0xff, 0x01])].concat(),
            "MalformedFrame",
        ),
        (
            "empty message",
            [hello_frame(), frame(&[])].concat(),
            "MalformedFrame",
        ),
        (
            "garbage first frame",
            frame(b"\xde\xad\xbe\xef garbage"),
            "MalformedFrame",
        ),
    ];
    for (what, bytes, want) in cases {
        let mut s = UnixStream::connect(&d.socket).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        let msgs = read_until_closed(&mut s).await;
        let (code, fatal) =
            error_code(&msgs).unwrap_or_else(|| panic!("{what}: no error frame: {msgs:?}"));
        assert_eq!(code, want, "{what}");
        assert!(fatal, "{what}: fatal");
        healthy_round(&d, 0, 50).await;
    }
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalled_mid_frame_is_cut_off_and_others_go_on_meanwhile() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let d = Daemon::start(&fake.endpoint(), "").await;
    // A length prefix of 8 MB takes half of the intake pool; the body stops
    // after 10 bytes and the write half stays open.
    let mut stalled = UnixStream::connect(&d.socket).await.unwrap();
    stalled.write_all(&hello_frame()).await.unwrap();
    stalled
        .write_all(&8_000_000u32.to_be_bytes())
        .await
        .unwrap();
    stalled.write_all(&[0u8; 10]).await.unwrap();
    healthy_round(&d, 0, 50).await;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stalled.read_to_end(&mut buf))
        .await
        .expect("the daemon did not give up on a stalled frame")
        .unwrap();
    let msgs = read_frames(&buf);
    assert_eq!(
        error_code(&msgs),
        Some(("FrameStalled".to_string(), true)),
        "{msgs:?}"
    );
    healthy_round(&d, 100, 50).await;
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_never_hurt_the_daemon() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let d = Daemon::start(&fake.endpoint(), "").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for round in 0..150u64 {
        let mut s = UnixStream::connect(&d.socket).await.unwrap();
        let mut bytes = if rng.random_bool(0.5) {
            hello_frame()
        } else {
            Vec::new()
        };
        let len = rng.random_range(0..300);
        if rng.random_bool(0.5) {
            // A plausible frame with random contents.
            let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            bytes.extend(frame(&body));
        } else {
            bytes.extend((0..len).map(|_| rng.random::<u8>()));
        }
        if rng.random_bool(0.3) {
            // Truncated: the client closes mid-frame.
            bytes.truncate(bytes.len() / 2);
        }
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
        let _ = read_until_closed(&mut s).await;
        if round % 25 == 0 {
            healthy_round(&d, round * 1000, 20).await;
        }
    }
    healthy_round(&d, 999_000, 100).await;
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_get_their_own_errors_and_the_connection_goes_on() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let d = Daemon::start(&fake.endpoint(), "max_record_size = 1000").await;
    let (mut tx, mut rx) = d.connect().await;
    let raw = |id: u64, stream: &[u8], pk: &[u8], ehk: Option<&[u8]>, data: Vec<u8>| Record {
        id,
        stream: Bytes::copy_from_slice(stream),
        partition_key: Bytes::copy_from_slice(pk),
        explicit_hash_key: ehk.map(Bytes::copy_from_slice),
        data: Bytes::from(data),
        compression: 0,
    };
    let cases: Vec<(Record, &str)> = vec![
        (
            raw(1, b"s", b"", None, b"1|x".to_vec()),
            "InvalidPartitionKey",
        ),
        (
            raw(2, b"s", "k".repeat(257).as_bytes(), None, b"2|x".to_vec()),
            "InvalidPartitionKey",
        ),
        (
            raw(3, b"s", b"\xff\xfe", None, b"3|x".to_vec()),
            "InvalidPartitionKey",
        ),
        (
            raw(4, b"s", b"k", Some(b"abc"), b"4|x".to_vec()),
            "InvalidExplicitHashKey",
        ),
        (
            raw(
                5,
                b"s",
                b"k",
                Some(b"340282366920938463463374607431768211456"),
                b"5|x".to_vec(),
            ),
            "InvalidExplicitHashKey",
        ),
        (raw(6, b"s", b"k", None, vec![b'x'; 1000]), "RecordTooLarge"),
        (
            raw(7, b"no such stream", b"k", None, b"7|x".to_vec()),
            "InvalidStreamName",
        ),
        (
            raw(8, b"missing", b"k", None, b"8|x".to_vec()),
            "ResourceNotFoundException",
        ),
        (
            Record {
                compression: 99,
                ..raw(9, b"s", b"k", None, b"9|x".to_vec())
            },
            "UnsupportedCompression",
        ),
    ];
    let want: std::collections::HashMap<u64, &str> =
        cases.iter().map(|(r, c)| (r.id, *c)).collect();
    // Valid records in the same request still go through.
    let mut recs: Vec<Record> = cases.into_iter().map(|(r, _)| r).collect();
    // 256 characters of 3 bytes each: valid (the limit is in characters).
    recs.push(raw(
        100,
        b"s",
        "€".repeat(256).as_bytes(),
        None,
        b"100|ok".to_vec(),
    ));
    recs.push(raw(101, b"s", b"k", Some(b"007"), b"101|ok".to_vec()));
    tx.put(recs, false).await.unwrap();
    let results = collect_results(&mut rx, want.len() + 2, Duration::from_secs(30)).await;
    for (id, code) in &want {
        let r = &results[id];
        assert!(!r.success, "record {id} should fail");
        assert_eq!(&r.error_code, code, "record {id}: {}", r.error_message);
        assert!(
            !r.error_message.is_empty(),
            "record {id}: the message says what is wrong"
        );
    }
    assert!(results[&100].success, "{:?}", results[&100]);
    assert!(results[&101].success, "{:?}", results[&101]);
    // The same connection keeps working.
    tx.put(vec![record(200, "s", "k", "200|after")], false)
        .await
        .unwrap();
    let r = collect_results(&mut rx, 1, Duration::from_secs(30)).await;
    assert!(r[&200].success);
    drop(tx);
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_stop_the_others_and_its_records_are_delivered() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let d = Daemon::start(&fake.endpoint(), "").await;
    // Sends 40,000 records and never reads a result.
    let (mut tx, rx) = d.connect().await;
    let n = 40_000u64;
    let writer = tokio::spawn(async move {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let recs = chunk
                .iter()
                .map(|i| record(*i, "s", &format!("k{i}"), format!("{i}|silent")))
                .collect();
            if tx.put(recs, false).await.is_err() {
                break;
            }
        }
        tx
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    healthy_round(&d, 1_000_000, 200).await;
    // It goes away without reading; what it handed over is still delivered.
    drop(rx);
    writer.abort();
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    // Requests are read in order, so what was read is ids 0..m with no gap,
    // and at least the backlog's worth of results was accepted.
    let (found, _) = common::verify::user_records(&fake, &fake.log());
    let silent: std::collections::BTreeSet<u64> = found
        .iter()
        .filter(|(_, f)| f[0].data.ends_with(b"|silent"))
        .map(|(id, _)| *id)
        .collect();
    let m = silent.len() as u64;
    eprintln!("never-reading client: {m} of its {n} records were read and delivered");
    assert!(m >= 16_000, "{m}");
    assert_eq!(
        silent.iter().next_back().copied(),
        Some(m - 1),
        "a gap: a record read was lost"
    );
    fake.shutdown().await;
}

/// Protobuf varint of `v`.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field `n` holding `body`.
fn len_field(n: u32, body: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(n) << 3 | 2, out);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Reads server messages until `stop` says it has seen enough (bounded).
async fn read_until(
    s: &mut UnixStream,
    stop: impl Fn(&[ServerMessage]) -> bool,
) -> Vec<ServerMessage> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msgs = read_frames(&buf);
        if stop(&msgs) {
            return msgs;
        }
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => panic!("connection ended or timed out; got {:?}", read_frames(&buf)),
        }
    }
}

fn results_of(msgs: &[ServerMessage]) -> std::collections::HashMap<u64, (bool, String)> {
    msgs.iter()
        .filter_map(|m| match &m.msg {
            Some(server_message::Msg::Results(r)) => Some(r.results.iter()),
            _ => None,
        })
        .flatten()
        .map(|r| (r.id, (r.success, r.error_code.clone())))
        .collect()
}

fn flushed(msgs: &[ServerMessage], id: u64) -> bool {
    msgs.iter()
        .any(|m| matches!(&m.msg, Some(server_message::Msg::Flushed(f)) if f.id == id))
}

/// docs/protocol.md, "What the daemon does with encodings protobuf allows": what these
/// frames do is decided and documented, and this test holds the daemon to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_enum_varints_and_two_oneof_members_are_read_by_protobufs_rules() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let d = Daemon::start(&fake.endpoint(), "").await;
    let mut s = UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(&hello_frame()).await.unwrap();
    // Two records whose compression varint is beyond 32 bits: 2^32 + 2 is cut to 2 (gzip),
    // 2^32 + 7 to 7 (unknown).
    let rec = |id: u64, compression: u64| {
        let mut b = record(id, "s", "k", format!("{id}|x")).encode_to_vec();
        b.push(6 << 3); // field 6, varint
        varint(compression, &mut b);
        b
    };
    let mut put = Vec::new();
    len_field(1, &rec(1, (1 << 32) + 2), &mut put);
    len_field(1, &rec(2, (1 << 32) + 7), &mut put);
    let mut msg = Vec::new();
    len_field(2, &put, &mut msg);
    s.write_all(&frame(&msg)).await.unwrap();
    // A flush, so that both results are owed before its reply.
    let mut f = Vec::new();
    len_field(3, &[0x08, 1], &mut f);
    s.write_all(&frame(&f)).await.unwrap();
    let msgs = read_until(&mut s, |m| flushed(m, 1)).await;
    let r = results_of(&msgs);
    assert_eq!(r.get(&1), Some(&(true, String::new())), "{msgs:?}");
    assert_eq!(
        r.get(&2),
        Some(&(false, "UnsupportedCompression".to_string())),
        "{msgs:?}"
    );

    // One ClientMessage with a put (record 3) and then a flush (id 2): the flush is what
    // the daemon reads; record 3 is dropped, with no error, and gets no result.
    let mut put = Vec::new();
    len_field(1, &record(3, "s", "k", "3|x").encode_to_vec(), &mut put);
    let mut two = Vec::new();
    len_field(2, &put, &mut two);
    len_field(3, &[0x08, 2], &mut two);
    s.write_all(&frame(&two)).await.unwrap();
    // Then a record 4 and flush 3: its reply comes after every result owed before it.
    let mut put = Vec::new();
    len_field(1, &record(4, "s", "k", "4|x").encode_to_vec(), &mut put);
    let mut m4 = Vec::new();
    len_field(2, &put, &mut m4);
    s.write_all(&frame(&m4)).await.unwrap();
    let mut f3 = Vec::new();
    len_field(3, &[0x08, 3], &mut f3);
    s.write_all(&frame(&f3)).await.unwrap();
    let msgs = read_until(&mut s, |m| flushed(m, 3)).await;
    assert!(
        flushed(&msgs, 2),
        "the second member (flush 2) was read: {msgs:?}"
    );
    let r = results_of(&msgs);
    assert_eq!(r.get(&4), Some(&(true, String::new())), "{msgs:?}");
    assert!(
        !r.contains_key(&3),
        "the first member (record 3) was dropped: {msgs:?}"
    );
    assert!(error_code(&msgs).is_none(), "no error frame: {msgs:?}");
    drop(s);
    let (status, log) = d.stop().await;
    assert!(status.success(), "{log}");
    fake.shutdown().await;
}

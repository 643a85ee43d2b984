//! The Kinesis double driven by a real aws-sdk-kinesis client over loopback HTTP: shard
//! listing and paging, routing, limits, resharding, fault injection, and (ignored by
//! default) a throughput probe of the count-only mode.

use std::collections::{BTreeMap, HashSet};
use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, ShardFilter, ShardFilterType, ShardIteratorType,
};
use aws_sdk_kinesis::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use kpld_kinesis_double::model::even_ranges;
use kpld_kinesis_double::{FakeKinesis, FakeOptions, FaultPlan, ShardInfo, ShardLimits};
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A real SDK client for the double: static test credentials, no retries (so every fault
/// is visible), an optional per-attempt timeout.
fn client_with(fake: &FakeKinesis, attempt_timeout: Option<Duration>) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut timeouts = TimeoutConfig::builder();
    if let Some(t) = attempt_timeout {
        timeouts = timeouts.operation_attempt_timeout(t);
    }
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(fake.endpoint())
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts.build())
        .build();
    Client::from_conf(conf)
}

fn client(fake: &FakeKinesis) -> Client {
    client_with(fake, None)
}

fn entry(data: &[u8], key: &str, ehk: Option<u128>) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(data))
        .partition_key(key)
        .set_explicit_hash_key(ehk.map(|h| h.to_string()))
        .build()
        .expect("data and partition key are set")
}

fn md5_hash(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

fn owner(shards: &[ShardInfo], hash: u128) -> &str {
    &shards
        .iter()
        .find(|s| s.is_open() && s.starting_hash_key <= hash && hash <= s.ending_hash_key)
        .expect("open shards cover the hash space")
        .shard_id
}

async fn list_all(
    c: &Client,
    stream: &str,
    max: i32,
    filter: Option<ShardFilterType>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut req = c.list_shards().stream_name(stream).max_results(max);
    if let Some(f) = filter {
        req = req.shard_filter(ShardFilter::builder().r#type(f).build().unwrap());
    }
    let mut out = req.send().await.expect("first ListShards page");
    loop {
        ids.extend(out.shards().iter().map(|s| s.shard_id().to_owned()));
        let Some(token) = out.next_token() else { break };
        assert!(
            out.shards().len() as i32 == max,
            "only full pages have a NextToken"
        );
        // Like the service: the token alone identifies the stream.
        out = c
            .list_shards()
            .next_token(token)
            .max_results(max)
            .send()
            .await
            .expect("next ListShards page");
    }
    ids
}

#[tokio::test]
async fn list_shards_pages_with_next_token_alone() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 7)).await;
    let c = client(&fake);
    fake.split_shard_evenly("s", "shardId-000000000003")
        .unwrap();

    let open = list_all(&c, "s", 3, Some(ShardFilterType::AtLatest)).await;
    let expected: Vec<String> = fake
        .open_shards("s")
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    assert_eq!(open, expected);
    assert_eq!(open.len(), 8);
    assert!(!open.contains(&"shardId-000000000003".to_owned()));

    let all = list_all(&c, "s", 2, None).await;
    let expected: Vec<String> = (0..9).map(|i| format!("shardId-{i:012}")).collect();
    assert_eq!(all, expected);

    // The KPL's old bug: a NextToken together with the stream name is refused.
    let first = c
        .list_shards()
        .stream_name("s")
        .max_results(1)
        .send()
        .await
        .unwrap();
    let err = c
        .list_shards()
        .stream_name("s")
        .next_token(first.next_token().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidArgumentException"));

    // StreamARN works in place of the name.
    let summary = c
        .describe_stream_summary()
        .stream_name("s")
        .send()
        .await
        .unwrap();
    let summary = summary.stream_description_summary().unwrap();
    assert_eq!(summary.open_shard_count(), 8);
    let by_arn = c
        .list_shards()
        .stream_arn(summary.stream_arn())
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(by_arn.shards().len(), 8);
    assert!(by_arn.next_token().is_none());

    let err = c
        .list_shards()
        .stream_name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
    fake.shutdown().await;
}

#[tokio::test]
async fn put_records_route_to_the_shard_owning_the_hash() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 4)).await;
    let c = client(&fake);
    let shards = fake.shards("s").unwrap();
    let mut entries = Vec::new();
    let mut expected = Vec::new();
    for i in 0..300u32 {
        let key = format!("user-{i}");
        let data = format!("payload {i}").into_bytes();
        let ehk = (i % 3 == 0).then(|| u128::from(i) * (u128::MAX / 300));
        let hash = ehk.unwrap_or_else(|| md5_hash(&key));
        expected.push((
            owner(&shards, hash).to_owned(),
            key.clone(),
            data.clone(),
            ehk,
        ));
        entries.push(entry(&data, &key, ehk));
    }
    let out = c
        .put_records()
        .stream_name("s")
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
    let log = fake.log();
    assert_eq!(log.len(), 300);
    let mut last_seq = String::new();
    for ((r, want), logged) in out.records().iter().zip(&expected).zip(&log) {
        assert_eq!(r.shard_id(), Some(want.0.as_str()));
        let seq = r.sequence_number().unwrap().to_owned();
        assert!(seq > last_seq, "sequence numbers increase");
        last_seq = seq.clone();
        assert_eq!(logged.sequence_number, seq);
        assert_eq!(logged.shard_id, want.0);
        assert_eq!(logged.partition_key, want.1);
        assert_eq!(&logged.data[..], &want.2[..]);
        assert_eq!(logged.explicit_hash_key, want.3.map(|h| h.to_string()));
    }
    for shard in fake.shards("s").unwrap() {
        assert!(shard.entries > 0, "300 keys reach every one of 4 shards");
    }

    // PutRecord and reading back with GetShardIterator + GetRecords.
    let one = c
        .put_record()
        .stream_name("s")
        .partition_key("single")
        .data(Blob::new(&b"one"[..]))
        .send()
        .await
        .unwrap();
    assert_eq!(one.shard_id(), owner(&shards, md5_hash("single")));
    let it = c
        .get_shard_iterator()
        .stream_name("s")
        .shard_id(one.shard_id())
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let got = c
        .get_records()
        .shard_iterator(it.shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    let want: Vec<Vec<u8>> = fake
        .log()
        .iter()
        .filter(|e| e.shard_id == one.shard_id())
        .map(|e| e.data.to_vec())
        .collect();
    let got_data: Vec<Vec<u8>> = got
        .records()
        .iter()
        .map(|r| r.data().as_ref().to_vec())
        .collect();
    assert_eq!(got_data, want);
    assert_eq!(got.records().len(), want.len());
    assert_eq!(got.records().last().unwrap().data().as_ref(), b"one");
    assert_eq!(
        got.records().last().unwrap().sequence_number(),
        one.sequence_number()
    );

    let err = c
        .put_records()
        .stream_name("missing")
        .records(entry(b"x", "k", None))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
    fake.shutdown().await;
}

#[tokio::test]
async fn requests_are_validated_like_the_service() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 1)).await;
    let c = client(&fake);
    let put = |records: Vec<PutRecordsRequestEntry>| {
        c.put_records()
            .stream_name("s")
            .set_records(Some(records))
            .send()
    };
    let too_many = (0..501)
        .map(|i| entry(b"x", &i.to_string(), None))
        .collect();
    assert_eq!(
        put(too_many).await.unwrap_err().code(),
        Some("ValidationException")
    );
    let long_key = "k".repeat(257);
    assert_eq!(
        put(vec![entry(b"x", &long_key, None)])
            .await
            .unwrap_err()
            .code(),
        Some("ValidationException")
    );
    let big = vec![0u8; 1024 * 1024];
    assert_eq!(
        put(vec![entry(&big, "k", None)]).await.unwrap_err().code(),
        Some("ValidationException"),
        "data + key over 1 MiB"
    );
    let almost = vec![0u8; 1024 * 1024 - 1];
    assert!(put(vec![entry(&almost, "k", None)]).await.is_ok());
    let six: Vec<_> = (0..6).map(|_| entry(&almost, "k", None)).collect();
    let err = put(six).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidArgumentException"));
    assert_eq!(err.message(), Some("Records size exceeds 5 MB limit"));
    assert_eq!(fake.log_len(), 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn throttling_appears_over_the_shard_limits() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2).enforce_limits()).await;
    let c = client(&fake);
    // Bytes: three 700 KiB records to one shard in one request exceed its 1 MiB bucket.
    let big = vec![1u8; 700 * 1024];
    let out = c
        .put_records()
        .stream_name("s")
        .set_records(Some((0..3).map(|_| entry(&big, "k", Some(0))).collect()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(2));
    let codes: Vec<_> = out.records().iter().map(|r| r.error_code()).collect();
    assert_eq!(
        codes,
        [
            None,
            Some("ProvisionedThroughputExceededException"),
            Some("ProvisionedThroughputExceededException")
        ]
    );
    assert!(out.records()[1]
        .error_message()
        .unwrap()
        .starts_with("Rate exceeded for shard shardId-000000000000 in stream s"));

    // Records: with a 100 records/s limit, one request of 300 to one shard gets 100 through
    // (one request is judged at one instant); the other shard is unaffected.
    fake.set_shard_limits(Some(ShardLimits {
        records_per_sec: 100.0,
        ..ShardLimits::default()
    }));
    let mut records: Vec<_> = (0..300).map(|_| entry(b"r", "k", Some(0))).collect();
    records.push(entry(b"r", "k", Some(u128::MAX)));
    let out = c
        .put_records()
        .stream_name("s")
        .set_records(Some(records))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(200));
    assert!(out.records()[300].error_code().is_none());
    let counters = fake.counters();
    assert_eq!(counters.entries_throttled, 202);
    assert_eq!(fake.shards("s").unwrap()[0].throttled, 202);

    // PutRecord answers a throttle as an error. (Drawn by the fault plan: the
    // bucket refills 1 record per 10 ms, so on a slow machine it may have
    // room again by now.)
    fake.set_faults(FaultPlan {
        throttle: 1.0,
        ..FaultPlan::default()
    });
    let err = c
        .put_record()
        .stream_name("s")
        .partition_key("k")
        .explicit_hash_key("0")
        .data(Blob::new(&b"x"[..]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ProvisionedThroughputExceededException"));
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_then_merge_while_records_flow() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2)).await;
    let c = client(&fake);
    // A writer puts batches until told to stop; resharding happens between its requests.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut results = Vec::new();
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let records = (0..20)
                    .map(|i| entry(b"d", &format!("k{round}-{i}"), None))
                    .collect();
                let out = c
                    .put_records()
                    .stream_name("s")
                    .set_records(Some(records))
                    .send()
                    .await
                    .unwrap();
                results.extend(
                    out.records()
                        .iter()
                        .map(|r| r.shard_id().unwrap().to_owned()),
                );
            }
            results
        })
    };
    // Wait for `n` more accepted entries (or the writer's end, if it failed).
    let wait_for_more = |n: usize| {
        let (fake, writer) = (&fake, &writer);
        async move {
            let target = fake.log_len() + n;
            while fake.log_len() < target && !writer.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    wait_for_more(100).await;
    let r = even_ranges(2);
    let mid = r[0].1 / 2;
    c.split_shard()
        .stream_name("s")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(mid.to_string())
        .send()
        .await
        .unwrap();
    wait_for_more(400).await;
    c.merge_shards()
        .stream_name("s")
        .shard_to_merge("shardId-000000000002")
        .adjacent_shard_to_merge("shardId-000000000003")
        .send()
        .await
        .unwrap();
    wait_for_more(400).await;
    stop.store(true, Ordering::Relaxed);
    let seen = writer.await.unwrap();
    assert_eq!(seen.len(), fake.log_len());

    let shards = c.list_shards().stream_name("s").send().await.unwrap();
    let by_id: BTreeMap<&str, _> = shards.shards().iter().map(|s| (s.shard_id(), s)).collect();
    let ids: Vec<&str> = by_id.keys().copied().collect();
    assert_eq!(
        ids,
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002",
            "shardId-000000000003",
            "shardId-000000000004"
        ]
    );
    let range = |id: &str| {
        let h = by_id[id].hash_key_range().unwrap();
        (
            h.starting_hash_key().to_owned(),
            h.ending_hash_key().to_owned(),
        )
    };
    assert_eq!(
        range("shardId-000000000002"),
        ("0".to_owned(), (mid - 1).to_string())
    );
    assert_eq!(
        range("shardId-000000000003"),
        (mid.to_string(), r[0].1.to_string())
    );
    assert_eq!(
        range("shardId-000000000004"),
        ("0".to_owned(), r[0].1.to_string())
    );
    assert_eq!(
        by_id["shardId-000000000002"].parent_shard_id(),
        Some("shardId-000000000000")
    );
    assert_eq!(
        by_id["shardId-000000000003"].parent_shard_id(),
        Some("shardId-000000000000")
    );
    assert_eq!(
        by_id["shardId-000000000004"].parent_shard_id(),
        Some("shardId-000000000002")
    );
    assert_eq!(
        by_id["shardId-000000000004"].adjacent_parent_shard_id(),
        Some("shardId-000000000003")
    );
    for closed in [
        "shardId-000000000000",
        "shardId-000000000002",
        "shardId-000000000003",
    ] {
        let seqs = by_id[closed].sequence_number_range().unwrap();
        assert!(
            seqs.ending_sequence_number().is_some(),
            "{closed} is closed"
        );
    }
    assert!(by_id["shardId-000000000004"]
        .sequence_number_range()
        .unwrap()
        .ending_sequence_number()
        .is_none());
    let open = list_all(&c, "s", 10, Some(ShardFilterType::AtLatest)).await;
    assert_eq!(open, ["shardId-000000000001", "shardId-000000000004"]);

    // A closed shard received nothing after it closed: every logged entry's sequence number
    // is below its shard's ending sequence number.
    let info = fake.shards("s").unwrap();
    for e in fake.log() {
        let s = info.iter().find(|s| s.shard_id == e.shard_id).unwrap();
        assert!(e.sequence_number >= s.starting_sequence_number);
        if let Some(end) = &s.ending_sequence_number {
            assert!(
                &e.sequence_number < end,
                "{} after {} closed",
                e.sequence_number,
                s.shard_id
            );
        }
    }
    // Keys spread over the hash space: every shard took records while it was open.
    let used: HashSet<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(used.len(), 5, "{used:?}");
    fake.shutdown().await;
}

#[tokio::test]
async fn stream_lifecycle_and_reading_a_closed_shard_to_its_children() {
    let fake = FakeKinesis::start(FakeOptions::default()).await;
    let c = client(&fake);
    c.create_stream()
        .stream_name("t")
        .shard_count(3)
        .send()
        .await
        .unwrap();
    let err = c
        .create_stream()
        .stream_name("t")
        .shard_count(3)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUseException"));
    let names = c.list_streams().send().await.unwrap();
    assert_eq!(names.stream_names(), ["t"]);
    let desc = c.describe_stream().stream_name("t").send().await.unwrap();
    let desc = desc.stream_description().unwrap();
    assert_eq!(desc.shards().len(), 3);
    assert!(!desc.has_more_shards());
    let ranges = even_ranges(3);
    for (s, (lo, hi)) in desc.shards().iter().zip(ranges) {
        let r = s.hash_key_range().unwrap();
        assert_eq!(
            (r.starting_hash_key(), r.ending_hash_key()),
            (lo.to_string().as_str(), hi.to_string().as_str())
        );
    }

    let put = |n: u32| {
        let records = (0..n)
            .map(|i| entry(&i.to_be_bytes(), "k", Some(5)))
            .collect();
        c.put_records()
            .stream_name("t")
            .set_records(Some(records))
            .send()
    };
    put(3).await.unwrap();
    let kids = fake
        .split_shard_evenly("t", "shardId-000000000000")
        .unwrap();
    assert_eq!(kids, ["shardId-000000000003", "shardId-000000000004"]);
    let after = put(2).await.unwrap();
    assert_eq!(after.records()[0].shard_id(), Some("shardId-000000000003"));

    let it = c
        .get_shard_iterator()
        .stream_name("t")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let page = c
        .get_records()
        .shard_iterator(it.shard_iterator().unwrap())
        .limit(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.records().len(), 2);
    let page = c
        .get_records()
        .shard_iterator(page.next_shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.records().len(), 1);
    assert!(
        page.next_shard_iterator().is_none(),
        "closed shard read to its end"
    );
    let children: Vec<&str> = page.child_shards().iter().map(|c| c.shard_id()).collect();
    assert_eq!(children, kids);

    c.delete_stream().stream_name("t").send().await.unwrap();
    let err = c
        .describe_stream_summary()
        .stream_name("t")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
    fake.shutdown().await;
}

/// How one PutRecords call ended, as the SDK saw it.
#[derive(Debug, Default)]
struct Seen {
    ok: u64,
    entries_ok: u64,
    entries_internal: u64,
    http_500: u64,
    http_503: u64,
    connection: u64,
}

#[tokio::test]
async fn injected_faults_follow_their_fractions_roughly() {
    let plan = FaultPlan {
        reset: 0.1,
        http_500: 0.1,
        http_503: 0.1,
        drop_response: 0.1,
        internal_failure: 0.2,
        ..FaultPlan::default()
    };
    let fake =
        FakeKinesis::start(FakeOptions::default().stream("s", 2).faults(plan).seed(42)).await;
    let c = client(&fake);
    let mut seen = Seen::default();
    let requests = 400;
    for i in 0..requests {
        let records = (0..10)
            .map(|j| entry(b"x", &format!("{i}-{j}"), None))
            .collect();
        match c
            .put_records()
            .stream_name("s")
            .set_records(Some(records))
            .send()
            .await
        {
            Ok(out) => {
                seen.ok += 1;
                for r in out.records() {
                    match r.error_code() {
                        None => seen.entries_ok += 1,
                        Some("InternalFailure") => seen.entries_internal += 1,
                        Some(other) => panic!("unexpected error code {other}"),
                    }
                }
            }
            Err(SdkError::ServiceError(e)) => match e.raw().status().as_u16() {
                500 => seen.http_500 += 1,
                503 => seen.http_503 += 1,
                other => panic!("unexpected status {other}: {:?}", e.err()),
            },
            Err(_) => seen.connection += 1,
        }
    }
    let c_ = fake.counters();
    eprintln!("seen {seen:?}\ncounters {c_:?}");
    // Each request fault is 10% of 400 = 40 expected; the bounds are wide on purpose.
    for (name, n) in [("500", seen.http_500), ("503", seen.http_503)] {
        assert!((15..=70).contains(&n), "{name}: {n}");
    }
    assert!(
        (35..=140).contains(&seen.connection),
        "resets + drops: {}",
        seen.connection
    );
    assert!((15..=70).contains(&c_.resets), "resets {}", c_.resets);
    assert!(
        (15..=70).contains(&c_.dropped_responses),
        "drops {}",
        c_.dropped_responses
    );
    assert_eq!(c_.http_5xx, seen.http_500 + seen.http_503);
    assert_eq!(c_.resets + c_.dropped_responses, seen.connection);
    // 20% of the entries of answered requests.
    let entries = seen.entries_ok + seen.entries_internal;
    assert_eq!(entries, seen.ok * 10);
    let share = seen.entries_internal as f64 / entries as f64;
    assert!(
        (0.1..0.3).contains(&share),
        "internal failure share {share}"
    );
    // Accepted = answered successes + everything in requests whose answer was dropped.
    // Entries of dropped-answer requests that failed internally were not accepted.
    let internal_unseen = c_.internal_failures - seen.entries_internal;
    assert_eq!(
        c_.entries_accepted,
        seen.entries_ok + 10 * c_.dropped_responses - internal_unseen
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn dropped_answer_is_an_error_for_the_sdk_but_the_entries_are_in() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 1).faults(FaultPlan {
        drop_response: 1.0,
        ..FaultPlan::default()
    }))
    .await;
    let c = client(&fake);
    let records: Vec<_> = (0..5)
        .map(|i| entry(format!("d{i}").as_bytes(), "k", None))
        .collect();
    let err = c
        .put_records()
        .stream_name("s")
        .set_records(Some(records.clone()))
        .send()
        .await
        .unwrap_err();
    assert!(!matches!(err, SdkError::ServiceError(_)), "{err:?}");
    let log = fake.log();
    assert_eq!(log.len(), 5);
    assert_eq!(&log[4].data[..], b"d4");
    assert_eq!(fake.counters().dropped_responses, 1);

    // The producer's retry lands the same entries again: duplicates, told apart by request.
    fake.set_faults(FaultPlan::none());
    let out = c
        .put_records()
        .stream_name("s")
        .set_records(Some(records))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
    let log = fake.log();
    assert_eq!(log.len(), 10);
    assert_eq!(log[0].data, log[5].data);
    assert_ne!(log[0].request, log[5].request);

    // Resets accept nothing.
    fake.set_faults(FaultPlan {
        reset: 1.0,
        ..FaultPlan::default()
    });
    let err = c
        .put_records()
        .stream_name("s")
        .records(entry(b"lost", "k", None))
        .send()
        .await
        .unwrap_err();
    assert!(!matches!(err, SdkError::ServiceError(_)), "{err:?}");
    assert_eq!(fake.log_len(), 10);
    assert_eq!(fake.counters().resets, 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn slow_answer_times_the_client_out_after_accepting() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 1).faults(FaultPlan {
        slow: 1.0,
        slow_delay: Duration::from_secs(30),
        ..FaultPlan::default()
    }))
    .await;
    let c = client_with(&fake, Some(Duration::from_millis(300)));
    let err = c
        .put_records()
        .stream_name("s")
        .records(entry(b"late", "k", None))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert_eq!(fake.log_len(), 1);
    assert_eq!(fake.counters().slow_responses, 1);
    // Faults only hit puts by default: the shard map can still be read.
    let shards = c.list_shards().stream_name("s").send().await.unwrap();
    assert_eq!(shards.shards().len(), 1);
    fake.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Throughput probe of the count-only mode (not a test of correctness; prints numbers).
// Run: cargo test --release -p kpld-kinesis-double --test fake_kinesis -- --ignored --nocapture count_only

/// CPU seconds (user + system) used so far by the double's threads, from /proc.
fn fake_cpu_secs() -> f64 {
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for t in dir.flatten() {
        let mut comm = String::new();
        let _ = std::fs::File::open(t.path().join("comm"))
            .and_then(|mut f| f.read_to_string(&mut comm));
        if !comm.starts_with("fake-kinesis") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" closing comm: state is field 3; utime, stime are 14, 15.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            total += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total as f64 / 100.0 // USER_HZ is 100 on Linux
}

/// A prebuilt PutRecords HTTP request: `entries` entries of `size` bytes, spread over the
/// hash space by explicit hash keys (as kpld sends aggregates) or, without them, by
/// 20-character partition keys the double must hash with MD5.
fn raw_request(addr: std::net::SocketAddr, entries: usize, size: usize, ehk: bool) -> Vec<u8> {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; size]);
    let mut body = String::from("{\"StreamName\":\"bench\",\"Records\":[");
    for i in 0..entries {
        if i > 0 {
            body.push(',');
        }
        if ehk {
            let h = (u128::MAX / entries as u128) * i as u128;
            body.push_str(&format!(
                "{{\"Data\":\"{data}\",\"PartitionKey\":\"a\",\"ExplicitHashKey\":\"{h}\"}}"
            ));
        } else {
            body.push_str(&format!(
                "{{\"Data\":\"{data}\",\"PartitionKey\":\"partition-key-{i:06}\"}}"
            ));
        }
    }
    body.push_str("]}");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: Kinesis_20131202.PutRecords\r\nAuthorization: AWS4-HMAC-SHA256 bench\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body.as_bytes());
    req
}

/// Send `req` `n` times on one keep-alive connection, reading each answer fully.
async fn hammer(addr: std::net::SocketAddr, req: Arc<Vec<u8>>, n: usize) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..n {
        s.write_all(&req).await.unwrap();
        let mut have = 0;
        loop {
            let k = s.read(&mut buf[have..]).await.unwrap();
            assert!(k > 0, "double closed the connection");
            have += k;
            let text = &buf[..have];
            let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&text[..end])
                .unwrap()
                .to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            if have >= end + 4 + len {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput probe; run with --release --ignored --nocapture"]
async fn count_only_throughput_probe() {
    let cases = [
        (1usize, 100usize, true),
        (2, 100, true),
        (1, 100, false),
        (2, 100, false),
        (1, 1000, true),
        (2, 1000, true),
        (1, 50_000, true),
    ];
    for (workers, size, ehk) in cases {
        let fake = FakeKinesis::start(FakeOptions {
            worker_threads: workers,
            ..FakeOptions::default().stream("bench", 64).count_only()
        })
        .await;
        let addr = fake.addr();
        let entries = if size > 10_000 { 100 } else { 500 };
        let req = Arc::new(raw_request(addr, entries, size, ehk));
        let (conns, per_conn) = (4, 300_000_000 / (entries * (size + 100)));
        let cpu0 = fake_cpu_secs();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(hammer(addr, req.clone(), per_conn)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = fake_cpu_secs() - cpu0;
        let c = fake.counters();
        assert_eq!(c.entries_accepted, (conns * per_conn * entries) as u64);
        let keys = if ehk {
            "explicit hash keys"
        } else {
            "MD5 of keys"
        };
        println!(
            "count-only, {workers} worker(s), {entries} x {size}-byte entries, {keys}: \
             {:.0} entries/s wall ({:.0} MB/s of data); double CPU {:.2}s = {:.0} entries \
             per CPU-second",
            c.entries_accepted as f64 / wall,
            c.bytes_accepted as f64 / wall / 1e6,
            cpu,
            c.entries_accepted as f64 / cpu,
        );
        fake.shutdown().await;
    }
}

#[tokio::test]
async fn throttle_key_prefix_throttles_only_the_keys_with_it() {
    let fake = FakeKinesis::start(FakeOptions::default().stream("s", 2).faults(FaultPlan {
        throttle_key_prefix: Some("slow-".into()),
        ..FaultPlan::default()
    }))
    .await;
    let c = client(&fake);
    let keys = ["slow-1", "fast-1", "slow-2", "fast-2", "notslow-"];
    let records = keys.iter().map(|k| entry(b"x", k, None)).collect();
    let out = c
        .put_records()
        .stream_name("s")
        .set_records(Some(records))
        .send()
        .await
        .unwrap();
    let codes: Vec<_> = out.records().iter().map(|r| r.error_code()).collect();
    let t = Some("ProvisionedThroughputExceededException");
    assert_eq!(codes, vec![t, None, t, None, None]);
    assert_eq!(fake.counters().entries_throttled, 2);
    assert_eq!(fake.counters().entries_accepted, 3);
    fake.shutdown().await;
}

//! The whole pipeline in process: a [`Producer`] (its actors and their
//! cores) against an in-memory [`KinesisApi`] with scripted faults, on
//! Tokio's paused clock, so that minutes of retries and backoff run in
//! milliseconds and every run is the same. The HTTP double and the real
//! servers are the integration tests' business.

use super::*;
use crate::aggregate::MAGIC;
use crate::ipc::RecordResult;
use crate::kinesis::{ApiError, BoxFuture, EntryResult, PutEntry};
use crate::pipeline::testkit::{even_shards, Collect};
use crate::shard_map::{hash_partition_key, Shard};
use prost::Message;
use std::collections::{HashMap, VecDeque};
use tokio::sync::Semaphore;

/// What the fake does with one PutRecords call (by call number, from 0).
#[derive(Clone)]
enum CallFault {
    /// Refuse every entry with this code.
    EveryEntry(ErrorCode),
    /// Refuse entry `n` with this code, accept the others.
    Entry(usize, ErrorCode),
    /// Store the entries, then never answer (the response is lost).
    Hang,
    /// Refuse the whole call with a ValidationException when one of its
    /// entries has this partition key (as Kinesis does for a bad entry).
    RefuseCallWithKey(String),
    /// Store every entry but answer one result fewer than entries.
    TooFewResults,
}

/// The call number of a fault that applies to every call.
const EVERY_CALL: usize = usize::MAX;

/// One stored Kinesis record.
#[derive(Debug, Clone)]
struct Stored {
    shard: Arc<str>,
    range: (u128, u128),
    entry: PutEntry,
}

#[derive(Default)]
struct FakeState {
    /// Open shards; closed ones are gone from here.
    shards: Vec<Shard>,
    /// Answers for the next ListShards calls before the open shards.
    stale_maps: VecDeque<Vec<Shard>>,
    faults: Vec<(usize, CallFault)>,
    calls: Vec<Vec<PutEntry>>,
    /// The stream of each call.
    call_streams: Vec<String>,
    stored: Vec<Stored>,
    list_calls: usize,
    /// When set, each PutRecords answer waits for a pass from it (the
    /// entries are stored at once): the test decides when calls end.
    gate: Option<Arc<Semaphore>>,
}

/// An in-memory Kinesis stream: routes each entry by its explicit hash key
/// (or the MD5 of its key) to the open shard holding it, as Kinesis does.
#[derive(Default, Clone)]
struct FakeApi(Arc<Mutex<FakeState>>);

impl FakeApi {
    fn with_shards(shards: Vec<Shard>) -> FakeApi {
        let f = FakeApi::default();
        f.0.lock().unwrap().shards = shards;
        f
    }

    fn fault(&self, call: usize, f: CallFault) {
        self.0.lock().unwrap().faults.push((call, f));
    }

    /// Splits open shard `id` at the middle of its range.
    fn split(&self, id: &str, children: (&str, &str)) {
        let mut s = self.0.lock().unwrap();
        let i = s.shards.iter().position(|x| &*x.id == id).unwrap();
        let p = s.shards.remove(i);
        let mid = p.start + (p.end - p.start) / 2;
        s.shards.push(Shard {
            id: children.0.into(),
            start: p.start,
            end: mid,
        });
        s.shards.push(Shard {
            id: children.1.into(),
            start: mid + 1,
            end: p.end,
        });
    }

    /// Merges open shards `a` and `b` (adjacent) into `child`.
    fn merge(&self, a: &str, b: &str, child: &str) {
        let mut s = self.0.lock().unwrap();
        let take = |s: &mut FakeState, id: &str| {
            let i = s.shards.iter().position(|x| &*x.id == id).unwrap();
            s.shards.remove(i)
        };
        let (x, y) = (take(&mut s, a), take(&mut s, b));
        s.shards.push(Shard {
            id: child.into(),
            start: x.start.min(y.start),
            end: x.end.max(y.end),
        });
    }

    fn calls(&self) -> Vec<Vec<PutEntry>> {
        self.0.lock().unwrap().calls.clone()
    }

    /// From now on every answer waits for a pass of the returned gate.
    fn gate(&self) -> Arc<Semaphore> {
        let g = Arc::new(Semaphore::new(0));
        self.0.lock().unwrap().gate = Some(g.clone());
        g
    }

    fn stored(&self) -> Vec<Stored> {
        self.0.lock().unwrap().stored.clone()
    }
}

impl KinesisApi for FakeApi {
    fn list_shards(&self, _stream: &str) -> BoxFuture<Result<Vec<Shard>, ApiError>> {
        let mut s = self.0.lock().unwrap();
        s.list_calls += 1;
        let shards = s.stale_maps.pop_front().unwrap_or_else(|| s.shards.clone());
        Box::pin(async move { Ok(shards) })
    }

    fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> BoxFuture<Result<Vec<EntryResult>, ApiError>> {
        let mut s = self.0.lock().unwrap();
        let call = s.calls.len();
        s.calls.push(entries.clone());
        s.call_streams.push(stream.to_string());
        let gate = s.gate.clone();
        let fault = s
            .faults
            .iter()
            .find(|(c, _)| *c == call || *c == EVERY_CALL)
            .map(|(_, f)| f.clone());
        if let Some(CallFault::RefuseCallWithKey(key)) = &fault {
            if let Some(i) = entries.iter().position(|e| e.partition_key == *key) {
                let e = ApiError::new(
                    ErrorCode::Validation,
                    format!("1 validation error detected: Value at 'records.{}.member.partitionKey' failed to satisfy constraint", i + 1),
                );
                return Box::pin(async move { Err(e) });
            }
        }
        let mut results = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            let refused = match &fault {
                Some(CallFault::EveryEntry(code)) => Some(code.clone()),
                Some(CallFault::Entry(n, code)) if *n == i => Some(code.clone()),
                _ => None,
            };
            if let Some(code) = refused {
                results.push(EntryResult::Err(ApiError::new(code, "refused by the fake")));
                continue;
            }
            let hash = match &e.explicit_hash_key {
                Some(k) => k.parse().unwrap(),
                None => hash_partition_key(&e.partition_key),
            };
            let shard = s
                .shards
                .iter()
                .find(|x| x.start <= hash && hash <= x.end)
                .unwrap()
                .clone();
            let seq = format!("{:020}", s.stored.len());
            s.stored.push(Stored {
                shard: shard.id.clone(),
                range: (shard.start, shard.end),
                entry: e,
            });
            results.push(EntryResult::Ok {
                shard_id: shard.id.to_string(),
                sequence_number: seq,
            });
        }
        drop(s);
        Box::pin(async move {
            if let Some(g) = gate {
                g.acquire().await.unwrap().forget();
            }
            if matches!(fault, Some(CallFault::Hang)) {
                std::future::pending::<()>().await;
            }
            if matches!(fault, Some(CallFault::TooFewResults)) {
                results.pop();
            }
            Ok(results)
        })
    }
}

/// The user records (partition key, data) inside a stored Kinesis record.
fn user_records(e: &PutEntry) -> Vec<(String, Vec<u8>)> {
    let d = &e.data;
    if d.len() < 20 || d[..4] != MAGIC {
        return vec![(e.partition_key.clone(), d.to_vec())];
    }
    let agg = crate::kpl_proto::AggregatedRecord::decode(&d[4..d.len() - 16]).unwrap();
    agg.records
        .iter()
        .map(|r| {
            let pk = agg.partition_key_table[r.partition_key_index as usize].clone();
            (pk, r.data.to_vec())
        })
        .collect()
}

/// What the KCL checks: every user record of an aggregate hashes into the
/// shard the aggregate landed on (else it drops the whole aggregate).
fn assert_readable(stored: &[Stored]) {
    for s in stored {
        for (pk, _) in user_records(&s.entry) {
            let h = hash_partition_key(&pk);
            assert!(
                s.range.0 <= h && h <= s.range.1,
                "record {pk} is in an aggregate on {} but hashes outside it",
                s.shard
            );
        }
    }
}

fn config(extra: &[(&str, &str)]) -> Config {
    let env = [("KPLD_METRICS_LEVEL", "none")]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load(None, env).unwrap()
}

fn inputs(ids: std::ops::Range<u64>, keys: u64) -> Vec<RecordInput> {
    ids.map(|id| RecordInput {
        id,
        stream: Bytes::from_static(b"s"),
        partition_key: Bytes::from(format!("key-{}", id % keys)),
        explicit_hash_key: None,
        data: Bytes::from(format!("data-{id}")),
        compression: None,
    })
    .collect()
}

/// Waits (in paused time) until `n` results are in, at most `limit`.
async fn results(sink: &Collect, n: usize, limit: Duration) -> Vec<RecordResult> {
    let start = Instant::now();
    while sink.0.lock().unwrap().len() < n {
        assert!(
            start.elapsed() < limit,
            "only {} of {n} results after {limit:?}",
            sink.0.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut r = sink.take();
    r.sort_by_key(|r| r.id);
    r
}

/// Every id in `ids` has exactly one result, each a success on the shard
/// where the fake holds its record.
fn assert_all_landed(r: &[RecordResult], ids: std::ops::Range<u64>, fake: &FakeApi) {
    assert_eq!(
        r.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids.collect::<Vec<_>>()
    );
    // Decode every stored Kinesis record once: data -> (shard, stored
    // copy readable) for each copy of it.
    let stored = fake.stored();
    let mut copies: HashMap<Vec<u8>, Vec<(Arc<str>, bool)>> = HashMap::new();
    for s in &stored {
        let users = user_records(&s.entry);
        // What the KCL checks: every user record hashes into the shard.
        let readable = users.iter().all(|(pk, _)| {
            let h = hash_partition_key(pk);
            s.range.0 <= h && h <= s.range.1
        });
        for (_, d) in users {
            copies
                .entry(d)
                .or_default()
                .push((s.shard.clone(), readable));
        }
    }
    for x in r {
        assert!(x.success, "record {} failed: {x:?}", x.id);
        let data = format!("data-{}", x.id).into_bytes();
        let on = copies
            .get(&data)
            .expect("the fake holds every record that succeeded");
        // The copy its result names must be one a consumer reads: on that
        // shard, in a Kinesis record whose every user record hashes into it.
        let readable = on
            .iter()
            .any(|(shard, readable)| **shard == *x.shard_id && *readable);
        assert!(
            readable,
            "record {} reported on {} has no readable copy there (stored on {:?})",
            x.id,
            x.shard_id,
            on.iter().map(|(s, _)| s).collect::<Vec<_>>()
        );
    }
}

fn producer(cfg: Config, fake: &FakeApi) -> (Producer, Arc<Collect>) {
    (
        Producer::new(cfg, Arc::new(fake.clone())),
        Arc::new(Collect::default()),
    )
}

#[tokio::test(start_paused = true)]
async fn a_split_while_records_flow_leaves_every_aggregate_readable() {
    let fake = FakeApi::with_shards(even_shards(2));
    let (p, sink) = producer(config(&[]), &fake);
    p.put(inputs(0..400, 50), 0, sink.clone(), false).await;
    assert_all_landed(
        &results(&sink, 400, Duration::from_secs(5)).await,
        0..400,
        &fake,
    );
    // kpld still predicts with the two-shard map: aggregates built for
    // shard 0 land on one child, though half their records hash into the
    // other.
    fake.split(
        "shardId-000000000000",
        ("shardId-000000000002", "shardId-000000000003"),
    );
    p.put(inputs(400..800, 50), 0, sink.clone(), false).await;
    let r = results(&sink, 400, Duration::from_secs(30)).await;
    // Aggregates that landed unreadable were sent again, and each result
    // names a readable copy.
    assert_all_landed(&r, 400..800, &fake);
    assert!(
        Counters::get(&p.counters().wrong_shard) > 0,
        "an aggregate was misrouted"
    );
    assert!(
        Counters::get(&p.counters().shard_map_loads) >= 2,
        "the map was refreshed"
    );
    assert!(r.iter().all(|x| x.shard_id != "shardId-000000000000"));
}

#[tokio::test(start_paused = true)]
async fn a_merge_while_records_flow_succeeds_without_resending() {
    let fake = FakeApi::with_shards(even_shards(2));
    let (p, sink) = producer(config(&[]), &fake);
    p.put(inputs(0..200, 50), 0, sink.clone(), false).await;
    results(&sink, 200, Duration::from_secs(5)).await;
    fake.merge(
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    );
    let stored_before = fake.stored().len();
    p.put(inputs(200..400, 50), 0, sink.clone(), false).await;
    let r = results(&sink, 200, Duration::from_secs(30)).await;
    assert_all_landed(&r, 200..400, &fake);
    assert_readable(&fake.stored());
    // Both parents' aggregates hash into the child: readable as they
    // landed, so nothing is sent twice.
    assert_eq!(Counters::get(&p.counters().wrong_shard), 0);
    let copies: usize = fake.stored()[stored_before..]
        .iter()
        .map(|s| user_records(&s.entry).len())
        .sum();
    assert_eq!(copies, 200);
    assert!(r.iter().all(|x| x.shard_id == "shardId-000000000002"));
}

#[tokio::test(start_paused = true)]
async fn a_stale_map_at_start_is_refreshed_and_nothing_is_lost() {
    let fake = FakeApi::with_shards(even_shards(1));
    // The first ListShards answers the map from before a split.
    fake.split(
        "shardId-000000000000",
        ("shardId-000000000001", "shardId-000000000002"),
    );
    fake.0.lock().unwrap().stale_maps.push_back(even_shards(1));
    let (p, sink) = producer(config(&[]), &fake);
    p.put(inputs(0..300, 30), 0, sink.clone(), false).await;
    let r = results(&sink, 300, Duration::from_secs(30)).await;
    assert_all_landed(&r, 0..300, &fake);
    assert!(fake.0.lock().unwrap().list_calls >= 2);
}

#[tokio::test(start_paused = true)]
async fn ttl_runs_out_in_the_middle_of_retries_with_the_last_error_named() {
    let fake = FakeApi::with_shards(even_shards(1));
    for call in 0..1000 {
        fake.fault(
            call,
            CallFault::EveryEntry(ErrorCode::ProvisionedThroughputExceeded),
        );
    }
    let cfg = config(&[("KPLD_RECORD_TTL_MS", "3000")]);
    let (p, sink) = producer(cfg, &fake);
    let t0 = Instant::now();
    p.put(inputs(0..20, 5), 0, sink.clone(), false).await;
    let r = results(&sink, 20, Duration::from_secs(10)).await;
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(3_200),
        "failed {took:?} after arrival"
    );
    for x in &r {
        assert!(!x.success);
        assert_eq!(x.error_code, "Expired");
        assert!(
            x.error_message
                .contains("last error ProvisionedThroughputExceededException"),
            "{}",
            x.error_message
        );
        assert!(x.attempts.len() >= 3, "retried: {:?}", x.attempts);
        assert!(x
            .attempts
            .iter()
            .all(|a| !a.success && a.error_code == "ProvisionedThroughputExceededException"));
    }
    assert_eq!(p.outstanding(), 0, "the budget is back");
}

#[tokio::test(start_paused = true)]
async fn a_throttling_storm_backs_off_then_every_record_lands_once() {
    let fake = FakeApi::with_shards(even_shards(4));
    for call in 0..30 {
        fake.fault(
            call,
            CallFault::EveryEntry(ErrorCode::ProvisionedThroughputExceeded),
        );
    }
    let (p, sink) = producer(config(&[]), &fake);
    p.put(inputs(0..2000, 200), 0, sink.clone(), false).await;
    let r = results(&sink, 2000, Duration::from_secs(30)).await;
    assert_all_landed(&r, 0..2000, &fake);
    let copies: usize = fake
        .stored()
        .iter()
        .map(|s| user_records(&s.entry).len())
        .sum();
    assert_eq!(copies, 2000, "each record stored once");
    let c = p.counters();
    assert!(Counters::get(&c.entries_throttled) > 0);
    assert!(r.iter().any(|x| x.attempts.len() > 1));
    // Full-jitter backoff, not the KPL's retry storm: far fewer calls than
    // one per record per retry.
    assert!(fake.calls().len() < 200, "{} calls", fake.calls().len());
}

#[tokio::test(start_paused = true)]
async fn a_failed_aggregate_is_retried_whole_with_the_same_bytes() {
    let fake = FakeApi::with_shards(even_shards(2));
    fake.fault(0, CallFault::Entry(0, ErrorCode::InternalFailure));
    let (p, sink) = producer(config(&[]), &fake);
    p.put(inputs(0..100, 20), 0, sink.clone(), false).await;
    let r = results(&sink, 100, Duration::from_secs(10)).await;
    assert_all_landed(&r, 0..100, &fake);
    let calls = fake.calls();
    let failed = &calls[0][0];
    assert!(
        failed.data.starts_with(&MAGIC),
        "the refused entry is an aggregate"
    );
    assert!(
        calls[1..].iter().flatten().any(|e| e.data == failed.data),
        "sent again as the same aggregate"
    );
    let retried: Vec<_> = r.iter().filter(|x| x.attempts.len() == 2).collect();
    assert_eq!(retried.len(), user_records(failed).len());
    for x in retried {
        assert_eq!(x.attempts[0].error_code, "InternalFailure");
        assert!(x.attempts[1].success);
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_times_out_and_is_retried_at_least_once() {
    let fake = FakeApi::with_shards(even_shards(1));
    fake.fault(0, CallFault::Hang);
    let cfg = config(&[("KPLD_REQUEST_TIMEOUT_MS", "1000")]);
    let (p, sink) = producer(cfg, &fake);
    p.put(inputs(0..50, 10), 0, sink.clone(), false).await;
    let r = results(&sink, 50, Duration::from_secs(20)).await;
    assert_all_landed(&r, 0..50, &fake);
    for x in &r {
        assert_eq!(x.attempts.len(), 2, "{:?}", x.attempts);
        assert_eq!(x.attempts[0].error_code, "RequestTimeout");
    }
    // The lost answer's records are in the stream twice: at least once.
    let copies: usize = fake
        .stored()
        .iter()
        .map(|s| user_records(&s.entry).len())
        .sum();
    assert_eq!(copies, 100);
    assert_eq!(sink.take().len(), 0, "one result per record");
}

#[tokio::test(start_paused = true)]
async fn a_call_refused_for_one_entry_is_split_until_only_that_record_fails() {
    let fake = FakeApi::with_shards(even_shards(4));
    fake.fault(EVERY_CALL, CallFault::RefuseCallWithKey("key-17".into()));
    // One user record per entry, so the offender is alone in its entry.
    let cfg = config(&[("KPLD_AGGREGATION_ENABLED", "false")]);
    let (p, sink) = producer(cfg, &fake);
    let other = Arc::new(Collect::default());
    // Two connections, records on every shard, in the same calls.
    p.put(inputs(0..100, 100), 0, sink.clone(), false).await;
    p.put(inputs(100..200, 100), 1, other.clone(), false).await;
    let mut r = results(&sink, 100, Duration::from_secs(10)).await;
    r.extend(results(&other, 100, Duration::from_secs(10)).await);
    let (bad, good): (Vec<_>, Vec<_>) = r.into_iter().partition(|x| x.id % 100 == 17);
    assert_eq!(bad.iter().map(|x| x.id).collect::<Vec<_>>(), [17, 117]);
    for x in &bad {
        assert!(!x.success);
        assert_eq!(x.error_code, "ValidationException");
        assert!(
            x.error_message.contains("1 validation error detected"),
            "the service's message: {}",
            x.error_message
        );
    }
    let mut good_ids: Vec<_> = good.iter().map(|x| x.id).collect();
    good_ids.sort();
    let want: Vec<u64> = (0..200).filter(|i| i % 100 != 17).collect();
    assert_eq!(good_ids, want);
    for x in &good {
        assert!(x.success, "record {} failed: {x:?}", x.id);
    }
    // Good records were not backed off: a split is no retry.
    assert_eq!(Counters::get(&p.counters().retries), 0);
    let stored: Vec<_> = fake
        .stored()
        .iter()
        .map(|s| s.entry.partition_key.clone())
        .collect();
    assert_eq!(stored.len(), 198, "each good record stored once");
    assert!(!stored.iter().any(|k| k == "key-17"));
    assert_eq!(p.outstanding(), 0, "the budget is back");
}

#[tokio::test(start_paused = true)]
async fn an_answer_with_too_few_results_is_a_failed_attempt_not_lost_records() {
    let fake = FakeApi::with_shards(even_shards(2));
    fake.fault(0, CallFault::TooFewResults);
    let cfg = config(&[("KPLD_AGGREGATION_ENABLED", "false")]);
    let (p, sink) = producer(cfg, &fake);
    p.put(inputs(0..50, 50), 0, sink.clone(), false).await;
    let r = results(&sink, 50, Duration::from_secs(10)).await;
    assert_all_landed(&r, 0..50, &fake);
    let n = fake.calls()[0].len();
    let said = format!("{} results for {n} entries", n - 1);
    let first: Vec<_> = r.iter().filter(|x| x.attempts.len() == 2).collect();
    assert_eq!(first.len(), n, "every record of the short answer retried");
    for x in first {
        assert_eq!(x.attempts[0].error_code, "ResponseError");
        assert!(
            x.attempts[0].error_message.contains(&said),
            "{}",
            x.attempts[0].error_message
        );
    }
    assert_eq!(sink.take().len(), 0, "one result per record");
}

#[tokio::test(start_paused = true)]
async fn puts_racing_idle_eviction_all_land_and_idle_streams_go() {
    let fake = FakeApi::with_shards(even_shards(2));
    let cfg = config(&[
        ("KPLD_STREAM_IDLE_TIMEOUT_MS", "1"),
        // Records wait in their buffer longer than the idle timeout: only
        // what the actor holds keeps it.
        ("KPLD_RECORD_MAX_BUFFERED_TIME_MS", "5"),
    ]);
    let (p, sink) = producer(cfg, &fake);
    // Gaps around the idle timeout: some puts find the actor about to go,
    // some find it gone, some find a fresh one.
    for i in 0..300u64 {
        p.put(inputs(i..i + 1, 7), 0, sink.clone(), false).await;
        tokio::time::sleep(Duration::from_micros(300 * (i % 11))).await;
    }
    assert_all_landed(
        &results(&sink, 300, Duration::from_secs(30)).await,
        0..300,
        &fake,
    );
    let start = Instant::now();
    while p.live_streams() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the idle stream stayed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(p.outstanding(), 0);
}

#[tokio::test(start_paused = true)]
async fn past_max_streams_a_new_stream_fails_until_one_is_idle() {
    let fake = FakeApi::with_shards(even_shards(1));
    let cfg = config(&[
        ("KPLD_MAX_STREAMS", "1"),
        ("KPLD_STREAM_IDLE_TIMEOUT_MS", "1000"),
    ]);
    let (p, sink) = producer(cfg, &fake);
    let other = |id| RecordInput {
        stream: Bytes::from_static(b"t"),
        ..inputs(id..id + 1, 1).remove(0)
    };
    p.put(inputs(0..1, 1), 0, sink.clone(), false).await;
    p.put(vec![other(1)], 0, sink.clone(), false).await;
    let r = results(&sink, 2, Duration::from_secs(5)).await;
    assert!(r[0].success, "{:?}", r[0]);
    assert!(!r[1].success);
    assert_eq!(r[1].error_code, "TooManyStreams");
    assert!(r[1].error_message.contains("max_streams"), "{:?}", r[1]);
    // Once "s" has been idle for the timeout, "t" gets its place.
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.put(vec![other(2)], 0, sink.clone(), false).await;
    let r = results(&sink, 1, Duration::from_secs(5)).await;
    assert!(r[0].success, "{:?}", r[0]);
}

#[tokio::test(start_paused = true)]
async fn a_put_waiting_for_room_when_the_drain_begins_is_refused_not_accepted() {
    let fake = FakeApi::with_shards(even_shards(1));
    // Every call is stored and never answered: the first 10 records hold
    // the whole budget until the grace period cuts them off.
    fake.fault(EVERY_CALL, CallFault::Hang);
    let cfg = config(&[
        ("KPLD_MAX_OUTSTANDING_RECORDS", "10"),
        ("KPLD_RECORD_MAX_BUFFERED_TIME_MS", "10"),
    ]);
    let (p, sink) = producer(cfg, &fake);
    p.put(inputs(0..10, 3), 0, sink.clone(), false).await;
    let waiting = {
        let (p, sink) = (p.clone(), sink.clone());
        tokio::spawn(async move { p.put(inputs(10..15, 3), 0, sink, false).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the second put waits for room");
    let drain = {
        let p = p.clone();
        tokio::spawn(async move { p.shutdown(Duration::from_secs(5)).await })
    };
    // Refused when the drain begins, not when the grace period frees room.
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting put ends when the drain begins")
        .unwrap();
    let report = drain.await.unwrap();
    let r = results(&sink, 15, Duration::from_secs(30)).await;
    assert!(r
        .iter()
        .all(|x| !x.success && x.error_code == "ShuttingDown"));
    // The waiting records were refused at once, without an attempt.
    assert!(r[10..].iter().all(|x| x.attempts.is_empty()), "{r:?}");
    assert_eq!(
        report,
        ShutdownReport {
            undelivered: 10,
            cut_off_by_grace: 10,
            refused_during_drain: 5,
        }
    );
    assert_eq!(p.outstanding(), 0);
}

#[tokio::test(start_paused = true)]
async fn records_that_fail_for_their_own_reason_during_the_drain_are_undelivered() {
    let fake = FakeApi::with_shards(even_shards(1));
    for call in 0..1000 {
        fake.fault(
            call,
            CallFault::EveryEntry(ErrorCode::ProvisionedThroughputExceeded),
        );
    }
    let cfg = config(&[("KPLD_RECORD_TTL_MS", "3000")]);
    let (p, sink) = producer(cfg, &fake);
    p.put(inputs(0..20, 5), 0, sink.clone(), false).await;
    // The grace period outlasts the TTL: the drain ends with every record
    // Expired, none cut off, and the report must still count them.
    let report = p.shutdown(Duration::from_secs(60)).await;
    let r = results(&sink, 20, Duration::from_secs(1)).await;
    assert!(r.iter().all(|x| x.error_code == "Expired"), "{r:?}");
    assert_eq!(
        report,
        ShutdownReport {
            undelivered: 20,
            cut_off_by_grace: 0,
            refused_during_drain: 0,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_that_delivers_everything_reports_nothing_undelivered() {
    let fake = FakeApi::with_shards(even_shards(2));
    let cfg = config(&[("KPLD_RECORD_MAX_BUFFERED_TIME_MS", "60000")]);
    let (p, sink) = producer(cfg, &fake);
    p.put(inputs(0..50, 7), 0, sink.clone(), false).await;
    let report = p.shutdown(Duration::from_secs(5)).await;
    // Arrived after the drain began: refused, and no reason for exit 1.
    p.put(inputs(50..53, 7), 0, sink.clone(), false).await;
    let r = results(&sink, 53, Duration::from_secs(1)).await;
    assert_all_landed(&r[..50], 0..50, &fake);
    assert!(r[50..].iter().all(|x| x.error_code == "ShuttingDown"));
    assert_eq!(report.undelivered, 0);
    assert_eq!(report.cut_off_by_grace, 0);
}

/// Waits (in paused time) until the fake has seen `n` calls.
async fn calls_reach(fake: &FakeApi, n: usize) {
    let start = Instant::now();
    while fake.calls().len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {} of {n} calls",
            fake.calls().len()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// A producer with one send permit (`max_connections = 1`, and `settings`)
/// whose permit is taken by a call of record 0 (flushed) that the double
/// holds until the returned gate gets permits.
async fn with_the_only_permit_taken(
    shards: usize,
    settings: &[(&str, &str)],
) -> (FakeApi, Arc<Semaphore>, Producer, Arc<Collect>) {
    let fake = FakeApi::with_shards(even_shards(shards));
    let gate = fake.gate();
    let mut all = vec![("KPLD_MAX_CONNECTIONS", "1")];
    all.extend_from_slice(settings);
    let (p, sink) = producer(config(&all), &fake);
    p.put(inputs(0..1, 1), 0, sink.clone(), false).await;
    // Sent now, whatever the buffering time.
    p.flush();
    calls_reach(&fake, 1).await;
    (fake, gate, p, sink)
}

#[tokio::test(start_paused = true)]
async fn with_every_permit_taken_records_wait_uncut_and_go_in_full_calls() {
    // One user record per entry, so a full call is 500.
    let (fake, gate, p, sink) =
        with_the_only_permit_taken(4, &[("KPLD_AGGREGATION_ENABLED", "false")]).await;
    let tasks = alive_tasks();
    // 40 puts of 50 records, 10 ms apart: every one comes due (100 ms)
    // while the permit is taken.
    for i in 0..40u64 {
        p.put(
            inputs(1 + i * 50..1 + (i + 1) * 50, 1000),
            0,
            sink.clone(),
            false,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Nothing was cut for the permit that is not there: no queue of calls.
    assert!(
        alive_tasks() <= tasks + 1,
        "{} tasks alive, {tasks} before the puts",
        alive_tasks()
    );
    assert_eq!(fake.calls().len(), 1);
    gate.add_permits(1000);
    let r = results(&sink, 2001, Duration::from_secs(10)).await;
    assert_all_landed(&r, 0..2001, &fake);
    // Once the permit is free, the calls hold what gathered meanwhile.
    let sizes: Vec<usize> = fake.calls()[1..].iter().map(Vec::len).collect();
    assert_eq!(sizes, [500, 500, 500, 500], "entries per call");
}

#[tokio::test(start_paused = true)]
async fn a_flush_while_every_permit_is_taken_sends_everything_once_one_frees() {
    let (fake, gate, p, sink) = with_the_only_permit_taken(
        4,
        &[
            ("KPLD_AGGREGATION_ENABLED", "false"),
            // Only the flush makes these records due.
            ("KPLD_RECORD_MAX_BUFFERED_TIME_MS", "60000"),
        ],
    )
    .await;
    p.put(inputs(1..701, 1000), 0, sink.clone(), false).await;
    p.flush();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.calls().len(), 1, "the permit is taken");
    let t = Instant::now();
    gate.add_permits(1000);
    let r = results(&sink, 701, Duration::from_secs(10)).await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "sent on the flush, not at the deadline: {:?}",
        t.elapsed()
    );
    assert_all_landed(&r, 0..701, &fake);
    let sizes: Vec<usize> = fake.calls()[1..].iter().map(Vec::len).collect();
    assert_eq!(sizes, [500, 200]);
}

#[tokio::test(start_paused = true)]
async fn records_waiting_for_a_permit_expire_at_their_ttl_and_fail_at_an_abort() {
    let (fake, _gate, p, sink) =
        with_the_only_permit_taken(2, &[("KPLD_RECORD_TTL_MS", "3000")]).await;
    // The permit never frees: these fail at their TTL, not later.
    let t = Instant::now();
    p.put(inputs(1..101, 10), 0, sink.clone(), false).await;
    let r = results(&sink, 100, Duration::from_secs(10)).await;
    assert!(
        t.elapsed() <= Duration::from_millis(3_100),
        "{:?}",
        t.elapsed()
    );
    for x in &r {
        assert!(!x.success);
        assert_eq!(x.error_code, "Expired");
        assert!(
            x.error_message
                .contains("free connection (max_connections = 1)"),
            "{}",
            x.error_message
        );
    }
    // A shutdown while records wait for the permit: its grace runs out,
    // and every record (waiting, or in the call that never ends) gets
    // ShuttingDown.
    p.put(inputs(101..301, 10), 0, sink.clone(), false).await;
    let report = p.shutdown(Duration::from_millis(500)).await;
    let r = results(&sink, 201, Duration::from_secs(10)).await;
    assert_eq!(
        r.iter().map(|x| x.id).collect::<Vec<_>>(),
        std::iter::once(0).chain(101..301).collect::<Vec<_>>()
    );
    assert!(r
        .iter()
        .all(|x| !x.success && x.error_code == "ShuttingDown"));
    assert_eq!(report.undelivered, 201);
    assert_eq!(p.outstanding(), 0, "the budget is back");
    assert_eq!(fake.calls().len(), 1, "nothing else was sent");
}

#[tokio::test(start_paused = true)]
async fn streams_sharing_the_permits_take_turns() {
    let (fake, gate, p, sink) =
        with_the_only_permit_taken(4, &[("KPLD_AGGREGATION_ENABLED", "false")]).await;
    // A busy stream with ten calls' worth, then a quiet one.
    p.put(inputs(1..5001, 1000), 0, sink.clone(), false).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quiet = inputs(5001..5011, 10)
        .into_iter()
        .map(|r| RecordInput {
            stream: Bytes::from_static(b"t"),
            ..r
        })
        .collect();
    p.put(quiet, 0, sink.clone(), false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One call ends at a time.
    for n in 2..=4 {
        gate.add_permits(1);
        calls_reach(&fake, n).await;
    }
    let streams = fake.0.lock().unwrap().call_streams.clone();
    assert!(
        streams[..4].iter().any(|s| s == "t"),
        "the quiet stream waited behind the busy one: {streams:?}"
    );
    gate.add_permits(1000);
    let r = results(&sink, 5011, Duration::from_secs(10)).await;
    assert!(r.iter().all(|x| x.success));
}

//! Test support for the pipeline's machines: records with a sink that
//! keeps their results, shard maps, and a Kinesis record of given records.

use super::record::{KinesisRecord, Origin, PartitionKey, ResultSink, UserRecord};
use crate::ipc::RecordResult;
use crate::kinesis::PutEntry;
use crate::shard_map::Shard;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Keeps every result it is given.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<RecordResult>>);

impl ResultSink for Collect {
    fn deliver(&self, _tag: u64, result: RecordResult) {
        self.0.lock().unwrap().push(result);
    }
}

impl Collect {
    pub fn take(&self) -> Vec<RecordResult> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// `n` shards with ids `shardId-000000000000`... tiling the hash key space evenly.
pub fn even_shards(n: usize) -> Vec<Shard> {
    let step = u128::MAX / n as u128;
    (0..n)
        .map(|i| Shard {
            id: format!("shardId-{i:012}").into(),
            start: i as u128 * step,
            end: if i + 1 == n {
                u128::MAX
            } else {
                (i as u128 + 1) * step - 1
            },
        })
        .collect()
}

/// A user record with key `key-ID`, `len` bytes of data, arriving at `now`,
/// due at once, living `ttl`, its result going to `sink`.
pub fn record_to(
    sink: &Arc<dyn ResultSink>,
    id: u64,
    key: &str,
    len: usize,
    now: Instant,
    ttl: Duration,
) -> UserRecord {
    UserRecord {
        id,
        origin: Arc::new(Origin {
            sink: sink.clone(),
            tag: 0,
        }),
        partition_key: PartitionKey::new_checked(key.as_bytes()),
        explicit_hash_key: None,
        hash: crate::shard_map::hash_partition_key(key),
        data: Bytes::from(vec![b'x'; len]),
        detached: true,
        cost: 1,
        deadline: now,
        expiry: now + ttl,
        ready_since: now,
        attempts: Vec::new(),
        spool: 0,
    }
}

/// Records `ids` (keys `key-ID`) whose results nobody reads.
pub fn records(ids: &[u64], len: usize, now: Instant, ttl: Duration) -> Vec<UserRecord> {
    let sink: Arc<dyn ResultSink> = Arc::new(Collect::default());
    ids.iter()
        .map(|&id| record_to(&sink, id, &format!("key-{id}"), len, now, ttl))
        .collect()
}

/// A Kinesis record for shard `idx` (map generation 0) carrying `recs`.
pub fn kinesis_record(idx: usize, recs: Vec<UserRecord>) -> KinesisRecord {
    let entry = PutEntry {
        data: Bytes::from(vec![0u8; recs.iter().map(|u| u.data.len()).sum()]),
        partition_key: recs[0].partition_key.to_string_lossless(),
        explicit_hash_key: None,
    };
    let aggregated = recs.len() > 1;
    KinesisRecord::new(
        format!("shardId-{idx:012}").into(),
        idx,
        0,
        aggregated,
        entry,
        recs,
    )
}

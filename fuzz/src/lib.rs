//! Support for kpld's fuzz targets: an in-process Kinesis that answers at once.
//!
//! Two shards split at the middle of the hash key space; each entry lands in
//! the shard its explicit hash key or partition key hashes to (so the daemon
//! never sees a misrouted aggregate it did not cause), and every third call
//! throttles its odd entries, so retries and backoff run too. Deterministic:
//! a fresh fake per input gives the same answers for the same input.

use kpld::error_code::ErrorCode;
use kpld::kinesis::{ApiError, BoxFuture, EntryResult, KinesisApi, PutEntry};
use kpld::shard_map::{hash_partition_key, parse_explicit_hash_key, Shard};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct FakeKinesis {
    calls: AtomicU64,
    seq: AtomicU64,
}

const MID: u128 = u128::MAX / 2;

fn shards() -> Vec<Shard> {
    vec![
        Shard {
            id: "shardId-000000000000".into(),
            start: 0,
            end: MID,
        },
        Shard {
            id: "shardId-000000000001".into(),
            start: MID + 1,
            end: u128::MAX,
        },
    ]
}

impl KinesisApi for FakeKinesis {
    fn list_shards(&self, _stream: &str) -> BoxFuture<Result<Vec<Shard>, ApiError>> {
        Box::pin(async { Ok(shards()) })
    }

    fn put_records(
        &self,
        _stream: &str,
        entries: Vec<PutEntry>,
    ) -> BoxFuture<Result<Vec<EntryResult>, ApiError>> {
        let throttle = self.calls.fetch_add(1, Ordering::Relaxed) % 3 == 2;
        let out = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                if throttle && i % 2 == 1 {
                    return EntryResult::Err(ApiError::new(
                        ErrorCode::ProvisionedThroughputExceeded,
                        "Rate exceeded for shard (fuzz fake)",
                    ));
                }
                let hash = match &e.explicit_hash_key {
                    Some(k) => parse_explicit_hash_key(k).expect("kpld sends valid hash keys"),
                    None => hash_partition_key(&e.partition_key),
                };
                let shard = if hash <= MID { 0 } else { 1 };
                EntryResult::Ok {
                    shard_id: format!("shardId-{shard:012}"),
                    sequence_number: format!("{:056}", self.seq.fetch_add(1, Ordering::Relaxed)),
                }
            })
            .collect();
        Box::pin(async move { Ok(out) })
    }
}

//! Checking what the double accepted against the results kpld gave: every
//! success must be in the log, on the shard the result named, at the
//! sequence and sub-sequence numbers it named, with the key and data sent,
//! inside an aggregate whose records all hash into that shard.
#![allow(dead_code)]

use bytes::Bytes;
use kpld::aggregate::MAGIC;
use kpld::ipc::RecordResult;
use kpld::kpl_proto::AggregatedRecord;
use kpld::shard_map::hash_partition_key;
use kpld_kinesis_double::{AcceptedEntry, FakeKinesis};
use md5::{Digest, Md5};
use prost::Message;
use std::collections::HashMap;

/// What a test sent, by record id.
#[derive(Debug, Clone)]
pub struct Sent {
    pub stream: String,
    pub partition_key: String,
    pub data: Bytes,
}

/// One user record as found in the double's log.
#[derive(Debug, Clone)]
pub struct Found {
    pub stream: String,
    pub shard_id: String,
    pub sequence_number: String,
    pub sub: u64,
    pub partition_key: String,
    pub data: Bytes,
    pub request: u64,
    /// Every record of its Kinesis record hashes into the shard it is on
    /// (what the KCL requires; otherwise it drops the whole aggregate).
    pub readable: bool,
}

/// Test data starts with the record id and a '|'.
pub fn id_of(data: &[u8]) -> Option<u64> {
    let end = data.iter().position(|&b| b == b'|')?;
    std::str::from_utf8(&data[..end]).ok()?.parse().ok()
}

/// Deaggregates every accepted entry (checking each aggregate's MD5) and
/// marks the Kinesis records whose user records do not all hash into the
/// shard they landed on. Returns the user records by id and the number of
/// such mixed Kinesis records.
pub fn user_records(
    fake: &FakeKinesis,
    log: &[AcceptedEntry],
) -> (HashMap<u64, Vec<Found>>, usize) {
    let mut mixed = 0usize;
    let mut ranges: HashMap<(String, String), (u128, u128)> = HashMap::new();
    let mut out: HashMap<u64, Vec<Found>> = HashMap::new();
    for e in log {
        let range = *ranges
            .entry((e.stream.clone(), e.shard_id.clone()))
            .or_insert_with(|| {
                let s = fake
                    .shards(&e.stream)
                    .unwrap()
                    .into_iter()
                    .find(|s| s.shard_id == e.shard_id)
                    .unwrap();
                (s.starting_hash_key, s.ending_hash_key)
            });
        let mut recs: Vec<(u64, String, Option<String>, Bytes)> = Vec::new();
        if e.data.len() > 20 && e.data[..4] == MAGIC {
            let proto = &e.data[4..e.data.len() - 16];
            let digest: [u8; 16] = Md5::digest(proto).into();
            assert_eq!(&e.data[e.data.len() - 16..], &digest, "aggregate MD5");
            let agg = AggregatedRecord::decode(proto).expect("aggregate protobuf");
            for (i, r) in agg.records.iter().enumerate() {
                let pk = agg.partition_key_table[r.partition_key_index as usize].clone();
                let ehk = r
                    .explicit_hash_key_index
                    .map(|i| agg.explicit_hash_key_table[i as usize].clone());
                recs.push((i as u64, pk, ehk, r.data.clone()));
            }
        } else {
            recs.push((
                0,
                e.partition_key.clone(),
                e.explicit_hash_key.clone(),
                e.data.clone(),
            ));
        }
        let readable = recs.iter().all(|(_, pk, ehk, _)| {
            let h = match ehk {
                Some(k) => k.parse::<u128>().unwrap(),
                None => hash_partition_key(pk),
            };
            range.0 <= h && h <= range.1
        });
        if !readable {
            mixed += 1;
        }
        for (sub, pk, _, data) in recs {
            let id = id_of(&data).expect("test data starts with its id");
            out.entry(id).or_default().push(Found {
                stream: e.stream.clone(),
                shard_id: e.shard_id.clone(),
                sequence_number: e.sequence_number.clone(),
                sub,
                partition_key: pk,
                data,
                request: e.request,
                readable,
            });
        }
    }
    (out, mixed)
}

/// Figures of one verification.
#[derive(Debug, Default)]
pub struct Report {
    pub succeeded: usize,
    pub failed: HashMap<String, usize>,
    /// Records found more than once in the stream.
    pub duplicated: usize,
    /// Duplicated records with more copies than they had attempts whose
    /// answer was lost or that landed on the wrong shard (what can store a
    /// record without kpld knowing it): each one a defect.
    pub unexplained_duplicates: Vec<String>,
    /// Attempts beyond the first, over all records.
    pub retries: usize,
}

/// Attempt outcomes after which the record may be in the stream although
/// kpld did not count the attempt a success: the answer never came (or came
/// broken), or the record landed in a Kinesis record on a shard it does not
/// hash into and was sent again.
const COPY_WITHOUT_SUCCESS: [&str; 4] = [
    "RequestTimeout",
    "ConnectionError",
    "ResponseError",
    "WrongShard",
];

/// Checks every success against the log; returns the figures.
pub fn verify(
    sent: &HashMap<u64, Sent>,
    results: &HashMap<u64, RecordResult>,
    found: &HashMap<u64, Vec<Found>>,
) -> Report {
    assert_eq!(results.len(), sent.len(), "one result per record");
    let mut r = Report::default();
    for (id, res) in results {
        let s = &sent[id];
        r.retries += res.attempts.len().saturating_sub(1);
        if !res.success {
            *r.failed.entry(res.error_code.clone()).or_default() += 1;
            continue;
        }
        r.succeeded += 1;
        let copies = found
            .get(id)
            .unwrap_or_else(|| panic!("record {id} reported put but is not in the stream"));
        if copies.len() > 1 {
            r.duplicated += 1;
            let causes = res
                .attempts
                .iter()
                .filter(|a| !a.success && COPY_WITHOUT_SUCCESS.contains(&a.error_code.as_str()))
                .count();
            if copies.len() - 1 > causes {
                r.unexplained_duplicates.push(format!(
                    "record {id}: {} copies, attempts {:?}",
                    copies.len(),
                    res.attempts
                        .iter()
                        .map(|a| a.error_code.as_str())
                        .collect::<Vec<_>>()
                ));
            }
        }
        let hit = copies
            .iter()
            .find(|f| {
                f.shard_id == res.shard_id
                    && f.sequence_number == res.sequence_number
                    && f.sub == res.sub_sequence_number
            })
            .unwrap_or_else(|| {
                panic!("record {id}: the stream does not hold it where its result says: {res:?} vs {copies:?}")
            });
        assert!(
            hit.readable,
            "record {id}: reported put inside a Kinesis record the KCL would drop (records of two shards)"
        );
        assert_eq!(hit.stream, s.stream, "record {id}: stream");
        assert_eq!(hit.partition_key, s.partition_key, "record {id}: key");
        assert_eq!(hit.data, s.data, "record {id}: data");
    }
    r
}

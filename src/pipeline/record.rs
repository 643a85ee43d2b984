//! What flows through the pipeline: user records as accepted, Kinesis
//! records (an aggregate or one raw record) as sent, and where a record's
//! final result goes.

use crate::aggregate::Sealed;
use crate::collect::RequestSize;
use crate::ipc::{Attempt, RecordResult};
use crate::kinesis::PutEntry;
use bytes::Bytes;
use std::sync::Arc;
use tokio::time::Instant;

/// Where a record's final result goes. `tag` is the caller's, given to
/// `Producer::put`; the socket server uses it to track flushes.
pub trait ResultSink: Send + Sync + 'static {
    /// One record's result: every failure, and successes of a sink that
    /// does not override [`landed`](Self::landed).
    fn deliver(&self, tag: u64, result: RecordResult);

    /// Records of one `put` that landed together in one Kinesis record, in
    /// their order inside it. Successes come this way, one call per run of
    /// records from the same `put` in an aggregate, so that nothing per
    /// record is allocated or shared between threads on the result path.
    fn landed(&self, tag: u64, landing: &Arc<Landing>, records: Vec<Landed>) {
        for l in records {
            self.deliver(tag, l.into_result(landing));
        }
    }
}

/// Where a Kinesis record landed; shared by the user records it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    pub shard_id: Arc<str>,
    pub sequence_number: String,
    /// Milliseconds the successful PutRecords call took.
    pub duration_ms: u64,
}

/// One user record's success inside a [`Landing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub id: u64,
    /// The record's index inside its aggregate (0 when sent alone).
    pub sub_sequence_number: u64,
    /// `delay_ms` of the successful attempt.
    pub delay_ms: u64,
    /// Failed attempts before the successful one (usually none).
    pub earlier: Vec<Attempt>,
}

impl Landed {
    /// The record's result as the protocol carries it.
    pub fn into_result(self, landing: &Landing) -> RecordResult {
        let mut attempts = self.earlier;
        attempts.push(Attempt {
            success: true,
            delay_ms: self.delay_ms,
            duration_ms: landing.duration_ms,
            ..Default::default()
        });
        RecordResult {
            id: self.id,
            success: true,
            shard_id: String::from(&*landing.shard_id),
            sequence_number: landing.sequence_number.clone(),
            sub_sequence_number: self.sub_sequence_number,
            attempts,
            error_code: String::new(),
            error_message: String::new(),
            refused: false,
        }
    }
}

/// The sink and tag of one `Producer::put`, shared by its records.
pub struct Origin {
    pub sink: Arc<dyn ResultSink>,
    pub tag: u64,
}

impl Origin {
    /// Whether results for `other`'s records may be delivered together with
    /// this one's: the same sink (by address) and the same tag.
    pub fn same_destination(&self, other: &Origin) -> bool {
        let addr = |s: &Arc<dyn ResultSink>| Arc::as_ptr(s).cast::<()>();
        self.tag == other.tag && addr(&self.sink) == addr(&other.sink)
    }
}

/// A partition key checked to be 1 to 256 characters of UTF-8, in memory of
/// its own: copied out of the request frame when the record is accepted
/// (`producer::validate`), so that a record held for long (retries, a shard
/// map that does not load) does not keep its whole frame alive. Keys of up
/// to [`INLINE_KEY`] bytes (a UUID's 36 included) are kept inline, so the
/// copy costs no allocation per record (one cost 5% of the daemon's CPU
/// per small record); longer ones get one of their own.
#[derive(Debug, Clone)]
pub struct PartitionKey(KeyBytes);

/// The longest partition key kept inline in a [`PartitionKey`].
pub const INLINE_KEY: usize = 38;

#[derive(Debug, Clone)]
enum KeyBytes {
    Inline { len: u8, buf: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl PartitionKey {
    /// Copies `key`, which must be valid UTF-8 (checked by the caller).
    pub(crate) fn new_checked(key: &[u8]) -> PartitionKey {
        debug_assert!(std::str::from_utf8(key).is_ok());
        if key.len() <= INLINE_KEY {
            let mut buf = [0u8; INLINE_KEY];
            buf[..key.len()].copy_from_slice(key);
            PartitionKey(KeyBytes::Inline {
                len: key.len() as u8,
                buf,
            })
        } else {
            PartitionKey(KeyBytes::Heap(key.into()))
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            KeyBytes::Inline { len, buf } => &buf[..*len as usize],
            KeyBytes::Heap(b) => b,
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    pub(crate) fn to_string_lossless(&self) -> String {
        String::from_utf8(self.as_bytes().to_vec())
            .expect("checked to be UTF-8 when the record arrived")
    }
}

/// A record inside the pipeline.
pub struct UserRecord {
    pub(crate) id: u64,
    /// Where its result goes.
    pub(crate) origin: Arc<Origin>,
    pub(crate) partition_key: PartitionKey,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) hash: u128,
    /// A slice of the request frame it arrived in until the record is first
    /// held past the normal flow ([`detach`](Self::detach)), or its own
    /// memory (compressed data, or detached).
    pub(crate) data: Bytes,
    /// `data` is its own copy, no longer a slice of the request frame.
    pub(crate) detached: bool,
    /// Budget bytes held until the result.
    pub(crate) cost: u32,
    /// When it must be sent (arrival + record_max_buffered_time; now for retries).
    pub(crate) deadline: Instant,
    /// record_ttl_ms after arrival: no attempt starts after this.
    pub(crate) expiry: Instant,
    /// Arrival, or the end of the previous attempt: the start of `delay_ms`.
    pub(crate) ready_since: Instant,
    /// Failed attempts so far.
    pub(crate) attempts: Vec<Attempt>,
    /// Its sequence number in the spool (`durability = "disk"`) plus one, 0
    /// if none ([`spool_seq`](Self::spool_seq)): marked done there once the
    /// record is final.
    pub(crate) spool: u64,
}

impl UserRecord {
    /// Its sequence number in the spool, if it is in one.
    pub(crate) fn spool_seq(&self) -> Option<u64> {
        self.spool.checked_sub(1)
    }

    pub(crate) fn set_spool_seq(&mut self, seq: u64) {
        self.spool = seq + 1;
    }

    /// The caller's id, echoed in the result.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Copies the record's data out of the request frame it arrived in
    /// (once). `data` starts as a slice of that frame (up to
    /// `max_frame_size`), which stays alive as long as any slice of it does,
    /// while the record is charged only for its own size. Copying every
    /// record at intake would cost the hot path a copy of every byte, so the
    /// rule is: a record is detached when it is first held past its normal
    /// flow, which is when it starts to outlive the rest of its frame: when
    /// it waits out a retry's backoff ([`Retries::schedule`]), waits for a
    /// shard map, or is routed again (after a map change, or when a record
    /// it was sent with expired at the rate limit or waiting for a
    /// connection). Records in a shard's buffer, at its rate limit or in a
    /// call are not: those waits are bounded by the buffering time, the
    /// shard's rate and the call's timeout, and their frame-mates are
    /// mostly still there with them.
    ///
    /// [`Retries::schedule`]: super::retries::Retries::schedule
    pub(crate) fn detach(&mut self) {
        if !self.detached {
            self.data = Bytes::copy_from_slice(&self.data);
            self.detached = true;
        }
    }
}

/// One PutRecords entry: an aggregate or a single raw record.
pub struct KinesisRecord {
    /// The shard it was predicted for (id and index in the map), and the map
    /// generation that did it.
    pub(crate) shard_id: Arc<str>,
    pub(crate) shard_idx: usize,
    pub(crate) map_gen: u64,
    pub(crate) aggregated: bool,
    /// An aggregate's data is empty here: `sealed` holds it.
    pub(crate) entry: PutEntry,
    /// An aggregate's tables: encoding (the records' bytes copied and their
    /// MD5 trailer, a fifth of the daemon's CPU) is left to the send task
    /// ([`entry_for_send`](Self::entry_for_send)), so that it runs on every
    /// core and not on the stream's one actor. Boxed: a record sent alone
    /// has none.
    pub(crate) sealed: Option<Box<Sealed>>,
    pub(crate) records: Vec<UserRecord>,
    /// The earliest deadline and TTL expiry among `records`, kept so that
    /// the send path need not walk records that are no longer in the cache.
    pub(crate) deadline: Instant,
    pub(crate) expiry: Instant,
    /// With `ordered`: the lane (map generation, shard index) whose one
    /// entry in flight this is, held until its records are final or go
    /// back to the head of a lane (see `StreamCore`'s ordering invariant).
    pub(crate) lane: Option<(u64, usize)>,
}

impl KinesisRecord {
    pub(crate) fn new(
        shard_id: Arc<str>,
        shard_idx: usize,
        map_gen: u64,
        aggregated: bool,
        entry: PutEntry,
        records: Vec<UserRecord>,
    ) -> KinesisRecord {
        let deadline = records.iter().map(|u| u.deadline).min().expect("records");
        let expiry = records.iter().map(|u| u.expiry).min().expect("records");
        KinesisRecord {
            shard_id,
            shard_idx,
            map_gen,
            aggregated,
            entry,
            sealed: None,
            records,
            deadline,
            expiry,
            lane: None,
        }
    }

    /// An aggregate of `records`, sent under the first one's key with its
    /// hash as the explicit hash key (not the KPL's fixed "a", which defeats
    /// Lambda's per-key parallelism), so that it lands on the predicted
    /// shard; encoded for each attempt ([`entry_for_send`](Self::entry_for_send)).
    pub(crate) fn aggregate(
        shard_id: Arc<str>,
        shard_idx: usize,
        map_gen: u64,
        sealed: Sealed,
        records: Vec<UserRecord>,
    ) -> KinesisRecord {
        debug_assert_eq!(sealed.len(), records.len());
        let first = &records[0];
        let entry = PutEntry {
            data: Bytes::new(),
            partition_key: first.partition_key.to_string_lossless(),
            explicit_hash_key: Some(first.hash.to_string()),
        };
        let mut k = KinesisRecord::new(shard_id, shard_idx, map_gen, true, entry, records);
        k.sealed = Some(Box::new(sealed));
        k
    }

    /// The entry one attempt sends. An aggregate is encoded for each
    /// attempt from its sealed tables and its records' data, so that its
    /// bytes have one owner and go to the SDK without a copy, and nothing
    /// holds a second copy of its data between attempts (retries encode
    /// again: a retried aggregate's MD5 costs less than copying every
    /// aggregate's bytes once more).
    pub fn entry_for_send(&self) -> PutEntry {
        match &self.sealed {
            Some(s) => PutEntry {
                data: Bytes::from(s.encode(self.records.iter().map(|u| u.data.as_ref()))),
                partition_key: self.entry.partition_key.clone(),
                explicit_hash_key: self.entry.explicit_hash_key.clone(),
            },
            None => self.entry.clone(),
        }
    }

    /// Bytes of its data (an aggregate's once encoded).
    fn data_len(&self) -> usize {
        self.sealed
            .as_ref()
            .map_or(self.entry.data.len(), |s| s.size())
    }

    /// A record sent on its own, under its own keys.
    pub(crate) fn single(
        shard_id: Arc<str>,
        shard_idx: usize,
        map_gen: u64,
        u: UserRecord,
    ) -> KinesisRecord {
        let entry = PutEntry {
            data: u.data.clone(),
            partition_key: u.partition_key.to_string_lossless(),
            explicit_hash_key: u.explicit_hash_key.clone(),
        };
        KinesisRecord::new(shard_id, shard_idx, map_gen, false, entry, vec![u])
    }

    /// Detaches its user records ([`UserRecord::detach`]); a record sent on
    /// its own shares its data with its entry, which then shares the copy.
    /// An aggregate holds no bytes of its own between attempts.
    pub(crate) fn detach(&mut self) {
        for u in &mut self.records {
            u.detach();
        }
        if let (false, [u]) = (self.aggregated, &self.records[..]) {
            self.entry.data = u.data.clone();
        }
    }

    /// The user records it carries, in order.
    pub fn user_records(&self) -> &[UserRecord] {
        &self.records
    }

    /// When its first TTL runs out: no attempt may start after this.
    pub fn expiry(&self) -> Instant {
        self.expiry
    }
}

impl RequestSize for KinesisRecord {
    fn request_bytes(&self) -> usize {
        self.data_len() + self.entry.partition_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::{PartitionKey, INLINE_KEY};

    #[test]
    fn partition_keys_inline_and_long_read_back_the_same() {
        for n in [1, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 768] {
            let key: String = "é".repeat(n / 2) + &"k".repeat(n % 2);
            let k = PartitionKey::new_checked(key.as_bytes());
            assert_eq!(k.as_bytes(), key.as_bytes());
            assert_eq!(k.len(), key.len());
            assert_eq!(k.to_string_lossless(), key);
        }
    }
}

//! KPL aggregated record encoding (pure, no I/O).
//!
//! An aggregate is `F3 89 9A C2`, a protobuf `AggregatedRecord`
//! (proto/aggregation.proto), then the MD5 of the protobuf bytes. The
//! protobuf is written by hand: the builder tracks the exact encoded size as
//! records are added, so the caller can flush before a limit is crossed, and
//! encoding needs no intermediate message. Partition key and explicit hash
//! key tables are deduplicated and zero-indexed; the explicit hash key table
//! holds only keys the user supplied.

use hashbrown::HashTable;
use md5::{Digest, Md5};
use std::hash::BuildHasher;

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;
/// Bytes an aggregate adds around its protobuf: magic and MD5 trailer.
pub const OVERHEAD: usize = MAGIC.len() + DIGEST_LEN;

// Protobuf tags (field number << 3 | wire type 2 or 0).
const TAG_PK_TABLE: u8 = 0x0A;
const TAG_EHK_TABLE: u8 = 0x12;
const TAG_RECORD: u8 = 0x1A;
const TAG_PK_INDEX: u8 = 0x08;
const TAG_EHK_INDEX: u8 = 0x10;
const TAG_DATA: u8 = 0x1A;

pub fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits, at least 1.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn len_delimited(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn record_inner_len(pk_index: u64, ehk_index: Option<u64>, data_len: usize) -> usize {
    1 + varint_len(pk_index) + ehk_index.map_or(0, |i| 1 + varint_len(i)) + len_delimited(data_len)
}

/// What adding a record would do.
struct Plan {
    size: usize,
    entry: Entry,
    /// The hash of a key new to its table.
    pk_new: Option<u64>,
    ehk_new: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    pk_index: u64,
    ehk_index: Option<u64>,
    data_len: usize,
}

/// One key table of an aggregate: the keys back to back in `bytes` (key `i`
/// ends at `ends[i]`) and a hash index over them, so a new key costs no
/// allocation of its own (a random partition key per record, the log files'
/// default, made one per record). Looked up once or twice per record: a fast
/// non-cryptographic hash (SipHash was 2% of the daemon's CPU), seeded.
#[derive(Default)]
struct KeyTable {
    keys: Keys,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

/// Keys in index order, back to back.
#[derive(Debug, Default)]
struct Keys {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl Keys {
    fn get(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.ends.len() as u32).map(|i| self.get(i))
    }
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.keys.fmt(f)
    }
}

impl KeyTable {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.index.find(hash, |&i| self.keys.get(i) == key).copied()
    }

    /// Adds `key`, which is not in the table yet; returns its index.
    fn push(&mut self, hash: u64, key: &[u8]) -> u32 {
        let i = self.keys.len() as u32;
        self.keys.bytes.extend_from_slice(key);
        self.keys.ends.push(self.keys.bytes.len() as u32);
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(keys.get(j)));
        i
    }

    /// The keys, leaving the table empty with its room kept.
    fn take(&mut self) -> Keys {
        self.index.clear();
        let (b, e) = (self.keys.bytes.capacity(), self.keys.ends.capacity());
        std::mem::replace(
            &mut self.keys,
            Keys {
                bytes: Vec::with_capacity(b),
                ends: Vec::with_capacity(e),
            },
        )
    }

    fn clear(&mut self) {
        self.index.clear();
        self.keys.bytes.clear();
        self.keys.ends.clear();
    }
}

/// Accumulates the tables and record entries of one aggregate.
#[derive(Debug, Default)]
pub struct AggregateBuilder {
    pk: KeyTable,
    ehk: KeyTable,
    entries: Vec<Entry>,
    proto_len: usize,
}

/// Where a key would go: its index, the bytes a new table entry adds, and
/// its hash if it is new.
fn slot(table: &KeyTable, key: &[u8]) -> (u64, usize, Option<u64>) {
    let h = table.hash(key);
    match table.find(h, key) {
        Some(i) => (u64::from(i), 0, None),
        None => (table.keys.len() as u64, len_delimited(key.len()), Some(h)),
    }
}

impl AggregateBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Size of the whole aggregate (magic + protobuf + MD5) as it stands.
    pub fn size(&self) -> usize {
        self.proto_len + OVERHEAD
    }

    /// Size of the whole aggregate if this record were added.
    pub fn size_with(
        &self,
        partition_key: &[u8],
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        self.plan(partition_key, explicit_hash_key, data_len).size
    }

    fn plan(&self, pk: &[u8], ehk: Option<&str>, data_len: usize) -> Plan {
        let (pk_index, pk_added, pk_new) = slot(&self.pk, pk);
        let (ehk_index, ehk_added, ehk_new) = match ehk {
            None => (None, 0, None),
            Some(k) => {
                let (i, added, new) = slot(&self.ehk, k.as_bytes());
                (Some(i), added, new)
            }
        };
        let record = len_delimited(record_inner_len(pk_index, ehk_index, data_len));
        Plan {
            size: self.size() + pk_added + ehk_added + record,
            entry: Entry {
                pk_index,
                ehk_index,
                data_len,
            },
            pk_new,
            ehk_new,
        }
    }

    fn commit(&mut self, p: Plan, pk: &[u8], ehk: Option<&str>) {
        if let Some(h) = p.pk_new {
            self.pk.push(h, pk);
        }
        if let (Some(h), Some(k)) = (p.ehk_new, ehk) {
            self.ehk.push(h, k.as_bytes());
        }
        self.proto_len = p.size - OVERHEAD;
        self.entries.push(p.entry);
    }

    /// Adds a record's keys and data length; the data itself is given to
    /// [`encode`](Self::encode) in the same order.
    pub fn add(&mut self, partition_key: &[u8], explicit_hash_key: Option<&str>, data_len: usize) {
        let p = self.plan(partition_key, explicit_hash_key, data_len);
        self.commit(p, partition_key, explicit_hash_key);
    }

    /// Adds the record if the aggregate stays within `max_size` bytes with
    /// it; one key lookup for the check and the add.
    pub fn try_add(
        &mut self,
        partition_key: &[u8],
        explicit_hash_key: Option<&str>,
        data_len: usize,
        max_size: usize,
    ) -> bool {
        let p = self.plan(partition_key, explicit_hash_key, data_len);
        if p.size > max_size {
            return false;
        }
        self.commit(p, partition_key, explicit_hash_key);
        true
    }

    /// Writes the aggregate. `data` yields each added record's data, in the
    /// order the records were added.
    pub fn encode<'a>(&self, data: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        write(
            [&self.pk.keys, &self.ehk.keys],
            &self.entries,
            self.proto_len,
            data,
        )
    }

    /// Takes the aggregate out as it stands, to be encoded later (and
    /// elsewhere: the stream's actor seals, a send task encodes), and leaves
    /// the builder empty with its room kept. No copy of keys or data.
    pub fn seal(&mut self) -> Sealed {
        let cap = self.entries.capacity();
        let sealed = Sealed {
            tables: [self.pk.take(), self.ehk.take()],
            entries: std::mem::replace(&mut self.entries, Vec::with_capacity(cap)),
            proto_len: self.proto_len,
        };
        self.proto_len = 0;
        sealed
    }

    pub fn clear(&mut self) {
        self.pk.clear();
        self.ehk.clear();
        self.entries.clear();
        self.proto_len = 0;
    }
}

/// An aggregate's tables and entries, taken out of its builder
/// ([`AggregateBuilder::seal`]) and waiting for its records' data.
#[derive(Debug)]
pub struct Sealed {
    /// Partition keys, then explicit hash keys, each in index order.
    tables: [Keys; 2],
    entries: Vec<Entry>,
    proto_len: usize,
}

impl Sealed {
    /// Size of the whole aggregate (magic + protobuf + MD5).
    pub fn size(&self) -> usize {
        self.proto_len + OVERHEAD
    }

    /// User records in it.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the aggregate; `data` as for [`AggregateBuilder::encode`].
    pub fn encode<'a>(&self, data: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let [pk, ehk] = &self.tables;
        write([pk, ehk], &self.entries, self.proto_len, data)
    }
}

/// The aggregate's bytes: magic, protobuf (the two key tables, then one
/// record per entry with its data), MD5 of the protobuf.
fn write<'a>(
    tables: [&Keys; 2],
    entries: &[Entry],
    proto_len: usize,
    data: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(proto_len + OVERHEAD);
    out.extend_from_slice(&MAGIC);
    for (tag, table) in [TAG_PK_TABLE, TAG_EHK_TABLE].into_iter().zip(tables) {
        for k in table.iter() {
            out.push(tag);
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k);
        }
    }
    let mut data = data.into_iter();
    for e in entries {
        let d = data.next().expect("one data slice per added record");
        debug_assert_eq!(d.len(), e.data_len);
        out.push(TAG_RECORD);
        put_varint(
            &mut out,
            record_inner_len(e.pk_index, e.ehk_index, e.data_len) as u64,
        );
        out.push(TAG_PK_INDEX);
        put_varint(&mut out, e.pk_index);
        if let Some(i) = e.ehk_index {
            out.push(TAG_EHK_INDEX);
            put_varint(&mut out, i);
        }
        out.push(TAG_DATA);
        put_varint(&mut out, d.len() as u64);
        out.extend_from_slice(d);
    }
    debug_assert_eq!(out.len(), MAGIC.len() + proto_len);
    let digest: [u8; 16] = Md5::digest(&out[MAGIC.len()..]).into();
    out.extend_from_slice(&digest);
    out
}

/// Encodes records `(partition_key, explicit_hash_key, data)` as one aggregate.
pub fn encode_aggregate(records: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = AggregateBuilder::new();
    for (pk, ehk, data) in records {
        b.add(pk.as_bytes(), *ehk, data.len());
    }
    b.encode(records.iter().map(|r| r.2))
}

/// One user record read back out of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// Why bytes are not a KPL aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes are too short for an aggregate (magic and MD5 trailer are {OVERHEAD})")]
    TooShort(usize),
    #[error("the bytes do not start with the KPL magic F3 89 9A C2")]
    NoMagic,
    #[error("the MD5 trailer does not match the protobuf")]
    Digest,
    #[error("the protobuf is not an AggregatedRecord: {0}")]
    Protobuf(String),
    #[error("record {record} names {table} key {index}, past the table's {len} keys")]
    Index {
        record: usize,
        table: &'static str,
        index: u64,
        len: usize,
    },
}

/// Reads an aggregate back into its user records, as a KPL consumer does:
/// magic, MD5 trailer, protobuf, every key index within its table. The
/// inverse of [`AggregateBuilder::encode`] (used by tests, benchmarks and
/// the fuzz targets; the daemon itself only encodes).
pub fn decode(bytes: &[u8]) -> Result<Vec<DecodedRecord>, DecodeError> {
    use prost::Message;
    if bytes.len() < OVERHEAD {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::NoMagic);
    }
    let (proto, digest) = bytes[MAGIC.len()..].split_at(bytes.len() - OVERHEAD);
    if Md5::digest(proto)[..] != digest[..] {
        return Err(DecodeError::Digest);
    }
    let agg = crate::kpl_proto::AggregatedRecord::decode(proto)
        .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let key = |record: usize, table: &'static str, keys: &[String], index: u64| {
        keys.get(usize::try_from(index).unwrap_or(usize::MAX))
            .cloned()
            .ok_or(DecodeError::Index {
                record,
                table,
                index,
                len: keys.len(),
            })
    };
    agg.records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(DecodedRecord {
                partition_key: key(
                    i,
                    "partition",
                    &agg.partition_key_table,
                    r.partition_key_index,
                )?,
                explicit_hash_key: r
                    .explicit_hash_key_index
                    .map(|x| key(i, "explicit hash", &agg.explicit_hash_key_table, x))
                    .transpose()?,
                data: r.data.to_vec(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpl_proto::AggregatedRecord;
    use proptest::prelude::*;
    use prost::Message;

    fn decode(bytes: &[u8]) -> AggregatedRecord {
        assert_eq!(&bytes[..4], &MAGIC);
        let proto = &bytes[4..bytes.len() - 16];
        let digest: [u8; 16] = Md5::digest(proto).into();
        assert_eq!(&bytes[bytes.len() - 16..], &digest, "MD5 trailer");
        AggregatedRecord::decode(proto).expect("valid protobuf")
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut b = vec![];
            put_varint(&mut b, v);
            assert_eq!(b.len(), n);
        }
    }

    #[test]
    fn tables_are_deduplicated_and_ehk_table_holds_only_given_keys() {
        let bytes = encode_aggregate(&[
            ("k1", None, b"a"),
            ("k2", Some("42"), b"bb"),
            ("k1", Some("42"), b""),
        ]);
        let agg = decode(&bytes);
        assert_eq!(agg.partition_key_table, vec!["k1", "k2"]);
        assert_eq!(agg.explicit_hash_key_table, vec!["42"]);
        let r: Vec<_> = agg
            .records
            .iter()
            .map(|r| {
                (
                    r.partition_key_index,
                    r.explicit_hash_key_index,
                    r.data.to_vec(),
                )
            })
            .collect();
        assert_eq!(
            r,
            vec![
                (0, None, b"a".to_vec()),
                (1, Some(0), b"bb".to_vec()),
                (0, Some(0), vec![]),
            ]
        );
    }

    #[test]
    fn decode_reads_back_what_encode_wrote_and_refuses_damage() {
        let bytes = encode_aggregate(&[("k1", None, b"a"), ("k2", Some("42"), b"bb")]);
        let rec = |pk: &str, ehk: Option<&str>, data: &[u8]| DecodedRecord {
            partition_key: pk.into(),
            explicit_hash_key: ehk.map(String::from),
            data: data.to_vec(),
        };
        assert_eq!(
            super::decode(&bytes),
            Ok(vec![rec("k1", None, b"a"), rec("k2", Some("42"), b"bb")])
        );
        assert_eq!(super::decode(&bytes[..19]), Err(DecodeError::TooShort(19)));
        let mut bad = bytes.clone();
        bad[0] = 0;
        assert_eq!(super::decode(&bad), Err(DecodeError::NoMagic));
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(super::decode(&bad), Err(DecodeError::Digest));
        // A record naming a partition key the table does not have.
        let proto = [0x1A, 0x05, 0x08, 0x03, 0x1A, 0x01, b'x'];
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&proto);
        bad.extend_from_slice(&Md5::digest(proto));
        assert!(matches!(
            super::decode(&bad),
            Err(DecodeError::Index {
                record: 0,
                index: 3,
                len: 0,
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn size_prediction_is_exact_and_round_trips(
            recs in proptest::collection::vec(
                ("[a-z]{1,3}", proptest::option::of("[0-9]{1,39}"), proptest::collection::vec(any::<u8>(), 0..300)),
                1..60)
        ) {
            let mut b = AggregateBuilder::new();
            for (pk, ehk, data) in &recs {
                let predicted = b.size_with(pk.as_bytes(), ehk.as_deref(), data.len());
                // try_add refuses exactly what would cross its limit.
                prop_assert!(!b.try_add(pk.as_bytes(), ehk.as_deref(), data.len(), predicted - 1));
                prop_assert!(b.try_add(pk.as_bytes(), ehk.as_deref(), data.len(), predicted));
                prop_assert_eq!(b.size(), predicted);
            }
            let bytes = b.encode(recs.iter().map(|r| r.2.as_slice()));
            prop_assert_eq!(bytes.len(), b.size());
            // Sealed and encoded later: the same bytes, and the builder is
            // left empty for the next aggregate.
            let sealed = b.seal();
            prop_assert_eq!(sealed.size(), bytes.len());
            prop_assert_eq!(sealed.len(), recs.len());
            prop_assert_eq!(&sealed.encode(recs.iter().map(|r| r.2.as_slice())), &bytes);
            prop_assert!(b.is_empty());
            prop_assert_eq!(b.size(), OVERHEAD);
            prop_assert_eq!(b.size_with(recs[0].0.as_bytes(), None, 0), OVERHEAD + len_delimited(recs[0].0.len()) + len_delimited(record_inner_len(0, None, 0)));
            let agg = decode(&bytes);
            prop_assert_eq!(agg.records.len(), recs.len());
            for (r, (pk, ehk, data)) in agg.records.iter().zip(&recs) {
                prop_assert_eq!(&agg.partition_key_table[r.partition_key_index as usize], pk);
                prop_assert_eq!(
                    r.explicit_hash_key_index.map(|i| agg.explicit_hash_key_table[i as usize].clone()),
                    ehk.clone()
                );
                prop_assert_eq!(r.data.as_ref(), data.as_slice());
            }
        }
    }
}

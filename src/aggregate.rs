//! KPL aggregated record encoding (pure, no I/O).
//!
//! An aggregate is `F3 89 9A C2`, a protobuf `AggregatedRecord`
//! (proto/aggregation.proto), then the MD5 of the protobuf bytes. The
//! protobuf is written by hand: the builder tracks the exact encoded size as
//! records are added, so the caller can flush before a limit is crossed, and
//! encoding needs no intermediate message. Partition key and explicit hash
//! key tables are deduplicated and zero-indexed; the explicit hash key table
//! holds only keys the user supplied.

use md5::{Digest, Md5};
use std::collections::HashMap;

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
    pk_new: bool,
    ehk_new: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    pk_index: u64,
    ehk_index: Option<u64>,
    data_len: usize,
}

/// Key lookups run once or twice per record: a fast non-cryptographic hash
/// (SipHash was 2% of the daemon's CPU).
type KeyIndex = HashMap<Box<[u8]>, u64, foldhash::fast::RandomState>;

/// Accumulates the tables and record entries of one aggregate.
#[derive(Debug, Default)]
pub struct AggregateBuilder {
    /// Partition key -> its index in the table (the table is the keys in
    /// index order).
    pk_index: KeyIndex,
    ehk_index: KeyIndex,
    entries: Vec<Entry>,
    proto_len: usize,
}

/// Where a key would go: its index, and the bytes a new table entry adds.
fn slot(index: &KeyIndex, key: &[u8]) -> (u64, usize, bool) {
    match index.get(key) {
        Some(&i) => (i, 0, false),
        None => (index.len() as u64, len_delimited(key.len()), true),
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
        let (pk_index, pk_added, pk_new) = slot(&self.pk_index, pk);
        let (ehk_index, ehk_added, ehk_new) = match ehk {
            None => (None, 0, false),
            Some(k) => {
                let (i, added, new) = slot(&self.ehk_index, k.as_bytes());
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
        if p.pk_new {
            self.pk_index.insert(pk.into(), p.entry.pk_index);
        }
        if let (true, Some(k)) = (p.ehk_new, ehk) {
            self.ehk_index
                .insert(k.as_bytes().into(), p.entry.ehk_index.unwrap_or(0));
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
        let mut out = Vec::with_capacity(self.size());
        out.extend_from_slice(&MAGIC);
        for (tag, index) in [
            (TAG_PK_TABLE, &self.pk_index),
            (TAG_EHK_TABLE, &self.ehk_index),
        ] {
            let mut table: Vec<&[u8]> = vec![&[]; index.len()];
            for (k, &i) in index {
                table[i as usize] = k;
            }
            for k in table {
                out.push(tag);
                put_varint(&mut out, k.len() as u64);
                out.extend_from_slice(k);
            }
        }
        let mut data = data.into_iter();
        for e in &self.entries {
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
        debug_assert_eq!(out.len(), MAGIC.len() + self.proto_len);
        let digest: [u8; 16] = Md5::digest(&out[MAGIC.len()..]).into();
        out.extend_from_slice(&digest);
        out
    }

    pub fn clear(&mut self) {
        self.pk_index.clear();
        self.ehk_index.clear();
        self.entries.clear();
        self.proto_len = 0;
    }
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

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

#[derive(Debug, Clone, Copy)]
struct Entry {
    pk_index: u64,
    ehk_index: Option<u64>,
    data_len: usize,
}

/// Accumulates the tables and record entries of one aggregate.
#[derive(Debug, Default)]
pub struct AggregateBuilder {
    pk_index: HashMap<String, u64>,
    pk_table: Vec<String>,
    ehk_index: HashMap<String, u64>,
    ehk_table: Vec<String>,
    entries: Vec<Entry>,
    proto_len: usize,
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
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        let (pk_index, pk_added) = match self.pk_index.get(partition_key) {
            Some(&i) => (i, 0),
            None => (
                self.pk_table.len() as u64,
                len_delimited(partition_key.len()),
            ),
        };
        let (ehk_index, ehk_added) = match explicit_hash_key {
            None => (None, 0),
            Some(k) => match self.ehk_index.get(k) {
                Some(&i) => (Some(i), 0),
                None => (Some(self.ehk_table.len() as u64), len_delimited(k.len())),
            },
        };
        self.size()
            + pk_added
            + ehk_added
            + len_delimited(record_inner_len(pk_index, ehk_index, data_len))
    }

    /// Adds a record's keys and data length; the data itself is given to
    /// [`encode`](Self::encode) in the same order.
    pub fn add(&mut self, partition_key: &str, explicit_hash_key: Option<&str>, data_len: usize) {
        let pk_index = match self.pk_index.get(partition_key) {
            Some(&i) => i,
            None => {
                let i = self.pk_table.len() as u64;
                self.pk_index.insert(partition_key.to_owned(), i);
                self.pk_table.push(partition_key.to_owned());
                self.proto_len += len_delimited(partition_key.len());
                i
            }
        };
        let ehk_index = explicit_hash_key.map(|k| match self.ehk_index.get(k) {
            Some(&i) => i,
            None => {
                let i = self.ehk_table.len() as u64;
                self.ehk_index.insert(k.to_owned(), i);
                self.ehk_table.push(k.to_owned());
                self.proto_len += len_delimited(k.len());
                i
            }
        });
        self.proto_len += len_delimited(record_inner_len(pk_index, ehk_index, data_len));
        self.entries.push(Entry {
            pk_index,
            ehk_index,
            data_len,
        });
    }

    /// Writes the aggregate. `data` yields each added record's data, in the
    /// order the records were added.
    pub fn encode<'a>(&self, data: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        out.extend_from_slice(&MAGIC);
        for k in &self.pk_table {
            out.push(TAG_PK_TABLE);
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k.as_bytes());
        }
        for k in &self.ehk_table {
            out.push(TAG_EHK_TABLE);
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k.as_bytes());
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
        self.pk_table.clear();
        self.ehk_index.clear();
        self.ehk_table.clear();
        self.entries.clear();
        self.proto_len = 0;
    }
}

/// Encodes records `(partition_key, explicit_hash_key, data)` as one aggregate.
pub fn encode_aggregate(records: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut b = AggregateBuilder::new();
    for (pk, ehk, data) in records {
        b.add(pk, *ehk, data.len());
    }
    b.encode(records.iter().map(|r| r.2))
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

    proptest! {
        #[test]
        fn size_prediction_is_exact_and_round_trips(
            recs in proptest::collection::vec(
                ("[a-z]{1,3}", proptest::option::of("[0-9]{1,39}"), proptest::collection::vec(any::<u8>(), 0..300)),
                1..60)
        ) {
            let mut b = AggregateBuilder::new();
            for (pk, ehk, data) in &recs {
                let predicted = b.size_with(pk, ehk.as_deref(), data.len());
                b.add(pk, ehk.as_deref(), data.len());
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

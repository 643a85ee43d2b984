//! The KPL aggregate encoder and decoder (`kpld::aggregate`).
//!
//! Input: a first byte choosing the mode, then the mode's bytes.
//! - even: records (below) added to an `AggregateBuilder`; each add's size
//!   prediction must be exact, `try_add` must refuse exactly what would cross
//!   its limit, and the encoding must decode back to the same records.
//! - odd: the bytes go to `aggregate::decode` as they are (a corrupted or
//!   hostile aggregate): it must not panic, and what it accepts must encode
//!   and decode back to itself.
//!
//! A record: a length byte and that many bytes of partition key (lossy
//! UTF-8), a byte whose low bit says an explicit hash key follows (length
//! byte and bytes), then two length bytes (big-endian, at most 4095) and
//! that much data. Records are read until the input ends.
#![no_main]

use kpld::aggregate::{decode, AggregateBuilder, DecodedRecord};
use libfuzzer_sys::fuzz_target;

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (a, b) = data.split_at(n);
    *data = b;
    a
}

fn byte(data: &mut &[u8]) -> Option<u8> {
    take(data, 1).first().copied()
}

fn records(mut data: &[u8]) -> Vec<DecodedRecord> {
    let mut out = Vec::new();
    while let Some(pk_len) = byte(&mut data) {
        let partition_key = String::from_utf8_lossy(take(&mut data, pk_len as usize)).into_owned();
        let explicit_hash_key = match byte(&mut data) {
            Some(b) if b & 1 == 1 => {
                let n = byte(&mut data).unwrap_or(0) as usize;
                Some(String::from_utf8_lossy(take(&mut data, n)).into_owned())
            }
            _ => None,
        };
        let hi = byte(&mut data).unwrap_or(0) as usize;
        let lo = byte(&mut data).unwrap_or(0) as usize;
        let data_len = ((hi << 8) | lo) & 0x0FFF;
        out.push(DecodedRecord {
            partition_key,
            explicit_hash_key,
            data: take(&mut data, data_len).to_vec(),
        });
    }
    out
}

fn encode(recs: &[DecodedRecord]) -> Vec<u8> {
    let mut b = AggregateBuilder::new();
    for r in recs {
        let (pk, ehk) = (r.partition_key.as_bytes(), r.explicit_hash_key.as_deref());
        let predicted = b.size_with(pk, ehk, r.data.len());
        assert!(
            predicted > b.size(),
            "adding a record must grow the aggregate"
        );
        assert!(
            !b.try_add(pk, ehk, r.data.len(), predicted - 1),
            "try_add took a record past its limit"
        );
        assert!(
            b.try_add(pk, ehk, r.data.len(), predicted),
            "try_add refused a fit"
        );
        assert_eq!(b.size(), predicted, "size after add differs from size_with");
    }
    assert_eq!(b.len(), recs.len());
    let bytes = b.encode(recs.iter().map(|r| r.data.as_slice()));
    assert_eq!(bytes.len(), b.size(), "encoded length differs from size()");
    bytes
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let recs = records(rest);
        if recs.is_empty() {
            return;
        }
        let bytes = encode(&recs);
        assert_eq!(decode(&bytes).expect("own encoding decodes"), recs);
    } else if let Ok(recs) = decode(rest) {
        if recs.is_empty() {
            return;
        }
        let again = encode(&recs);
        assert_eq!(decode(&again).expect("re-encoding decodes"), recs);
    }
});

//! One spooled entry's bytes: encoding, checked decoding and the resynchronising
//! scan used by recovery. Pure: no I/O. The byte layout is drawn in `spool/mod.rs`.

use super::{Entry, EntryRef};

/// Bytes before the body: crc32 (4) and body length (4).
pub const HEAD_BYTES: usize = 8;
/// Fixed part of the body: seq, arrival, compression, flags, four lengths.
pub const FIXED_BODY_BYTES: usize = 28;
/// The smallest possible entry (every variable field empty).
pub const MIN_ENTRY_BYTES: usize = HEAD_BYTES + FIXED_BODY_BYTES;

/// Limits per field; a Kinesis record is at most 1 MiB of data and a 256-character key,
/// and kpld's compression may make data a little larger, hence the slack.
pub const MAX_STREAM_BYTES: usize = 256;
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_EXPLICIT_HASH_KEY_BYTES: usize = 64;
pub const MAX_DATA_BYTES: usize = 2 << 20;
pub const MAX_BODY_BYTES: usize = FIXED_BODY_BYTES
    + MAX_STREAM_BYTES
    + MAX_KEY_BYTES
    + MAX_EXPLICIT_HASH_KEY_BYTES
    + MAX_DATA_BYTES;

const FLAG_EXPLICIT_HASH_KEY: u8 = 1;
const MAX_COMPRESSION: u8 = 3;

/// Why an entry could not be taken: which field is over its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTooLong {
    pub field: &'static str,
    pub len: usize,
    pub max: usize,
}

/// The encoded size of `e`, or which field is over its limit.
pub fn encoded_len(e: &EntryRef<'_>) -> Result<usize, FieldTooLong> {
    let ehk = e.explicit_hash_key.map_or(0, <[u8]>::len);
    check("stream", e.stream.len(), MAX_STREAM_BYTES)?;
    check("partition_key", e.partition_key.len(), MAX_KEY_BYTES)?;
    check("explicit_hash_key", ehk, MAX_EXPLICIT_HASH_KEY_BYTES)?;
    check("data", e.data.len(), MAX_DATA_BYTES)?;
    if e.compression > MAX_COMPRESSION {
        return Err(FieldTooLong {
            field: "compression",
            len: e.compression as usize,
            max: MAX_COMPRESSION as usize,
        });
    }
    Ok(MIN_ENTRY_BYTES + e.stream.len() + e.partition_key.len() + ehk + e.data.len())
}

fn check(field: &'static str, len: usize, max: usize) -> Result<(), FieldTooLong> {
    if len > max {
        Err(FieldTooLong { field, len, max })
    } else {
        Ok(())
    }
}

/// Appends the encoding of `e` with sequence number `seq` to `out`. The caller has
/// checked the limits with [`encoded_len`]; `out` should have room reserved so that
/// no record causes an allocation.
pub fn encode(out: &mut Vec<u8>, seq: u64, e: &EntryRef<'_>) {
    let start = out.len();
    let ehk = e.explicit_hash_key.unwrap_or(&[]);
    let body_len =
        FIXED_BODY_BYTES + e.stream.len() + e.partition_key.len() + ehk.len() + e.data.len();
    // The fixed part in one copy: on the hot path, a dozen small copies
    // each cost a call into memmove.
    let mut fixed = [0u8; HEAD_BYTES + FIXED_BODY_BYTES];
    fixed[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
    fixed[8..16].copy_from_slice(&seq.to_le_bytes());
    fixed[16..24].copy_from_slice(&e.arrival_unix_ms.to_le_bytes());
    fixed[24] = e.compression;
    fixed[25] = if e.explicit_hash_key.is_some() {
        FLAG_EXPLICIT_HASH_KEY
    } else {
        0
    };
    fixed[26..28].copy_from_slice(&(e.stream.len() as u16).to_le_bytes());
    fixed[28..30].copy_from_slice(&(e.partition_key.len() as u16).to_le_bytes());
    fixed[30..32].copy_from_slice(&(ehk.len() as u16).to_le_bytes());
    fixed[32..36].copy_from_slice(&(e.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(e.stream.as_bytes());
    out.extend_from_slice(e.partition_key);
    out.extend_from_slice(ehk);
    out.extend_from_slice(e.data);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded entry that borrows the segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub seq: u64,
    pub arrival_unix_ms: u64,
    pub compression: u8,
    pub stream: &'a [u8],
    pub partition_key: &'a [u8],
    pub explicit_hash_key: Option<&'a [u8]>,
    pub data: &'a [u8],
    /// Bytes the entry takes, head included.
    pub len: usize,
}

impl Decoded<'_> {
    /// An owned copy; `None` if the stream name is not UTF-8 (a checksum-valid entry
    /// always has the name it was written with, so this means a bug, not bad disk).
    pub fn to_owned_entry(self) -> Option<Entry> {
        Some(Entry {
            seq: self.seq,
            stream: std::str::from_utf8(self.stream).ok()?.to_owned(),
            partition_key: self.partition_key.to_vec(),
            explicit_hash_key: self.explicit_hash_key.map(<[u8]>::to_vec),
            data: self.data.to_vec(),
            compression: self.compression,
            arrival_unix_ms: self.arrival_unix_ms,
        })
    }
}

/// Why the bytes at an offset are not an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Fewer bytes remain than the entry needs: what a write cut short by a crash leaves.
    Truncated,
    /// The bytes are all there but do not form an entry (checksum, length or field).
    Invalid(&'static str),
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the entry at the start of `b`, checking its length, checksum and fields.
pub fn decode(b: &[u8]) -> Result<Decoded<'_>, Bad> {
    if b.len() < HEAD_BYTES {
        return Err(Bad::Truncated);
    }
    let body_len = u32_at(b, 4);
    if !(FIXED_BODY_BYTES..=MAX_BODY_BYTES).contains(&body_len) {
        return Err(Bad::Invalid("body length out of range"));
    }
    let len = HEAD_BYTES + body_len;
    if b.len() < len {
        return Err(Bad::Truncated);
    }
    let crc = u32_at(b, 0) as u32;
    if crc32fast::hash(&b[4..len]) != crc {
        return Err(Bad::Invalid("checksum mismatch"));
    }
    let body = &b[HEAD_BYTES..len];
    let compression = body[16];
    let flags = body[17];
    let (sl, kl, hl, dl) = (
        u16_at(body, 18),
        u16_at(body, 20),
        u16_at(body, 22),
        u32_at(body, 24),
    );
    if compression > MAX_COMPRESSION {
        return Err(Bad::Invalid("unknown compression"));
    }
    if flags & !FLAG_EXPLICIT_HASH_KEY != 0 || (flags == 0 && hl != 0) {
        return Err(Bad::Invalid("unknown flags"));
    }
    if FIXED_BODY_BYTES + sl + kl + hl + dl != body_len {
        return Err(Bad::Invalid(
            "field lengths do not add up to the body length",
        ));
    }
    let mut at = FIXED_BODY_BYTES;
    let mut take = |n: usize| {
        let s = &body[at..at + n];
        at += n;
        s
    };
    let stream = take(sl);
    let partition_key = take(kl);
    let ehk = take(hl);
    let data = take(dl);
    Ok(Decoded {
        seq: u64_at(body, 0),
        arrival_unix_ms: u64_at(body, 8),
        compression,
        stream,
        partition_key,
        explicit_hash_key: (flags & FLAG_EXPLICIT_HASH_KEY != 0).then_some(ehk),
        data,
        len,
    })
}

/// The first offset at or after `from` where a valid entry with a sequence number of
/// at least `min_seq` starts. Recovery uses it to resynchronise after a bad spot: the
/// checksum makes a false match about a 2^-32 chance per plausible offset, and the
/// sequence floor rules out stale bytes.
pub fn resync(b: &[u8], from: usize, min_seq: u64) -> Option<usize> {
    let mut at = from;
    while at + MIN_ENTRY_BYTES <= b.len() {
        // Cheap test first: most offsets fail on the length field.
        let body_len = u32_at(b, at + 4);
        if (FIXED_BODY_BYTES..=MAX_BODY_BYTES).contains(&body_len)
            && at + HEAD_BYTES + body_len <= b.len()
        {
            if let Ok(d) = decode(&b[at..]) {
                if d.seq >= min_seq {
                    return Some(at);
                }
            }
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample<'a>(data: &'a [u8], ehk: Option<&'a [u8]>) -> EntryRef<'a> {
        EntryRef {
            stream: "orders",
            partition_key: b"customer-17",
            explicit_hash_key: ehk,
            data,
            compression: 2,
            arrival_unix_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn encoded_entry_decodes_to_every_field_it_was_given() {
        let e = sample(b"hello", Some(b"12345"));
        let mut buf = Vec::new();
        encode(&mut buf, 42, &e);
        assert_eq!(buf.len(), encoded_len(&e).unwrap());
        let d = decode(&buf).unwrap();
        assert_eq!(d.seq, 42);
        assert_eq!(d.stream, b"orders");
        assert_eq!(d.partition_key, b"customer-17");
        assert_eq!(d.explicit_hash_key, Some(&b"12345"[..]));
        assert_eq!(d.data, b"hello");
        assert_eq!(d.compression, 2);
        assert_eq!(d.arrival_unix_ms, 1_700_000_000_123);
        assert_eq!(d.len, buf.len());
    }

    #[test]
    fn an_empty_explicit_hash_key_stays_apart_from_none() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, &sample(b"x", Some(b"")));
        assert_eq!(decode(&buf).unwrap().explicit_hash_key, Some(&b""[..]));
        buf.clear();
        encode(&mut buf, 1, &sample(b"x", None));
        assert_eq!(decode(&buf).unwrap().explicit_hash_key, None);
    }

    #[test]
    fn every_prefix_of_an_entry_is_truncated_not_invalid() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, &sample(b"some data", None));
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Err(Bad::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, &sample(b"some data", Some(b"9")));
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip of bit {bit} at {i} accepted");
            }
        }
    }

    #[test]
    fn oversized_field_is_named() {
        let big = vec![0u8; MAX_DATA_BYTES + 1];
        let err = encoded_len(&sample(&big, None)).unwrap_err();
        assert_eq!(err.field, "data");
        let key = vec![0u8; MAX_KEY_BYTES + 1];
        let e = EntryRef {
            partition_key: &key,
            ..sample(b"", None)
        };
        assert_eq!(encoded_len(&e).unwrap_err().field, "partition_key");
    }

    #[test]
    fn resync_skips_garbage_and_finds_the_next_entry() {
        let mut buf = vec![0xAB; 37];
        let at = buf.len();
        encode(&mut buf, 9, &sample(b"after the garbage", None));
        assert_eq!(resync(&buf, 0, 0), Some(at));
        assert_eq!(
            resync(&buf, 0, 10),
            None,
            "a seq below the floor is not taken"
        );
        assert_eq!(resync(&buf, at + 1, 0), None);
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(
            seq in any::<u64>(),
            arrival in any::<u64>(),
            compression in 0u8..=3,
            stream in "[a-zA-Z0-9_.-]{0,128}",
            key in proptest::collection::vec(any::<u8>(), 0..300),
            ehk in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            data in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let e = EntryRef {
                stream: &stream,
                partition_key: &key,
                explicit_hash_key: ehk.as_deref(),
                data: &data,
                compression,
                arrival_unix_ms: arrival,
            };
            let mut buf = vec![1, 2, 3];
            encode(&mut buf, seq, &e);
            let d = decode(&buf[3..]).unwrap();
            prop_assert_eq!(d.len, encoded_len(&e).unwrap());
            let owned = d.to_owned_entry().unwrap();
            prop_assert_eq!(owned, Entry {
                seq,
                stream: stream.clone(),
                partition_key: key.clone(),
                explicit_hash_key: ehk.clone(),
                data: data.clone(),
                compression,
                arrival_unix_ms: arrival,
            });
        }
    }
}

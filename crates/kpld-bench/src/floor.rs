//! The floor: what one user record must cost at least in any KPL-style
//! producer, measured alone on one thread: the MD5 of its partition key
//! (shard prediction) and its encoding into a KPL aggregate (including the
//! aggregate's MD5 trailer, shared by the records in it). The daemon's CPU
//! per record is compared against this.

use kpld::aggregate::AggregateBuilder;
use kpld::shard_map::hash_partition_key;
use std::hint::black_box;
use std::time::Instant;

pub struct Floor {
    /// MD5 of the partition key, per record.
    pub md5_ns: f64,
    /// Aggregate encoding (tables, entries, trailer), per record.
    pub aggregate_ns: f64,
    /// Both, in one loop: the floor.
    pub floor_ns: f64,
    /// User records per aggregate at these settings.
    pub records_per_aggregate: f64,
}

/// Rounds of each measurement; the fastest counts (the others met noise).
const ROUNDS: usize = 5;

/// Nanoseconds per item of the fastest of [`ROUNDS`] runs of `f`, which
/// handles `n` items per run.
fn fastest_ns_per_item(n: usize, f: &mut dyn FnMut() -> u64) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Runs each loop [`ROUNDS`] times over `n` records and keeps the fastest
/// round (the least disturbed by other work on the machine).
pub fn measure(keys: &[Vec<u8>], record_size: usize, agg_max: usize, n: usize) -> Floor {
    let keys: Vec<&str> = keys
        .iter()
        .map(|k| std::str::from_utf8(k).expect("generated keys are ASCII"))
        .collect();
    let data = vec![0x5au8; record_size];
    let best = |f: &mut dyn FnMut() -> u64| fastest_ns_per_item(n, f);
    let md5_ns = best(&mut || {
        let mut acc = 0u128;
        for i in 0..n {
            acc ^= hash_partition_key(black_box(keys[i % keys.len()]));
        }
        acc as u64
    });
    let mut aggregates = 0u64;
    let encode = |with_md5: bool, aggregates: &mut u64| {
        let mut b = AggregateBuilder::new();
        let mut acc = 0u64;
        for i in 0..n {
            let k = keys[i % keys.len()];
            if with_md5 {
                acc ^= hash_partition_key(black_box(k)) as u64;
            }
            if !b.try_add(k.as_bytes(), None, data.len(), agg_max) {
                let out = b.encode(std::iter::repeat_n(data.as_slice(), b.len()));
                acc ^= out.len() as u64;
                b.clear();
                *aggregates += 1;
                b.add(k.as_bytes(), None, data.len());
            }
        }
        if !b.is_empty() {
            acc ^= b
                .encode(std::iter::repeat_n(data.as_slice(), b.len()))
                .len() as u64;
            *aggregates += 1;
        }
        acc
    };
    let aggregate_ns = best(&mut || encode(false, &mut aggregates));
    let records_per_aggregate = n as f64 * ROUNDS as f64 / aggregates as f64;
    let floor_ns = best(&mut || encode(true, &mut 0));
    Floor {
        md5_ns,
        aggregate_ns,
        floor_ns,
        records_per_aggregate,
    }
}

/// What compressing one record costs, alone on one thread.
pub struct CompressionFloor {
    /// A fresh encoder per record, as the daemon does (`kpld::compress`).
    pub fresh_ns: f64,
    /// One deflate state reused (reset) for every record, same output
    /// format (gzip: header, raw deflate, CRC-32 and length written here).
    pub reused_ns: f64,
    /// Compressed bytes over original bytes, each record alone.
    pub ratio: f64,
    /// The same, compressing 51,200-byte runs of records as one stream
    /// (what compressing whole aggregates would give; for comparison only).
    pub ratio_whole_aggregates: f64,
}

/// Compresses `n` records taken in turn from `payloads`, fastest of 5
/// rounds, once with a fresh encoder per record and once with a reused one.
pub fn measure_compression(
    payloads: &[Vec<u8>],
    how: kpld::config::Compression,
    level: u32,
    n: usize,
) -> CompressionFloor {
    use flate2::{Compress, FlushCompress};
    use kpld::config::Compression;
    let best = |f: &mut dyn FnMut() -> u64| fastest_ns_per_item(n, f);
    let mut fresh_bytes = 0u64;
    let fresh_ns = best(&mut || {
        let mut total = 0u64;
        for i in 0..n {
            let p = &payloads[i % payloads.len()];
            total += kpld::compress::compress(black_box(p), how, level).map_or(p.len(), |c| c.len())
                as u64;
        }
        fresh_bytes = total;
        total
    });
    let mut state = Compress::new(flate2::Compression::new(level), how == Compression::Zlib);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let reused_ns = best(&mut || {
        let mut total = 0u64;
        for i in 0..n {
            let p = black_box(&payloads[i % payloads.len()]);
            out.clear();
            out.reserve(p.len() + 64);
            if how == Compression::Gzip {
                out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
            }
            state.reset();
            let _ = state.compress_vec(p, &mut out, FlushCompress::Finish);
            if how == Compression::Gzip {
                let mut crc = flate2::Crc::new();
                crc.update(p);
                out.extend_from_slice(&crc.sum().to_le_bytes());
                out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            }
            total += out.len() as u64;
        }
        total
    });
    let orig: u64 = (0..n)
        .map(|i| payloads[i % payloads.len()].len() as u64)
        .sum();
    let mut chunk: Vec<u8> = Vec::with_capacity(51_200 + 1024);
    let (mut whole_in, mut whole_out) = (0u64, 0u64);
    for p in payloads.iter().take(n) {
        if chunk.len() + p.len() > 51_200 {
            whole_in += chunk.len() as u64;
            whole_out += kpld::compress::compress(&chunk, how, level).map_or(0, |c| c.len()) as u64;
            chunk.clear();
        }
        chunk.extend_from_slice(p);
    }
    CompressionFloor {
        fresh_ns,
        reused_ns,
        ratio: fresh_bytes as f64 / orig.max(1) as f64,
        ratio_whole_aggregates: whole_out as f64 / whole_in.max(1) as f64,
    }
}

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

/// Runs each loop `rounds` times over `n` records and keeps the fastest
/// round (the least disturbed by other work on the machine).
pub fn measure(keys: &[Vec<u8>], record_size: usize, agg_max: usize, n: usize) -> Floor {
    let keys: Vec<&str> = keys
        .iter()
        .map(|k| std::str::from_utf8(k).expect("generated keys are ASCII"))
        .collect();
    let data = vec![0x5au8; record_size];
    let rounds = 5;
    let best = |f: &mut dyn FnMut() -> u64| {
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed().as_nanos() as f64 / n as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
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
            if !b.is_empty() && b.size_with(k, None, data.len()) > agg_max {
                let out = b.encode(std::iter::repeat_n(data.as_slice(), b.len()));
                acc ^= out.len() as u64;
                b.clear();
                *aggregates += 1;
            }
            b.add(k, None, data.len());
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
    let records_per_aggregate = n as f64 * rounds as f64 / aggregates as f64;
    let floor_ns = best(&mut || encode(true, &mut 0));
    Floor {
        md5_ns,
        aggregate_ns,
        floor_ns,
        records_per_aggregate,
    }
}

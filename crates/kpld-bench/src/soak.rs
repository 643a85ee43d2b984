//! Soak runs (`--sample-every`, `--check-landed`): the daemon's RSS and CPU
//! per record sampled at a fixed interval, a table of the samples and a
//! verdict on whether both stayed flat, and the check that every success a
//! result reports is a record the double accepted (nothing lost).
//!
//! Loss is checked by position, not by content: a success names its shard,
//! sequence number and sub-sequence number; the double's log says, for each
//! accepted Kinesis record, how many user records it holds (a KPL aggregate
//! is decoded with `kpld::aggregate::decode`, anything else holds one). A
//! success is lost when its Kinesis record is not in the log or holds fewer
//! user records than its sub-sequence number says. The results side keeps
//! one entry per Kinesis record, not per user record, so a 30-minute run
//! needs little memory; the log is read incrementally, once per sample.

use kpld_kinesis_double::FakeKinesis;
use std::collections::HashMap;
use std::time::Duration;

/// The Kinesis record a success names: `shard_id/sequence_number`.
pub fn landing_key(shard_id: &[u8], sequence_number: &[u8]) -> Box<[u8]> {
    let mut k = Vec::with_capacity(shard_id.len() + 1 + sequence_number.len());
    k.extend_from_slice(shard_id);
    k.push(b'/');
    k.extend_from_slice(sequence_number);
    k.into_boxed_slice()
}

/// What the results claim about one Kinesis record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Successes naming it.
    pub results: u64,
    /// Their largest sub-sequence number.
    pub max_sub: u64,
}

impl Claim {
    pub fn add(&mut self, sub: u64) {
        self.results += 1;
        self.max_sub = self.max_sub.max(sub);
    }

    pub fn merge(&mut self, o: Claim) {
        self.results += o.results;
        self.max_sub = self.max_sub.max(o.max_sub);
    }
}

/// The double's log, read as it grows: user records per Kinesis record.
#[derive(Default)]
pub struct LogIndex {
    read: usize,
    records: HashMap<Box<[u8]>, u64>,
    /// User records in all the Kinesis records read (duplicates included).
    pub user_records: u64,
}

impl LogIndex {
    /// Reads the entries the double logged since the last call.
    pub fn absorb(&mut self, fake: &FakeKinesis) {
        let new = fake.log_since(self.read);
        self.read += new.len();
        for e in new {
            self.add(e.shard_id.as_bytes(), e.sequence_number.as_bytes(), &e.data);
        }
    }

    pub fn add(&mut self, shard_id: &[u8], sequence_number: &[u8], data: &[u8]) {
        let n = if data.starts_with(&kpld::aggregate::MAGIC) {
            // A lone record that only looks like an aggregate holds one.
            kpld::aggregate::decode(data).map_or(1, |r| r.len() as u64)
        } else {
            1
        };
        self.user_records += n;
        self.records
            .insert(landing_key(shard_id, sequence_number), n);
    }

    pub fn kinesis_records(&self) -> usize {
        self.read
    }

    /// Successes whose Kinesis record the double does not hold, or holds
    /// with fewer user records than they say (all the successes naming such
    /// a record count: which of them is wrong cannot be told).
    pub fn lost(&self, claims: &HashMap<Box<[u8]>, Claim>) -> u64 {
        claims
            .iter()
            .map(|(k, c)| match self.records.get(k) {
                Some(&n) if c.max_sub < n && c.results <= n => 0,
                _ => c.results,
            })
            .sum()
    }
}

/// One sample of the daemon, at `t` since the start of sending.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t: Duration,
    /// Results received so far.
    pub acked: u64,
    pub rss_kib: u64,
    pub cpu: Duration,
    /// CPU time of the whole machine so far (busy jiffies), and of this
    /// process (generator and double): what is left is other work.
    pub machine_busy: Duration,
    pub own_cpu: Duration,
}

/// One row of the table: the interval that ends at a sample.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub t_s: f64,
    pub acked: u64,
    pub per_s: f64,
    pub rss_mib: f64,
    pub cpu_us_per_record: f64,
    /// Cores used by everything but kpld and kpld-bench in the interval.
    pub other_cores: f64,
}

pub fn rows(samples: &[Sample]) -> Vec<Row> {
    samples
        .windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let n = b.acked - a.acked;
            let dt = (b.t - a.t).as_secs_f64().max(1e-9);
            Row {
                t_s: b.t.as_secs_f64(),
                acked: n,
                per_s: n as f64 / dt,
                rss_mib: b.rss_kib as f64 / 1024.0,
                cpu_us_per_record: (b.cpu - a.cpu).as_secs_f64() * 1e6 / n.max(1) as f64,
                other_cores: ((b.machine_busy.saturating_sub(a.machine_busy)).as_secs_f64()
                    - (b.cpu.saturating_sub(a.cpu)).as_secs_f64()
                    - (b.own_cpu.saturating_sub(a.own_cpu)).as_secs_f64())
                .max(0.0)
                    / dt,
            }
        })
        .collect()
}

/// Largest deviation from the median, as a fraction of the median.
pub fn spread(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = v[v.len() / 2];
    if median <= 0.0 {
        return None;
    }
    Some(
        v.iter()
            .map(|x| (x - median).abs() / median)
            .fold(0.0, f64::max),
    )
}

/// Prints the table and the flatness figures; true when both RSS and CPU
/// per record stay within `tolerance` of their median after `warmup`.
pub fn report(samples: &[Sample], warmup: Duration, tolerance: f64) -> bool {
    let rows = rows(samples);
    println!("# soak samples (interval ending at t; CPU and results in the interval):");
    println!("#   t_s  results  results/s  rss_mib  cpu_us/record  other_cores");
    for r in &rows {
        println!(
            "# {:>5.0}  {:>7}  {:>9.0}  {:>7.1}  {:>13.2}  {:>11.2}{}",
            r.t_s,
            r.acked,
            r.per_s,
            r.rss_mib,
            r.cpu_us_per_record,
            r.other_cores,
            if r.t_s <= warmup.as_secs_f64() {
                "  (warm-up)"
            } else {
                ""
            }
        );
    }
    let after: Vec<&Row> = rows
        .iter()
        .filter(|r| r.t_s > warmup.as_secs_f64() && r.acked > 0)
        .collect();
    let rss = spread(&after.iter().map(|r| r.rss_mib).collect::<Vec<_>>());
    let cpu = spread(
        &after
            .iter()
            .map(|r| r.cpu_us_per_record)
            .collect::<Vec<_>>(),
    );
    let show = |s: Option<f64>| s.map_or("n/a".into(), |s| format!("{:.1}%", s * 100.0));
    println!("soak_samples_after_warmup: {}", after.len());
    println!(
        "soak_rss_spread: {} (largest deviation from the median)",
        show(rss)
    );
    println!("soak_cpu_per_record_spread: {}", show(cpu));
    let flat = after.len() >= 2
        && rss.is_some_and(|s| s <= tolerance)
        && cpu.is_some_and(|s| s <= tolerance);
    println!(
        "soak_flat: {} (within {:.0}% after {:.0} s of warm-up)",
        if flat { "yes" } else { "no" },
        tolerance * 100.0,
        warmup.as_secs_f64()
    );
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_largest_deviation_from_the_median() {
        assert_eq!(spread(&[10.0, 10.0, 10.0]), Some(0.0));
        let s = spread(&[9.0, 10.0, 12.0]).unwrap();
        assert!((s - 0.2).abs() < 1e-9, "{s}");
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn rows_are_per_interval() {
        let s = |t: u64, acked: u64, cpu_ms: u64| Sample {
            t: Duration::from_secs(t),
            acked,
            rss_kib: 2048,
            cpu: Duration::from_millis(cpu_ms),
            machine_busy: Duration::from_millis(1000 * t),
            own_cpu: Duration::ZERO,
        };
        let r = rows(&[s(0, 0, 0), s(2, 1000, 10), s(4, 3000, 30)]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].acked, 2000);
        assert!((r[1].per_s - 1000.0).abs() < 1e-9);
        assert!((r[1].cpu_us_per_record - 10.0).abs() < 1e-9);
        assert!((r[1].rss_mib - 2.0).abs() < 1e-9);
        // 2 s of machine time in 2 s, 20 ms of it kpld's: 0.99 cores of other work.
        assert!(
            (r[1].other_cores - 0.99).abs() < 1e-9,
            "{}",
            r[1].other_cores
        );
    }

    #[test]
    fn a_success_the_log_does_not_hold_is_lost() {
        let mut log = LogIndex::default();
        let agg = kpld::aggregate::encode_aggregate(&[("a", None, b"1"), ("b", None, b"2")]);
        log.add(b"s0", b"1", &agg);
        log.add(b"s1", b"2", b"plain");
        assert_eq!(log.user_records, 3);
        let mut claims: HashMap<Box<[u8]>, Claim> = HashMap::new();
        claims.entry(landing_key(b"s0", b"1")).or_default().add(0);
        claims.entry(landing_key(b"s0", b"1")).or_default().add(1);
        claims.entry(landing_key(b"s1", b"2")).or_default().add(0);
        assert_eq!(log.lost(&claims), 0);
        // Sub-sequence 2 of a two-record aggregate, and a record never logged.
        claims.entry(landing_key(b"s0", b"1")).or_default().add(2);
        claims.entry(landing_key(b"s1", b"3")).or_default().add(0);
        assert_eq!(log.lost(&claims), 3 + 1);
    }
}

//! `kpld-bench`: measures the real `kpld` daemon end to end.
//!
//! It starts the Kinesis double (count-only, or enforcing the service's
//! shard limits), starts `kpld` with a generated config, drives it over N
//! socket connections from a load generator that allocates nothing per
//! record, waits for every result, and prints one `name: value` line per
//! figure (see BENCHMARKS.md for what each means and how they were made).
//!
//! ```text
//! kpld-bench [OPTIONS]            one measured run (the default)
//! kpld-bench floor [OPTIONS]      MD5 of the key + KPL aggregate encoding, alone
//! kpld-bench serve-fake [OPTIONS] the double as a process, for other producers
//! kpld-bench sample-payload       print records of a payload (e.g. json-log)
//! ```
//!
//! # Layout
//! - `wire`: PutRequest frames written by hand, Results frames scanned in place.
//! - `load`: one task per connection: pacing, reading, latency, duplicates.
//! - `daemon`: config file, start, readiness, SIGTERM.
//! - `procfs`: CPU time and memory from /proc.
//! - `payload`: what the records carry (fixed pattern or JSON log lines).
//! - `floor`: the per-record floor.
//! - `serve`: `serve-fake`.
//! - `soak`: samples of RSS and CPU per record over a long run, and the
//!   check that no success is missing from the double's log.
//!
//! A soak run is a run with faults, samples and the loss check, e.g. (the
//! command of BENCHMARKS.md, "Soak"):
//!
//! ```text
//! kpld-bench --limits --faults soak --check-landed --sample-every 60 \
//!     --warmup 120 --duration 1800 --rate R --shards 2
//! ```
//!
//! Exit status: 0 when every record sent got exactly one result, all of
//! them succeeded and none is missing from the double's log
//! (`--check-landed`); 1 otherwise (the reason is printed); 2 on bad usage.

mod daemon;
mod files;
mod floor;
mod kpl;
mod load;
mod payload;
mod procfs;
mod serve;
mod soak;
mod wire;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kpld_kinesis_double::{Counters, FakeKinesis, FaultPlan};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One PUT payload unit: 25 KB of a Kinesis record (data + partition key).
const PUT_PAYLOAD_UNIT: u64 = 25 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Parser, Debug)]
#[command(
    name = "kpld-bench",
    version,
    about = "Benchmark the kpld daemon end to end against the Kinesis double",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Measure the floor alone: MD5 of the partition key plus encoding the
    /// record into a KPL aggregate, in ns per record.
    Floor(FloorArgs),
    /// Run the Kinesis double as a process of its own and print its endpoint.
    ServeFake(serve::ServeArgs),
    /// Print records of a payload, one per line, and its size statistics.
    SamplePayload(SampleArgs),
    /// kpld in KPL mode, driven as the Java KPL drives its native process.
    Kpl(kpl::KplArgs),
    /// kpld shipping log files, beside the socket path for the same lines.
    Files(files::FilesArgs),
}

#[derive(Args, Debug, Clone)]
struct SampleArgs {
    #[arg(long, value_enum, default_value_t = Payload::JsonLog)]
    payload: Payload,
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 10_000)]
    payload_pool: usize,
    /// Records printed (the first of the pool).
    #[arg(long, default_value_t = 5)]
    count: usize,
}

/// The records a run or the floor is made of (every subcommand that makes
/// records but `sample-payload`, whose default payload differs).
#[derive(Args, Debug, Clone)]
struct PayloadArgs {
    /// Bytes of data per user record (`--payload fixed`).
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// What the records carry.
    #[arg(long, value_enum, default_value_t = Payload::Fixed)]
    payload: Payload,
    /// Seed of the generated payload (`--payload json-log`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct records generated for `--payload json-log`, used in turn.
    #[arg(long, default_value_t = 10_000)]
    payload_pool: usize,
}

impl PayloadArgs {
    fn generate(&self) -> Vec<Vec<u8>> {
        generate_payloads(self.payload, self.record_size, self.payload_pool, self.seed)
    }
}

fn generate_payloads(kind: Payload, record_size: usize, pool: usize, seed: u64) -> Vec<Vec<u8>> {
    match kind {
        Payload::Fixed => payload::fixed(record_size),
        Payload::JsonLog => payload::json_log(pool, seed),
    }
}

#[derive(Args, Debug, Clone)]
struct FloorArgs {
    #[command(flatten)]
    data: PayloadArgs,
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// aggregation_max_size of the aggregates built.
    #[arg(long, default_value_t = 51_200)]
    aggregation_max_size: usize,
    /// Records per measured round (5 rounds, the fastest is kept).
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Also measure compressing each record (a fresh encoder per record, as
    /// the daemon does, and one reused deflate state).
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    #[arg(long, value_name = "N", default_value_t = 6)]
    compression_level: u32,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// What the records carry.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Payload {
    /// `--record-size` bytes of a fixed pattern, the same in every record.
    Fixed,
    /// Realistic structured log lines (JSON, 200-1000 bytes, varying fields),
    /// deterministic from `--seed`; `--record-size` is ignored.
    JsonLog,
}

/// Faults the double injects.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Faults {
    None,
    /// 30% of entries throttled, 1% of requests answered HTTP 500 and 1%
    /// HTTP 503, 0.5% of connections reset, 0.5% of answers dropped after
    /// the entries were accepted (the fault that makes duplicates).
    Soak,
}

impl Faults {
    fn plan(self) -> FaultPlan {
        match self {
            Faults::None => FaultPlan::none(),
            Faults::Soak => FaultPlan {
                throttle: 0.30,
                http_500: 0.01,
                http_503: 0.01,
                reset: 0.005,
                drop_response: 0.005,
                ..FaultPlan::default()
            },
        }
    }
}

/// The daemon's `compression` setting.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum CompressionArg {
    None,
    Gzip,
    Zlib,
}

impl CompressionArg {
    fn name(self) -> &'static str {
        match self {
            CompressionArg::None => "none",
            CompressionArg::Gzip => "gzip",
            CompressionArg::Zlib => "zlib",
        }
    }

    fn daemon(self) -> kpld::config::Compression {
        match self {
            CompressionArg::None => kpld::config::Compression::None,
            CompressionArg::Gzip => kpld::config::Compression::Gzip,
            CompressionArg::Zlib => kpld::config::Compression::Zlib,
        }
    }
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// The kpld binary. Default: `kpld` next to this program.
    #[arg(long, value_name = "PATH")]
    kpld: Option<PathBuf>,
    /// Run kpld under this command, e.g. "valgrind --tool=callgrind".
    #[arg(long, value_name = "CMD")]
    kpld_prefix: Option<String>,
    /// Use this Kinesis endpoint (e.g. a `serve-fake`) instead of starting a
    /// double; the stream must exist there. Kinesis figures then come from
    /// the daemon's own counters.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    #[arg(long, default_value = "bench")]
    stream: String,
    #[command(flatten)]
    data: PayloadArgs,
    /// The daemon's `compression` setting (default: the daemon's, none).
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    /// The daemon's `compression_level` (0-9; default: the daemon's, 6).
    #[arg(long, value_name = "N")]
    compression_level: Option<u32>,
    /// Distinct partition keys (20 characters each), used in turn.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Shards of the stream in the double.
    #[arg(long, default_value_t = 16)]
    shards: usize,
    /// Socket connections to the daemon.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Records per PutRequest frame (at most; paced runs use smaller frames
    /// so that one goes out about every `--frame-interval-ms` per connection).
    #[arg(long, default_value_t = 256)]
    batch: u64,
    /// Paced runs (`--rate`): milliseconds between one connection's frames.
    /// Longer intervals mean more records per frame and fewer wake-ups of
    /// the daemon per record, as an application that batches would send.
    #[arg(long, default_value_t = 1.0)]
    frame_interval_ms: f64,
    /// Offered rate in user records/s over all connections; 0: as fast as
    /// the daemon takes them (its backpressure sets the pace).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds of sending (ignored with --records).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Send exactly this many records in all, then stop.
    #[arg(long)]
    records: Option<u64>,
    /// KPL aggregation in the daemon.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    aggregation: OnOff,
    /// Passed to the daemon as `metrics_level` when this kpld knows that key.
    /// Default "none": kpld's own default (detailed) uploads to CloudWatch
    /// at exit, which is not on loopback; "summary" and "detailed" measure
    /// what collecting the metrics costs (their uploads then fail).
    #[arg(long, default_value = "none")]
    metrics_level: Option<String>,
    /// The double enforces the service's shard limits (1000 records/s and
    /// 1 MiB/s per shard, 1 s burst); kpld keeps its rate_limit default.
    #[arg(long)]
    limits: bool,
    /// The double keeps its accepted-entry log (exact PUT payload units;
    /// memory grows with the data sent). Implied by --limits.
    #[arg(long)]
    keep_log: bool,
    /// record_max_buffered_time_ms of the daemon.
    #[arg(long, default_value_t = 100)]
    buffered_ms: u64,
    /// kpld's rate_limit (percent of the shard limits). Default: kpld's own
    /// (150) with --limits, else 100000 (the count-only double has no limits
    /// for kpld to respect).
    #[arg(long)]
    rate_limit: Option<u64>,
    /// Any other config line, KEY=VALUE (VALUE in TOML; bare words are quoted).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Seconds excluded from the start of the steady-state figures.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    gen_threads: usize,
    /// Worker threads of the double's runtime.
    #[arg(long, default_value_t = 2)]
    fake_threads: usize,
    /// The double answers every PutRecords this many milliseconds late
    /// (entries accepted at once): a service whose calls take time, so
    /// that `max_connections` (`--set max_connections=N`) bounds what
    /// kpld can send. 0: at once.
    #[arg(long, default_value_t = 0)]
    put_latency_ms: u64,
    /// Seconds to wait for the remaining results once sending has ended.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Skip the floor measurement.
    #[arg(long)]
    no_floor: bool,
    /// Keep the scratch directory (config, socket, daemon log).
    #[arg(long)]
    keep: bool,
    /// Faults the double injects (not with --endpoint).
    #[arg(long, value_enum, default_value_t = Faults::None)]
    faults: Faults,
    /// Sample the daemon's RSS and CPU every SECONDS while sending; prints a
    /// table and whether both stayed flat after --warmup (a soak run). 0: off.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    sample_every: f64,
    /// Largest deviation from the median, after --warmup, that is flat.
    #[arg(long, default_value_t = 0.10)]
    flat_tolerance: f64,
    /// Exit 1 when the samples are not flat (default: report it only).
    #[arg(long)]
    require_flat: bool,
    /// Check every success against the double's log (implies --keep-log;
    /// not with --endpoint): a success whose Kinesis record the double does
    /// not hold is lost, and a loss fails the run.
    #[arg(long)]
    check_landed: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Some(Cmd::Floor(a)) => {
            floor_cmd(&a);
            Ok(0)
        }
        Some(Cmd::SamplePayload(a)) => {
            let pool = generate_payloads(a.payload, a.record_size, a.payload_pool, a.seed);
            for p in pool.iter().take(a.count) {
                println!("{}", String::from_utf8_lossy(p));
            }
            let mut sizes: Vec<usize> = pool.iter().map(Vec::len).collect();
            sizes.sort_unstable();
            let q = |f: f64| sizes[((sizes.len() - 1) as f64 * f) as usize];
            println!(
                "# {} records: mean {:.1} bytes, min {}, p10 {}, median {}, p90 {}, max {}",
                sizes.len(),
                mean_len(&pool),
                q(0.0),
                q(0.1),
                q(0.5),
                q(0.9),
                q(1.0)
            );
            Ok(0)
        }
        Some(Cmd::ServeFake(a)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve::serve(a)))
            .map(|()| 0),
        Some(Cmd::Kpl(a)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(kpl::run(a))),
        Some(Cmd::Files(a)) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(files::run(a))),
        None => run_cmd(cli.run),
    };
    match code {
        Ok(c) => std::process::ExitCode::from(c),
        Err(e) => {
            eprintln!("kpld-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn make_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n.max(1))
        .map(|i| format!("partition-key-{i:06}").into_bytes())
        .collect()
}

fn floor_cmd(a: &FloorArgs) {
    let payloads = a.data.generate();
    let size = mean_len(&payloads).round() as usize;
    let f = floor::measure(&make_keys(a.keys), size, a.aggregation_max_size, a.records);
    println!(
        "# floor: {size}-byte records{}, {} keys, aggregates of at most {} bytes, one thread",
        if a.data.payload == Payload::JsonLog {
            " (the mean of the json-log payload)"
        } else {
            ""
        },
        a.keys,
        a.aggregation_max_size
    );
    print_floor(&f);
    if let Some(how) = a.compression.filter(|c| *c != CompressionArg::None) {
        let c = floor::measure_compression(&payloads, how.daemon(), a.compression_level, a.records);
        println!(
            "# compression: {} level {}, each record alone, {} payload",
            how.name(),
            a.compression_level,
            match a.data.payload {
                Payload::Fixed => "fixed",
                Payload::JsonLog => "json-log",
            }
        );
        println!("compress_fresh_encoder_ns_per_record: {:.1}", c.fresh_ns);
        println!("compress_reused_state_ns_per_record: {:.1}", c.reused_ns);
        println!("compress_ratio: {:.3}", c.ratio);
        println!(
            "compress_ratio_whole_aggregates: {:.3} (51,200-byte runs of records compressed as one; for comparison)",
            c.ratio_whole_aggregates
        );
    }
}

fn print_floor(f: &floor::Floor) {
    println!("floor_md5_key_ns_per_record: {:.1}", f.md5_ns);
    println!("floor_aggregate_ns_per_record: {:.1}", f.aggregate_ns);
    println!("floor_ns_per_record: {:.1}", f.floor_ns);
    println!(
        "floor_records_per_aggregate: {:.1}",
        f.records_per_aggregate
    );
}

/// The daemon's config lines, `key -> TOML value`.
fn daemon_config(a: &RunArgs, endpoint: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut c = BTreeMap::new();
    let q = |s: &str| format!("{s:?}");
    c.insert("region".into(), q("us-east-1"));
    c.insert("kinesis_endpoint".into(), q(endpoint));
    c.insert(
        "aggregation_enabled".into(),
        (a.aggregation == OnOff::On).to_string(),
    );
    c.insert(
        "record_max_buffered_time_ms".into(),
        a.buffered_ms.to_string(),
    );
    let rate_limit = a.rate_limit.unwrap_or(if a.limits || a.endpoint.is_some() {
        150
    } else {
        100_000
    });
    c.insert("rate_limit".into(), rate_limit.to_string());
    c.insert("log_level".into(), q("warn"));
    // The benchmark talks to loopback only: no CloudWatch upload. With
    // --metrics-level the metrics are computed and written as EMF lines to
    // /dev/null instead (EMF replaces the upload), so their cost is measured.
    c.insert("metrics_level".into(), q("none"));
    if a.metrics_level.as_deref().is_some_and(|l| l != "none") {
        c.insert("metrics_emf_path".into(), q("/dev/null"));
    }
    if let Some(comp) = a.compression {
        c.insert("compression".into(), q(comp.name()));
    }
    if let Some(level) = a.compression_level {
        c.insert("compression_level".into(), level.to_string());
    }
    for kv in &a.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {kv:?}: expected KEY=VALUE"))?;
        let v = v.trim();
        let is_toml = format!("x = {v}").parse::<toml::Table>().is_ok();
        c.insert(k.trim().into(), if is_toml { v.into() } else { q(v) });
    }
    Ok(c)
}

fn config_text(c: &BTreeMap<String, String>) -> String {
    c.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

fn run_cmd(a: RunArgs) -> anyhow::Result<u8> {
    if a.frame_interval_ms <= 0.0 || !a.frame_interval_ms.is_finite() {
        anyhow::bail!("--frame-interval-ms must be a positive number of milliseconds");
    }
    if a.connections == 0 || a.batch == 0 || a.data.record_size > 1 << 20 {
        anyhow::bail!("--connections and --batch must be at least 1, --record-size at most 1 MiB");
    }
    if a.endpoint.is_some() && (a.check_landed || a.faults != Faults::None) {
        anyhow::bail!(
            "--check-landed and --faults need the benchmark's own double (no --endpoint)"
        );
    }
    if !(a.sample_every >= 0.0 && a.sample_every.is_finite()) {
        anyhow::bail!("--sample-every must be a number of seconds, 0 for none");
    }
    let kpld = daemon::kpld_binary(a.kpld.as_deref())?;
    let keys = make_keys(a.keys);
    let payloads = a.data.generate();
    let mean = mean_len(&payloads);
    let fl = (!a.no_floor).then(|| floor::measure(&keys, mean.round() as usize, 51_200, 300_000));
    let rt = if a.gen_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.gen_threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(a, kpld, keys, payloads, fl))
}

fn mean_len(v: &[Vec<u8>]) -> f64 {
    v.iter().map(Vec::len).sum::<usize>() as f64 / v.len().max(1) as f64
}

/// One line describing the records, and what compressing each of them
/// alone (as the daemon does) gives, measured here on the pool.
fn describe_payload(a: &RunArgs, payloads: &[Vec<u8>]) -> Vec<String> {
    let mut lines = Vec::new();
    let (min, max) = payloads.iter().fold((usize::MAX, 0), |(lo, hi), p| {
        (lo.min(p.len()), hi.max(p.len()))
    });
    lines.push(match a.data.payload {
        Payload::Fixed => format!("payload: fixed, {} bytes", a.data.record_size),
        Payload::JsonLog => format!(
            "payload: json-log, {} distinct records (seed {}), {min}..{max} bytes",
            payloads.len(),
            a.data.seed
        ),
    });
    lines.push(format!(
        "payload_mean_record_bytes: {:.1}",
        mean_len(payloads)
    ));
    let how = a.compression.unwrap_or(CompressionArg::None);
    let level = a.compression_level.unwrap_or(6);
    lines.push(format!(
        "compression: {}{}",
        how.name(),
        if how == CompressionArg::None {
            String::new()
        } else {
            format!(" level {level} (daemon config)")
        }
    ));
    if how != CompressionArg::None {
        let sizes: Vec<usize> = payloads
            .iter()
            .map(|p| kpld::compress::compress(p, how.daemon(), level).map_or(p.len(), |c| c.len()))
            .collect();
        let total: usize = sizes.iter().sum();
        let orig: usize = payloads.iter().map(Vec::len).sum();
        lines.push(format!(
            "payload_compressed_mean_bytes: {:.1} ({:.3} of the original, each record alone)",
            total as f64 / sizes.len().max(1) as f64,
            total as f64 / orig.max(1) as f64
        ));
    }
    lines
}

struct Snapshot {
    at: Instant,
    daemon_cpu: Duration,
    gen_cpu: Duration,
    double_cpu: Duration,
    machine: (u64, u64),
    double: Option<Counters>,
}

fn snapshot(pid: u32, tck: u64, fake: Option<&FakeKinesis>) -> Snapshot {
    let (gen_cpu, double_cpu) = procfs::own_threads_cpu(tck);
    Snapshot {
        at: Instant::now(),
        daemon_cpu: procfs::process_cpu(pid, tck).unwrap_or_default(),
        gen_cpu,
        double_cpu,
        machine: procfs::machine_jiffies(),
        double: fake.map(FakeKinesis::counters),
    }
}

async fn run(
    a: RunArgs,
    kpld: PathBuf,
    keys: Vec<Vec<u8>>,
    payloads: Vec<Vec<u8>>,
    fl: Option<floor::Floor>,
) -> anyhow::Result<u8> {
    let tck = procfs::clock_ticks();
    let fake = match &a.endpoint {
        Some(_) => None,
        None => Some(
            FakeKinesis::start({
                let o = serve::options(
                    &a.stream,
                    a.shards,
                    a.limits,
                    a.keep_log || a.check_landed,
                    a.fake_threads,
                );
                let mut plan = a.faults.plan();
                if a.put_latency_ms > 0 {
                    plan.slow = 1.0;
                    plan.slow_delay = Duration::from_millis(a.put_latency_ms);
                }
                o.faults(plan)
            })
            .await,
        ),
    };
    let endpoint = a
        .endpoint
        .clone()
        .unwrap_or_else(|| fake.as_ref().expect("started").endpoint());
    let dir = daemon::scratch_dir()?;
    let mut cfg = daemon_config(&a, &endpoint)?;
    let mut notes: Vec<String> = Vec::new();
    if let Some(level) = &a.metrics_level {
        cfg.insert("metrics_level".into(), format!("{level:?}"));
        if let Err(e) = daemon::check_config(&kpld, &dir, &config_text(&cfg)) {
            cfg.remove("metrics_level");
            notes.push(format!(
                "metrics_level {level:?} not accepted by this kpld, run without it: {}",
                e.lines().next().unwrap_or("")
            ));
        }
    }
    let prefix: Vec<String> = a
        .kpld_prefix
        .as_deref()
        .map(|p| p.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let mut d = daemon::Daemon::start(&kpld, &prefix, dir, &config_text(&cfg), a.keep)?;
    let start_timeout = Duration::from_secs(if prefix.is_empty() { 30 } else { 300 });
    d.wait_ready(start_timeout)
        .await
        .map_err(anyhow::Error::msg)?;

    let mut socks = Vec::with_capacity(a.connections);
    let mut max_frame_size = u64::MAX;
    for _ in 0..a.connections {
        let (sock, max_frame) = load::connect(&d.socket).await?;
        max_frame_size = max_frame;
        socks.push(sock);
    }
    // Let start-up work settle before reading the idle footprint.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = procfs::status_kib(d.pid, "VmRSS");

    let stream: Arc<[u8]> = a.stream.as_bytes().into();
    let keys = Arc::new(keys);
    let payload_lines = describe_payload(&a, &payloads);
    let payloads = Arc::new(payloads);
    let conns = a.connections as u64;
    let rate_per_conn = (a.rate > 0.0).then(|| a.rate / conns as f64);
    // Paced: about one frame per `--frame-interval-ms` per connection.
    let batch = match rate_per_conn {
        Some(r) => ((r * a.frame_interval_ms / 1000.0).ceil() as u64).clamp(1, a.batch),
        None => a.batch,
    };
    // A frame must fit the daemon's max_frame_size (record framing and
    // the key add well under 200 bytes per record).
    let largest = payloads.iter().map(|p| p.len()).max().unwrap_or(0) as u64 + 200;
    let batch = batch.min((max_frame_size / largest).max(1));
    let before = snapshot(d.pid, tck, fake.as_ref());
    let epoch = before.at;
    let send_until = epoch + Duration::from_secs_f64(a.duration);
    let progress = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, s) in socks.into_iter().enumerate() {
        let i = i as u64;
        let records = a.records.map(|n| n / conns + u64::from(i < n % conns));
        let spec = load::LoadSpec {
            stream: stream.clone(),
            keys: keys.clone(),
            payloads: payloads.clone(),
            batch,
            records,
            send_until,
            rate: rate_per_conn,
            key_offset: i * 7919,
            epoch,
            drain_timeout: Duration::from_secs_f64(a.timeout),
            progress: Some(progress.clone()),
            check_landed: a.check_landed,
        };
        tasks.push(tokio::spawn(load::drive(s, spec)));
    }
    // The double's counters over the steady window (after --warmup, before
    // the end of sending), for the shard figures.
    let mut window = None;
    let from = epoch + Duration::from_secs_f64(a.warmup);
    let mut samples = Vec::new();
    let mut landed = soak::LogIndex::default();
    if a.sample_every > 0.0 {
        let every = Duration::from_secs_f64(a.sample_every);
        let sample = || {
            let (gen, double) = procfs::own_threads_cpu(tck);
            soak::Sample {
                t: epoch.elapsed(),
                acked: progress.load(Ordering::Relaxed),
                rss_kib: procfs::status_kib(d.pid, "VmRSS").unwrap_or(0),
                cpu: procfs::process_cpu(d.pid, tck).unwrap_or_default(),
                machine_busy: Duration::from_secs_f64(
                    procfs::machine_jiffies().0 as f64 / tck as f64,
                ),
                own_cpu: gen + double,
            }
        };
        samples.push(sample());
        let mut next = epoch + every;
        while next <= send_until && !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep_until(next.into()).await;
            let s = sample();
            samples.push(s);
            if let (true, Some(f)) = (a.check_landed, &fake) {
                // Read as it grows, so the end has little left to read.
                landed.absorb(f);
            }
            eprintln!(
                "[soak] t={:.0}s results={} rss={:.1}MiB",
                s.t.as_secs_f64(),
                s.acked,
                s.rss_kib as f64 / 1024.0
            );
            next += every;
        }
    } else if let Some(f) = fake
        .as_ref()
        .filter(|_| a.records.is_none() && from < send_until)
    {
        tokio::time::sleep_until(from.into()).await;
        let c0 = f.counters();
        tokio::time::sleep_until(send_until.into()).await;
        window = Some((
            c0,
            f.counters(),
            send_until.duration_since(from).as_secs_f64(),
        ));
    }
    let mut rep = load::ConnReport::new();
    rep.flush_answered = true;
    for t in tasks {
        rep.merge(t.await?);
    }
    let lost = match (&fake, a.check_landed) {
        (Some(f), true) => {
            landed.absorb(f);
            Some(landed.lost(&rep.claims))
        }
        _ => None,
    };
    let after = snapshot(d.pid, tck, fake.as_ref());
    let peak_rss = procfs::status_kib(d.pid, "VmHWM");
    let after_rss = procfs::status_kib(d.pid, "VmRSS");
    let stats = daemon_stats(&d.socket).await;
    let exit = d.stop(Duration::from_secs(60)).await;

    // ---- figures ----
    let end = rep.last_result.unwrap_or(after.at);
    let secs = end.saturating_duration_since(epoch).as_secs_f64().max(1e-9);
    let ok = rep.ok as f64;
    println!(
        "# kpld-bench {}: {} records, {} keys, {} shards, {} connections, frames of {} records, rate {}, {}, aggregation {}, double {}",
        env!("CARGO_PKG_VERSION"),
        match a.data.payload {
            Payload::Fixed => format!("{}-byte", a.data.record_size),
            Payload::JsonLog => "JSON log".into(),
        },
        a.keys,
        a.shards,
        a.connections,
        batch,
        if a.rate > 0.0 { format!("{} records/s", a.rate) } else { "max".into() },
        match a.records {
            Some(n) => format!("{n} records"),
            None => format!("{} s", a.duration),
        },
        if a.aggregation == OnOff::On { "on" } else { "off" },
        match (&a.endpoint, a.limits, a.keep_log) {
            (Some(e), _, _) => format!("external ({e})"),
            (None, true, _) => "with shard limits".into(),
            (None, false, true) => "no limits, log kept".into(),
            (None, false, false) => "count-only".into(),
        }
    );
    println!(
        "# machine: {} CPUs ({}), {:.1} GiB; daemon config: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        procfs::cpu_model(),
        procfs::status_kib_meminfo().unwrap_or(0) as f64 / MIB,
        config_text(&cfg).trim().replace('\n', "; ")
    );
    if let Some(p) = &a.kpld_prefix {
        notes.push(format!(
            "kpld ran under `{p}`: its CPU and memory figures are not kpld's alone"
        ));
    }
    if a.faults != Faults::None {
        println!("# faults: {:?}", a.faults.plan());
    }
    for n in &notes {
        println!("# note: {n}");
    }
    for l in &payload_lines {
        println!("{l}");
    }
    println!("records_sent: {}", rep.sent);
    println!("records_acknowledged: {}", rep.acknowledged());
    println!("records_succeeded: {}", rep.ok);
    println!("records_failed: {}", rep.failed);
    for (code, n) in &rep.errors {
        println!("records_failed_{code}: {n}");
    }
    if rep.unexpected > 0 {
        println!("results_unexpected: {}", rep.unexpected);
    }
    println!("elapsed_s: {secs:.3}");
    println!("throughput_records_per_s: {:.0}", ok / secs);
    println!("user_bytes_acknowledged: {}", rep.ok_bytes);
    println!(
        "throughput_user_mb_per_s: {:.2}",
        rep.ok_bytes as f64 / secs / 1e6
    );
    let steady = steady_rate(&rep, epoch, a.warmup);
    match steady {
        Some(r) => println!("throughput_steady_records_per_s: {r:.0}"),
        None => println!("throughput_steady_records_per_s: n/a (run too short after --warmup)"),
    }
    let dcpu = after.daemon_cpu.saturating_sub(before.daemon_cpu);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / ok.max(1.0);
    println!("daemon_cpu_s: {:.2}", dcpu.as_secs_f64());
    println!("daemon_cpu_us_per_record: {:.3}", per(dcpu));
    if let Some(f) = &fl {
        print_floor(f);
        println!(
            "daemon_cpu_vs_floor: {:.1}x",
            per(dcpu) * 1000.0 / f.floor_ns
        );
    }
    let mib = |k: Option<u64>| k.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!("daemon_idle_rss_mib: {}", mib(idle_rss));
    println!("daemon_peak_rss_mib: {}", mib(peak_rss));
    println!("daemon_rss_after_load_mib: {}", mib(after_rss));
    println!(
        "latency_offered_rate_records_per_s: {}",
        if a.rate > 0.0 {
            format!("{}", a.rate)
        } else {
            "max (closed loop: backpressure)".into()
        }
    );
    let q = |p: f64| rep.latency.value_at_quantile(p) as f64 / 1000.0;
    println!("latency_p50_ms: {:.1}", q(0.5));
    println!("latency_p99_ms: {:.1}", q(0.99));
    println!("latency_p999_ms: {:.1}", q(0.999));
    println!("latency_max_ms: {:.1}", rep.latency.max() as f64 / 1000.0);
    kinesis_figures(
        &a,
        &rep,
        (&before, &after),
        fake.as_ref(),
        stats.as_ref(),
        secs,
        window,
    );
    let gen = after.gen_cpu.saturating_sub(before.gen_cpu);
    println!("generator_cpu_us_per_record: {:.3}", per(gen));
    let dbl = after.double_cpu.saturating_sub(before.double_cpu);
    if fake.is_some() {
        println!("double_cpu_us_per_record: {:.3}", per(dbl));
    }
    let (busy0, tot0) = before.machine;
    let (busy1, tot1) = after.machine;
    println!(
        "machine_cpu_busy_pct: {:.0}",
        100.0 * (busy1 - busy0) as f64 / (tot1 - tot0).max(1) as f64
    );
    // What the rest of the machine (other developers' builds...) took meanwhile.
    let busy = (busy1 - busy0) as f64 / tck as f64;
    let ours = (dcpu + gen + dbl).as_secs_f64();
    println!(
        "machine_other_processes_cores: {:.2} (CPU of everything but kpld and kpld-bench, per second of the run)",
        (busy - ours).max(0.0) / after.at.duration_since(before.at).as_secs_f64().max(1e-9)
    );
    if let Some(s) = &stats {
        if let Some(c) = s.get("counters") {
            println!("daemon_counters: {c}");
        }
        // `durability = "disk"` runs: what the spool did.
        if let Some(sp) = s.get("spool") {
            let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
            if let Some(f) = sp.get("fsyncs").and_then(|v| v.as_u64()) {
                println!("spool_fsyncs_per_s: {:.1}", f as f64 / secs);
            }
            println!("daemon_spool: {sp}");
        }
    }
    match &exit {
        Ok(st) => println!(
            "daemon_exit: {}",
            st.code().map_or("signal".into(), |c| c.to_string())
        ),
        Err(e) => println!("daemon_exit: {e}"),
    }
    for p in rep.problems.iter().take(10) {
        println!("# problem: {p}");
    }
    let flat = (!samples.is_empty()).then(|| {
        soak::report(
            &samples,
            Duration::from_secs_f64(a.warmup),
            a.flat_tolerance,
        )
    });
    if let Some(lost) = lost {
        println!(
            "double_kinesis_records_logged: {}",
            landed.kinesis_records()
        );
        println!(
            "double_user_records_logged: {} (duplicates included)",
            landed.user_records
        );
        println!("results_lost: {lost} (successes whose record the double does not hold)");
    }
    let all = rep.acknowledged() == rep.sent && rep.unexpected == 0;
    let good = all
        && rep.failed == 0
        && rep.sent > 0
        && rep.problems.is_empty()
        && lost.unwrap_or(0) == 0
        && (!a.require_flat || flat == Some(true));
    println!(
        "verdict: {}",
        if good {
            "every record acknowledged once, all succeeded".to_string()
        } else if lost.unwrap_or(0) > 0 {
            format!(
                "{} successes are not in the double's log (lost)",
                lost.unwrap_or(0)
            )
        } else if all && rep.failed == 0 && flat == Some(false) {
            "every record acknowledged once, all succeeded; not flat (--require-flat)".into()
        } else if all {
            format!("every record acknowledged once, {} failed", rep.failed)
        } else {
            format!(
                "{} of {} records acknowledged ({} unexpected results)",
                rep.acknowledged(),
                rep.sent,
                rep.unexpected
            )
        }
    );
    if !good {
        eprintln!("daemon log tail:\n{}", d.log_tail());
    }
    Ok(if good { 0 } else { 1 })
}

/// Acknowledgements per second between `warmup` and the end of sending.
fn steady_rate(rep: &load::ConnReport, epoch: Instant, warmup: f64) -> Option<f64> {
    let step = load::TIMELINE_STEP.as_secs_f64();
    let send_end = rep
        .last_send?
        .saturating_duration_since(epoch)
        .as_secs_f64();
    let first = (warmup / step).ceil() as usize;
    let last = ((send_end / step).floor() as usize).min(rep.timeline.len());
    if last < first + 5 {
        return None;
    }
    let n: u64 = rep.timeline[first..last].iter().sum();
    Some(n as f64 / ((last - first) as f64 * step))
}

/// The Kinesis-side figures; `window` holds the double's counters at the
/// start and end of the steady window, and its length in seconds.
fn kinesis_figures(
    a: &RunArgs,
    rep: &load::ConnReport,
    (before, after): (&Snapshot, &Snapshot),
    fake: Option<&FakeKinesis>,
    stats: Option<&serde_json::Value>,
    secs: f64,
    window: Option<(Counters, Counters, f64)>,
) {
    let counter = |k: &str| {
        stats
            .and_then(|s| s.get("counters"))
            .and_then(|c| c.get(k))
            .and_then(serde_json::Value::as_u64)
    };
    // The double's counters when it is ours, else the daemon's own.
    let (entries, calls, bytes, throttled) = match (&before.double, &after.double) {
        (Some(b), Some(x)) => (
            Some(x.entries_accepted - b.entries_accepted),
            Some(x.put_requests - b.put_requests),
            Some(x.bytes_accepted - b.bytes_accepted),
            Some(x.entries_throttled - b.entries_throttled),
        ),
        _ => (
            counter("kinesis_records_put"),
            counter("put_records_calls"),
            None,
            counter("entries_throttled"),
        ),
    };
    let ok = rep.ok as f64;
    let user_bytes = rep.ok_bytes as f64;
    let user_gb = user_bytes / 1e9;
    let mean_record = user_bytes / ok.max(1.0);
    if let Some(e) = entries {
        println!("kinesis_records_per_s: {:.0}", e as f64 / secs);
        println!(
            "user_records_per_kinesis_record: {:.1}",
            ok / (e as f64).max(1.0)
        );
    }
    if let Some(c) = calls {
        println!("put_records_calls_per_s: {:.1}", c as f64 / secs);
        // Over the whole run: throttled or failed calls count as calls too.
        if let Some(e) = entries {
            println!(
                "kinesis_records_per_put_records_call: {:.1}",
                e as f64 / (c as f64).max(1.0)
            );
        }
        println!(
            "user_records_per_put_records_call: {:.1}",
            ok / (c as f64).max(1.0)
        );
    }
    if let (Some(e), Some(t)) = (entries, throttled) {
        println!(
            "kinesis_entries_throttled_pct: {:.2}",
            100.0 * t as f64 / ((e + t) as f64).max(1.0)
        );
    }
    let ideal = 1e9 / PUT_PAYLOAD_UNIT as f64;
    let log_units = fake.filter(|_| a.limits || a.keep_log).map(|f| {
        f.log()
            .iter()
            .map(|e| {
                let size = (e.data.len() + e.partition_key.len()) as u64;
                size.div_ceil(PUT_PAYLOAD_UNIT).max(1)
            })
            .sum::<u64>()
    });
    let per_m = 1e6 / ok.max(1.0);
    match (log_units, entries, bytes) {
        (Some(u), _, _) => {
            println!(
                "put_payload_units_per_gb: {:.0} (ideal {ideal:.0} uncompressed)",
                u as f64 / user_gb.max(1e-12)
            );
            println!("put_payload_units: {u}");
            println!(
                "put_payload_units_per_million_records: {:.0}",
                u as f64 * per_m
            );
        }
        (None, Some(e), Some(b)) => {
            // Count-only: only totals are known, so bound the sum of
            // ceil(size / unit) over the entries.
            let lo = e.max(b.div_ceil(PUT_PAYLOAD_UNIT)) as f64;
            let hi = (e + b / PUT_PAYLOAD_UNIT) as f64;
            println!(
                "put_payload_units_per_gb: {:.0}..{:.0} (bounds; --keep-log for the exact figure; ideal {ideal:.0} uncompressed)",
                lo / user_gb.max(1e-12),
                hi / user_gb.max(1e-12)
            );
            println!(
                "put_payload_units_per_million_records: {:.0}..{:.0} (bounds; --keep-log for the exact figure)",
                lo * per_m,
                hi * per_m
            );
        }
        _ => println!("put_payload_units_per_gb: n/a (external double)"),
    }
    if let Some(b) = bytes {
        println!("kinesis_bytes: {b}");
        println!(
            "kinesis_bytes_per_user_record: {:.1}",
            b as f64 / ok.max(1.0)
        );
        println!(
            "kinesis_bytes_per_user_byte: {:.3}",
            b as f64 / user_bytes.max(1.0)
        );
    }
    let shards = fake
        .and_then(|f| f.open_shards(&a.stream).ok())
        .map_or(a.shards, |v| v.len()) as f64;
    if let Some((c0, c1, w)) = window {
        let bytes = (c1.bytes_accepted - c0.bytes_accepted) as f64;
        let acc = (c1.entries_accepted - c0.entries_accepted) as f64;
        let thr = (c1.entries_throttled - c0.entries_throttled) as f64;
        println!(
            "steady_window_s: {w:.1} (after --warmup {} s, until the end of sending)",
            a.warmup
        );
        println!(
            "steady_kinesis_bytes_per_shard_per_s: {:.0} ({:.1}% of 1 MiB/s)",
            bytes / w / shards,
            100.0 * bytes / w / shards / MIB
        );
        println!(
            "steady_kinesis_records_per_shard_per_s: {:.0}",
            acc / w / shards
        );
        println!(
            "steady_kinesis_entries_throttled_pct: {:.2}",
            100.0 * thr / (acc + thr).max(1.0)
        );
    }
    if a.limits {
        let rate = steady_rate(rep, before.at, a.warmup).unwrap_or(ok / secs);
        let goodput = rate * mean_record / shards;
        println!(
            "goodput_per_shard_user_bytes_per_s: {goodput:.0} ({:.1}% of 1 MiB/s)",
            100.0 * goodput / MIB
        );
        // Kinesis counts a record's size as data plus partition key (20
        // bytes here); aggregation stores each distinct key once per aggregate.
        let with_keys = rate * (mean_record + 20.0) / shards;
        println!(
            "goodput_per_shard_user_bytes_with_keys_per_s: {with_keys:.0} ({:.1}% of 1 MiB/s)",
            100.0 * with_keys / MIB
        );
        println!("goodput_per_shard_records_per_s: {:.0}", rate / shards);
    }
}

/// The daemon's `stats` JSON, through the library's protocol client.
async fn daemon_stats(socket: &std::path::Path) -> Option<serde_json::Value> {
    let (mut tx, mut rx, _) = kpld::client::connect(socket, "kpld-bench-stats")
        .await
        .ok()?;
    tx.stats(1).await.ok()?;
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, async {
        loop {
            match rx.next().await.ok()?.msg {
                Some(kpld::ipc::server_message::Msg::Stats(s)) => {
                    return serde_json::from_str(&s.json).ok();
                }
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

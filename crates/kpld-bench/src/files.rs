//! `kpld-bench files`: kpld shipping log files (`[[files]]`) to the double,
//! beside the socket path for the same records in the same run (issue 14).
//!
//! Phase 1 writes `--files` files of `--lines` lines in all, each line
//! `--line-size` bytes with its newline, into a staging directory, starts
//! kpld on an empty log directory, and once it answers on its socket moves
//! the files in (a rename each, so each appears whole) and times it from
//! there until the checkpoint file says every byte is acknowledged. Phase 2
//! starts a fresh kpld and, once it answers, hands it the same lines as
//! records over the socket, one connection per file, every result awaited.
//! Both phases leave kpld's start-up out of the time and the CPU, so the
//! two figures compare the same work. Both print lines (records) per second and
//! kpld's CPU per line, and the ratio of the two CPU figures.

use crate::daemon::{scratch_dir, Daemon};
use crate::procfs;
use kpld::client;
use kpld::ipc::server_message;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct FilesArgs {
    /// The kpld binary (default: `kpld` beside this binary).
    #[arg(long, value_name = "PATH")]
    pub kpld: Option<PathBuf>,
    /// Lines in all, spread evenly over the files.
    #[arg(long, default_value_t = 2_000_000)]
    pub lines: u64,
    /// Files read at once.
    #[arg(long, default_value_t = 4)]
    pub files: u64,
    /// Bytes per line, its newline included.
    #[arg(long, default_value_t = 101)]
    pub line_size: usize,
    /// Shards of the double's stream.
    #[arg(long, default_value_t = 16)]
    pub shards: usize,
}

/// One phase's figures.
struct Phase {
    secs: f64,
    cpu: Duration,
    done: u64,
}

/// The config both phases share: the double, no metrics upload, no rate limit in the way.
fn base_config(endpoint: &str) -> String {
    format!(
        "region = \"us-east-1\"\nkinesis_endpoint = {endpoint:?}\nmetrics_level = \"none\"\n\
         log_level = \"warn\"\nrate_limit = 100000\nrecord_max_buffered_time_ms = 100\n"
    )
}

/// Line `i` of file `f`: unique, `size` bytes with its newline.
fn line(f: u64, i: u64, size: usize) -> Vec<u8> {
    let mut l = format!("file {f} line {i:010} ").into_bytes();
    l.resize(size.max(l.len() + 1) - 1, b'x');
    l.push(b'\n');
    l
}

pub async fn run(a: FilesArgs) -> anyhow::Result<u8> {
    let kpld = crate::daemon::kpld_binary(a.kpld.as_deref())?;
    anyhow::ensure!(
        a.files > 0 && a.lines >= a.files,
        "--lines must be at least --files"
    );
    let fake = crate::daemon::count_only_double(a.shards).await;
    let per_file = a.lines / a.files;
    let n = per_file * a.files;
    let dir = scratch_dir()?;
    let (staging, logs) = (dir.join("staging"), dir.join("logs"));
    std::fs::create_dir(&staging)?;
    std::fs::create_dir(&logs)?;
    let mut total_bytes = 0u64;
    for f in 0..a.files {
        let mut w =
            std::io::BufWriter::new(std::fs::File::create(staging.join(format!("{f}.log")))?);
        for i in 0..per_file {
            let l = line(f, i, a.line_size);
            total_bytes += l.len() as u64;
            w.write_all(&l)?;
        }
        w.flush()?;
    }

    let mut files =
        files_phase(&kpld, &fake.endpoint(), &dir, &staging, &logs, total_bytes).await?;
    files.done = n;
    let socket = socket_phase(&kpld, &fake.endpoint(), &a, per_file).await?;
    let _ = std::fs::remove_dir_all(&dir);

    let us = |p: &Phase| p.cpu.as_secs_f64() * 1e6 / p.done.max(1) as f64;
    println!(
        "lines: {n} of {} bytes (newline included) in {} files, {} shards",
        a.line_size, a.files, a.shards
    );
    println!("files_elapsed_s: {:.2}", files.secs);
    println!("files_lines_per_s: {:.0}", files.done as f64 / files.secs);
    println!("files_kpld_cpu_us_per_line: {:.3}", us(&files));
    println!("socket_elapsed_s: {:.2}", socket.secs);
    println!(
        "socket_records_per_s: {:.0}",
        socket.done as f64 / socket.secs
    );
    println!("socket_kpld_cpu_us_per_record: {:.3}", us(&socket));
    println!(
        "cpu_ratio_files_to_socket: {:.2}",
        us(&files) / us(&socket).max(1e-9)
    );
    println!(
        "double_entries_accepted: {}",
        fake.counters().entries_accepted
    );
    Ok(if socket.done == n { 0 } else { 1 })
}

/// A partition key like the files' `random` rule makes: 32 hex digits, all different.
fn key(n: u64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(n), mix(!n))
}

/// kpld reading the files, from their arrival until every byte is acknowledged.
async fn files_phase(
    kpld: &Path,
    endpoint: &str,
    dir: &Path,
    staging: &Path,
    logs: &Path,
    total_bytes: u64,
) -> anyhow::Result<Phase> {
    let state = dir.join("state");
    let config = format!(
        "{}state_dir = {state:?}\n\n[[files]]\npaths = [{:?}]\nstream = \"bench\"\n\
         start_at = \"beginning\"\npartition_key = \"random\"\ncheckpoint_interval_ms = 20\n",
        base_config(endpoint),
        format!("{}/*.log", logs.display())
    );
    let daemon_dir = dir.join("files-daemon");
    std::fs::create_dir(&daemon_dir)?;
    let mut d = Daemon::start(kpld, &[], daemon_dir, &config, false)?;
    d.wait_ready(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    let tck = procfs::clock_ticks();
    let cpu0 = procfs::process_cpu(d.pid, tck).unwrap_or_default();
    let start = Instant::now();
    for e in std::fs::read_dir(staging)? {
        let e = e?;
        std::fs::rename(e.path(), logs.join(e.file_name()))?;
    }
    let ckpt = state.join("file-checkpoints.json");
    let deadline = start + Duration::from_secs(600);
    loop {
        let acked: u64 = std::fs::read_to_string(&ckpt)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| {
                v["files"]
                    .as_array()
                    .map(|fs| fs.iter().filter_map(|f| f["offset"].as_u64()).sum())
            })
            .unwrap_or(0);
        if acked >= total_bytes {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the files were not acknowledged within 600 s ({acked} of {total_bytes} bytes):\n{}",
            d.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = procfs::process_cpu(d.pid, tck).unwrap_or_default() - cpu0;
    d.stop(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    // `done` is the caller's: it knows how many lines it wrote.
    Ok(Phase { secs, cpu, done: 0 })
}

/// The same lines as records over the socket: one connection per file, every result
/// awaited.
async fn socket_phase(
    kpld: &Path,
    endpoint: &str,
    a: &FilesArgs,
    per_file: u64,
) -> anyhow::Result<Phase> {
    let dir = scratch_dir()?;
    let mut d = Daemon::start(kpld, &[], dir, &base_config(endpoint), false)?;
    d.wait_ready(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    let tck = procfs::clock_ticks();
    let cpu0 = procfs::process_cpu(d.pid, tck).unwrap_or_default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for f in 0..a.files {
        let socket = d.socket.clone();
        let size = a.line_size;
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx, _) = client::connect(&socket, "kpld-bench files").await?;
            let reader = tokio::spawn(async move {
                let mut ok = 0u64;
                while ok < per_file {
                    if let server_message::Msg::Results(r) = rx
                        .next()
                        .await?
                        .msg
                        .ok_or_else(|| anyhow::anyhow!("empty"))?
                    {
                        for r in r.results {
                            anyhow::ensure!(r.success, "record {} failed: {}", r.id, r.error_code);
                            ok += 1;
                        }
                    }
                }
                anyhow::Ok(ok)
            });
            let mut i = 0;
            while i < per_file {
                let batch: Vec<_> = (i..(i + 1000).min(per_file))
                    .map(|j| {
                        let mut l = line(f, j, size);
                        l.pop(); // a file record is the line without its newline
                        client::record(j, "bench", &key(f << 40 | j), l)
                    })
                    .collect();
                i += batch.len() as u64;
                tx.put(batch, false).await?;
            }
            reader.await?
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = procfs::process_cpu(d.pid, tck).unwrap_or_default() - cpu0;
    d.stop(Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Phase { secs, cpu, done })
}

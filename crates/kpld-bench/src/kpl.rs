//! `kpld-bench kpl`: kpld in KPL mode, driven as the Java KPL's wrapper
//! drives its native process (two FIFOs, the wrapper's command line, one
//! PutRecord frame per record, one PutRecordResult back per record), against
//! the double. Prints records/s from the first record written to the last
//! result read, and kpld's CPU per record, in the same `key: value` lines as
//! the socket benchmark.

use crate::procfs;
use kpld::kpl::args::{message_hex as hex, static_credentials, CREDENTIALS_ID};
use kpld::kpl::wire::{message::Body, Configuration, Message, PutRecord};
use prost::Message as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct KplArgs {
    /// The kpld binary (default: `kpld` beside this binary).
    #[arg(long, value_name = "PATH")]
    pub kpld: Option<PathBuf>,
    /// Records to send.
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Bytes of data per record.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Distinct partition keys.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Shards of the double's stream.
    #[arg(long, default_value_t = 16)]
    pub shards: usize,
}

fn open(p: &Path, write: bool) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(p)?)
}

pub async fn run(a: KplArgs) -> anyhow::Result<u8> {
    let kpld = crate::daemon::kpld_binary(a.kpld.as_deref())?;
    let fake = crate::daemon::count_only_double(a.shards).await;
    let dir = crate::daemon::scratch_dir()?;
    let (in_pipe, out_pipe) = (dir.join("in"), dir.join("out"));
    for p in [&in_pipe, &out_pipe] {
        anyhow::ensure!(
            Command::new("mkfifo").arg(p).status()?.success(),
            "mkfifo {}",
            p.display()
        );
    }
    let creds = |for_metrics| static_credentials("bench", "bench", for_metrics);
    let cfg = Configuration {
        region: Some("us-east-1".into()),
        metrics_level: Some("none".into()),
        ..Default::default()
    };
    let stderr = dir.join("kpld.stderr");
    let mut child = Command::new(&kpld)
        .arg("-o")
        .arg(&out_pipe)
        .arg("-i")
        .arg(&in_pipe)
        .arg("-c")
        .arg(hex(0, Body::Configuration(Box::new(cfg))))
        .arg("-k")
        .arg(hex(CREDENTIALS_ID, creds(false)))
        .arg("-t")
        .arg("-w")
        .arg(hex(CREDENTIALS_ID, creds(true)))
        .arg("-l")
        .arg("warning")
        .env("KPLD_KINESIS_ENDPOINT", fake.endpoint())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    let pid = child.id();
    let mut from = open(&in_pipe, false)?;
    let mut to = open(&out_pipe, true)?;
    let n = a.records;
    let reader = std::thread::spawn(move || -> anyhow::Result<(u64, u64, Instant)> {
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut body = Vec::new();
        let mut r = std::io::BufReader::with_capacity(1 << 20, &mut from);
        while ok + failed < n {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            body.resize(u32::from_be_bytes(len) as usize, 0);
            r.read_exact(&mut body)?;
            if let Some(Body::PutRecordResult(res)) = Message::decode(&body[..])?.body {
                if res.success {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
        }
        Ok((ok, failed, Instant::now()))
    });
    let tck = procfs::clock_ticks();
    let cpu0 = procfs::process_cpu(pid, tck).unwrap_or_default();
    let start = Instant::now();
    let data = vec![b'x'; a.record_size];
    let mut buf = Vec::with_capacity(1 << 20);
    for id in 1..=n {
        let m = Message {
            id,
            source_id: None,
            body: Some(Body::PutRecord(PutRecord {
                stream_name: "bench".into(),
                partition_key: format!("key-{}", id as usize % a.keys),
                explicit_hash_key: None,
                data: data.clone().into(),
            })),
        };
        buf.extend_from_slice(&(m.encoded_len() as u32).to_be_bytes());
        m.encode(&mut buf)?;
        if buf.len() >= 1 << 20 {
            to.write_all(&buf)?;
            buf.clear();
        }
    }
    to.write_all(&buf)?;
    let (ok, failed, end) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    let cpu = procfs::process_cpu(pid, tck).unwrap_or_default() - cpu0;
    let secs = end.duration_since(start).as_secs_f64();
    drop(to);
    let mut exit = None;
    for _ in 0..600 {
        if let Some(st) = child.try_wait()? {
            exit = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if exit.is_none() {
        let _ = child.kill();
    }
    println!("mode: kpl (two FIFOs, one PutRecord frame per record)");
    println!(
        "records: {n} of {} bytes, {} keys, {} shards",
        a.record_size, a.keys, a.shards
    );
    println!("acknowledged: {ok}");
    println!("failed: {failed}");
    println!("elapsed_s: {secs:.2}");
    println!("throughput_records_per_s: {:.0}", ok as f64 / secs);
    println!(
        "kpld_cpu_us_per_record: {:.2}",
        cpu.as_secs_f64() * 1e6 / ok.max(1) as f64
    );
    println!("daemon_exit: {exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(if failed == 0 && ok == n { 0 } else { 1 })
}

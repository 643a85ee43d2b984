//! `kpld-bench serve-fake`: the Kinesis double as a process of its own, so
//! other producers (the Python peers) can be measured against the same
//! server kpld is. Prints `endpoint: URL`, serves until SIGINT or SIGTERM,
//! then prints the double's counters.

use kpld_kinesis_double::{FakeKinesis, FakeOptions};
use std::io::Write;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Port on 127.0.0.1. 0: a free port (the double's own listener). Any
    /// other port is forwarded to the double by a plain TCP relay, which
    /// costs a copy of every byte: prefer 0 and read the endpoint line.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Stream created at start.
    #[arg(long, default_value = "bench")]
    pub stream: String,
    #[arg(long, default_value_t = 16)]
    pub shards: usize,
    /// Enforce the service's per-shard limits (keeps the accepted-entry log).
    #[arg(long)]
    pub limits: bool,
    /// Keep the accepted-entry log (no count-only mode) even without limits.
    #[arg(long)]
    pub keep_log: bool,
    /// Worker threads of the double's runtime.
    #[arg(long, default_value_t = 2)]
    pub fake_threads: usize,
}

pub fn options(
    stream: &str,
    shards: usize,
    limits: bool,
    keep_log: bool,
    threads: usize,
) -> FakeOptions {
    let mut o = FakeOptions::default().stream(stream, shards);
    if limits {
        o = o.enforce_limits();
    } else if !keep_log {
        o = o.count_only();
    }
    o.worker_threads = threads;
    o
}

pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let fake = FakeKinesis::start(options(
        &a.stream,
        a.shards,
        a.limits,
        a.keep_log,
        a.fake_threads,
    ))
    .await;
    let endpoint = if a.port == 0 {
        fake.endpoint()
    } else {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port)).await?;
        let target = fake.addr();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = out.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        format!("http://127.0.0.1:{}", a.port)
    };
    println!("endpoint: {endpoint}");
    println!(
        "stream: {} ({} shards, {})",
        a.stream,
        a.shards,
        if a.limits {
            "shard limits enforced"
        } else if a.keep_log {
            "no limits, log kept"
        } else {
            "count-only"
        }
    );
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let c = fake.counters();
    println!("requests: {}", c.requests);
    println!("put_requests: {}", c.put_requests);
    println!("entries_accepted: {}", c.entries_accepted);
    println!("bytes_accepted: {}", c.bytes_accepted);
    println!("entries_throttled: {}", c.entries_throttled);
    std::io::stdout().flush()?;
    fake.shutdown().await;
    Ok(())
}

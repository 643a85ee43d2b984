//! The `kpld` binary: CLI, logging, start-up checks and exit codes. The work
//! is in the library (see `lib.rs`).

use anyhow::Context;
use clap::Parser;
use kpld::config::{Config, LogFormat};
use kpld::send::{KinesisApi, SdkKinesis};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// kpld: a Kinesis producer daemon. Applications send records over a Unix
/// socket; kpld aggregates them KPL-style per predicted shard, sends them
/// with PutRecords, retries throttling with jittered backoff, and answers
/// every record with its shard and sequence number or its final error.
///
/// Configuration comes from a TOML file (keys are the KPL option names in
/// snake_case, e.g. record_max_buffered_time_ms, aggregation_max_size,
/// record_ttl_ms, max_connections, kinesis_endpoint, socket_path) and from
/// environment variables KPLD_<KEY> (e.g. KPLD_RECORD_TTL_MS=60000) which
/// override the file. Region and credentials come from the standard AWS
/// chain (AWS_REGION, profiles, container and instance roles); the endpoint
/// also from AWS_ENDPOINT_URL_KINESIS. Every key: docs/configuration.md.
#[derive(Parser, Debug)]
#[command(name = "kpld", version, about, long_about)]
struct Cli {
    /// The TOML config file. Default: /etc/kpld/kpld.toml if it exists,
    /// else built-in defaults plus KPLD_* variables.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// Validate the configuration, print the effective settings (secrets
    /// never shown) and exit: 0 if valid, 2 if not.
    #[arg(long)]
    check: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let path = cli.config.clone().or_else(|| {
        let p = PathBuf::from("/etc/kpld/kpld.toml");
        p.exists().then_some(p)
    });
    let cfg = match Config::load(path.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kpld: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let log_level = init_logging(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kpld: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = if cli.check {
        rt.block_on(check(cfg, path))
    } else {
        rt.block_on(run(cfg, path, log_level))
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kpld: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Sets up logging; the returned handle changes the level on SIGHUP.
fn init_logging(cfg: &Config) -> LogLevelHandle {
    use tracing_subscriber::{fmt, prelude::*, reload, EnvFilter};
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.log_level));
    let (filter, handle) = reload::Layer::new(filter);
    let out = fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match cfg.log_format {
        LogFormat::Json => registry.with(out.json()).init(),
        LogFormat::Text => registry.with(out).init(),
    }
    Box::new(move |level: &str| {
        handle
            .reload(EnvFilter::new(level))
            .map_err(|e| e.to_string())
    })
}

type LogLevelHandle = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

async fn check(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<u8> {
    use aws_credential_types::provider::ProvideCredentials;
    println!(
        "# kpld {} effective configuration (from {}; KPLD_* variables applied)",
        env!("CARGO_PKG_VERSION"),
        path.as_ref()
            .map_or("built-in defaults".to_string(), |p| p.display().to_string())
    );
    print!("{}", cfg.to_toml());
    let shared = kpld::send::load_shared_config(&cfg).await;
    match shared {
        Ok(shared) => {
            println!(
                "# resolved region: {}",
                shared.region().map_or("-".into(), |r| r.to_string())
            );
            match shared.credentials_provider() {
                Some(p) => match p.provide_credentials().await {
                    Ok(c) => println!(
                        "# credentials: found (access key id {}; secret not shown)",
                        mask(c.access_key_id())
                    ),
                    Err(e) => println!(
                        "# credentials: NOT found yet ({e}); kpld will keep trying at run time"
                    ),
                },
                None => println!("# credentials: no provider configured"),
            }
        }
        Err(e) => {
            eprintln!("kpld: configuration error: {e}");
            return Ok(2);
        }
    }
    Ok(0)
}

/// SIGHUP: re-reads the config file and applies what can change live.
fn reload(
    producer: &kpld::Producer,
    current: &mut Config,
    path: Option<&std::path::Path>,
    log_level: &LogLevelHandle,
) {
    let new = match Config::load(path, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: the configuration is not valid, keeping the running one: {e}");
            return;
        }
    };
    let report = producer.reconfigure(current, &new);
    if new.log_level != current.log_level && std::env::var("RUST_LOG").is_err() {
        if let Err(e) = log_level(&new.log_level) {
            tracing::error!("SIGHUP: cannot change log_level: {e}");
        }
    }
    if report.changed.is_empty() && report.restart_needed.is_empty() {
        tracing::info!("SIGHUP: configuration re-read, nothing changed");
    }
    for c in &report.changed {
        tracing::info!(change = %c, "SIGHUP: applied");
    }
    for c in &report.restart_needed {
        tracing::warn!(change = %c, "SIGHUP: changed in the file, takes effect after a restart");
    }
    // Keep what runs: live keys from the file, the others as they were.
    let mut applied = new;
    for_restart_keys(current, &mut applied);
    *current = applied;
}

/// Copies the keys that only a restart changes from `running` into `next`,
/// so the next reload compares against what really runs.
fn for_restart_keys(running: &Config, next: &mut Config) {
    next.socket_path = running.socket_path.clone();
    next.region = running.region.clone();
    next.kinesis_endpoint = running.kinesis_endpoint.clone();
    next.collection_max_count = running.collection_max_count;
    next.collection_max_size = running.collection_max_size;
    next.max_connections = running.max_connections;
    next.request_timeout_ms = running.request_timeout_ms;
    next.connect_timeout_ms = running.connect_timeout_ms;
    next.max_frame_size = running.max_frame_size;
    next.max_buffered_bytes = running.max_buffered_bytes;
    next.max_outstanding_records = running.max_outstanding_records;
    next.retry_backoff_base_ms = running.retry_backoff_base_ms;
    next.retry_backoff_max_ms = running.retry_backoff_max_ms;
    next.shutdown_grace_ms = running.shutdown_grace_ms;
    next.log_format = running.log_format;
}

fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 8 {
        "****".to_string()
    } else {
        format!("{}****{}", &s[..4], &s[s.len() - 4..])
    }
}

async fn run(cfg: Config, path: Option<PathBuf>, log_level: LogLevelHandle) -> anyhow::Result<u8> {
    let mut current = cfg.clone();
    let (api, shared) = match SdkKinesis::new(&cfg).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("kpld: configuration error: {e}");
            return Ok(2);
        }
    };
    let mut stream_apis: HashMap<String, Arc<dyn KinesisApi>> = HashMap::new();
    for (name, s) in cfg.streams.iter().filter(|(_, s)| s.has_own_client()) {
        let api = SdkKinesis::for_stream(&cfg, &shared, s)
            .await
            .with_context(|| format!("AWS setup for stream {name}"))?;
        stream_apis.insert(name.clone(), Arc::new(api));
    }
    let socket_path = cfg.socket_path.clone();
    let grace = cfg.shutdown_grace();
    let listener = kpld::server::bind(&socket_path).await?;
    let producer = kpld::Producer::with_stream_apis(cfg, Arc::new(api), stream_apis);
    tracing::info!(socket = %socket_path.display(), version = env!("CARGO_PKG_VERSION"), "kpld ready");

    let stop_accepting = CancellationToken::new();
    let stop_reading = CancellationToken::new();
    let connections = TaskTracker::new();
    let server = tokio::spawn(kpld::server::serve(
        listener,
        producer.clone(),
        stop_accepting.clone(),
        stop_reading.clone(),
        connections.clone(),
    ));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("SIGHUP handler")?;
    let stop = kpld::shutdown::signal();
    tokio::pin!(stop);
    let sig = loop {
        tokio::select! {
            s = &mut stop => break s,
            _ = hup.recv() => reload(&producer, &mut current, path.as_deref(), &log_level),
        }
    };
    tracing::info!(
        signal = sig,
        outstanding = producer.outstanding(),
        grace_ms = grace.as_millis() as u64,
        "draining"
    );
    let report = kpld::shutdown::drain(
        &producer,
        &socket_path,
        &stop_accepting,
        &stop_reading,
        &connections,
        grace,
    )
    .await;
    let _ = server.await;
    if report.undelivered > 0 {
        tracing::error!(
            undelivered = report.undelivered,
            arrived_during_drain = report.refused_during_drain,
            "records failed with ShuttingDown (shutdown_grace_ms ran out, or they arrived after the drain began)"
        );
        return Ok(1);
    }
    tracing::info!("all records delivered; exiting");
    Ok(0)
}

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
    init_logging(&cfg);
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
        rt.block_on(run(cfg))
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

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.log_level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}

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

fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 8 {
        "****".to_string()
    } else {
        format!("{}****{}", &s[..4], &s[s.len() - 4..])
    }
}

async fn run(cfg: Config) -> anyhow::Result<u8> {
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
    let sig = kpld::shutdown::signal().await;
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

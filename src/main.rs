//! The `kpld` binary: CLI, logging, start-up checks and exit codes. The work
//! is in the library (see `lib.rs`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use kpld::config::{Config, LogFormat};
use kpld::kinesis::{KinesisApi, SdkKinesis};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
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
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Validate the configuration, print the effective settings (secrets
    /// never shown) and exit: 0 if valid, 2 if not.
    #[arg(long)]
    check: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Live view of a running daemon: per stream and shard, records/s and
    /// bytes/s against the shard limits, throttles, the heaviest partition
    /// keys, pending records and latency percentiles. Refreshes once a
    /// second until Ctrl-C.
    Stats {
        /// The daemon's socket. Default: KPLD_SOCKET, else socket_path
        /// from the config.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print one snapshot as JSON and exit (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Read a stream back from any Kinesis-compatible endpoint and print one
    /// line per user record: every shard, closed parents before their
    /// children, KPL aggregates taken apart (MD5 checked), data kpld
    /// compressed decompressed. A line is the record's data as text (line
    /// breaks shown as \n), or base64:... when it is not UTF-8.
    Tail {
        /// The stream to read.
        stream: String,
        /// The endpoint URL. Default: kinesis_endpoint from the config or
        /// KPLD_KINESIS_ENDPOINT, else AWS's endpoint for the region.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// The region. Default: region from the config, else the AWS chain
        /// (AWS_REGION, profiles); us-east-1 for a loopback endpoint.
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
        /// Where to start in each shard: trim-horizon, latest or
        /// at-timestamp:RFC3339 (e.g. at-timestamp:2026-12-03T10:00:00Z).
        #[arg(long, value_name = "WHERE", default_value = "trim-horizon")]
        from: String,
        /// One JSON object per record: stream, shard_id, sequence_number,
        /// sub_sequence_number, partition_key, explicit_hash_key (when set),
        /// data (or data_base64), approximate_arrival.
        #[arg(long)]
        json: bool,
        /// Stop after N records.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Keep reading new records (and new shards) until Ctrl-C or --count.
        #[arg(long)]
        follow: bool,
    },
    /// Run the daemon with an embedded in-memory Kinesis-compatible endpoint
    /// on 127.0.0.1 (its URL printed at start): streams are created on first
    /// use, nothing is needed but this binary. For trying kpld and for
    /// applications' own tests; records live in memory until kpld exits.
    Local {
        /// The socket to listen on. Default: KPLD_SOCKET_PATH, else
        /// ./kpld.sock (the config file's socket_path names the production
        /// socket and is not used here).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Shards of each stream created on first use.
        #[arg(long, value_name = "N", default_value_t = 4,
              value_parser = clap::value_parser!(u16).range(1..=1000))]
        shards: u16,
        /// The endpoint's port on 127.0.0.1 (0: any free port).
        #[arg(long, value_name = "PORT", default_value_t = 0)]
        port: u16,
    },
}

fn main() -> std::process::ExitCode {
    // The Java KPL's native-process command line, whatever the binary's name.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if kpld::kpl::is_kpl_command_line(&argv) {
        return std::process::ExitCode::from(kpld::kpl::main(argv));
    }
    let cli = Cli::parse();
    let path = cli.config.clone().or_else(|| {
        let p = PathBuf::from("/etc/kpld/kpld.toml");
        p.exists().then_some(p)
    });
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    match &cli.command {
        Some(Command::Stats { socket, json }) => return stats(socket.clone(), *json, path),
        Some(Command::Tail {
            stream,
            endpoint,
            region,
            from,
            json,
            count,
            follow,
        }) => {
            let from = match kpld::tail::parse_from(from) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("kpld tail: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            let opts = kpld::tail::TailOptions {
                stream: stream.clone(),
                from,
                json: *json,
                count: *count,
                follow: *follow,
            };
            return tail(opts, endpoint.clone(), region.clone(), path);
        }
        Some(Command::Local {
            socket,
            shards,
            port,
        }) => match local_endpoint(*shards, *port, socket.clone(), &mut env) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("kpld local: {}", error_text(&e));
                return std::process::ExitCode::from(1);
            }
        },
        None => {}
    }
    let cfg = match Config::load(path.as_deref(), env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kpld: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let log_level = init_logging(&cfg);
    // Before the runtime starts threads: this unsets the LISTEN_* variables.
    let inherited = if cli.check {
        None
    } else {
        match kpld::systemd::listen_fds() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kpld: socket activation: {e}");
                return std::process::ExitCode::from(1);
            }
        }
    };
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
        rt.block_on(run(cfg, path, log_level, inherited))
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        // Once, through the log (stderr, in the configured format): printing it again
        // beside the log line showed every startup error twice.
        Err(e) => {
            tracing::error!("{}", error_text(&e));
            std::process::ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, each cause once: many of kpld's errors already
/// end with their source's text (`cannot create the socket directory D: No such file or
/// directory (os error 2)`), and anyhow's `{:#}` would append it again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// Sets up logging; the returned handle changes the level on SIGHUP.
fn init_logging(cfg: &Config) -> LogLevelHandle {
    use tracing_subscriber::{fmt, prelude::*, reload, EnvFilter};
    // The SDK warns once per provider that fails, with the whole IMDS response; kpld says
    // which sources it tried in one line of its own (`kinesis::credentials_problem`).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(log_filter(&cfg.log_level)));
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
            .reload(EnvFilter::new(log_filter(level)))
            .map_err(|e| e.to_string())
    })
}

fn log_filter(level: &str) -> String {
    format!("{level},aws_config::meta::credentials::chain=error")
}

type LogLevelHandle = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

async fn check(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<u8> {
    use aws_credential_types::provider::ProvideCredentials;
    use std::fmt::Write;
    let mut out = format!(
        "# kpld {} effective configuration (from {}; KPLD_* variables applied)\n{}",
        env!("CARGO_PKG_VERSION"),
        path.as_ref()
            .map_or("built-in defaults".to_string(), |p| p.display().to_string()),
        cfg.to_toml()
    );
    let shared = match kpld::kinesis::load_shared_config(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            print_out(&out);
            eprintln!("kpld: configuration error: {e}");
            return Ok(2);
        }
    };
    let region = shared.region().map_or("-".into(), |r| r.to_string());
    let _ = writeln!(out, "# resolved region: {region}");
    let creds = match shared.credentials_provider() {
        Some(p) => match p.provide_credentials().await {
            Ok(c) => format!(
                "found (access key id {}; secret not shown)",
                mask(c.access_key_id())
            ),
            Err(e) => format!("NOT found yet ({e}); kpld will keep trying at run time"),
        },
        None => "no provider configured".into(),
    };
    let _ = writeln!(out, "# credentials: {creds}");
    print_out(&out);
    Ok(0)
}

/// Writes to stdout, ignoring a closed pipe (`kpld --check | head`).
fn print_out(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

/// SIGHUP: re-reads the config file and applies what can change live.
fn reload(
    producer: &kpld::Producer,
    current: &mut Config,
    path: Option<&std::path::Path>,
    log_level: &LogLevelHandle,
    policy: &arc_swap::ArcSwap<kpld::access::AccessPolicy>,
) {
    let new = match Config::load(path, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: the configuration is not valid, keeping the running one: {e}");
            return;
        }
    };
    let report = producer.reconfigure(current, &new);
    if new.any_disk_stream() && producer.spool().is_none() {
        tracing::warn!(
            "SIGHUP: a stream is now durability = \"disk\", but no spool was opened at start \
             (no stream was disk then): its records stay in memory until kpld is restarted"
        );
    }
    if new.allowed_uids != current.allowed_uids || new.allowed_gids != current.allowed_gids {
        policy.store(Arc::new(new.access_policy()));
        tracing::info!(
            allowed_uids = ?new.allowed_uids,
            allowed_gids = ?new.allowed_gids,
            "SIGHUP: applied allowed_uids / allowed_gids to new connections"
        );
    }
    if new.socket_mode != current.socket_mode || new.socket_group != current.socket_group {
        tracing::warn!(
            "SIGHUP: socket_mode / socket_group changed in the file, take effect after a restart"
        );
    }
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

/// Copies the keys that only a restart changes (`sighup = Restart` in the
/// key table) from `running` into `next`, so the next reload compares
/// against what really runs.
fn for_restart_keys(running: &Config, next: &mut Config) {
    use kpld::config::{Sighup, KEYS};
    next.keep_keys(running, KEYS.iter().filter(|k| k.sighup == Sighup::Restart));
}

/// `kpld stats`: exit 0, or 1 when the daemon cannot be reached.
fn stats(socket: Option<PathBuf>, json: bool, config: Option<PathBuf>) -> std::process::ExitCode {
    let socket = socket
        .or_else(|| std::env::var_os("KPLD_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| match Config::load(config.as_deref(), std::env::vars()) {
            Ok(c) => c.socket_path,
            Err(_) => PathBuf::from("/run/kpld/kpld.sock"),
        });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kpld: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(kpld::stats_cli::run(&socket, json)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kpld stats: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// `kpld tail`. Exit 0 when it read what was asked, 1 on a Kinesis error,
/// 2 on a configuration error.
fn tail(
    opts: kpld::tail::TailOptions,
    endpoint: Option<String>,
    region: Option<String>,
    config: Option<PathBuf>,
) -> std::process::ExitCode {
    let cfg = match Config::load(config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kpld tail: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let endpoint = endpoint.or_else(|| cfg.kinesis_endpoint.clone());
    let local = endpoint.as_deref().is_some_and(is_loopback_url);
    let region = region.or_else(|| (local && cfg.region.is_none()).then(|| "us-east-1".into()));
    if local {
        local_credentials_if_none();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kpld tail: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    rt.block_on(async {
        let reader =
            match kpld::kinesis::SdkReader::new(&cfg, endpoint.as_deref(), region.as_deref()).await
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("kpld tail: configuration error: {e} (or pass --region)");
                    return std::process::ExitCode::from(2);
                }
            };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let run = kpld::tail::run(&reader, &opts, &mut out);
        let result = tokio::select! {
            r = run => r,
            _ = tokio::signal::ctrl_c() => Ok(0),
        };
        match result {
            Ok(_) => std::process::ExitCode::SUCCESS,
            // A closed pipe (`kpld tail ... | head`) is a normal end.
            Err(kpld::tail::TailError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kpld tail: {e}");
                std::process::ExitCode::from(1)
            }
        }
    })
}

/// True for an `http(s)://` URL on 127.0.0.0/8, `[::1]` or localhost.
fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Local servers accept any credentials, but the SDK signs every request:
/// when the environment has none, sign with placeholder ones instead of
/// asking the instance metadata service. Called before any thread starts.
fn local_credentials_if_none() {
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && std::env::var_os("AWS_PROFILE").is_none()
    {
        std::env::set_var("AWS_ACCESS_KEY_ID", "kpld-local");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "kpld-local");
    }
}

/// `kpld local`: starts the embedded endpoint and points the daemon's
/// configuration at it (through `env`, the KPLD_* overrides); every other
/// setting is the config's. Prints the endpoint's URL.
fn local_endpoint(
    shards: u16,
    port: u16,
    socket: Option<PathBuf>,
    env: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    // Before the double's threads start: set_var is only sound while no
    // other thread reads the environment.
    local_credentials_if_none();
    let set_default = |env: &mut Vec<(String, String)>, k: &str, v: String| {
        if !env.iter().any(|(key, _)| key == k) {
            env.push((k.to_string(), v));
        }
    };
    let mut opts = kpld_kinesis_double::FakeOptions {
        auto_create_shards: Some(shards as usize),
        require_auth: false,
        port,
        ..Default::default()
    };
    opts.worker_threads = 1;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for the endpoint")?;
    let double = rt
        .block_on(kpld_kinesis_double::FakeKinesis::try_start(opts))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let url = double.endpoint();
    // The endpoint serves until the process exits.
    std::mem::forget(double);
    env.retain(|(k, _)| k != "KPLD_KINESIS_ENDPOINT");
    env.push(("KPLD_KINESIS_ENDPOINT".into(), url.clone()));
    set_default(env, "KPLD_REGION", "us-east-1".into());
    // CloudWatch would be AWS's: no uploads from a local setup (Prometheus
    // and `kpld stats` still have every series).
    set_default(env, "KPLD_METRICS_CLOUDWATCH", "false".into());
    match socket {
        Some(p) => {
            env.retain(|(k, _)| k != "KPLD_SOCKET_PATH");
            env.push(("KPLD_SOCKET_PATH".into(), p.display().to_string()));
        }
        None => set_default(env, "KPLD_SOCKET_PATH", "kpld.sock".into()),
    }
    let socket = env
        .iter()
        .find(|(k, _)| k == "KPLD_SOCKET_PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    println!("kpld local: Kinesis-compatible endpoint {url} (in memory; streams are created on first use with {shards} shards)");
    println!("kpld local: records go to socket {socket}; read them back with: kpld tail STREAM --endpoint {url}");
    Ok(())
}

fn mask(s: &str) -> String {
    let n = s.chars().count();
    if n <= 8 {
        "****".to_string()
    } else {
        format!("{}****{}", &s[..4], &s[s.len() - 4..])
    }
}

async fn run(
    cfg: Config,
    path: Option<PathBuf>,
    log_level: LogLevelHandle,
    inherited: Option<std::os::unix::net::UnixListener>,
) -> anyhow::Result<u8> {
    let mut signals = kpld::shutdown::Signals::install().context("signal handlers")?;
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
    let grace = cfg.shutdown_grace();
    let policy = Arc::new(arc_swap::ArcSwap::from_pointee(cfg.access_policy()));
    let (listener, socket_file, socket) = match inherited {
        Some(l) => {
            let shown = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "(unnamed)".into());
            tracing::info!(
                socket = %shown,
                "using the socket passed by the service manager (LISTEN_FDS); socket_path, \
                 socket_mode and socket_group are not used"
            );
            let l = kpld::server::from_std(l).context("the socket passed by systemd")?;
            (l, None, shown)
        }
        None => {
            let (l, f) = kpld::server::bind(&cfg.socket_path, &cfg.socket_perms()).await?;
            (l, Some(f), cfg.socket_path.display().to_string())
        }
    };
    if !cfg.access_policy().is_open() {
        tracing::info!(
            allowed_uids = ?cfg.allowed_uids,
            allowed_gids = ?cfg.allowed_gids,
            "connections are checked against allowed_uids / allowed_gids"
        );
    }
    // A setting that only fails once used: said, the socket file removed, exit 2.
    let refuse_start = |e: String| {
        eprintln!("kpld: configuration error: {e}");
        if let Some(f) = &socket_file {
            let _ = f.remove_if_unchanged();
        }
        2u8
    };
    let metrics_cfg = kpld::metrics::MetricsConfig::from_config(&cfg);
    let producer = kpld::Producer::with_stream_apis(cfg, Arc::new(api), stream_apis);
    let metrics = match kpld::metrics::Metrics::start(
        producer.metrics().clone(),
        &metrics_cfg,
        &shared,
    )
    .await
    {
        Ok(m) => m,
        Err(e) => return Ok(refuse_start(e.to_string())),
    };
    let spool = match open_spool(&producer, &current) {
        Ok(s) => s,
        // `:#`: the spool's own error after the context naming spool_dir.
        Err(e) => return Ok(refuse_start(format!("{e:#}"))),
    };
    let files = match kpld::files::FileSources::start(
        producer.clone(),
        current.state_dir.clone(),
        &current.files,
    ) {
        Ok(f) => Arc::new(f),
        Err(e) => return Ok(refuse_start(e.to_string())),
    };
    let weak = Arc::downgrade(&files);
    producer.metrics().set_files_stats(Box::new(move || {
        weak.upgrade()
            .map_or(serde_json::Value::Null, |f| f.stats())
    }));
    let weak = Arc::downgrade(&files);
    producer.metrics().set_files_sampler(Box::new(move || {
        weak.upgrade().map_or_else(Vec::new, |f| f.take_samples())
    }));
    tracing::info!(socket = %socket, version = env!("CARGO_PKG_VERSION"), "kpld ready");
    {
        // Said once at start, so that an operator does not learn of it from records
        // that expire minutes later.
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some(problem) = kpld::kinesis::credentials_problem(&shared).await {
                tracing::warn!("{problem}");
            }
        });
    }
    if kpld::systemd::notify_enabled() {
        tokio::spawn(notify_ready(shared.clone(), socket.clone()));
        if let Some(interval) = kpld::systemd::watchdog_interval() {
            tokio::spawn(kpld::systemd::watchdog_loop(interval));
        }
    }

    let stop_accepting = CancellationToken::new();
    let stop_reading = CancellationToken::new();
    let connections = TaskTracker::new();
    let server = tokio::spawn(kpld::server::serve(
        listener,
        producer.clone(),
        policy.clone(),
        stop_accepting.clone(),
        stop_reading.clone(),
        connections.clone(),
    ));
    let sig = loop {
        match signals.recv().await {
            kpld::shutdown::Received::Stop(s) => break s,
            kpld::shutdown::Received::Reload => {
                reload(
                    &producer,
                    &mut current,
                    path.as_deref(),
                    &log_level,
                    &policy,
                );
                files.reconfigure(&current.files);
            }
        }
    };
    let _ = kpld::systemd::notify(&format!(
        "STOPPING=1\nSTATUS=draining {} records",
        producer.outstanding()
    ));
    tracing::info!(
        signal = sig,
        outstanding = producer.outstanding(),
        grace_ms = grace.as_millis() as u64,
        "draining"
    );
    // Log files first: their readers stop handing records over, so the
    // drain below sees all of them; their checkpoints after it.
    files.stop(Duration::from_secs(2)).await;
    let report = kpld::shutdown::drain(
        &producer,
        socket_file.as_ref(),
        &stop_accepting,
        &stop_reading,
        &connections,
        grace,
    )
    .await;
    let _ = server.await;
    files.finish().await;
    if let Some(spool) = &spool {
        close_spool(spool);
    }
    // The last metrics interval: uploaded (or written) once every record is final.
    metrics.shutdown().await;
    if report.refused_during_drain > 0 {
        tracing::info!(
            refused = report.refused_during_drain,
            "records handed over during the drain were refused with ShuttingDown (not accepted)"
        );
    }
    if report.undelivered > 0 {
        tracing::error!(
            undelivered = report.undelivered,
            cut_off_by_grace = report.cut_off_by_grace,
            "accepted records did not get a success during the drain (cut off when shutdown_grace_ms ran out, or failed for their own reason); exiting 1"
        );
        return Ok(1);
    }
    tracing::info!("every accepted record was delivered; exiting");
    Ok(0)
}

/// Opens the spool when a stream is `durability = "disk"` or an earlier
/// run left one (its records are replayed whatever the streams are now),
/// attaches it to the producer and starts replaying what had no final
/// result, alongside new records.
fn open_spool(
    producer: &kpld::Producer,
    cfg: &Config,
) -> anyhow::Result<Option<kpld::spool::Spool>> {
    use kpld::spool::{FsyncPolicy, Spool, SpoolSettings};
    let dir = cfg.spool_dir();
    if !cfg.any_disk_stream() && !dir.exists() {
        return Ok(None);
    }
    let fsync = match cfg.spool_fsync {
        kpld::config::SpoolFsync::Batch => {
            FsyncPolicy::Batch(Duration::from_millis(cfg.spool_fsync_interval_ms))
        }
        kpld::config::SpoolFsync::Always => FsyncPolicy::Always,
        kpld::config::SpoolFsync::Never => FsyncPolicy::Never,
    };
    let settings = SpoolSettings {
        dir: dir.clone(),
        max_bytes: cfg.max_spool_bytes,
        fsync,
        segment_bytes: kpld::spool::DEFAULT_SEGMENT_BYTES.min(cfg.max_spool_bytes / 4),
        // The window of duplicates after a crash: done marks younger than this
        // are lost with the process. Writing them costs one small file.
        ledger_interval: Duration::from_millis(200),
    };
    let (spool, replay, report) = Spool::open(settings)
        .with_context(|| format!("the spool in {} (spool_dir)", dir.display()))?;
    for (moved_to, what) in &report.corrupt {
        tracing::error!(
            moved_to = %moved_to.display(),
            "a corrupt spool segment was moved aside; its intact entries are replayed: {what}"
        );
    }
    if report.torn_bytes_cut > 0 {
        tracing::warn!(
            bytes = report.torn_bytes_cut,
            "the spool ended in a half-written entry (a crash mid-write); it was cut off"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        segments = report.segments,
        entries = report.entries,
        already_done = report.already_done,
        to_replay = replay.pending(),
        "spool open"
    );
    producer.attach_spool(spool.clone(), &dir);
    let p = producer.clone();
    tokio::spawn(async move {
        match p.replay(replay).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                "records from the spool handed to the pipeline again"
            ),
            Err(e) => {
                tracing::error!(error = %e, "reading the spool to replay it failed; what was not read stays there for the next start")
            }
        }
    });
    Ok(Some(spool))
}

/// The last step of a stop: what is not final stays in the spool, for the
/// next start to send.
fn close_spool(spool: &kpld::spool::Spool) {
    let left = spool.stats().entries_pending;
    if let Err(e) = spool.close() {
        tracing::error!(error = %e, "closing the spool failed; the next start replays more duplicates");
    }
    if left > 0 {
        tracing::warn!(
            records = left,
            "records of durability = \"disk\" streams were not delivered before the stop; they stay in the spool and the next start sends them"
        );
    }
}

/// Sends READY=1 to the service manager once the AWS credentials chain has
/// produced credentials (the socket already accepts connections, and records
/// wait for credentials as they would at any time). Until then STATUS= says
/// what kpld waits for, so `systemctl status kpld` shows it.
async fn notify_ready(shared: aws_config::SdkConfig, socket: String) {
    use aws_credential_types::provider::ProvideCredentials;
    if let Some(provider) = shared.credentials_provider() {
        let mut delay = Duration::from_secs(1);
        while let Err(e) = provider.provide_credentials().await {
            kpld::systemd::status(&format!("waiting for AWS credentials: {e}"));
            tracing::warn!(
                error = %e,
                retry_in_s = delay.as_secs(),
                "no AWS credentials yet; READY=1 is sent to systemd once they resolve"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    if let Err(e) = kpld::systemd::notify(&format!(
        "READY=1\nSTATUS=accepting connections on {socket}"
    )) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

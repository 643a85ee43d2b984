//! KPL mode: kpld as the Java KPL's native process. Started with the
//! command line the Java wrapper gives its child (`-o PIPE -i PIPE -c HEX
//! -k HEX [-w HEX] [-t] [-l LEVEL]`), whatever its name, kpld serves that
//! one parent over the two named pipes instead of a Unix socket, so
//! `setNativeExecutable("/usr/bin/kpld")` is the whole change on the Java
//! side (docs/kpl-mode.md).
//!
//! - `args`: the command line, and telling it from kpld's own (pure);
//! - `pipes`: opening the FIFOs in the order the parent needs, frames;
//! - `config_map`: the `Configuration` message onto kpld's keys (pure);
//! - `session`: the message loop, the result sink and the answer writer;
//! - `metrics_answer`: `MetricsRequest` answers over a window (pure + sampler);
//! - `log`: log lines in the blocks the Java side reads levels from.
//!
//! Start-up, in order:
//! 1. Parse the command line and map the configuration (`KPLD_*` variables
//!    over it); either wrong: the reason on stderr, exit 1 (the KPL's
//!    "irrecoverable": a restart would fail the same way).
//! 2. Log the fields kpld does not use, once, with the reasons.
//! 3. Build the Kinesis and CloudWatch clients on the parent's credentials
//!    (replaced live by each `SetCredentials`).
//! 4. Open the pipe kpld writes (`-i`), then the one it reads (`-o`).
//! 5. Serve until the parent closes its pipe or SIGTERM / SIGINT comes.
//!
//! Shutdown: the producer drains (records handed over after this are
//! refused with `ShuttingDown`; the rest are sent, for up to
//! `shutdown_grace_ms`), their results are written, the last metrics
//! interval is uploaded, and kpld exits 0 if every accepted record landed,
//! 2 otherwise (also after a frame that is not a KPL message); the Java
//! side treats every exit but 1 as retryable.

pub mod args;
pub mod config_map;
mod log;
pub mod metrics_answer;
pub mod pipes;
pub mod session;

/// The messages of the pipes, generated from proto/kpl.proto.
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/kpld.kpl_native.rs"));
}

pub use args::is_kpl_command_line;

use crate::kinesis::{load_shared_config_with, SdkKinesis, SwappableCredentials};
use crate::metrics::{Metrics, MetricsConfig};
use crate::shutdown::{Received, Signals};
use crate::Producer;
use session::{End, Out, PipeSink, Session};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The command line or the configuration is wrong: restarting cannot help.
pub const EXIT_IRRECOVERABLE: u8 = 1;
/// Records left undelivered, a broken pipe, a bad frame: the parent may
/// start a new child.
pub const EXIT_RETRYABLE: u8 = 2;

const USAGE: &str = "usage: kpld -o READ_PIPE -i WRITE_PIPE -c CONFIGURATION_HEX -k CREDENTIALS_HEX [-w CREDENTIALS_HEX] [-t] [-l LEVEL] (the Java KPL's native-process command line)";

/// Runs KPL mode for `argv` (argv[0] included); returns the exit code.
pub fn main(argv: Vec<String>) -> u8 {
    let parsed = match args::parse(argv.get(1..).unwrap_or(&[])) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kpld (KPL mode): {e}\n{USAGE}");
            return EXIT_IRRECOVERABLE;
        }
    };
    let mut mapped = config_map::map(&parsed.configuration);
    if let Some(l) = parsed.log_level.as_deref() {
        mapped
            .table
            .entry("log_level")
            .or_insert_with(|| toml::Value::String(config_map::log_level(l)));
    }
    let cfg = match config_map::to_config(&mapped, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kpld (KPL mode): configuration error: {e}");
            return EXIT_IRRECOVERABLE;
        }
    };
    log::init(&cfg.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kpld (KPL mode): cannot start the runtime: {e}");
            return EXIT_RETRYABLE;
        }
    };
    let code = rt.block_on(run(parsed, mapped, cfg));
    // Blocking threads still waiting on a pipe's open must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

fn credentials(c: &wire::SetCredentials) -> SwappableCredentials {
    let k = &c.credentials;
    SwappableCredentials::new(
        &k.access_key_id,
        &k.secret_access_key,
        k.session_token.as_deref(),
    )
}

async fn run(args: args::KplArgs, mapped: config_map::Mapped, cfg: crate::Config) -> u8 {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        reads = %args.read_pipe.display(),
        writes = %args.write_pipe.display(),
        "kpld in KPL mode"
    );
    if !mapped.ignored.is_empty() {
        let list: Vec<String> = mapped
            .ignored
            .iter()
            .map(|(f, why)| format!("{f}: {why}"))
            .collect();
        tracing::info!(
            "KPL configuration fields kpld does not use: {}",
            list.join("; ")
        );
    }
    for a in &mapped.adjusted {
        tracing::warn!("KPL configuration: {a}");
    }
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the signal handlers");
            return EXIT_RETRYABLE;
        }
    };
    let kinesis_credentials = credentials(&args.kinesis_credentials);
    let metrics_credentials = credentials(
        args.metrics_credentials
            .as_ref()
            .unwrap_or(&args.kinesis_credentials),
    );
    let (shared, metrics_shared) = match tokio::try_join!(
        load_shared_config_with(&cfg, Some(kinesis_credentials.clone())),
        load_shared_config_with(&cfg, Some(metrics_credentials.clone())),
    ) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("configuration error: {e} (or set Region in the KPL configuration)");
            return EXIT_IRRECOVERABLE;
        }
    };
    let opened = tokio::select! {
        o = pipes::open(&args.read_pipe, &args.write_pipe) => o,
        s = signals.recv() => {
            tracing::info!(signal = ?s, "stopped before the pipes opened");
            return 0;
        }
    };
    let (read_pipe, write_pipe) = match opened {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_RETRYABLE;
        }
    };
    let grace = cfg.shutdown_grace();
    let metrics_cfg = MetricsConfig::from_config(&cfg);
    let api = SdkKinesis::from_shared_config(&cfg, &shared);
    let producer = Producer::new(cfg, Arc::new(api));
    let metrics =
        match Metrics::start(producer.metrics().clone(), &metrics_cfg, &metrics_shared).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("configuration error: {e}");
                return EXIT_IRRECOVERABLE;
            }
        };
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(session::write_loop(write_pipe, out_rx));
    let window = Arc::new(Mutex::new(metrics_answer::Window::default()));
    let sampler = tokio::spawn(metrics_answer::sample(
        producer.metrics().clone(),
        window.clone(),
    ));
    let session = Arc::new(Session {
        producer: producer.clone(),
        sink: PipeSink::new(out_tx.clone()),
        kinesis_credentials,
        metrics_credentials,
        window,
        started: tokio::time::Instant::now(),
    });
    let mut reader = tokio::spawn({
        let s = session.clone();
        async move { s.read_loop(read_pipe).await }
    });
    tracing::info!("kpld ready");
    let mut failed = false;
    let reason = loop {
        tokio::select! {
            end = &mut reader => break match end {
                Ok(End::Eof) => "end of input".to_string(),
                Ok(End::Bad(e)) => {
                    tracing::error!("the parent sent {e}; stopping");
                    failed = true;
                    "a bad frame".to_string()
                }
                Err(e) => {
                    tracing::error!(error = %e, "the reader stopped");
                    failed = true;
                    "the reader stopped".to_string()
                }
            },
            r = signals.recv() => match r {
                Received::Stop(s) => break s.to_string(),
                Received::Reload => tracing::info!(
                    "SIGHUP: nothing to re-read in KPL mode (the configuration comes from the parent)"
                ),
            },
        }
    };
    tracing::info!(
        reason = %reason,
        outstanding = producer.outstanding(),
        grace_ms = grace.as_millis() as u64,
        "draining"
    );
    let report = producer.shutdown(grace).await;
    reader.abort();
    sampler.abort();
    metrics.shutdown().await;
    let _ = out_tx.send(Out::End);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    if report.undelivered > 0 {
        tracing::error!(
            undelivered = report.undelivered,
            cut_off_by_grace = report.cut_off_by_grace,
            "accepted records did not land during the drain; exiting {EXIT_RETRYABLE}"
        );
        return EXIT_RETRYABLE;
    }
    if failed {
        return EXIT_RETRYABLE;
    }
    tracing::info!("every accepted record was delivered; exiting");
    0
}

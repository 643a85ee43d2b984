//! Signals and the drain sequence.
//!
//! On SIGTERM or SIGINT:
//! 1. Stop accepting connections and remove the socket file if kpld created
//!    it and it is still the same file (the caller has told systemd
//!    STOPPING=1). A socket passed by systemd is left alone: it belongs to
//!    the .socket unit, and connections made while no kpld runs wait in its
//!    backlog for the next one.
//! 2. Drain the producer: new records are refused with `ShuttingDown`,
//!    every buffer is sent at once, retries go on.
//! 3. Wait up to `shutdown_grace_ms` for every record to have a result.
//! 4. Past the grace period, fail what is left with `ShuttingDown` (in-flight
//!    calls are cancelled) and count it.
//! 5. Stop reading from clients, let writers deliver the last results, close.
//! 6. Exit 0 if every accepted record still outstanding when the drain
//!    began got a success, 1 otherwise (see `ShutdownReport`).

use crate::access::SocketFile;
use crate::producer::{Producer, ShutdownReport};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The SIGTERM, SIGINT and SIGHUP handlers, installed when this is created:
/// create it before the socket accepts connections (and before READY=1), so
/// that an early signal is queued instead of killing the process.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// What [`Signals::recv`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGTERM or SIGINT: drain and exit.
    Stop(&'static str),
    /// SIGHUP: re-read the configuration.
    Reload,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal (cancel-safe).
    pub async fn recv(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Stop("SIGTERM"),
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.hup.recv() => Received::Reload,
        }
    }
}

/// Runs steps 1-5 above; the caller maps the report to the exit code.
pub async fn drain(
    producer: &Producer,
    socket_file: Option<&SocketFile>,
    stop_accepting: &CancellationToken,
    stop_reading: &CancellationToken,
    connections: &TaskTracker,
    grace: Duration,
) -> ShutdownReport {
    stop_accepting.cancel();
    if let Some(file) = socket_file {
        let _ = file.remove_if_unchanged();
    }
    let report = producer.shutdown(grace).await;
    stop_reading.cancel();
    connections.close();
    // Writers end once their last results are written; a client that never
    // reads cannot hold the exit for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    report
}

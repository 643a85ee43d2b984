//! Signals and the drain sequence.
//!
//! On SIGTERM or SIGINT:
//! 1. Stop accepting connections and remove the socket file.
//! 2. Drain the producer: new records are refused with `ShuttingDown`,
//!    every buffer is sent at once, retries go on.
//! 3. Wait up to `shutdown_grace_ms` for every record to have a result.
//! 4. Past the grace period, fail what is left with `ShuttingDown` (in-flight
//!    calls are cancelled) and count it.
//! 5. Stop reading from clients, let writers deliver the last results, close.
//! 6. Exit 0 if nothing was left undelivered, 1 otherwise.

use crate::producer::{Producer, ShutdownReport};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Runs steps 1-5 above; the caller maps the report to the exit code.
pub async fn drain(
    producer: &Producer,
    socket_path: &Path,
    stop_accepting: &CancellationToken,
    stop_reading: &CancellationToken,
    connections: &TaskTracker,
    grace: Duration,
) -> ShutdownReport {
    stop_accepting.cancel();
    let _ = std::fs::remove_file(socket_path);
    let report = producer.shutdown(grace).await;
    stop_reading.cancel();
    connections.close();
    // Writers end once their last results are written; a client that never
    // reads cannot hold the exit for long.
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    report
}

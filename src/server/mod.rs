//! The Unix socket server: binding, the accept loop, and one handler per connection.
//!
//! - here: [`bind`] (or [`from_std`], for the socket systemd passes), [`serve`]
//!   (the accept loop) and the refusal of connections the [`AccessPolicy`] denies.
//! - `connection`: one connection's reader (frames in, records into the
//!   [`Producer`]) and the bookkeeping it shares with the writer.
//! - `results`: the writer (results, flush replies and errors out) and the
//!   encoding of result frames.
//!
//! Each connection has a reader and a writer task. Both meet in one
//! unbounded channel of `ConnEvent`s, whose memory is bounded by the
//! producer's record budget. A connection's faults (bad frame, oversized
//! length, vanished client) end that connection alone; records it already
//! handed over are still delivered, and their results are still written
//! while the client listens.
//!
//! Every accepted connection first passes the [`AccessPolicy`]
//! (`allowed_uids` / `allowed_gids`, SO_PEERCRED); a refused one gets a fatal
//! `AccessDenied` error frame naming its uid, and a warning is logged.
//! Past `max_clients` connections, a new one gets a fatal `TooManyClients`
//! error frame instead (logged at most once a second).

mod connection;
mod results;

pub use connection::handle_connection;

use crate::access::{AccessPolicy, SocketFile, SocketPerms};
use crate::intake::Intake;
use crate::producer::Producer;
use futures_util::StreamExt;
use prost::Message;
use results::error_frame;
use std::path::Path;
use std::sync::Arc;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const PROTOCOL_VERSION: u32 = 1;

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another process is already accepting connections on {0}; stop it or choose another socket_path")]
    InUse(String),
    #[error("cannot create the socket directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} exists and is not a socket; remove it or choose another socket_path")]
    NotASocket(String),
    #[error(
        "cannot tell whether another process uses the socket {path} ({source}); remove the \
         file if no kpld runs, or fix its permissions"
    )]
    Probe {
        path: String,
        source: std::io::Error,
    },
}

/// Binds the socket with the configured mode and group, replacing a stale
/// socket file left by a crashed daemon but never one that another live
/// process answers on, nor a file that is not a socket, nor one whose state
/// cannot be told: only "connection refused" means stale.
pub async fn bind(
    path: &Path,
    perms: &SocketPerms,
) -> Result<(UnixListener, SocketFile), BindError> {
    use std::os::unix::fs::FileTypeExt;
    let shown = path.display().to_string();
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| BindError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(shown));
        }
        match UnixStream::connect(path).await {
            Ok(_) => return Err(BindError::InUse(shown)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %shown, "replacing a stale socket file (nothing accepts on it)");
                let _ = std::fs::remove_file(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BindError::Probe {
                    path: shown,
                    source,
                })
            }
        }
    }
    let (listener, file) =
        crate::access::bind_with_perms(path, perms).map_err(|source| BindError::Bind {
            path: shown.clone(),
            source,
        })?;
    let listener = from_std(listener).map_err(|source| BindError::Bind {
        path: shown,
        source,
    })?;
    Ok((listener, file))
}

/// A listener from std (e.g. the socket systemd passed) for tokio.
pub fn from_std(listener: std::os::unix::net::UnixListener) -> std::io::Result<UnixListener> {
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Accepts connections until `stop` is cancelled. Connection tasks are
/// tracked by `tracker`; they end by themselves once `stop_reading` is
/// cancelled and their records have results.
pub async fn serve(
    listener: UnixListener,
    producer: Producer,
    policy: Arc<arc_swap::ArcSwap<AccessPolicy>>,
    stop: CancellationToken,
    stop_reading: CancellationToken,
    tracker: TaskTracker,
) {
    let intake = Intake::new(producer.config().max_frame_size);
    let max_clients = producer.config().max_clients;
    let clients = Arc::new(Semaphore::new(
        usize::try_from(max_clients).unwrap_or(Semaphore::MAX_PERMITS),
    ));
    // A flood of connections past max_clients must not cost a task and a
    // descriptor each for seconds: past this many refusals in progress, the
    // rest are closed without a frame.
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut refusals = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(slot) = clients.clone().try_acquire_owned() else {
                    refusals.note(max_clients);
                    if let Ok(r) = refusing.clone().try_acquire_owned() {
                        let message = format!(
                            "kpld already serves {max_clients} clients (config key max_clients); \
                             close a connection or raise max_clients"
                        );
                        tracker.spawn(async move {
                            refuse(stream, "TooManyClients", message).await;
                            drop(r);
                        });
                    }
                    continue;
                };
                let producer = producer.clone();
                let stop_reading = stop_reading.clone();
                let policy = policy.load_full();
                let intake = intake.clone();
                tracker.spawn(async move {
                    match policy.check_stream(&stream) {
                        Ok(_) => handle_connection(stream, producer, intake, stop_reading).await,
                        Err(denied) => {
                            tracing::warn!(
                                uid = denied.peer.uid,
                                gid = denied.peer.gid,
                                pid = denied.peer.pid,
                                "connection refused: {denied}"
                            );
                            refuse(stream, "AccessDenied", denied.to_string()).await
                        }
                    }
                    // The slot is held until the connection's last result is written.
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Refusals of connections past `max_clients` in progress at once.
const MAX_REFUSING: usize = 64;

/// One warning per refusal past `max_clients`, but at most one a second: a
/// flood of connections must not flood the log. The next line says how many
/// were refused in between.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn note(&mut self, max_clients: u64) {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            max_clients,
            refused_since_last_line = self.unlogged,
            "connection refused: already serving max_clients connections (config key max_clients)"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// Answers a connection that is refused (access policy, `max_clients`):
/// reads the client's first frame (its Hello, so the client is not cut off
/// mid-write), sends a fatal error frame with `code`, and closes once the
/// client has closed too (so it reads the frame, not a reset). Bounded in time.
async fn refuse(stream: UnixStream, code: &str, message: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bound = std::time::Duration::from_secs(5);
    let (rd, mut wr) = stream.into_split();
    let mut first = FramedRead::new(
        rd,
        LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_length(4)
            .max_frame_length(64 * 1024)
            .new_codec(),
    );
    let _ = tokio::time::timeout(bound, first.next()).await;
    let msg = error_frame(code, message, true);
    let mut buf = Vec::with_capacity(4 + msg.encoded_len());
    buf.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
    msg.encode(&mut buf).expect("Vec grows");
    let _ = tokio::time::timeout(bound, async {
        wr.write_all(&buf).await?;
        wr.shutdown().await?;
        let mut rd = first.into_inner();
        let mut sink = [0u8; 4096];
        while rd.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

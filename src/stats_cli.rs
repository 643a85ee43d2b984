//! `kpld stats [--socket PATH] [--json]`: the daemon's live view, over the
//! socket protocol (Hello, then a StatsRequest whose StatsReply carries the
//! JSON of `metrics::stats`).
//!
//! Without `--json` it redraws a table per stream and shard once a second
//! until interrupted; with `--json` it prints one snapshot and exits.

use crate::ipc::{
    client_message, server_message, ClientMessage, Hello, ServerMessage, StatsRequest,
};
use crate::metrics::stats::render_table;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// How often the table is redrawn.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Largest frame accepted from the daemon (a snapshot of thousands of shards).
const MAX_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot connect to kpld at {path}: {source} (is the daemon running? pass --socket PATH or set socket_path)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connection to kpld lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write to standard output: {0}")]
    Output(std::io::Error),
    #[error("kpld closed the connection")]
    Closed,
    #[error("kpld refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("kpld sent a frame that is not a ServerMessage: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("kpld sent a stats document that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

struct Client {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
    next_id: u64,
}

impl Client {
    async fn connect(path: &Path) -> Result<Client, StatsError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| StatsError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let codec = LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_length(4)
            .max_frame_length(MAX_FRAME)
            .new_codec();
        let mut c = Client {
            framed: Framed::new(stream, codec),
            next_id: 1,
        };
        c.send(client_message::Msg::Hello(Hello {
            protocol_version: crate_protocol_version(),
            client_name: format!("kpld-stats/{}", env!("CARGO_PKG_VERSION")),
            want_accepted: false,
        }))
        .await?;
        loop {
            match c.recv().await? {
                server_message::Msg::Hello(_) => return Ok(c),
                server_message::Msg::Error(e) => {
                    return Err(StatsError::Refused {
                        code: e.code,
                        message: e.message,
                    })
                }
                _ => continue,
            }
        }
    }

    async fn send(&mut self, msg: client_message::Msg) -> Result<(), StatsError> {
        let frame = ClientMessage { msg: Some(msg) }.encode_to_vec();
        self.framed.send(Bytes::from(frame)).await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<server_message::Msg, StatsError> {
        loop {
            let frame = self.framed.next().await.ok_or(StatsError::Closed)??;
            if let Some(m) = ServerMessage::decode(frame.freeze())?.msg {
                return Ok(m);
            }
        }
    }

    /// One snapshot.
    async fn stats(&mut self) -> Result<serde_json::Value, StatsError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(client_message::Msg::Stats(StatsRequest { id }))
            .await?;
        loop {
            match self.recv().await? {
                server_message::Msg::Stats(r) if r.id == id => {
                    return Ok(serde_json::from_str(&r.json)?)
                }
                server_message::Msg::Error(e) if e.fatal => {
                    return Err(StatsError::Refused {
                        code: e.code,
                        message: e.message,
                    })
                }
                _ => continue,
            }
        }
    }
}

/// Writes to standard output. `Ok(false)`: the reader went away (`kpld
/// stats | head`), which ends the command quietly.
fn print(text: &str) -> Result<bool, StatsError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(StatsError::Output(e)),
    }
}

/// The protocol version this build speaks (see proto/kpld.proto).
fn crate_protocol_version() -> u32 {
    1
}

/// Runs the command. Returns when the snapshot is printed (`json`), or on
/// Ctrl-C (SIGINT) or SIGTERM.
pub async fn run(socket: &Path, json: bool) -> Result<(), StatsError> {
    let mut client = Client::connect(socket).await?;
    if json {
        let v = client.stats().await?;
        let mut text = serde_json::to_string_pretty(&v)?;
        text.push('\n');
        print(&text)?;
        return Ok(());
    }
    let tty = std::io::stdout().is_terminal();
    // Installed before the first table, so an early Ctrl-C ends the loop
    // cleanly instead of killing the process.
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let v = client.stats().await?;
        let table = render_table(&v);
        // On a terminal: home and clear, then the table; else tables one
        // after the other, separated by a blank line.
        let frame = if tty {
            format!("\x1b[H\x1b[2J{table}")
        } else {
            format!("{table}\n")
        };
        if !print(&frame)? {
            return Ok(());
        }
        tokio::select! {
            _ = int.recv() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{HelloReply, StatsReply};

    /// A peer speaking the daemon's side of the protocol for one Hello and
    /// one StatsRequest (the daemon itself is exercised by
    /// tests/integration/test_metrics.py).
    #[tokio::test]
    async fn json_mode_asks_once_and_parses_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut f = Framed::new(s, LengthDelimitedCodec::new());
            let hello = ClientMessage::decode(f.next().await.unwrap().unwrap().freeze()).unwrap();
            assert!(
                matches!(hello.msg, Some(client_message::Msg::Hello(ref h)) if h.protocol_version == 1)
            );
            let reply = ServerMessage {
                msg: Some(server_message::Msg::Hello(HelloReply {
                    protocol_version: 1,
                    ..Default::default()
                })),
            };
            f.send(Bytes::from(reply.encode_to_vec())).await.unwrap();
            let req = ClientMessage::decode(f.next().await.unwrap().unwrap().freeze()).unwrap();
            let Some(client_message::Msg::Stats(StatsRequest { id })) = req.msg else {
                panic!("expected a StatsRequest, got {req:?}")
            };
            let reply = ServerMessage {
                msg: Some(server_message::Msg::Stats(StatsReply {
                    id,
                    json: r#"{"streams":[]}"#.into(),
                })),
            };
            f.send(Bytes::from(reply.encode_to_vec())).await.unwrap();
        });
        let mut c = Client::connect(&path).await.unwrap();
        let v = c.stats().await.unwrap();
        assert_eq!(v["streams"], serde_json::json!([]));
        server.await.unwrap();
        let missing = dir.path().join("none.sock");
        let e = Client::connect(&missing).await.err().unwrap().to_string();
        assert!(e.contains("none.sock"), "{e}");
    }
}

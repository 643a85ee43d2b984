//! A small async client for the socket protocol: connect (with the Hello
//! exchange), then send and receive frames on separate halves. Used by the
//! `kpld stats` command, the benchmark's load generator and the tests; a
//! Rust program that prefers the daemon to embedding [`crate::Producer`]
//! can use it too.

use crate::ipc::{
    client_message, server_message, ClientMessage, FlushRequest, Hello, HelloReply, PutRequest,
    Record, ServerMessage, StatsRequest,
};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use prost::Message;
use std::path::Path;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon sent a frame that is not a ServerMessage: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the daemon refused the connection: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the daemon answered Hello with something else")]
    NoHelloReply,
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(4)
        .max_frame_length(max_frame)
        .new_codec()
}

/// The sending half.
pub struct Sender {
    out: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
}

/// The receiving half.
pub struct Receiver {
    frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
}

/// Connects and exchanges Hello; returns the halves and the daemon's reply.
pub async fn connect(
    path: &Path,
    client_name: &str,
) -> Result<(Sender, Receiver, HelloReply), ClientError> {
    connect_with(path, client_name, false).await
}

/// Like [`connect`]; with `want_accepted` the daemon sends `Accepted`
/// messages (docs/protocol.md, "Acceptance").
pub async fn connect_with(
    path: &Path,
    client_name: &str,
    want_accepted: bool,
) -> Result<(Sender, Receiver, HelloReply), ClientError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let (rd, wr) = stream.into_split();
    let mut tx = Sender {
        out: FramedWrite::new(wr, codec(256 << 20)),
    };
    let mut rx = Receiver {
        frames: FramedRead::new(rd, codec(256 << 20)),
    };
    tx.send(client_message::Msg::Hello(Hello {
        protocol_version: crate::server::PROTOCOL_VERSION,
        client_name: client_name.to_string(),
        want_accepted,
    }))
    .await?;
    match rx.next().await?.msg {
        Some(server_message::Msg::Hello(h)) => Ok((tx, rx, h)),
        Some(server_message::Msg::Error(e)) => Err(ClientError::Refused {
            code: e.code,
            message: e.message,
        }),
        _ => Err(ClientError::NoHelloReply),
    }
}

impl Sender {
    pub async fn send(&mut self, msg: client_message::Msg) -> Result<(), ClientError> {
        let m = ClientMessage { msg: Some(msg) };
        let mut buf = BytesMut::with_capacity(m.encoded_len());
        m.encode(&mut buf).expect("BytesMut grows");
        self.out.send(buf.freeze()).await?;
        Ok(())
    }

    /// Sends a frame that is already encoded (the length prefix is added).
    pub async fn send_raw(&mut self, frame: Bytes) -> Result<(), ClientError> {
        self.out.send(frame).await?;
        Ok(())
    }

    pub async fn put(
        &mut self,
        records: Vec<Record>,
        busy_if_full: bool,
    ) -> Result<(), ClientError> {
        self.send(client_message::Msg::Put(PutRequest {
            records,
            busy_if_full,
        }))
        .await
    }

    pub async fn flush(&mut self, id: u64) -> Result<(), ClientError> {
        self.send(client_message::Msg::Flush(FlushRequest { id }))
            .await
    }

    pub async fn stats(&mut self, id: u64) -> Result<(), ClientError> {
        self.send(client_message::Msg::Stats(StatsRequest { id }))
            .await
    }

    /// The underlying write half, e.g. to shut it down.
    pub fn get_mut(&mut self) -> &mut OwnedWriteHalf {
        self.out.get_mut()
    }
}

impl Receiver {
    /// The next message; `Closed` at end of stream.
    pub async fn next(&mut self) -> Result<ServerMessage, ClientError> {
        match self.frames.next().await {
            None => Err(ClientError::Closed),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(b)) => Ok(ServerMessage::decode(b.freeze())?),
        }
    }
}

/// A record for [`Sender::put`].
pub fn record(id: u64, stream: &str, partition_key: &str, data: impl Into<Bytes>) -> Record {
    Record {
        id,
        stream: Bytes::copy_from_slice(stream.as_bytes()),
        partition_key: Bytes::copy_from_slice(partition_key.as_bytes()),
        explicit_hash_key: None,
        data: data.into(),
        compression: 0,
    }
}

//! The two named pipes and their frames: a 4-byte big-endian length, then a
//! `Message` of that many bytes (1 ..= 12 MiB, the Java side's bound).
//!
//! Opening order: the Java side opens the pipe it reads (`-i`) first and
//! blocks there until a writer appears, and only then opens the one it
//! writes (`-o`). So kpld opens `-i` for writing first, then `-o` for
//! reading; the other order blocks both processes for good.

use super::wire::Message;
use bytes::{BufMut, BytesMut};
use prost::Message as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::unix::pipe;

/// The Java side refuses frames above this (8 MiB before KPL 1.0.6; no
/// answer kpld writes comes near either).
pub const MAX_FRAME: usize = 12 * 1024 * 1024;

/// How long kpld waits for the parent to open its ends of the pipes.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a pipe could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source} (the KPL creates both FIFOs before it starts its native process)")]
    Stat { path: PathBuf, source: io::Error },
    #[error("{path} is not a FIFO (create it with mkfifo)")]
    NotFifo { path: PathBuf },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("the parent did not open its end of {path} within {secs} s")]
    Timeout { path: PathBuf, secs: u64 },
}

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("reading the pipe: {0}")]
    Io(#[from] io::Error),
    #[error("a frame of length 0 (frames hold 1 to {MAX_FRAME} bytes)")]
    Empty,
    #[error("a frame of {0} bytes, over the {MAX_FRAME} byte limit")]
    TooLarge(u64),
    #[error("the pipe ended inside a frame")]
    Truncated,
    #[error("a frame that is not a KPL Message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Checks both paths, then opens them in the order the parent needs.
pub async fn open(
    read_path: &Path,
    write_path: &Path,
) -> Result<(pipe::Receiver, pipe::Sender), OpenError> {
    check_fifo(read_path)?;
    check_fifo(write_path)?;
    let w = open_blocking(write_path, false).await?;
    let sender = pipe::Sender::from_file(w).map_err(|source| OpenError::Open {
        path: write_path.into(),
        source,
    })?;
    let r = open_blocking(read_path, true).await?;
    let receiver = pipe::Receiver::from_file(r).map_err(|source| OpenError::Open {
        path: read_path.into(),
        source,
    })?;
    Ok((receiver, sender))
}

fn check_fifo(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|source| OpenError::Stat {
        path: path.into(),
        source,
    })?;
    if !meta.file_type().is_fifo() {
        return Err(OpenError::NotFifo { path: path.into() });
    }
    Ok(())
}

/// A FIFO's open blocks until the other end is opened: done on a blocking
/// thread, bounded (a thread left blocked past the bound ends with the
/// process, which then exits).
async fn open_blocking(path: &Path, read: bool) -> Result<std::fs::File, OpenError> {
    let p = path.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new().read(read).write(!read).open(&p)
    });
    match tokio::time::timeout(OPEN_TIMEOUT, task).await {
        Ok(Ok(Ok(f))) => Ok(f),
        Ok(Ok(Err(source))) => Err(OpenError::Open {
            path: path.into(),
            source,
        }),
        Ok(Err(join)) => Err(OpenError::Open {
            path: path.into(),
            source: io::Error::other(join),
        }),
        Err(_) => Err(OpenError::Timeout {
            path: path.into(),
            secs: OPEN_TIMEOUT.as_secs(),
        }),
    }
}

/// Reads one frame. `Ok(None)`: the parent closed the pipe between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Option<Message>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let n = check_len(u32::from_be_bytes(len))?;
    buf.clear();
    buf.resize(n, 0);
    match r.read_exact(&mut buf[..]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Truncated),
        Err(e) => return Err(e.into()),
    }
    Ok(Some(Message::decode(&buf[..])?))
}

/// The frame length rule of both directions (pure).
pub fn check_len(len: u32) -> Result<usize, FrameError> {
    match len as usize {
        0 => Err(FrameError::Empty),
        n if n > MAX_FRAME => Err(FrameError::TooLarge(n as u64)),
        n => Ok(n),
    }
}

/// Appends `m` as one frame.
pub fn put_frame(buf: &mut BytesMut, m: &Message) {
    let n = m.encoded_len();
    buf.reserve(4 + n);
    buf.put_u32(n as u32);
    m.encode(buf).expect("BytesMut grows");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpl::wire::{message, Flush};

    fn flush(id: u64) -> Message {
        Message {
            id,
            source_id: None,
            body: Some(message::Body::Flush(Flush {
                stream_name: Some("s".into()),
            })),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let mut wire = BytesMut::new();
        put_frame(&mut wire, &flush(1));
        put_frame(&mut wire, &flush(2));
        let mut r = &wire[..];
        let mut buf = BytesMut::new();
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), Some(flush(1)));
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), Some(flush(2)));
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_lengths_and_cut_frames_are_refused() {
        let mut buf = BytesMut::new();
        let zero = [0u8, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut &zero[..], &mut buf).await,
            Err(FrameError::Empty)
        ));
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame(&mut &big[..], &mut buf).await,
            Err(FrameError::TooLarge(_))
        ));
        let mut wire = BytesMut::new();
        put_frame(&mut wire, &flush(1));
        let cut = &wire[..wire.len() - 1];
        assert!(matches!(
            read_frame(&mut &cut[..], &mut buf).await,
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut &wire[..2], &mut buf).await,
            Err(FrameError::Truncated)
        ));
        assert_eq!(check_len(MAX_FRAME as u32).unwrap(), MAX_FRAME);
    }
}

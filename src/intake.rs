//! Frames in: each connection's length-prefixed frames, each one charged to
//! a pool shared by every connection before its body is read.
//!
//! The record budget (`max_buffered_bytes`) charges records once the
//! producer takes them. Before that, a request that waits for room is a
//! frame in memory, and every connection can hold one. With this pool,
//! requests waiting for room hold at most [`Intake::size`] bytes in all, and
//! a connection whose frame does not fit is simply not read (backpressure,
//! in arrival order). 64 connections sending 5 MB requests into a full
//! 32 MiB budget: peak RSS 397 MiB before, 96 MiB with it (BENCHMARKS.md,
//! "Memory").
//!
//! A frame's body must follow its length prefix within
//! [`FRAME_BODY_TIMEOUT`]: its charge is taken when the prefix arrives, so a
//! client stalled mid-frame would otherwise hold part of the pool forever.

use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The pool's size unless `max_frame_size` is larger: two default-sized
/// frames, or hundreds of typical batches. It only fills while the record
/// budget is full, and then more waiting requests would not go faster.
pub const INTAKE_POOL_BYTES: u64 = 16 * 1024 * 1024;

/// How long a frame's body may take to arrive after its length prefix.
pub const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes a connection may read past the frame it is reading, uncharged:
/// the next frames come with the same read. At 1.6M records/s in frames of
/// 256 records, 16 KiB (about one frame per read) cost 5% of the throughput
/// against the framed reader this replaced; 64 KiB costs 3-5%, and 256 KiB
/// did no better.
const READ_AHEAD: usize = 64 * 1024;

/// The pool of bytes that frames read but not yet taken by the producer may
/// hold, shared by all connections.
#[derive(Clone)]
pub struct Intake {
    pool: Arc<Semaphore>,
}

impl Intake {
    /// A pool that always fits one frame of `max_frame_size` bytes.
    pub fn new(max_frame_size: u64) -> Self {
        let size = INTAKE_POOL_BYTES.max(max_frame_size);
        Intake {
            pool: Arc::new(Semaphore::new(size as usize)),
        }
    }
}

/// One frame's body and its share of the intake pool, given back when the
/// charge is dropped (once the producer has taken the frame's records).
pub struct Frame {
    pub body: Bytes,
    pub charge: OwnedSemaphorePermit,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} exceeds max_frame_size ({max} bytes); split the request")]
    TooLarge { len: usize, max: usize },
    #[error(
        "the frame's {len} bytes did not arrive within {}s of its length prefix; write each frame whole",
        FRAME_BODY_TIMEOUT.as_secs()
    )]
    Stalled { len: usize },
    /// The connection failed or closed mid-frame.
    #[error("reading the frame failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads frames (a 4-byte big-endian length, then that many bytes) off one
/// connection. Bytes are read into one buffer as they come, and a frame is
/// split off it without a copy.
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(rd: R, max_frame_size: u64) -> Self {
        FrameReader {
            rd,
            // Later allocations are at least this large (BytesMut keeps
            // the first capacity as the minimum), so reads bring read-ahead.
            buf: BytesMut::with_capacity(READ_AHEAD),
            max_frame: max_frame_size as usize,
        }
    }

    /// Reads until the buffer holds `n` bytes, and at most [`READ_AHEAD`]
    /// past them; `UnexpectedEof` if the connection closes first. Grows the
    /// buffer only by what `n` needs: growing it for the read-ahead too meant
    /// a new allocation and a copy for nearly every read.
    async fn fill_to(&mut self, n: usize) -> std::io::Result<()> {
        while self.buf.len() < n {
            let want = n - self.buf.len();
            self.buf.reserve(want);
            let read = (&mut self.rd)
                .take((want + READ_AHEAD) as u64)
                .read_buf(&mut self.buf)
                .await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// The next frame, or `None` when the client closed between frames.
    /// Waits for room in `intake` before reading the body. Not cancel-safe:
    /// after a cancelled call the connection is out of step and must close.
    pub async fn next(&mut self, intake: &Intake) -> Result<Option<Frame>, FrameError> {
        match self.fill_to(4).await {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && self.buf.is_empty() => {
                return Ok(None)
            }
            r => r?,
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        // The pool is never closed and always fits max_frame.
        let charge = intake
            .pool
            .clone()
            .acquire_many_owned(len as u32)
            .await
            .expect("the intake pool is never closed");
        let whole = 4 + len;
        tokio::time::timeout(FRAME_BODY_TIMEOUT, self.fill_to(whole))
            .await
            .map_err(|_| FrameError::Stalled { len })??;
        let mut frame = self.buf.split_to(whole);
        frame.advance(4);
        if frame.len() > READ_AHEAD {
            // The bytes read past this frame share its allocation, and
            // would keep all of it alive while the connection waits for its
            // next frame: 5 MB per connection with 5 MB frames.
            self.buf = BytesMut::from(&self.buf[..]);
        }
        Ok(Some(Frame {
            body: frame.freeze(),
            charge,
        }))
    }
}

#[cfg(test)]
impl Intake {
    /// Bytes of the pool not held by any frame.
    fn available(&self) -> usize {
        self.pool.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[tokio::test]
    async fn frames_come_out_whole_and_in_order_however_the_bytes_arrive() {
        let (mut client, server) = tokio::io::duplex(7);
        let intake = Intake::new(1024);
        let mut reader = FrameReader::new(server, 1024);
        let bodies: Vec<Vec<u8>> = vec![b"hello".to_vec(), vec![], vec![7u8; 100]];
        let sent = bodies.clone();
        tokio::spawn(async move {
            for b in sent {
                client.write_all(&framed(&b)).await.unwrap();
            }
        });
        for b in &bodies {
            let f = reader.next(&intake).await.unwrap().unwrap();
            assert_eq!(&f.body[..], &b[..]);
        }
        assert!(reader.next(&intake).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_frame_holds_its_length_of_the_pool_until_its_charge_is_dropped() {
        let intake = Intake::new(1000);
        let size = intake.available();
        let mut bytes = framed(&[1u8; 600]);
        bytes.extend(framed(&[2u8; 600]));
        let mut reader = FrameReader::new(&bytes[..], 1000);
        let first = reader.next(&intake).await.unwrap().unwrap();
        assert_eq!(intake.available(), size - 600);
        drop(first.charge);
        assert_eq!(intake.available(), size);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_waits_while_the_pool_is_taken() {
        // A pool of exactly one frame: the second waits for the first's charge.
        let max = INTAKE_POOL_BYTES;
        let intake = Intake::new(max);
        let held = intake
            .pool
            .clone()
            .acquire_many_owned(max as u32)
            .await
            .unwrap();
        let bytes = framed(b"waits");
        let mut reader = FrameReader::new(&bytes[..], max);
        let waiting = tokio::time::timeout(Duration::from_secs(60), reader.next(&intake)).await;
        assert!(waiting.is_err(), "read a frame with the pool taken");
        drop(held);
        let mut reader = FrameReader::new(&bytes[..], max);
        let f = reader.next(&intake).await.unwrap().unwrap();
        assert_eq!(&f.body[..], b"waits");
    }

    #[tokio::test]
    async fn a_large_frame_does_not_share_its_memory_with_the_bytes_read_past_it() {
        // Both frames come with one read; the first must own its allocation
        // alone, or the reader would keep it alive until the next frame.
        let large = vec![3u8; 4 * READ_AHEAD];
        let mut bytes = framed(&large);
        bytes.extend(framed(b"next"));
        let intake = Intake::new(8 * READ_AHEAD as u64);
        let mut reader = FrameReader::new(&bytes[..], 8 * READ_AHEAD as u64);
        let first = reader.next(&intake).await.unwrap().unwrap();
        assert_eq!(first.body.len(), large.len());
        assert!(
            first.body.is_unique(),
            "the reader still holds the frame's allocation"
        );
        let second = reader.next(&intake).await.unwrap().unwrap();
        assert_eq!(&second.body[..], b"next");
    }

    #[tokio::test]
    async fn a_length_over_max_frame_size_is_refused_before_any_body_is_read() {
        let intake = Intake::new(100);
        let size = intake.available();
        let bytes = 101u32.to_be_bytes();
        let mut reader = FrameReader::new(&bytes[..], 100);
        match reader.next(&intake).await {
            Err(FrameError::TooLarge { len: 101, max: 100 }) => {}
            other => panic!("expected TooLarge, got {:?}", other.map(|f| f.is_some())),
        }
        assert_eq!(intake.available(), size);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_given_up_and_its_charge_returned() {
        let (mut client, server) = tokio::io::duplex(1024);
        let intake = Intake::new(1000);
        let size = intake.available();
        let mut reader = FrameReader::new(server, 1000);
        client.write_all(&500u32.to_be_bytes()).await.unwrap();
        client.write_all(&[0u8; 10]).await.unwrap();
        let bounded = tokio::time::timeout(3 * FRAME_BODY_TIMEOUT, reader.next(&intake));
        match bounded
            .await
            .expect("the stalled body was waited for without end")
        {
            Err(FrameError::Stalled { len: 500 }) => {}
            other => panic!("expected Stalled, got {:?}", other.map(|f| f.is_some())),
        }
        assert_eq!(intake.available(), size);
        drop(client);
    }

    #[tokio::test]
    async fn a_close_mid_frame_is_an_error_and_between_frames_is_the_end() {
        let intake = Intake::new(100);
        let mut cut = framed(b"abc");
        cut.extend_from_slice(&[0, 0]);
        let mut reader = FrameReader::new(&cut[..], 100);
        assert!(reader.next(&intake).await.unwrap().is_some());
        assert!(matches!(reader.next(&intake).await, Err(FrameError::Io(_))));
        let cut = &framed(b"abcdef")[..6];
        let mut reader = FrameReader::new(cut, 100);
        assert!(matches!(reader.next(&intake).await, Err(FrameError::Io(_))));
    }
}

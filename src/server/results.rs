//! The writer of one connection: it drains the connection's events, encodes
//! results straight into `Results` frames (the successes of one landing by
//! hand), answers flushes once their records are final, and writes each batch
//! in one call.

use super::connection::{reply_weight, Backlog, ConnEvent, FlushTracker};
use crate::ipc::{server_message, Error as ErrorFrame, FlushReply, ServerMessage};
use crate::producer::{Landed, Landing};
use bytes::BytesMut;
use prost::Message;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Results are packed into frames of about this size, and written as soon
/// as one is full. Small, because every connection keeps buffers of about
/// twice this: 256 KiB frames written up to 64 at a time cost about 100 MiB
/// of RSS over 256 busy connections.
const RESULTS_FRAME_TARGET: usize = 64 * 1024;

pub(super) fn error_frame(code: &str, message: String, fatal: bool) -> ServerMessage {
    ServerMessage {
        msg: Some(server_message::Msg::Error(ErrorFrame {
            code: code.into(),
            message,
            fatal,
        })),
    }
}

pub(super) async fn write_loop(
    out: tokio::net::unix::OwnedWriteHalf,
    rx: mpsc::UnboundedReceiver<ConnEvent>,
    backlog: Arc<Backlog>,
) {
    write_frames(out, rx, &backlog).await;
    backlog.gone();
}

/// Encodes what is queued into one buffer (results straight into
/// `Results` frames, each result encoded once) and writes it in one call.
async fn write_frames(
    mut out: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<ConnEvent>,
    backlog: &Backlog,
) {
    use bytes::BufMut;
    use tokio::io::AsyncWriteExt;
    let mut flushes = FlushTracker::default();
    let mut buf = BytesMut::with_capacity(2 * RESULTS_FRAME_TARGET);
    let mut body = BytesMut::with_capacity(RESULTS_FRAME_TARGET);
    let mut n_body = 0usize;
    while let Some(first) = rx.recv().await {
        let mut ev = Some(first);
        // What the events taken in this round counted in the backlog: all
        // of it is written by the one write below.
        let mut done = 0usize;
        while let Some(e) = ev.take().or_else(|| rx.try_recv().ok()) {
            match e {
                ConnEvent::Accepted(n) => flushes.accepted(n),
                ConnEvent::Flush(id) => {
                    flushes.flush(id);
                    done += 1;
                }
                ConnEvent::Result(epoch, r) => {
                    flushes.finished(epoch, 1);
                    body.put_u8(0x0A);
                    r.encode_length_delimited(&mut body)
                        .expect("BytesMut grows");
                    n_body += 1;
                    done += 1;
                }
                ConnEvent::Landed(epoch, landing, records) => {
                    flushes.finished(epoch, records.len() as u64);
                    put_landed(&mut body, &landing, &records);
                    n_body += records.len();
                    done += records.len();
                }
                ConnEvent::Send(m) => {
                    if n_body > 0 {
                        close_results(&mut buf, &mut body);
                        n_body = 0;
                    }
                    put_frame(&mut buf, &m);
                    done += reply_weight(&m);
                }
            }
            if body.len() >= RESULTS_FRAME_TARGET {
                close_results(&mut buf, &mut body);
                n_body = 0;
            }
            if buf.len() >= RESULTS_FRAME_TARGET {
                break;
            }
        }
        if n_body > 0 {
            close_results(&mut buf, &mut body);
            n_body = 0;
        }
        for id in flushes.answerable() {
            put_frame(
                &mut buf,
                &ServerMessage {
                    msg: Some(server_message::Msg::Flushed(FlushReply { id })),
                },
            );
        }
        if out.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
        // A large reply (stats, or many failures at once) grew a buffer:
        // give the room back rather than keep it for the connection's life.
        for b in [&mut buf, &mut body] {
            if b.capacity() > 4 * RESULTS_FRAME_TARGET {
                *b = BytesMut::with_capacity(RESULTS_FRAME_TARGET);
            }
        }
        backlog.written(done);
    }
    let _ = out.shutdown().await;
}

fn put_frame(buf: &mut BytesMut, m: &ServerMessage) {
    use bytes::BufMut;
    buf.put_u32(m.encoded_len() as u32);
    m.encode(buf).expect("BytesMut grows");
}

/// Appends the `results` entries of records that landed together, encoded
/// by hand exactly as prost encodes their [`RecordResult`]s (fields in
/// number order, zero values left out): the landing's fields are encoded
/// once and copied into each entry, and nothing is allocated per record.
fn put_landed(body: &mut BytesMut, landing: &Landing, records: &[Landed]) {
    use bytes::BufMut;
    use prost::encoding::{encode_varint, encoded_len_varint as vlen};
    let field_len = |v: u64| if v == 0 { 0 } else { 1 + vlen(v) };
    let put_field = |body: &mut BytesMut, tag: u8, v: u64| {
        if v != 0 {
            body.put_u8(tag);
            encode_varint(v, body);
        }
    };
    // success = true (2), shard_id (3), sequence_number (4).
    let mut common = Vec::with_capacity(8 + landing.shard_id.len() + landing.sequence_number.len());
    common.extend_from_slice(&[0x10, 0x01]);
    for (tag, s) in [
        (0x1A, landing.shard_id.as_bytes()),
        (0x22, landing.sequence_number.as_bytes()),
    ] {
        if !s.is_empty() {
            common.push(tag);
            encode_varint(s.len() as u64, &mut common);
            common.extend_from_slice(s);
        }
    }
    for r in records {
        // The successful attempt: success = true (1), delay_ms (4), duration_ms (5).
        let attempt = 2 + field_len(r.delay_ms) + field_len(landing.duration_ms);
        let earlier: usize = r
            .earlier
            .iter()
            .map(|a| {
                let n = a.encoded_len();
                1 + vlen(n as u64) + n
            })
            .sum();
        let len = field_len(r.id)
            + common.len()
            + field_len(r.sub_sequence_number)
            + earlier
            + 1
            + vlen(attempt as u64)
            + attempt;
        body.put_u8(0x0A);
        encode_varint(len as u64, body);
        put_field(body, 0x08, r.id);
        body.extend_from_slice(&common);
        put_field(body, 0x28, r.sub_sequence_number);
        for a in &r.earlier {
            body.put_u8(0x32);
            a.encode_length_delimited(body).expect("BytesMut grows");
        }
        body.put_u8(0x32);
        encode_varint(attempt as u64, body);
        body.extend_from_slice(&[0x08, 0x01]);
        put_field(body, 0x20, r.delay_ms);
        put_field(body, 0x28, landing.duration_ms);
    }
}

/// Appends a ServerMessage{results: Results{..}} frame around `body`, which
/// holds the already-encoded `results` fields.
fn close_results(buf: &mut BytesMut, body: &mut BytesMut) {
    use bytes::BufMut;
    let inner = body.len() as u64;
    let msg_len = 1 + prost::encoding::encoded_len_varint(inner) + body.len();
    buf.put_u32(msg_len as u32);
    buf.put_u8(0x12);
    prost::encoding::encode_varint(inner, buf);
    buf.extend_from_slice(body);
    body.clear();
}

#[cfg(test)]
mod tests {
    use super::put_landed;
    use crate::ipc::{Attempt, Results};
    use crate::producer::{Landed, Landing};
    use bytes::BytesMut;
    use proptest::prelude::*;
    use prost::Message;

    fn arb_attempt() -> impl Strategy<Value = Attempt> {
        (
            any::<bool>(),
            "[A-Za-z]{0,12}",
            ".{0,40}",
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(success, error_code, error_message, delay_ms, duration_ms)| Attempt {
                    success,
                    error_code,
                    error_message,
                    delay_ms,
                    duration_ms,
                },
            )
    }

    proptest! {
        #[test]
        fn hand_encoded_successes_are_what_prost_encodes(
            shard in "[a-zA-Z0-9-]{0,30}",
            seq in "[0-9]{0,60}",
            duration_ms in prop_oneof![Just(0u64), any::<u64>()],
            records in proptest::collection::vec(
                (
                    prop_oneof![Just(0u64), any::<u64>()],
                    prop_oneof![Just(0u64), any::<u64>()],
                    prop_oneof![Just(0u64), 0u64..300, any::<u64>()],
                    proptest::collection::vec(arb_attempt(), 0..3),
                ),
                0..20,
            ),
        ) {
            let landing = Landing { shard_id: shard.into(), sequence_number: seq, duration_ms };
            let records: Vec<Landed> = records
                .into_iter()
                .map(|(id, sub_sequence_number, delay_ms, earlier)| Landed {
                    id,
                    sub_sequence_number,
                    delay_ms,
                    earlier,
                })
                .collect();
            let mut body = BytesMut::new();
            put_landed(&mut body, &landing, &records);
            let expected = Results {
                results: records.iter().map(|r| r.clone().into_result(&landing)).collect(),
            }
            .encode_to_vec();
            prop_assert_eq!(&body[..], &expected[..]);
        }
    }
}

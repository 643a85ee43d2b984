//! The socket protocol at the byte level, for the load generator: PutRequest
//! frames are written by hand into a reused buffer and Results frames are
//! scanned in place, so the generator allocates nothing per record and its
//! cost stays small next to the daemon's. Field numbers follow
//! proto/kpld.proto; the golden-frame tests keep the daemon honest, and
//! [`tests`] checks this encoder against prost.

use kpld::aggregate::{put_varint, varint_len};

// ClientMessage.put = 2, PutRequest.records = 1, Record fields 1, 2, 3, 5.
const TAG_CLIENT_PUT: u8 = 2 << 3 | 2;
const TAG_PUT_RECORD: u8 = 1 << 3 | 2;
const TAG_RECORD_ID: u8 = 1 << 3;
const TAG_RECORD_STREAM: u8 = 2 << 3 | 2;
const TAG_RECORD_KEY: u8 = 3 << 3 | 2;
const TAG_RECORD_DATA: u8 = 5 << 3 | 2;

fn len_field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn record_len(id: u64, stream: usize, key: usize, data: usize) -> usize {
    1 + varint_len(id) + len_field(stream) + len_field(key) + len_field(data)
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends one length-prefixed PutRequest frame holding records `first_id..`
/// (`count` of them); `key_of(id)` names each record's partition key and
/// `data_of(id)` its data.
pub fn encode_put<'k, 'd>(
    out: &mut Vec<u8>,
    stream: &[u8],
    first_id: u64,
    count: u64,
    key_of: impl Fn(u64) -> &'k [u8],
    data_of: impl Fn(u64) -> &'d [u8],
) {
    let ids = first_id..first_id + count;
    let put_len: usize = ids
        .clone()
        .map(|id| {
            len_field(record_len(
                id,
                stream.len(),
                key_of(id).len(),
                data_of(id).len(),
            ))
        })
        .sum();
    let msg_len = len_field(put_len);
    out.reserve(4 + msg_len);
    out.extend_from_slice(&(msg_len as u32).to_be_bytes());
    out.push(TAG_CLIENT_PUT);
    put_varint(out, put_len as u64);
    for id in ids {
        let key = key_of(id);
        let data = data_of(id);
        out.push(TAG_PUT_RECORD);
        put_varint(
            out,
            record_len(id, stream.len(), key.len(), data.len()) as u64,
        );
        out.push(TAG_RECORD_ID);
        put_varint(out, id);
        put_bytes(out, TAG_RECORD_STREAM, stream);
        put_bytes(out, TAG_RECORD_KEY, key);
        put_bytes(out, TAG_RECORD_DATA, data);
    }
}

/// Appends a length-prefixed frame holding `msg` (for the rare messages:
/// Hello, Flush, Stats).
pub fn encode_message(out: &mut Vec<u8>, msg: kpld::ipc::client_message::Msg) {
    use prost::Message;
    let m = kpld::ipc::ClientMessage { msg: Some(msg) };
    out.extend_from_slice(&(m.encoded_len() as u32).to_be_bytes());
    m.encode(out).expect("a Vec grows");
}

/// What a server frame said, as far as the generator cares.
pub enum ServerEvent {
    /// A Results frame (its results were passed to the callback).
    Results,
    /// A FlushReply (the generator sends one FlushRequest per connection).
    Flushed,
    /// An Error frame: (code, message, fatal).
    Error(String, String, bool),
    /// Anything else (HelloReply, StatsReply).
    Other,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.varint()? as usize;
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// Next (field number, wire type), or None at the end.
    fn tag(&mut self) -> Option<Option<(u64, u8)>> {
        if self.pos >= self.b.len() {
            return Some(None);
        }
        let t = self.varint()?;
        Some(Some((t >> 3, (t & 7) as u8)))
    }

    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => self.pos += 8,
            2 => {
                self.bytes()?;
            }
            5 => self.pos += 4,
            _ => return None,
        }
        (self.pos <= self.b.len()).then_some(())
    }
}

/// One record's result: id, success, where it landed (empty on failure),
/// error code (empty on success).
pub struct ResultRef<'a> {
    pub id: u64,
    pub success: bool,
    pub shard_id: &'a [u8],
    pub sequence_number: &'a [u8],
    pub sub_sequence_number: u64,
    pub error_code: &'a [u8],
}

fn scan_result(b: &[u8]) -> Option<ResultRef<'_>> {
    let mut r = Reader { b, pos: 0 };
    let mut out = ResultRef {
        id: 0,
        success: false,
        shard_id: b"",
        sequence_number: b"",
        sub_sequence_number: 0,
        error_code: b"",
    };
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 0) => out.id = r.varint()?,
            (2, 0) => out.success = r.varint()? != 0,
            (3, 2) => out.shard_id = r.bytes()?,
            (4, 2) => out.sequence_number = r.bytes()?,
            (5, 0) => out.sub_sequence_number = r.varint()?,
            (7, 2) => out.error_code = r.bytes()?,
            _ => r.skip(wire)?,
        }
    }
    Some(out)
}

/// Scans one ServerMessage (without its length prefix), calling
/// `on_result` for each RecordResult of a Results frame. None: malformed.
pub fn scan_server_message(
    frame: &[u8],
    mut on_result: impl FnMut(ResultRef<'_>),
) -> Option<ServerEvent> {
    let mut r = Reader { b: frame, pos: 0 };
    let Some((field, wire)) = r.tag()? else {
        return Some(ServerEvent::Other);
    };
    if wire != 2 {
        return None;
    }
    let body = r.bytes()?;
    match field {
        2 => {
            let mut rr = Reader { b: body, pos: 0 };
            while let Some((f, w)) = rr.tag()? {
                if (f, w) == (1, 2) {
                    on_result(scan_result(rr.bytes()?)?);
                } else {
                    rr.skip(w)?;
                }
            }
            Some(ServerEvent::Results)
        }
        3 => Some(ServerEvent::Flushed),
        4 => {
            use prost::Message;
            let e = kpld::ipc::Error::decode(body).ok()?;
            Some(ServerEvent::Error(e.code, e.message, e.fatal))
        }
        _ => Some(ServerEvent::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpld::ipc::{
        client_message, server_message, Attempt, ClientMessage, RecordResult, Results,
        ServerMessage,
    };
    use prost::Message;

    #[test]
    fn put_frames_decode_with_prost() {
        let keys = [b"k0".as_slice(), b"a-longer-key".as_slice()];
        let mut out = Vec::new();
        let data = [b"xyz".as_slice(), b"".as_slice(), b"0123456789".as_slice()];
        encode_put(
            &mut out,
            b"s",
            126,
            4,
            |id| keys[(id % 2) as usize],
            |id| data[(id % 3) as usize],
        );
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        let m = ClientMessage::decode(&out[4..]).unwrap();
        let Some(client_message::Msg::Put(p)) = m.msg else {
            panic!("not a put")
        };
        let got: Vec<_> = p
            .records
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.stream.to_vec(),
                    r.partition_key.to_vec(),
                    r.data.to_vec(),
                )
            })
            .collect();
        let want: Vec<_> = (126..130)
            .map(|id| {
                (
                    id,
                    b"s".to_vec(),
                    keys[(id % 2) as usize].to_vec(),
                    data[(id % 3) as usize].to_vec(),
                )
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn results_are_scanned_without_decoding() {
        let m = ServerMessage {
            msg: Some(server_message::Msg::Results(Results {
                results: vec![
                    RecordResult {
                        id: 300,
                        success: true,
                        shard_id: "shardId-000000000001".into(),
                        sequence_number: "4".repeat(56),
                        sub_sequence_number: 7,
                        attempts: vec![Attempt {
                            success: true,
                            delay_ms: 100,
                            duration_ms: 3,
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    RecordResult {
                        id: 1,
                        success: false,
                        error_code: "Expired".into(),
                        error_message: "late".into(),
                        ..Default::default()
                    },
                ],
            })),
        };
        let bytes = m.encode_to_vec();
        let mut seen = Vec::new();
        let ev = scan_server_message(&bytes, |r| {
            seen.push((
                r.id,
                r.success,
                String::from_utf8_lossy(r.shard_id).into_owned(),
                String::from_utf8_lossy(r.sequence_number).into_owned(),
                r.sub_sequence_number,
                r.error_code.to_vec(),
            ))
        });
        assert!(matches!(ev, Some(ServerEvent::Results)));
        assert_eq!(
            seen,
            vec![
                (
                    300,
                    true,
                    "shardId-000000000001".into(),
                    "4".repeat(56),
                    7,
                    vec![]
                ),
                (
                    1,
                    false,
                    String::new(),
                    String::new(),
                    0,
                    b"Expired".to_vec()
                )
            ]
        );
    }
}

//! Golden frames: the protocol exchanges saved under tests/golden/ (shared
//! with the Python and Node clients' tests) decode to the messages that
//! frames.json describes, and re-encode to the same bytes.

use base64::Engine;
use kpld::ipc::*;
use prost::Message;
use serde_json::{json, Map, Value};

fn b64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// proto3 JSON mapping with the .proto field names; default values omitted.
fn obj(fields: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        let default = match &v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_u64() == Some(0),
            Value::String(s) => s.is_empty() || s == "0",
            Value::Array(a) => a.is_empty(),
            Value::Object(_) => false,
        };
        if !default || k == "explicit_hash_key" && !v.is_null() {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn u64s(v: u64) -> Value {
    Value::String(v.to_string())
}

fn record(r: &Record) -> Value {
    obj(vec![
        ("id", u64s(r.id)),
        ("stream", b64(&r.stream)),
        ("partition_key", b64(&r.partition_key)),
        (
            "explicit_hash_key",
            r.explicit_hash_key.as_ref().map_or(Value::Null, |k| b64(k)),
        ),
        ("data", b64(&r.data)),
        (
            "compression",
            match Compression::try_from(r.compression) {
                Ok(Compression::Default) | Err(_) => Value::Null,
                Ok(c) => Value::String(c.as_str_name().to_string()),
            },
        ),
    ])
}

fn client(m: &ClientMessage) -> Value {
    match m.msg.as_ref().expect("a message") {
        client_message::Msg::Hello(h) => json!({"hello": obj(vec![
            ("protocol_version", json!(h.protocol_version)),
            ("client_name", json!(h.client_name)),
            ("want_accepted", json!(h.want_accepted)),
        ])}),
        client_message::Msg::Put(p) => json!({"put": obj(vec![
            ("records", Value::Array(p.records.iter().map(record).collect())),
            ("busy_if_full", json!(p.busy_if_full)),
        ])}),
        client_message::Msg::Flush(f) => json!({"flush": obj(vec![("id", u64s(f.id))])}),
        client_message::Msg::Stats(s) => json!({"stats": obj(vec![("id", u64s(s.id))])}),
    }
}

fn attempt(a: &Attempt) -> Value {
    obj(vec![
        ("success", json!(a.success)),
        ("error_code", json!(a.error_code)),
        ("error_message", json!(a.error_message)),
        ("delay_ms", u64s(a.delay_ms)),
        ("duration_ms", u64s(a.duration_ms)),
    ])
}

fn server(m: &ServerMessage) -> Value {
    match m.msg.as_ref().expect("a message") {
        server_message::Msg::Hello(h) => json!({"hello": obj(vec![
            ("protocol_version", json!(h.protocol_version)),
            ("server_version", json!(h.server_version)),
            ("max_frame_size", u64s(h.max_frame_size)),
            ("max_record_size", u64s(h.max_record_size)),
        ])}),
        server_message::Msg::Results(r) => json!({"results": obj(vec![(
            "results",
            Value::Array(
                r.results
                    .iter()
                    .map(|r| obj(vec![
                        ("id", u64s(r.id)),
                        ("success", json!(r.success)),
                        ("shard_id", json!(r.shard_id)),
                        ("sequence_number", json!(r.sequence_number)),
                        ("sub_sequence_number", u64s(r.sub_sequence_number)),
                        ("attempts", Value::Array(r.attempts.iter().map(attempt).collect())),
                        ("error_code", json!(r.error_code)),
                        ("error_message", json!(r.error_message)),
                        ("refused", json!(r.refused)),
                    ]))
                    .collect()
            )
        )])}),
        server_message::Msg::Flushed(f) => json!({"flushed": obj(vec![("id", u64s(f.id))])}),
        server_message::Msg::Error(e) => json!({"error": obj(vec![
            ("code", json!(e.code)),
            ("message", json!(e.message)),
            ("fatal", json!(e.fatal)),
        ])}),
        server_message::Msg::Stats(s) => json!({"stats": obj(vec![
            ("id", u64s(s.id)),
            ("json", json!(s.json)),
        ])}),
        server_message::Msg::Accepted(a) => json!({"accepted": obj(vec![
            ("first_ids", Value::Array(a.first_ids.iter().map(|&v| u64s(v)).collect())),
            ("counts", Value::Array(a.counts.iter().map(|&v| u64s(v)).collect())),
        ])}),
    }
}

#[test]
fn golden_frames_decode_to_their_description_and_reencode_identically() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let desc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("frames.json")).unwrap()).unwrap();
    let frames = desc["frames"].as_object().expect("frames");
    assert!(frames.len() >= 8, "expected the saved exchanges");
    for (file, d) in frames {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4, "{file}: length prefix");
        let body = &bytes[4..];
        let (got, reencoded) = match d["type"].as_str().unwrap() {
            "ClientMessage" => {
                let m = ClientMessage::decode(body).unwrap();
                (client(&m), m.encode_to_vec())
            }
            "ServerMessage" => {
                let m = ServerMessage::decode(body).unwrap();
                (server(&m), m.encode_to_vec())
            }
            t => panic!("{file}: unknown type {t}"),
        };
        assert_eq!(got, d["message"], "{file}: decoded message");
        assert_eq!(reencoded, body, "{file}: canonical re-encoding");
    }
}

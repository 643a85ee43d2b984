//! Bytes from a client socket -> frames -> protobuf -> validated records ->
//! results, through the daemon's own connection handler
//! (`kpld::server::handle_connection`) and a real `Producer` sending to an
//! in-process Kinesis (`kpld_fuzz::FakeKinesis`, which also throttles).
//!
//! Input: what one client writes before closing its side. The target works
//! out, as the protocol document says, what the daemon must answer (a model
//! of the frames: Hello first, fatal errors end the connection) and checks
//! the daemon's frames against it: every record of every Put read gets
//! exactly one result (by id, as a multiset), each result well-formed;
//! flushes answered in order; one stats reply per request; a non-fatal error
//! per repeated Hello; and exactly one fatal error, with the right code,
//! when the input breaks the protocol, after which only what is still owed
//! (results, replies to flushes read before it) may come (docs/protocol.md:
//! "the server has stopped reading this connection and closes it once the
//! results it still owes are written"). The clock is paused (auto-advancing),
//! so buffering deadlines and backoff cost no real time.
#![no_main]

use kpld::config::RawConfig;
use kpld::intake::Intake;
use kpld::ipc::{client_message, server_message, ClientMessage, ServerMessage};
use kpld::server::handle_connection;
use kpld::{Config, Producer};
use kpld_fuzz::FakeKinesis;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// Small limits, so that inputs reach them: frames over 64 KiB are refused,
/// records over 4 KiB fail, gzip for stream `z`, aggregation off for `plain`,
/// only streams `s*`, `z` and `plain` allowed.
const CONFIG: &str = r#"
max_record_size = 4096
max_frame_size = 65536
max_buffered_bytes = 262144
max_outstanding_records = 64
record_max_buffered_time_ms = 20
record_ttl_ms = 2000
retry_backoff_base_ms = 10
retry_backoff_max_ms = 100
metrics_level = "none"
streams_allowed = ["s*", "z", "plain"]
[streams.z]
compression = "gzip"
[streams.plain]
aggregation_enabled = false
"#;

struct World {
    rt: tokio::runtime::Runtime,
    cfg: Config,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap(),
        cfg: Config::from_raw(
            RawConfig::parse(CONFIG, Path::new("fuzz.toml"), []).expect("fuzz config"),
        )
        .expect("fuzz config"),
    })
}

/// What the daemon must answer to `input`.
#[derive(Debug, Default)]
struct Expected {
    hello: bool,
    ids: Vec<u64>,
    flushes: Vec<u64>,
    stats: Vec<u64>,
    repeated_hellos: usize,
    fatal: Option<&'static str>,
}

fn model(mut input: &[u8], max_frame: usize) -> Expected {
    let mut e = Expected::default();
    loop {
        if input.len() < 4 {
            return e; // the end, or a cut length prefix: closed without an answer
        }
        let len = u32::from_be_bytes(input[..4].try_into().unwrap()) as usize;
        if len > max_frame {
            e.fatal = Some("FrameTooLarge");
            return e;
        }
        if input.len() < 4 + len {
            return e; // closed mid-frame
        }
        let body = &input[4..4 + len];
        input = &input[4 + len..];
        let msg = match ClientMessage::decode(body) {
            Ok(ClientMessage { msg: Some(m) }) => m,
            _ => {
                e.fatal = Some("MalformedFrame");
                return e;
            }
        };
        if !e.hello {
            match msg {
                client_message::Msg::Hello(h) if h.protocol_version == 1 => e.hello = true,
                client_message::Msg::Hello(_) => {
                    e.fatal = Some("ProtocolVersion");
                    return e;
                }
                _ => {
                    e.fatal = Some("UnexpectedMessage");
                    return e;
                }
            }
            continue;
        }
        match msg {
            client_message::Msg::Put(p) => e.ids.extend(p.records.iter().map(|r| r.id)),
            client_message::Msg::Flush(f) => e.flushes.push(f.id),
            client_message::Msg::Stats(s) => e.stats.push(s.id),
            client_message::Msg::Hello(_) => e.repeated_hellos += 1,
        }
    }
}

async fn converse(input: Vec<u8>, cfg: &Config) -> Vec<u8> {
    let producer = Producer::new(cfg.clone(), Arc::new(FakeKinesis::default()));
    let intake = Intake::new(cfg.max_frame_size);
    let (client, server) = UnixStream::pair().expect("socketpair");
    let (mut rd, mut wr) = client.into_split();
    let writer = tokio::spawn(async move {
        // Refused (EPIPE) once the daemon has closed after a fatal error.
        let _ = wr.write_all(&input).await;
        let _ = wr.shutdown().await;
    });
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        rd.read_to_end(&mut out)
            .await
            .expect("reading the daemon's frames");
        out
    });
    handle_connection(server, producer.clone(), intake, CancellationToken::new()).await;
    let out = reader.await.expect("reader task");
    writer.await.expect("writer task");
    let report = producer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        report.undelivered, 0,
        "records left after the connection ended"
    );
    out
}

fuzz_target!(|input: &[u8]| {
    let w = world();
    let expected = model(input, w.cfg.max_frame_size as usize);
    let out = w.rt.block_on(converse(input.to_vec(), &w.cfg));

    let (mut hellos, mut ids, mut flushes, mut stats) = (0, Vec::new(), Vec::new(), Vec::new());
    let (mut repeated_hellos, mut fatal) = (0, Vec::new());
    let mut rest = &out[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 4, "a cut length prefix from the daemon");
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        assert!(rest.len() >= 4 + len, "a cut frame from the daemon");
        let msg = ServerMessage::decode(&rest[4..4 + len])
            .expect("the daemon's frame is a ServerMessage")
            .msg
            .expect("the daemon's frame holds a message");
        rest = &rest[4 + len..];
        // Accepted too: it names records taken before the fatal frame.
        let owed = matches!(
            msg,
            server_message::Msg::Results(_)
                | server_message::Msg::Flushed(_)
                | server_message::Msg::Accepted(_)
        );
        assert!(
            fatal.is_empty() || owed,
            "a frame other than results after a fatal error: {msg:?}"
        );
        match msg {
            server_message::Msg::Hello(h) => {
                assert_eq!(h.protocol_version, 1);
                hellos += 1;
            }
            server_message::Msg::Results(r) => {
                for r in r.results {
                    if r.success {
                        assert!(
                            !r.shard_id.is_empty() && !r.sequence_number.is_empty(),
                            "a success without shard or sequence number: {r:?}"
                        );
                    } else {
                        assert!(!r.error_code.is_empty(), "a failure without a code: {r:?}");
                    }
                    ids.push(r.id);
                }
            }
            server_message::Msg::Flushed(f) => flushes.push(f.id),
            server_message::Msg::Accepted(a) => {
                assert_eq!(a.first_ids.len(), a.counts.len(), "runs: {a:?}");
                assert!(a.counts.iter().all(|&c| c > 0), "an empty run: {a:?}");
            }
            server_message::Msg::Stats(s) => {
                serde_json_check(&s.json);
                stats.push(s.id);
            }
            server_message::Msg::Error(e) if e.fatal => fatal.push(e.code),
            server_message::Msg::Error(e) => {
                assert_eq!(e.code, "UnexpectedMessage", "{e:?}");
                repeated_hellos += 1;
            }
        }
    }
    assert_eq!(hellos, usize::from(expected.hello), "Hello replies");
    ids.sort_unstable();
    let mut want = expected.ids.clone();
    want.sort_unstable();
    assert_eq!(ids, want, "one result per record");
    assert_eq!(flushes, expected.flushes, "flush replies, in order");
    stats.sort_unstable();
    let mut want_stats = expected.stats.clone();
    want_stats.sort_unstable();
    assert_eq!(stats, want_stats, "stats replies");
    assert_eq!(
        repeated_hellos, expected.repeated_hellos,
        "errors for repeated Hellos"
    );
    assert_eq!(
        fatal,
        expected
            .fatal
            .map(String::from)
            .into_iter()
            .collect::<Vec<_>>(),
        "fatal error"
    );
});

fn serde_json_check(json: &str) {
    assert!(
        json.starts_with('{') && json.ends_with('}'),
        "stats reply is not a JSON object: {json}"
    );
}

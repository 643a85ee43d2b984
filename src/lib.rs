//! kpld: a KPL-equivalent Kinesis producer daemon.
//!
//! # Layout
//! - [`config`]: the TOML file and `KPLD_*` overrides, validated.
//! - [`ipc`]: the socket protocol's messages (generated from proto/kpld.proto).
//! - [`shard_map`]: partition key -> hash key -> open shard (pure).
//! - [`aggregate`]: the KPL aggregated record encoder (pure).
//! - [`collect`]: packing Kinesis records into PutRecords calls (pure).
//! - [`compress`]: opt-in gzip/zlib of each record's data (pure).
//! - [`retry`]: error classes and full-jitter backoff (pure).
//! - [`error_code`]: every failure reason ([`error_code::ErrorCode`]), its
//!   wire string and its class (pure).
//! - [`limit`]: per-shard token buckets (pure).
//! - [`kinesis`]: the Kinesis client seam ([`kinesis::KinesisApi`]); the only
//!   file that touches the AWS SDK, and where errors are classified, once.
//! - [`pipeline`]: one stream's pipeline as sans-IO state machines: `router`
//!   (shard buffers, aggregation), `pacer` (rate limits), `collector`
//!   (PutRecords calls), `retries` (backoff, TTLs), `shards` (map state,
//!   reloads, misrouted aggregates), composed by `stream::StreamCore`, which
//!   is fed inputs and the time and answers actions. No I/O.
//! - [`producer`]: the API ([`Producer`]: `put`, `flush`, `shutdown`),
//!   `validate` (one record against its stream's settings), `budget`
//!   (`max_buffered_bytes` / `max_outstanding_records`), `actor` (the task
//!   per stream that drives its `StreamCore` and performs its actions),
//!   `acceptance` (what a put accepted, for `Accepted` messages), `spooled`
//!   (records of `disk` streams: into the [`spool`] before they count as
//!   accepted, done there when final, dead letters, the replay at start).
//! - [`server`]: the Unix socket server that drives a [`Producer`]: bind,
//!   accept and access (`mod.rs`), one connection's reader and flush
//!   bookkeeping (`connection`), the writer and result frames (`results`).
//! - [`intake`]: each connection's frames, charged to one shared pool before
//!   their bodies are read (memory of requests waiting for room).
//! - [`files`]: log files (`[[files]]`) read, checkpointed and sent as records
//!   through the [`Producer`], rotation and copytruncate handled; per file its
//!   stats and lines/s (`rate`).
//! - [`shutdown`]: signals and the drain sequence.
//! - [`metrics`]: the KPL's CloudWatch metrics, EMF, Prometheus, hot shards and the
//!   `kpld stats` snapshot; the file metrics (FileLinesRead, ...) per stream and
//!   file path (`metrics::files`).
//! - [`stats_cli`]: the `kpld stats` command.
//! - [`access`]: the socket file's mode and group, and `allowed_uids` /
//!   `allowed_gids` checked with SO_PEERCRED and SO_PEERGROUPS on every
//!   connection; names looked up with getpwnam_r / getgrnam_r.
//! - [`heap`]: freed memory given back to the system after idle streams are
//!   evicted (glibc's malloc_trim).
//! - [`systemd`]: socket activation (LISTEN_FDS), sd_notify readiness and
//!   the watchdog.
//! - [`client`]: an async client for the socket protocol (stats CLI, bench, tests).
//! - [`files`]: log files: `process` (the `processing` chain: CRI joins,
//!   CSV/Apache/syslog to JSON, metadata with a stable `record_id`) and
//!   `key` (the `partition_key` rules). Pure; the file source does the I/O.
//! - [`kpl`]: KPL mode, kpld as the Java KPL's native process: its command
//!   line (`args`), the two named pipes and their frames (`pipes`), the
//!   `Configuration` message onto kpld's keys (`config_map`), the message
//!   loop and result sink (`session`), `MetricsRequest` answers
//!   (`metrics_answer`); messages from proto/kpl.proto (`kpl::wire`).
//! - [`spool`]: the disk spool of `durability = "disk"` streams: `entry`
//!   (one entry's bytes, pure), `segment` (segment files and the recovery scan),
//!   `ledger` (done marks and their file), `writer` (appends, rolls, room), `sync`
//!   (the fdatasync thread, group commit), `recover` (open), `replay`.
//! - [`tail`]: the `kpld tail` command: reads a stream back, every shard,
//!   parents first, aggregates taken apart and kpld's compression undone.
//!
//! # The path of one record
//! `server::connection` reads a `Put` frame (its bytes charged to the
//! [`intake`] pool first) -> [`Producer::put`] validates it (`producer::validate`),
//! takes its budget (`producer::budget`) and sends it to its stream's actor ->
//! the actor feeds it to the stream's `StreamCore`: `Router` puts it in its
//! predicted shard's buffer (MD5 of the key against the [`shard_map`]);
//! when the buffer is full or its deadline comes it becomes one KPL
//! aggregate ([`aggregate`]; sealed there, encoded later on the send task)
//! -> `Pacer` (the shard's rate limit) ->
//! `Collector` (a PutRecords call's worth, or the deadline) -> once the
//! actor holds one of the `max_connections` send permits, `next_send` cuts
//! the call and the actor makes it with [`kinesis`] on a task holding that
//! permit -> `Input::Sent` -> `Action::Landed` (shard and
//! sequence number) or `Retries` (backoff, again through the pacer) or
//! `Action::Failed` -> the connection's sink -> `server::results` writes the
//! `Results` frame, and the budget is given back.
//!
//! # Workspace
//! This package is the daemon. Beside it in `crates/`, and not part of its API:
//! - `kpld-kinesis-double` (`crates/kinesis-double`): a programmable Kinesis
//!   double over real HTTP: the integration tests' server, and the embedded
//!   endpoint of `kpld local` (streams created on first use).
//! - `kpld-bench` (`crates/kpld-bench`): the benchmark binary, which drives the
//!   real `kpld` binary against the double.
// Three audited exceptions, each `#[allow(unsafe_code)]` with its SAFETY note:
// taking the socket systemd passes as fd 3 (`systemd::take_passed_fd`), the
// SO_PEERGROUPS getsockopt that neither std nor nix wraps
// (`access::getsockopt_groups`), and glibc's malloc_trim after evictions
// (`heap::release_free_memory`).
#![deny(unsafe_code)]

pub mod access;
pub mod aggregate;
pub mod client;
pub mod collect;
pub mod compress;
pub mod config;
pub mod error_code;
pub mod files;
pub mod heap;
pub mod intake;
pub mod kinesis;
pub mod kpl;
pub mod limit;
pub mod metrics;
pub mod pipeline;
pub mod producer;
pub mod retry;
pub mod server;
pub mod shard_map;
pub mod shutdown;
pub mod spool;
pub mod stats_cli;
pub mod systemd;
pub mod tail;

/// The socket protocol's messages, generated from proto/kpld.proto.
pub mod ipc {
    include!(concat!(env!("OUT_DIR"), "/kpld.v1.rs"));
}

/// The KPL aggregated record message, generated from proto/aggregation.proto
/// (used to check the hand-written encoder).
pub mod kpl_proto {
    include!(concat!(env!("OUT_DIR"), "/kpl.rs"));
}

pub use config::Config;
pub use producer::Producer;

//! kpld: a KPL-equivalent Kinesis producer daemon.
//!
//! # Layout
//! - [`config`]: the TOML file and `KPLD_*` overrides, validated.
//! - [`ipc`]: the socket protocol's messages (generated from proto/kpld.proto).
//! - [`shard_map`]: partition key -> hash key -> open shard (pure).
//! - [`aggregate`]: the KPL aggregated record encoder (pure).
//! - [`collect`]: packing Kinesis records into PutRecords calls (pure).
//! - [`compress`]: opt-in gzip/zlib of each record's data (pure).
//! - [`retry`]: error classification and backoff (pure).
//! - [`limit`]: per-shard token buckets (pure).
//! - [`send`]: the seam to Kinesis; the only file that touches the AWS SDK.
//! - [`producer`]: the pipeline ([`Producer`]): validation, per-stream
//!   routing, aggregation, collection, sending, retries, results. One
//!   actor task per stream (`producer/actor/`: its state and loop, `route`,
//!   `send`, `map`).
//! - [`server`]: the Unix socket server that drives a [`Producer`].
//! - [`intake`]: each connection's frames, charged to one shared pool before
//!   their bodies are read (memory of requests waiting for room).
//! - [`shutdown`]: signals and the drain sequence.
//! - [`metrics`]: the KPL's CloudWatch metrics, EMF, Prometheus, hot shards and the
//!   `kpld stats` snapshot.
//! - [`stats_cli`]: the `kpld stats` command.
//! - [`access`]: the socket file's mode and group, and `allowed_uids` /
//!   `allowed_gids` checked with SO_PEERCRED on every connection.
//! - [`systemd`]: socket activation (LISTEN_FDS), sd_notify readiness and
//!   the watchdog.
//! - [`client`]: an async client for the socket protocol (stats CLI, bench, tests).
//! - [`fake_kinesis`]: a programmable Kinesis double over real HTTP, for the
//!   tests and the benchmark (not used by the daemon).
// One audited exception: taking the socket systemd passes as fd 3
// (`systemd::take_passed_fd`: `#[allow(unsafe_code)]` with its SAFETY note).
#![deny(unsafe_code)]

pub mod access;
pub mod aggregate;
pub mod client;
pub mod collect;
pub mod compress;
pub mod config;
pub mod error_code;
pub mod fake_kinesis;
pub mod intake;
pub mod kinesis;
pub mod limit;
pub mod metrics;
pub mod pipeline;
pub mod producer;
pub mod retry;
pub mod server;
pub mod shard_map;
pub mod shutdown;
pub mod stats_cli;
pub mod systemd;

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

//! The stream pipeline as sans-IO state machines: each takes inputs and
//! the current time and returns what to do; none touches a socket, a task
//! or a clock (models: quinn-proto, h2's connection state, vector's
//! `Batcher`/`RetryLogic` split).
//!
//! - [`record`]: user records, Kinesis records, where results go.
//! - [`router`]: records into their shard's buffer, aggregated ([`Router`]).
//! - [`pacer`]: per-shard rate limits between aggregation and collection ([`Pacer`]).
//! - [`collector`]: Kinesis records into PutRecords calls ([`Collector`]).
//! - [`retries`]: fail or back off after a failed attempt; the retry queue ([`Retries`]).
//! - [`lanes`]: with `ordered`, one entry in flight per shard, retries first.
//! - [`shards`]: the shard map's state, reloads, misrouted aggregates ([`Shards`]).
//! - [`stream`]: one stream's core ([`StreamCore`]) composing them, fed
//!   [`Input`]s, answering [`Action`]s; `producer::actor` drives it.
//! - [`counters`]: the daemon's totals.
//! - [`trouble`]: a stream's recent failures, summarised for the log.

pub mod collector;
pub mod counters;
pub mod lanes;
pub mod pacer;
pub mod record;
pub mod retries;
pub mod router;
pub mod shards;
pub mod stream;
#[cfg(test)]
pub(crate) mod testkit;
pub mod trouble;

pub use collector::Collector;
pub use counters::Counters;
pub use pacer::Pacer;
pub use record::{KinesisRecord, Landed, Landing, Origin, PartitionKey, ResultSink, UserRecord};
pub use retries::Retries;
pub use router::Router;
pub use shards::Shards;
pub use stream::{Action, CoreLimits, Input, StreamCore};

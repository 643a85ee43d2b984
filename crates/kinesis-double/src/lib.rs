//! A programmable Kinesis double for tests and benchmarks: a real HTTP endpoint on
//! 127.0.0.1 speaking the JSON 1.1 protocol the AWS SDK uses, with resharding, the service's
//! per-shard limits, seeded fault injection and a log of every accepted entry.
//!
//! # Layout
//! - [`model`]: streams, shards, hash ranges, routing, sequence numbers, resharding and the
//!   accepted-entry log (pure, no I/O).
//! - [`faults`]: the fault plan, its seeded dice, and the per-shard token buckets (pure).
//! - [`json`]: request and answer shapes, error bodies, opaque tokens, base64.
//! - `ops`: one function per operation, validating like the service (synchronous).
//! - `server`: hyper accept loop, connection kill switch, request-level faults.
//! - `state`: what the server and the handle share (model, dice, counters).
//!
//! # Use
//! ```no_run
//! # async fn demo() {
//! use kpld_kinesis_double::{FakeKinesis, FakeOptions, FaultPlan};
//! let fake = FakeKinesis::start(FakeOptions::default().stream("s", 4)).await;
//! let url = fake.endpoint(); // point the SDK (or kpld's kinesis_endpoint) here
//! fake.set_faults(FaultPlan { drop_response: 0.1, ..FaultPlan::default() });
//! let kids = fake.split_shard_evenly("s", "shardId-000000000000").unwrap();
//! let log = fake.log(); // every accepted entry
//! fake.shutdown().await;
//! # let _ = (url, kids, log);
//! # }
//! ```
//!
//! The double runs on its own Tokio runtime in its own thread, so it keeps serving while a
//! test blocks, and it works from any runtime flavour.
//!
//! # Behaviour worth knowing
//! - Operations: PutRecords, PutRecord, ListShards, DescribeStreamSummary, DescribeStream,
//!   CreateStream, DeleteStream, ListStreams, SplitShard, MergeShards, GetShardIterator,
//!   GetRecords. Anything else: `400 UnknownOperationException`. Streams are ACTIVE at once
//!   and resharding is instant (no UPDATING state, no ResourceInUseException).
//! - Requests without an `Authorization` header are refused (like every real endpoint);
//!   signatures are not checked, so any static credentials do.
//! - Routing: explicit hash key, else MD5(partition key) as a big-endian u128, into the open
//!   shard whose range holds it. Sequence numbers are 56-digit decimal strings from one
//!   counter per stream (so they increase across a stream, resharding included).
//! - ListShards: with `NextToken`, StreamName, StreamARN, ExclusiveStartShardId and
//!   StreamCreationTimestamp are refused (`InvalidArgumentException`); the token carries the
//!   stream and filter (a ShardFilter sent with it is ignored). Filters: AT_LATEST (open
//!   shards), AFTER_SHARD_ID; the others list every shard (nothing expires here).
//! - Validation follows the service's wording: over 500 entries, partition key outside
//!   1..=256 characters, data + key over 1 MiB and a bad explicit hash key pattern are
//!   `ValidationException`; over 5 MiB per request, or a hash key >= 2^128, is
//!   `InvalidArgumentException`; unknown stream is `ResourceNotFoundException`. Only the
//!   first violation is reported.
//! - Count-only mode never decodes data (sizes come from the base64 length), so invalid
//!   base64 passes unnoticed there; it keeps no log and ignores shard limits.
//! - Limits: one token bucket pair per shard (records, bytes), starting full; one request is
//!   judged at one instant, so a single request over the burst is throttled the same way on
//!   every run.
//! - Request-level faults hit puts only unless [`FaultScope::All`]; a reset is an RST
//!   (`SO_LINGER 0`), a dropped answer a plain close after the entries were accepted.

#![forbid(unsafe_code)]

pub mod faults;
pub mod json;
pub mod model;
mod ops;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

pub use faults::{FaultPlan, FaultScope, ShardLimits, SlowPhase};
pub use model::{AcceptedEntry, ApiError, ShardInfo};
pub use state::{Counters, RequestLimits};

use faults::FaultDice;
use model::Model;
use state::{CounterCells, Shared};

/// How to start a double. `FakeOptions::default()` has no streams, no limits, no faults.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Streams created at start (name, shard count), ACTIVE at once.
    pub streams: Vec<(String, usize)>,
    /// Region used in ARNs.
    pub region: String,
    /// Account id used in ARNs and messages.
    pub account_id: String,
    /// Per-shard write limits to enforce; `None` (default) accepts everything.
    pub shard_limits: Option<ShardLimits>,
    /// Validation limits (entries, record size, request size).
    pub request_limits: RequestLimits,
    /// Initial fault plan.
    pub faults: FaultPlan,
    /// Seed of the fault dice.
    pub seed: u64,
    /// Count only: no data decoding, no log, no limits. For benchmarks.
    pub count_only: bool,
    /// Refuse requests without an Authorization header (default true, like real servers).
    pub require_auth: bool,
    /// Worker threads of the double's runtime (default 2; 1 = current-thread runtime).
    pub worker_threads: usize,
    /// Create a missing stream with this many shards on first use (ListShards,
    /// DescribeStream(Summary), PutRecord(s), GetShardIterator); `None` (default): unknown
    /// streams are `ResourceNotFoundException`, as in Kinesis.
    pub auto_create_shards: Option<usize>,
    /// Port on 127.0.0.1 (default 0: any free port).
    pub port: u16,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            streams: Vec::new(),
            region: "us-east-1".to_owned(),
            account_id: "000000000000".to_owned(),
            shard_limits: None,
            request_limits: RequestLimits::default(),
            faults: FaultPlan::default(),
            seed: 0x5eed,
            count_only: false,
            require_auth: true,
            worker_threads: 2,
            auto_create_shards: None,
            port: 0,
        }
    }
}

impl FakeOptions {
    /// Add a stream created at start.
    pub fn stream(mut self, name: &str, shards: usize) -> Self {
        self.streams.push((name.to_owned(), shards));
        self
    }

    /// Enforce the service's per-shard limits (1000 records/s, 1 MiB/s, 1 s burst).
    pub fn enforce_limits(mut self) -> Self {
        self.shard_limits = Some(ShardLimits::default());
        self
    }

    /// Count-only mode (no log, no limits), for benchmarks.
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self.shard_limits = None;
        self
    }

    /// Initial fault plan.
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.faults = plan;
        self
    }

    /// Seed of the fault dice.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A running double. Dropping it stops the server (without waiting); prefer
/// [`FakeKinesis::shutdown`].
#[derive(Debug)]
pub struct FakeKinesis {
    shared: Arc<Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl FakeKinesis {
    /// Bind 127.0.0.1 on a free port and serve. Panics if the options name an invalid
    /// stream or the port cannot be bound (test support: fail loudly).
    pub async fn start(opts: FakeOptions) -> FakeKinesis {
        let port = opts.port;
        Self::try_start(opts)
            .await
            .unwrap_or_else(|e| panic!("fake kinesis: cannot bind 127.0.0.1:{port}: {e}"))
    }

    /// Like [`start`](Self::start), with an error when the port cannot be bound.
    pub async fn try_start(opts: FakeOptions) -> std::io::Result<FakeKinesis> {
        let limits = if opts.count_only {
            None
        } else {
            opts.shard_limits
        };
        let mut model = Model::new(&opts.region, &opts.account_id, limits);
        let now = SystemTime::now();
        for (name, shards) in &opts.streams {
            model
                .create_stream(name, *shards, now)
                .unwrap_or_else(|e| panic!("fake kinesis: cannot create stream {name}: {e}"));
        }
        let shared = Arc::new(Shared {
            model: Mutex::new(model),
            dice: Mutex::new(FaultDice::new(opts.faults.clone(), opts.seed)),
            counters: CounterCells::default(),
            limits: opts.request_limits,
            count_only: opts.count_only,
            require_auth: opts.require_auth,
            auto_create_shards: opts.auto_create_shards,
            epoch: Instant::now(),
            access_key_ids: Mutex::default(),
        });
        let listener = std::net::TcpListener::bind(("127.0.0.1", opts.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let workers = opts.worker_threads.max(1);
        let (sh, cn) = (shared.clone(), cancel.clone());
        std::thread::Builder::new()
            .name("fake-kinesis".to_owned())
            .spawn(move || {
                let rt = if workers == 1 {
                    tokio::runtime::Builder::new_current_thread()
                } else {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(workers);
                    b
                }
                .enable_all()
                .thread_name("fake-kinesis-worker")
                .build()
                .expect("fake kinesis: cannot build its runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("fake kinesis: cannot register the listener");
                    server::serve(listener, sh, cn).await;
                });
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
                let _ = tx.send(());
            })
            .expect("fake kinesis: cannot spawn its thread");
        Ok(FakeKinesis {
            shared,
            addr,
            cancel,
            stopped: Some(rx),
        })
    }

    /// `http://127.0.0.1:PORT`: the SDK's endpoint URL (kpld's `kinesis_endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// The access key ids that signed requests so far, each once, in the
    /// order first seen.
    pub fn access_key_ids(&self) -> Vec<String> {
        self.shared
            .access_key_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every accepted entry so far, in acceptance order (empty in count-only mode).
    pub fn log(&self) -> Vec<AcceptedEntry> {
        self.shared.model().log().to_vec()
    }

    /// Accepted entries from position `from` of the log on.
    pub fn log_since(&self, from: usize) -> Vec<AcceptedEntry> {
        let m = self.shared.model();
        m.log().get(from..).unwrap_or_default().to_vec()
    }

    /// Number of logged entries.
    pub fn log_len(&self) -> usize {
        self.shared.model().log().len()
    }

    /// The current fault plan.
    pub fn faults(&self) -> FaultPlan {
        self.shared.dice().plan().clone()
    }

    /// Replace the fault plan (takes effect for the next request).
    pub fn set_faults(&self, plan: FaultPlan) {
        self.shared.dice().set_plan(plan);
    }

    /// Enforce `limits` per shard from now on (`None`: no limits). Ignored in count-only
    /// mode. Buckets restart full.
    pub fn set_shard_limits(&self, limits: Option<ShardLimits>) {
        if !self.shared.count_only {
            self.shared.model().set_limits(limits);
        }
    }

    /// Create a stream (ACTIVE at once).
    pub fn create_stream(&self, name: &str, shards: usize) -> Result<(), ApiError> {
        self.shared
            .model()
            .create_stream(name, shards, SystemTime::now())
    }

    /// Delete a stream.
    pub fn delete_stream(&self, name: &str) -> Result<(), ApiError> {
        self.shared.model().delete_stream(name)
    }

    /// All shards of a stream (closed ones too), oldest first, with their counters.
    pub fn shards(&self, stream: &str) -> Result<Vec<ShardInfo>, ApiError> {
        Ok(self.shared.model().stream(stream)?.shards())
    }

    /// Open shards of a stream, in id order.
    pub fn open_shards(&self, stream: &str) -> Result<Vec<ShardInfo>, ApiError> {
        let mut v = self.shards(stream)?;
        v.retain(ShardInfo::is_open);
        Ok(v)
    }

    /// Split an open shard at `new_starting_hash_key`; returns the two children's ids
    /// (lower range first). Takes effect between two requests.
    pub fn split_shard(
        &self,
        stream: &str,
        shard_id: &str,
        new_starting_hash_key: u128,
    ) -> Result<[String; 2], ApiError> {
        self.shared
            .model()
            .split_shard(stream, shard_id, new_starting_hash_key)
    }

    /// Split an open shard in the middle of its range.
    pub fn split_shard_evenly(
        &self,
        stream: &str,
        shard_id: &str,
    ) -> Result<[String; 2], ApiError> {
        let mut m = self.shared.model();
        let s = m.stream(stream)?;
        let info = s
            .shards()
            .into_iter()
            .find(|s| s.shard_id == shard_id)
            .ok_or_else(|| {
                ApiError::not_found(format!("Could not find shard {shard_id} in {stream}."))
            })?;
        let (lo, hi) = (info.starting_hash_key, info.ending_hash_key);
        let mid = lo + (hi - lo) / 2 + 1;
        m.split_shard(stream, shard_id, mid.min(hi))
    }

    /// Merge two adjacent open shards; returns the child's id.
    pub fn merge_shards(
        &self,
        stream: &str,
        shard_id: &str,
        adjacent_shard_id: &str,
    ) -> Result<String, ApiError> {
        self.shared
            .model()
            .merge_shards(stream, shard_id, adjacent_shard_id)
    }

    /// Stop serving and wait until the server's runtime is gone (connections closed).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(rx) = self.stopped.take() {
            let _ = rx.await;
        }
    }
}

impl Drop for FakeKinesis {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
